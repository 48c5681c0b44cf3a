"""The weekly report as files: HTML with its charts, the at-risk CSV, and a Markdown digest.

Saved under ``var/reports/<date>/``:

- ``weekly-report.html``: the report, charts embedded as data URIs (opens anywhere, offline);
- ``charts/<name>.png``: each chart;
- ``at-risk.csv``: every at-risk account (the HTML shows the first ``at_risk_rows``);
- ``story-candidates.csv``: every case-study candidate with its measured figures;
- ``weekly-report.md``: the digest (the e-mail's text part). It names accounts but carries
  no e-mail address, nor does the Prefect artifact built from it
  (:func:`artifact_markdown`: the digest with the charts inline, or linked under
  ``report.base_url`` when the reports are published there).

The e-mail version is the same template with ``cid:`` image sources; the charts travel as
inline attachments (:func:`email_parts`).
"""

from __future__ import annotations

import base64
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from herald.delivery.transports import Attachment
from herald.i18n.environment import TEMPLATES, environment
from herald.report.metrics.display import display
from herald.report.metrics.results import (
    AT_RISK,
    MET,
    MISSED,
    MONITORED,
    NO_DATA,
    NOT_STARTED,
    OFF_TRACK,
    ON_TRACK,
    OTHER_PHASE,
)
from herald.report.stories import CSV_NAME as STORIES_CSV
from herald.report.stories import candidates_csv
from herald.report.weekly import STATUS_ORDER, WeeklyReport

TEMPLATE = "report/weekly.html"
HTML_NAME = "weekly-report.html"
CSV_NAME = "at-risk.csv"
MARKDOWN_NAME = "weekly-report.md"
COLORS = {
    ON_TRACK: "#1a7f37",
    AT_RISK: "#9a6700",
    OFF_TRACK: "#cf222e",
    NO_DATA: "#57606a",
    NOT_STARTED: "#57606a",
    MONITORED: "#57606a",
    MET: "#1a7f37",
    MISSED: "#cf222e",
}
FUNNEL_LABELS = {
    "preview": "Early-adopter preview",
    "announcement": "Broad announcement",
    "deprecation": "Deprecation timeline",
    "sunset": "Sunset notices",
    OTHER_PHASE: "Thank-you and deadline-moved messages",
}
ALT = {
    "adoption": "Cumulative share of accounts migrated against the target line",
    "funnel": "Messages sent, delivered, opened and clicked per phase",
    "segments": "Reach, engagement and migration per segment",
    "deliverability": "Hard-bounce, spam-complaint and unsubscribe rates by week",
}
TREND_COLUMNS = (
    ("migration_rate", "Migrated"),
    ("migration_target_line", "Target line"),
    ("message_reach", "Reach"),
    ("engagement_rate", "Engagement"),
    ("support_satisfaction", "CSAT >= 4"),
    ("hard_bounce_rate", "Hard bounces"),
    ("spam_complaint_rate", "Spam"),
    ("unsubscribe_rate", "Unsubscribes"),
)


@dataclass(frozen=True)
class _Chart:
    name: str
    alt: str


@dataclass(frozen=True)
class _Column:
    name: str
    label: str


def html(
    report: WeeklyReport,
    charts: dict[str, bytes],
    *,
    inline: bool,
    templates: Path = TEMPLATES,
) -> str:
    """The report's HTML: images as data URIs (``inline=False``, the saved file) or as
    ``cid:`` references to inline attachments (``inline=True``, the e-mail)."""

    def image(name: str) -> str:
        if inline:
            return f"cid:{content_id(report, name)}"
        return "data:image/png;base64," + base64.b64encode(charts[name]).decode("ascii")

    template = environment(templates).get_template(TEMPLATE)
    return template.render(
        report=report,
        charts=[_Chart(name, ALT[name]) for name in charts],
        image=image,
        display=display,
        colors=COLORS,
        statuses=STATUS_ORDER,
        trend_columns=[_Column(name, label) for name, label in TREND_COLUMNS],
        funnel_labels=FUNNEL_LABELS,
        rules=report.at_risk_rules,
        csv_name=CSV_NAME,
        stories_csv=STORIES_CSV,
    )


