"""Weekly report tasks: build it, draw its charts, save it, publish it, send it once."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from herald.config import HeraldConfig
from herald.metrics import MetricsResult
from herald.report import render
from herald.report.delivery import ReportSent, send_report
from herald.report.weekly import WeeklyReport, build_report
from herald.settings import get_settings
from herald.transports import get_transport
from tasks.common import database

ARTIFACT_KEY = "weekly-report"


def reports_dir() -> Path:
    """Where reports are saved: ``var/reports/``."""
    return get_settings().var_dir / "reports"


@task(name="build-weekly-report", cache_policy=NO_CACHE)
def build_report_task(config: HeraldConfig, result: MetricsResult) -> WeeklyReport:
    """Summary, trend (snapshotting any missing week), adoption curve and at-risk list."""
    return build_report(database(), config, result)


@task(name="draw-report-charts", cache_policy=NO_CACHE)
def charts_task(report: WeeklyReport) -> dict[str, bytes]:
    """The four charts as PNG."""
    from herald.report.charts import render_charts

    return render_charts(report)


@task(name="save-weekly-report", cache_policy=NO_CACHE)
def save_report_task(report: WeeklyReport, charts: dict[str, bytes]) -> Path:
    """Write the HTML, charts, CSV and digest under var/reports/<date>/."""
    return render.save(report, charts, reports_dir(), get_settings().templates_dir)


@task(name="publish-weekly-report", cache_policy=NO_CACHE)
def publish_report_task(report: WeeklyReport, saved: Path) -> str:
    """The digest (no e-mail addresses) as a Prefect markdown artifact."""
    text = render.markdown(report, saved)
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=text,
        description=f"Weekly report of {report.campaign_id}, week ending {report.as_of}",
    )
    return text


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
