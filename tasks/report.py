"""Weekly report tasks: make it (build, draw, save, publish), send it once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from herald.config import HeraldConfig
from herald.delivery.transports import get_transport
from herald.report import render
from herald.report.delivery import ReportSent, send_report
from herald.report.metrics.results import MetricsResult
from herald.report.weekly import WeeklyReport, build_report
from herald.settings import get_settings
from tasks.common import database

ARTIFACT_KEY = "weekly-report"


def reports_dir() -> Path:
    """Where reports are saved: ``var/reports/``."""
    return get_settings().var_dir / "reports"


@dataclass(frozen=True)
class MadeReport:
    """A report built, drawn, saved and published."""

    report: WeeklyReport
    charts: dict[str, bytes]
    saved: Path


@task(name="make-weekly-report", cache_policy=NO_CACHE)
def make_report_task(
    config: HeraldConfig, result: MetricsResult, rehearsal: bool = False
) -> MadeReport:
    """Build it (verdict, stage, summary against last week, trend, adoption curve, at-risk
    list, escalations, case-study candidates), draw its charts, save it under
    var/reports/<date>/ and publish it as an artifact (charts inline, or linked under
    ``report.base_url``)."""
    from herald.report.charts import render_charts

    settings = get_settings()
    report = build_report(database(), config=config, result=result, rehearsal=rehearsal)
    charts = render_charts(report)
    saved = render.save(report, charts, reports_dir(), settings.templates_dir)
    base_url = config.campaign.report.base_url
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=render.artifact_markdown(
            report, charts, None if base_url is None else str(base_url)
        ),
        description=(
            f"{'Rehearsal: ' if report.mark else ''}Weekly report of {report.campaign_id}, "
            f"week ending {report.as_of}: {report.verdict}"
        ),
    )
    return MadeReport(report, charts, saved)


@task(name="send-weekly-report", cache_policy=NO_CACHE)
def send_report_task(
    config: HeraldConfig, report: WeeklyReport, charts: dict[str, bytes], saved: Path
) -> ReportSent:
    """Send it to the leadership list through the configured transport, once per address."""
    settings = get_settings()
    return send_report(
        database(),
        config,
        get_transport(settings, config),
        report,
        charts,
        saved,
        settings.templates_dir,
    )