def content_id(report: WeeklyReport, chart: str) -> str:
    """The Content-ID of one chart in the e-mail."""
    return f"{chart}-{report.as_of.isoformat()}@herald"


CSV_COLUMNS = (
    "external_id",
    "name",
    "owner",
    "segment",
    "tier",
    "region",
    "deadline",
    "days_left",
    "at_risk_since",
    "tickets",
    "average_csat",
    "responses",
    "adoption_pct",
    "reasons",
    "escalate",
    "contacts",
)


def at_risk_csv(report: WeeklyReport) -> str:
    """Every at-risk account, one row each, with the contacts an account team calls."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for account in report.at_risk:
        writer.writerow(
            [
                account.external_id,
                account.name,
                account.owner or "",
                account.segment,
                account.tier,
                account.region,
                account.deadline.isoformat(),
                account.days_left,
                account.at_risk_since.isoformat(),
                account.tickets,
                "" if account.average_csat is None else f"{account.average_csat:.2f}",
                account.responses,
                "" if account.adoption_pct is None else f"{account.adoption_pct:g}",
                "; ".join(str(reason) for reason in account.reasons),
                "; ".join(account.escalations(report.escalation)),
                " ".join(account.contacts),
            ]
        )
    return buffer.getvalue()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: WeeklyReport, link: str | None = None) -> str:
    """The digest: mark, verdict and its rule, stage, summary, trend, at-risk accounts and
    case-study candidates by name (no addresses); ``link``: where the full report is."""
    lines = []
    if report.mark:
        lines += [f"> **{report.mark.upper()}**", ""]
    lines += [
        f"# {report.campaign_name}: week ending {report.as_of}: {report.verdict}",
        "",
        _stage_text(report),
        "",
        f"*How it is judged:* {report.rule}",
        "",
    ]
    if report.attention:
        lines += [
            "Needs attention: "
            + "; ".join(f"{j.label} {j.status} ({j.why})" for j in report.attention)
            + ".",
            "",
        ]
    lines += [
        "| target | now | goal | status | why | since last week |",
        "| --- | ---: | --- | --- | --- | ---: |",
    ]
    lines += [
        f"| {_cell(line.label)}{' (headline)' if line.headline else ''} | {line.shown} | "
        f"{_cell(line.target)} | {line.status} | {_cell(line.why)} | {line.change} |"
        for line in report.summary
    ]
    notes = [f"{line.label}: {line.note}." for line in report.summary if line.note]
    if notes:
        lines += ["", *notes]
    if report.closing:
        lines += ["", "## Closing summary", "", *(f"- {fact}" for fact in report.closing)]
    if report.stage.upcoming:
        lines += ["", "## Next dates", ""]
        lines += [f"- {step.day}: {step.what}" for step in report.stage.upcoming]
    if report.stage.started:
        lines += ["", "## Trend", "", "| week ending | migrated | target line | engagement |"]
        lines.append("| --- | ---: | ---: | ---: |")
        for index, day in enumerate(report.trend_weeks):
            lines.append(
                f"| {day} | {display('migration_rate', report.trend['migration_rate'][index])} "
                f"| {display('migration_rate', report.trend['migration_target_line'][index])} | "
                f"{display('engagement_rate', report.trend['engagement_rate'][index])} |"
            )
    lines += ["", f"## At-risk accounts: {len(report.at_risk)}", ""]
    lines += [
        f"- {_cell(account.name)} ({account.external_id}, {account.segment}"
        + (f", owner {_cell(account.owner)}" if account.owner else "")
        + "): "
        + "; ".join(str(reason) for reason in account.reasons)
        for account in report.at_risk[: report.at_risk_rows]
    ]
    if len(report.at_risk) > report.at_risk_rows:
        lines.append(f"- ... and {len(report.at_risk) - report.at_risk_rows} more in the CSV")
    if report.escalated:
        lines += ["", f"## Support escalations: {len(report.escalated)}", ""]
        lines += [
            f"- {_cell(account.name)} ({account.external_id}): "
            + "; ".join(account.escalations(report.escalation))
            for account in report.escalated
        ]
        lines += ["", "Escalation path: " + _path_text(report) + "."]
    if report.stories:
        lines += ["", f"## Case-study candidates: {len(report.stories)}", ""]
        lines += [
            f"- {_cell(c.name)} ({c.external_id}, {c.industry or 'industry unknown'}): imports "
            f"{c.latest.speedup:.2f}x faster, {100 * c.latest.memory_saved:.1f}% less memory"
            for c in report.stories[: report.stories_shown]
        ]
    if link is not None:
        lines += ["", f"Full report: {link}"]
    return "\n".join(lines) + "\n"


def _path_text(report: WeeklyReport) -> str:
    """The escalation path's levels (whom to reach at each is in the full report)."""
    steps = report.escalation.path
    if not steps:
        return "none configured (campaign.yaml report.escalation.path)"
    return " → ".join(
        step.level + (f" (within {step.within})" if step.within else "") for step in steps
    )


