"""The report's charts: every legend outside the plotted data, judged from matplotlib's own
layout (the drawn extents of the legend, the axes and every line, bar and marker); a
rehearsal's charts carry its mark; no chart before the first send.

Built on the hand-built campaign of the metrics tests (``tests.support.metrics``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from herald.report.charts import drawn, figures
from herald.report.metrics.compute import compute_metrics
from herald.report.stage import NOT_STARTED, Stage
from herald.report.weekly import WeeklyReport, build_report
from tests.support.bases import config
from tests.support.environment import Database
from tests.support.metrics import AS_OF, build

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


@pytest.fixture
def report(db: Database) -> WeeklyReport:
    build(db.engine)
    loaded = config()
    result = compute_metrics(db.engine, config=loaded, as_of=AS_OF)
    return build_report(db.engine, config=loaded, result=result)


def _data_extents(ax: Any, renderer: Any) -> list[Any]:
    """The display-space boxes of everything plotted in ``ax``: each bar, and each point of
    each line (a line's segments run between its points inside the axes)."""
    from matplotlib.transforms import Bbox

    boxes = [patch.get_window_extent(renderer) for patch in ax.patches]
    for line in ax.get_lines():
        points = ax.transData.transform(line.get_xydata())
        boxes += [Bbox.from_extents(x - 3, y - 3, x + 3, y + 3) for x, y in points]
    return boxes


def test_no_legend_overlaps_the_plotted_data(report: WeeklyReport) -> None:
    import matplotlib.pyplot as plt

    drawn_figures = figures(report)
    assert sorted(drawn_figures) == ["adoption", "deliverability", "funnel", "segments"]
    try:
        for name, figure in drawn_figures.items():
            figure.canvas.draw()
            renderer = figure.canvas.get_renderer()
            (ax,) = figure.axes
            legend = ax.get_legend()
            assert legend is not None, name
            box = legend.get_window_extent(renderer)
            plotted = _data_extents(ax, renderer)
            assert plotted, f"{name}: nothing plotted"
            assert not any(box.overlaps(data) for data in plotted), name
            # Stronger: the legend lies wholly outside the plotting area.
            assert not box.overlaps(ax.get_window_extent(renderer)), name
            # And inside the image, where a reader sees it.
            assert box.x1 <= figure.bbox.x1 and box.y0 >= figure.bbox.y0, name
    finally:
        plt.close("all")


def test_a_rehearsal_chart_says_so_and_a_real_one_does_not(report: WeeklyReport) -> None:
    import matplotlib.pyplot as plt

    try:
        real = figures(report)["adoption"]
        marked = figures(replace(report, mark="Rehearsal: synthetic data"))["adoption"]
        texts = [t.get_text() for t in marked.texts]
        assert "REHEARSAL: SYNTHETIC DATA" in texts
        assert not any("REHEARSAL" in t.get_text() for t in real.texts)
    finally:
        plt.close("all")


def test_no_chart_before_the_first_send(report: WeeklyReport) -> None:
    assert drawn(replace(report, stage=Stage(NOT_STARTED, None))) == []
