"""How the metrics are printed: values, targets, and the Markdown summary (the flow's
artifact); the terminal and the weekly report print them the same way."""

from __future__ import annotations

from herald.report.metrics.results import MetricsResult, MetricValue

PER_100 = "support_utilization"


def display(metric: str, value: float | None) -> str:
    """A value as the report prints it: shares as percentages, rates per 100 as numbers."""
    if value is None:
        return "-"
    if metric.startswith(PER_100):
        return unsigned_zero(f"{value:.1f}")
    return unsigned_zero(f"{100 * value:.1f}") + "%"


def unsigned_zero(text: str) -> str:
    """'-0.0' (a tiny negative rounded away) as '0.0': a zero has no sign."""
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def target_text(value: MetricValue) -> str:
    """The target as the report prints it, e.g. '>= 70% (line now 23.3%)' (a dated target
    still on its way), '>= 100% (tol. 2 pts)' or '< 0.1% (limit 0.3%)'."""
    if value.target is None or value.comparison is None:
        return "-"
    text = f"{value.comparison} {_target_display(value.metric, value.target)}"
    if value.tolerance:
        text += f" (tol. {_points(value.tolerance)} pts)"
    if value.limit is not None:
        text += f" (limit {_target_display(value.metric, value.limit)})"
    if value.line is not None and 0 < value.line < value.target:
        text += f" (line now {display(value.metric, value.line)})"
    return text


def _points(share: float) -> str:
    return f"{round(100 * share, 4):g}"


def ratio_text(value: MetricValue) -> str:
    """The numerator and denominator, e.g. '12 / 40' ('' for a value that is no ratio)."""
    if value.numerator is None or value.denominator is None:
        return ""
    return f"{value.numerator} / {value.denominator}"


def _target_display(metric: str, target: float) -> str:
    if metric.startswith(PER_100):
        return f"{target:g}"
    return f"{round(100 * target, 4):g}%"


def markdown(result: MetricsResult) -> str:
    """The overall values against their targets, the funnel and the definitions, as Markdown."""
    segmented = (
        f"segments as of {result.segmented_on}" if result.segmented_on else "no segmentation"
    )
    lines = [
        f"# Success metrics as of {result.as_of}",
        "",
        f"Campaign `{result.campaign}`; data up to the end of {result.as_of} (UTC); {segmented}.",
        "",
        "| metric | value | target | status | numerator / denominator |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for value in result.overall():
        lines.append(
            f"| {value.metric} | {display(value.metric, value.value)} | "
            f"{target_text(value)} | {value.status} | {ratio_text(value)} |"
        )
    lines += [
        "",
        "## Funnel",
        "",
        "| phase | sent | delivered | opened | clicked | migrated accounts |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result.funnel:
        lines.append(
            f"| {row.phase} | {row.sent} | {row.delivered} | {row.opened} | {row.clicked} | "
            f"{row.migrated_accounts} |"
        )
    lines += [
        "",
        "## Definitions",
        "",
        f"**Engagement rate.** {result.definitions['engagement_rate']}",
        "",
    ]
    lines += [
        f"- **{name}**: {text}"
        for name, text in result.definitions.items()
        if name != "engagement_rate"
    ]
    return "\n".join(lines) + "\n"
