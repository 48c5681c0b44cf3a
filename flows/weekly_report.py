"""Flow: the weekly leadership report (scheduled Mondays 08:00 in the campaign's time zone).

It computes the success metrics as of the day (refusing, like the ``metrics`` flow, while a
telemetry source they depend on has a rejected last batch) and snapshots them, builds the
report (executive summary against last week, adoption curve, funnel, segments,
deliverability trend, at-risk list), saves it under ``var/reports/<date>/``, publishes the
digest as a Prefect markdown artifact and, with ``send``, sends it once to each address on
the leadership list (``campaign.yaml`` ``report.leadership``). Without ``send`` it is a dry
run: everything is saved and published, nothing is sent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.run_names import named
from flows.status import STATUS_HOOKS
from herald.config import HeraldConfig
from herald.report.delivery import ReportSent
from tasks.common import as_is, preflight
from tasks.metrics import compute_metrics_task, snapshot_metrics_task
from tasks.report import make_report_task, send_report_task


class ReportSummary(BaseModel):
    """What a weekly report run produced."""

    as_of: date
    path: Path
    verdict: str
    statuses: dict[str, int]
    weeks_of_trend: int
    at_risk: int
    dry_run: bool
    sent: ReportSent | None = None


@flow(
    name="weekly-report",
    flow_run_name=named("weekly-report", yesterday=True),
    on_completion=STATUS_HOOKS,
    on_failure=STATUS_HOOKS,
)
def weekly_report(
    as_of: date | None = None,
    send: bool = False,
) -> ReportSummary:
    """Compute, snapshot, build, draw, save, publish and (with ``send``) send the report.

    Args:
        as_of: Last day the report covers (default: yesterday, the last whole day, UTC).
        send: Send it to leadership; else only save it.
    """
    as_of = as_of or datetime.now(UTC).date() - timedelta(days=1)
    return produce_report(preflight("weekly-report"), as_of, send=send)


def produce_report(
    config: HeraldConfig, as_of: date, *, send: bool, rehearsal: bool = False
) -> ReportSummary:
    """The report's tasks, in the calling flow run (the rehearsal calls this every week,
    with ``rehearsal``: every page, chart and subject says so)."""
    logger = get_run_logger()
    result = compute_metrics_task(config, as_of)  # refuses on a rejected telemetry source
    snapshot_metrics_task(as_is(result))
    made = make_report_task(config, as_is(result), rehearsal)
    report, saved = made.report, made.saved
    summary = ReportSummary(
        as_of=as_of,
        path=saved,
        verdict=report.verdict,
        statuses=report.counts(),
        weeks_of_trend=report.weeks_of_trend,
        at_risk=len(report.at_risk),
        dry_run=not send,
    )
    if send:
        summary.sent = send_report_task(config, as_is(report), as_is(made.charts), saved)
        logger.info(f"Report: {summary.sent.describe()}")
    else:
        logger.info(
            f"Dry run: saved, not sent ({len(config.campaign.report.leadership)} leadership "
            "address(es) would get it with send)."
        )
    logger.info(
        f"Weekly report as of {as_of}: {report.verdict}; {len(report.at_risk)} at-risk "
        f"account(s); saved to {saved}"
    )
    return summary


if __name__ == "__main__":
    weekly_report()
