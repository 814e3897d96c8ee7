"""The selected task's metrics over steps: one row per metric reported through `gputui.hooks`, its name and
latest value, a sparkline of its series and its least and most values. Given `MetricSeries` values (read
off the event loop by the run view); a row's sparkline is redrawn only when its series changed."""

from __future__ import annotations

import math
from statistics import fmean

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Sparkline, Static

from gputui.tui import glyphs
from gputui.tui.widgets.job_rows import number
from gputui.views.runview import MetricSeries


def metrics_text(metrics: dict[str, float], first: str | None = None, limit: int = 4) -> str:
    """'val_acc 0.93 · loss 0.41': the latest values, `first` (the ranked metric) leading."""
    names = sorted(metrics, key=lambda n: n != first)[:limit]
    more = f"{glyphs.now().sep}+{len(metrics) - limit}" if len(metrics) > limit else ""
    return glyphs.now().sep.join(f"{n} {number(metrics[n])}" for n in names) + more


class MetricRow(Vertical):
    """One metric: a line 'loss 0.412 … min … max …', and under it its sparkline across the chart's whole width
    (each cell the mean of the steps it covers), so a narrow chart pane still draws the series. A series that
    never changed is one flat line: its sparkline takes one row, right under its name."""

    DEFAULT_CSS = """
    MetricRow { height: 1fr; min-height: 2; max-height: 5; }
    MetricRow.-flat { max-height: 2; }
    MetricRow > .metric-head { height: 1; }
    MetricRow .metric-name { width: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    MetricRow .metric-range { width: auto; padding: 0 1; color: $foreground-muted; text-wrap: nowrap; }
    MetricRow > Sparkline { width: 1fr; height: 1fr; margin: 0 1; }
    """

    def __init__(self, name: str) -> None:
        super().__init__(classes="metric-row")
        self.metric = name
        self._label = Static(classes="metric-name", markup=False)
        self._line = Sparkline([], summary_function=fmean)  # a cell covering many steps: their mean
        self._range = Static(classes="metric-range", markup=False)
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="metric-head"):
            yield self._label
            yield self._range
        yield self._line

    def show(self, points: tuple[float, ...], last: float | None, low: float | None, high: float | None) -> None:
        key = (len(points), points[-1:] if points else (), last, low, high)
        if key == self._shown:
            return
        self._shown = key
        label = Text(no_wrap=True, overflow="ellipsis", end="")
        label.append(self.metric, "bold")
        label.append(" " + ("-" if last is None else number(last)))
        self._label.update(label)
        self._line.data = list(points)
        self.set_class(len(points) > 1 and min(points) == max(points), "-flat")
        span = "" if low is None or high is None else f"min {number(low)}  max {number(high)}"
        self._range.update(span)

    def text(self) -> str:
        """What the row says besides its sparkline (for tests and the screen reader in us)."""
        return f"{self._label.render()} {self._range.render()}"


class MetricsChart(Vertical):
    """Under a title line like the log tabs' ('metrics: task1-0 #1 · step 120'), a row per metric, or a
    line saying why there is none ('no metrics reported yet')."""

    DEFAULT_CSS = """
    MetricsChart { height: 1fr; background: $surface; }
    MetricsChart > .chart-title { height: 1; padding: 0 1; background: $panel; text-wrap: nowrap;
        text-overflow: ellipsis; }
    MetricsChart > VerticalScroll { height: 1fr; }
    MetricsChart > .chart-empty { padding: 0 1; color: $foreground-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.task_id: str | None = None
        self.series: MetricSeries | None = None
        self._rows: dict[str, MetricRow] = {}
        self._title = Static("metrics", classes="chart-title", markup=False)
        self._empty = Static("", classes="chart-empty", markup=False)
        self._scroll = VerticalScroll()

    def compose(self) -> ComposeResult:
        yield self._title
        yield self._empty
        yield self._scroll

    @property
    def names(self) -> list[str]:
        return list(self._rows)

    def row(self, name: str) -> MetricRow:
        return self._rows[name]

    @property
    def message(self) -> str:
        """What the chart says instead of rows ('' when it has rows)."""
        return str(self._empty.render()) if self._empty.display else ""

    def show(
        self, task_id: str | None, series: MetricSeries | None, *, started: bool = True, first: str | None = None
    ) -> None:
        """Chart `series` for `task_id` (None: not read yet); `started`: whether the task has an attempt;
        `first`: the metric charted first (what a sweep ranks by)."""
        if series is not None and series.task_id != task_id:
            series = None  # read for another task: the selection moved on since
        if series is self.series and task_id == self.task_id and series is not None:
            return  # the run view hands the same value until new events are read
        self.task_id, self.series = task_id, series
        title = "metrics" if task_id is None else f"metrics: {task_id}"
        if series is not None:
            title += f" #{series.attempt}"
            if series.step is not None:
                title += f"{glyphs.now().sep}step {series.step}"
        self._title.update(title)
        if series is None or series.empty:
            if task_id is None:
                why = "no task selected"
            elif not started:
                why = f"{task_id} has not started yet: no metrics"
            elif series is None:
                why = f"reading{glyphs.now().ellipsis}"
            else:
                why = "no metrics reported yet"
            self._empty.update(why)
            self._empty.display = True
            self._set_rows([])
            return
        self._empty.display = False
        names = list(series.last) + [n for n in series.points if n not in series.last]
        names.sort(key=lambda n: n != first)
        self._set_rows(names)
        for name in names:
            self._rows[name].show(
                series.points.get(name, ()),
                series.last.get(name),
                _finite(series.low.get(name)),
                _finite(series.high.get(name)),
            )

    def _set_rows(self, names: list[str]) -> None:
        if names == list(self._rows):
            return
        for name in [n for n in self._rows if n not in names]:
            self._rows.pop(name).remove()
        new = [MetricRow(n) for n in names if n not in self._rows]
        for row in new:
            self._rows[row.metric] = row
        if new:
            self._scroll.mount_all(new)
        if list(self._rows) != names:  # reordered: rows follow the series' order
            self._rows = {n: self._rows[n] for n in names}
            self._scroll.sort_children(key=lambda w: names.index(w.metric) if isinstance(w, MetricRow) else 0)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
