"""The job modes' main area: the job table, the task bar, and under them the selected task's log and its
metrics chart. `c` (declared here: it acts from the table and from the log alike) shows the chart beside
the log from `SIDE_BY_SIDE_FROM` cells, instead of the log when narrower, or hides it again.

Until `c` is pressed, a sweep's chart shows where it fits beside the log (a narrow terminal keeps the log)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive

from gputui.tui import modes

SIDE_BY_SIDE_FROM = 120  # cells: the chart beside the log, else instead of it


class RunArea(Vertical):
    """Compose it with the table, the task bar and `#lower` (the log tabs and the `MetricsChart`); the
    classes it sets (-chart, -narrow) lay them out (app.tcss)."""

    BINDINGS = [Binding("c", "toggle_chart", "Chart")]

    chart_shown: reactive[bool] = reactive(False, init=False)
    can_chart: reactive[bool] = reactive(False, init=False)  # something to chart: trials, steps, metrics seen

    @dataclass
    class ChartToggled(Message):
        shown: bool

    def __init__(self, *children, id: str | None = None) -> None:
        super().__init__(*children, id=id)
        self.chosen: bool | None = None  # what `c` last chose; None: the default holds
        self._by_default = False

    def offer(self, can_chart: bool, *, by_default: bool) -> None:
        """Whether there is something to chart; `by_default`: show it beside the log (where it fits) unless
        the user said otherwise."""
        self.can_chart = can_chart or self.can_chart
        self._by_default = by_default or self._by_default
        self._apply()

    def _apply(self) -> None:
        self.chart_shown = self.chosen if self.chosen is not None else self._by_default and not self.narrow

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    @property
    def log_shown(self) -> bool:
        return not (self.chart_shown and self.narrow)

    def on_resize(self, event: events.Resize) -> None:
        if self.narrow != (event.size.width < SIDE_BY_SIDE_FROM):
            self.set_class(event.size.width < SIDE_BY_SIDE_FROM, "-narrow")
            self._apply()
            self.refresh_bindings()

    def action_toggle_chart(self) -> None:
        self.chosen = not self.chart_shown
        self._apply()

    def watch_chart_shown(self, shown: bool) -> None:
        self.set_class(shown, "-chart")
        self.refresh_bindings()
        self.post_message(self.ChartToggled(shown))

    def watch_can_chart(self) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "toggle_chart":
            return True
        mode = getattr(self.app, "mode", modes.LIVE)
        return modes.acts(action, mode) and (self.chart_shown or self.can_chart)
