"""The weekly report as files: HTML with its charts, the at-risk CSV, and a Markdown digest.

Saved under ``var/reports/<date>/``:

- ``weekly-report.html``: the report, charts embedded as data URIs (opens anywhere, offline);
- ``charts/<name>.png``: each chart;
- ``at-risk.csv``: every at-risk account (the HTML shows the first ``at_risk_rows``);
- ``weekly-report.md``: the digest published as the Prefect artifact. It names accounts but
  carries no e-mail address: artifacts are read more widely than the report.

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

from herald.delivery.messages import TEMPLATES, environment
from herald.delivery.transports import Attachment
from herald.report.metrics.display import display
from herald.report.metrics.results import AT_RISK, NO_DATA, OFF_TRACK, ON_TRACK
from herald.report.weekly import STATUS_ORDER, WeeklyReport

TEMPLATE = "report/weekly.html"
HTML_NAME = "weekly-report.html"
CSV_NAME = "at-risk.csv"
MARKDOWN_NAME = "weekly-report.md"
COLORS = {ON_TRACK: "#1a7f37", AT_RISK: "#9a6700", OFF_TRACK: "#cf222e", NO_DATA: "#57606a"}
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
        rules=report.at_risk_rules,
        csv_name=CSV_NAME,
    )


def content_id(report: WeeklyReport, chart: str) -> str:
    """The Content-ID of one chart in the e-mail."""
    return f"{chart}-{report.as_of.isoformat()}@herald"


CSV_COLUMNS = (
    "external_id",
    "name",
    "segment",
    "tier",
    "region",
    "deadline",
    "days_left",
    "tickets",
    "average_csat",
    "responses",
    "adoption_pct",
    "reasons",
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
                account.segment,
                account.tier,
                account.region,
                account.deadline.isoformat(),
                account.days_left,
                account.tickets,
                "" if account.average_csat is None else f"{account.average_csat:.2f}",
                account.responses,
                "" if account.adoption_pct is None else f"{account.adoption_pct:g}",
                "; ".join(account.reasons),
                " ".join(account.contacts),
            ]
        )
    return buffer.getvalue()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: WeeklyReport, saved: Path | None = None) -> str:
    """The digest: verdict, summary, trend and the at-risk accounts by name (no addresses)."""
    counts = report.counts()
    lines = [
        f"# {report.campaign_name}: week ending {report.as_of}: {report.verdict}",
        "",
        ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
        + f" of {len(report.summary)} targets; {report.weeks_of_trend} week(s) of trend.",
        "",
        "| target | now | goal | status | since last week |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    lines += [
        f"| {_cell(line.label)} | {line.shown} | {_cell(line.target)} | {line.status} | "
        f"{line.change} |"
        for line in report.summary
    ]
    lines += ["", "## Trend", "", "| week ending | migrated | target line | engagement |"]
    lines.append("| --- | ---: | ---: | ---: |")
    for index, day in enumerate(report.trend_weeks):
        lines.append(
            f"| {day} | {display('migration_rate', report.trend['migration_rate'][index])} | "
            f"{display('migration_rate', report.trend['migration_target_line'][index])} | "
            f"{display('engagement_rate', report.trend['engagement_rate'][index])} |"
        )
    lines += ["", f"## At-risk accounts: {len(report.at_risk)}", ""]
    lines += [
        f"- {_cell(account.name)} ({account.external_id}, {account.segment}): "
        + "; ".join(account.reasons)
        for account in report.at_risk[: report.at_risk_rows]
    ]
    if len(report.at_risk) > report.at_risk_rows:
        lines.append(f"- ... and {len(report.at_risk) - report.at_risk_rows} more in the CSV")
    if saved is not None:
        lines += ["", f"Full report: `{saved}`"]
    return "\n".join(lines) + "\n"


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
    (folder / "charts").mkdir(parents=True, exist_ok=True)
    for name, png in charts.items():
        _write(folder / "charts" / f"{name}.png", png)
    _write(folder / CSV_NAME, at_risk_csv(report).encode("utf-8"))
    path = folder / HTML_NAME
    _write(path, html(report, charts, inline=False, templates=templates).encode("utf-8"))
    _write(folder / MARKDOWN_NAME, markdown(report, path).encode("utf-8"))
    return path


def email_parts(
    report: WeeklyReport, charts: dict[str, bytes], templates: Path = TEMPLATES
) -> tuple[str, str, str, list[Attachment]]:
    """Subject, HTML, text and attachments (inline charts, the CSV) of the report e-mail."""
    subject = f"{report.campaign_name}: week ending {report.as_of}: {report.verdict}"
    body = html(report, charts, inline=True, templates=templates)
    attachments = [
        Attachment(f"{name}.png", png, "image/png", content_id(report, name))
        for name, png in charts.items()
    ]
    attachments.append(Attachment(CSV_NAME, at_risk_csv(report).encode("utf-8"), "text/csv"))
    return subject, body, markdown(report), attachments