def _stage_text(report: WeeklyReport) -> str:
    stage = report.stage
    if not stage.started:
        first = stage.upcoming[0] if stage.upcoming else None
        nxt = f" Next: {first.what} on {first.day}." if first else ""
        return f"The campaign has not started: nothing has been sent yet.{nxt}"
    if report.closing:
        return report.closing[0]
    step = stage.upcoming[0] if stage.upcoming else None
    return f"Under way: {stage.phase}." + (f" Next: {step.what} on {step.day}." if step else "")


def artifact_markdown(report: WeeklyReport, charts: dict[str, bytes], base_url: str | None) -> str:
    """The Prefect artifact: the digest, with links under ``base_url`` to the full report,
    its CSVs and charts (where the reports are published), or the charts inline."""
    folder = None if base_url is None else f"{base_url.rstrip('/')}/{report.as_of.isoformat()}"
    text = markdown(report, f"{folder}/{HTML_NAME}" if folder else None)
    parts = [text]
    if folder is not None:
        parts.append(
            f"Files: [at-risk accounts]({folder}/{CSV_NAME}) · "
            f"[case-study candidates]({folder}/{STORIES_CSV})\n"
        )
    for name, png in charts.items():
        source = (
            f"{folder}/charts/{name}.png"
            if folder is not None
            else "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        )
        parts.append(f"![{ALT[name]}]({source})\n")
    if folder is None:
        parts.append(
            "*The full report and its CSVs are on the worker's disk; set `report.base_url` "
            "in campaign.yaml to link them here.*\n"
        )
    return "\n".join(parts)


def _write(path: Path, data: bytes) -> None:
    """Write whole or not at all: a temporary file renamed into place."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def save(
    report: WeeklyReport, charts: dict[str, bytes], root: Path, templates: Path = TEMPLATES
) -> Path:
    """Write the report's files under ``root/<date>/``; returns the HTML's path."""
    folder = root / report.as_of.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    if charts:
        (folder / "charts").mkdir(exist_ok=True)
    for name, png in charts.items():
        _write(folder / "charts" / f"{name}.png", png)
    _write(folder / CSV_NAME, at_risk_csv(report).encode("utf-8"))
    _write(folder / STORIES_CSV, candidates_csv(report.stories).encode("utf-8"))
    path = folder / HTML_NAME
    _write(path, html(report, charts, inline=False, templates=templates).encode("utf-8"))
    _write(folder / MARKDOWN_NAME, markdown(report).encode("utf-8"))
    return path


def email_parts(
    report: WeeklyReport, charts: dict[str, bytes], templates: Path = TEMPLATES
) -> tuple[str, str, str, list[Attachment]]:
    """Subject, HTML, text and attachments (inline charts, the CSV) of the report e-mail."""
    subject = report.subject
    body = html(report, charts, inline=True, templates=templates)
    attachments = [
        Attachment(f"{name}.png", png, "image/png", content_id(report, name))
        for name, png in charts.items()
    ]
    attachments.append(Attachment(CSV_NAME, at_risk_csv(report).encode("utf-8"), "text/csv"))
    if report.stories:
        attachments.append(
            Attachment(STORIES_CSV, candidates_csv(report.stories).encode("utf-8"), "text/csv")
        )
    return subject, body, markdown(report), attachments
