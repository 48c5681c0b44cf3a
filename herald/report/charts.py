"""The weekly report's charts, as PNG bytes (matplotlib, no screen needed).

- ``adoption``: cumulative share migrated, overall and per segment, against the target line,
  with the recent pace carried forward to the target date;
- ``funnel``: per phase, messages sent, delivered, opened, clicked;
- ``segments``: reach, engagement and migration per segment;
- ``deliverability``: hard-bounce, spam-complaint and unsubscribe rates week by week, with
  their targets.

Every legend sits outside the plotting area, to its right, so it never covers data; a
rehearsal's charts carry its mark. Before the first send there is no chart (nothing to
draw), and a chart with nothing in it is left out.

matplotlib is imported here only, so nothing else pays for it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from herald.report.metrics.results import FUNNEL_PHASES, OTHER_PHASE
from herald.report.weekly import WeeklyReport

CHARTS = ("adoption", "funnel", "segments", "deliverability")
WIDTH, HEIGHT, DPI = 7.2, 3.4, 100  # 720 x 340 px: fits a 760 px e-mail column
COLORS = ("#1f6feb", "#2da44e", "#bf8700", "#8250df", "#cf222e")
PLOT_RIGHT = 0.74  # the plotting area ends here; the legend lives to its right
FUNNEL_TICKS = {
    "preview": "Preview",
    "announcement": "Announcement",
    "deprecation": "Deprecation",
    "sunset": "Sunset notices",
    OTHER_PHASE: "Thank-you &\ndeadline moved",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(ax: Any, **options: Any) -> None:
    """The legend to the right of the plotting area, never over the data."""
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), **options)


def _finish(fig: Any, report: WeeklyReport) -> Any:
    # Fixed margins (the size is fixed): tight_layout costs a fifth of the drawing time.
    fig.subplots_adjust(left=0.09, right=PLOT_RIGHT, top=0.88, bottom=0.2)
    if report.mark:
        fig.text(
            0.99,
            0.97,
            "REHEARSAL: SYNTHETIC DATA",
            ha="right",
            va="top",
            fontsize=8,
            color="#cf222e",
            fontweight="bold",
        )
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def _percent_axis(ax: Any, top: float = 1.0) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_ylim(0, top)
    ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def adoption(report: WeeklyReport) -> Any:
    """The adoption curve against the target line."""
    plt = _pyplot()
    curve = report.adoption
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    ax.plot(curve.days, curve.overall, color=COLORS[0], linewidth=2.2, label="All accounts")
    for index, (segment, values) in enumerate(curve.segments.items()):
        ax.plot(
            curve.days,
            values,
            color=COLORS[(index + 1) % len(COLORS)],
            linewidth=1,
            alpha=0.8,
            label=segment.replace("_", " "),
        )
    line = [(d, v) for d, v in zip(curve.days, curve.target_line, strict=True) if v is not None]
    if line:
        ax.plot(*zip(*line, strict=True), color="#57606a", linestyle="--", label="Target line")
    if curve.projected is not None and curve.target_date is not None and curve.overall:
        ax.plot(
            [curve.days[-1], curve.target_date],
            [curve.overall[-1], curve.projected],
            color=COLORS[0],
            linestyle=":",
            label="Recent pace",
        )
    _percent_axis(ax, top=1.0)
    ax.set_title("Accounts migrated (cumulative)", fontsize=11, loc="left")
    _legend(ax)
    fig.autofmt_xdate()
    return _finish(fig, report)


def funnel(report: WeeklyReport) -> Any:
    """Per phase: sent, delivered, opened, clicked (messages)."""
    plt = _pyplot()
    rows = [row for row in report.metrics.funnel if row.phase in FUNNEL_PHASES and row.sent]
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    stages = ("sent", "delivered", "opened", "clicked")
    width = 0.2
    for index, stage in enumerate(stages):
        positions = [n + (index - 1.5) * width for n in range(len(rows))]
        ax.bar(
            positions,
            [getattr(row, stage) for row in rows],
            width=width,
            color=COLORS[index],
            label=stage,
        )
    ax.set_xticks(range(len(rows)), [FUNNEL_TICKS[row.phase] for row in rows], fontsize=8)
    ax.set_title("Funnel per phase (messages)", fontsize=11, loc="left")
    _legend(ax)
    ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _finish(fig, report)


def segments(report: WeeklyReport) -> Any:
    """Reach, engagement and migration per segment."""
    plt = _pyplot()
    names = [s for s in report.metrics.segments if s != "unsegmented"]
    metrics = (
        ("message_reach", "Reach"),
        ("engagement_rate", "Engagement"),
        ("migration_rate", "Migrated"),
    )
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    width = 0.25
    for index, (metric, label) in enumerate(metrics):
        values = [report.metrics.get(metric, name).value or 0.0 for name in names]
        positions = [n + (index - 1) * width for n in range(len(names))]
        ax.bar(positions, values, width=width, color=COLORS[index], label=label)
    ax.set_xticks(range(len(names)), [name.replace("_", " ") for name in names])
    _percent_axis(ax, top=1.05)
    ax.set_title("By segment", fontsize=11, loc="left")
    _legend(ax)
    return _finish(fig, report)


def deliverability(report: WeeklyReport) -> Any:
    """Hard-bounce, spam-complaint and unsubscribe rates per week, with their targets."""
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    series = (
        ("hard_bounce_rate", "Hard bounces"),
        ("spam_complaint_rate", "Spam complaints"),
        ("unsubscribe_rate", "Unsubscribes"),
    )
    highest = 0.0
    for index, (metric, label) in enumerate(series):
        points = [
            (day, value)
            for day, value in zip(report.trend_weeks, report.trend[metric], strict=True)
            if value is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=COLORS[index], label=label)
            highest = max(highest, *(value for _, value in points))
        target = report.metrics.get(metric).target
        if target is not None:
            ax.axhline(target, color=COLORS[index], linestyle="--", linewidth=0.8, alpha=0.7)
            highest = max(highest, target)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
    ax.set_ylim(0, max(highest * 1.2, 0.001))
    ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Deliverability by week (dashed: targets)", fontsize=11, loc="left")
    _legend(ax)
    fig.autofmt_xdate()
    return _finish(fig, report)


BUILDERS: dict[str, Callable[[WeeklyReport], Any]] = {
    "adoption": adoption,
    "funnel": funnel,
    "segments": segments,
    "deliverability": deliverability,
}


def drawn(report: WeeklyReport) -> list[str]:
    """The charts the report has: none before the first send, and none with nothing in it."""
    if not report.stage.started:
        return []
    names = ["adoption", "funnel", "segments"]
    if any(
        value is not None
        for metric in ("hard_bounce_rate", "spam_complaint_rate", "unsubscribe_rate")
        for value in report.trend[metric]
    ):
        names.append("deliverability")
    return names


def figures(report: WeeklyReport) -> dict[str, Any]:
    """The report's charts as matplotlib figures (the caller closes them)."""
    return {name: BUILDERS[name](report) for name in drawn(report)}


def render_charts(report: WeeklyReport) -> dict[str, bytes]:
    """Every chart of the report: name -> PNG."""
    return {name: _png(figure) for name, figure in figures(report).items()}
