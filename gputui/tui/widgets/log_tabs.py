"""The log panes: one tab following the selected task (the attempt `a` chose, else the latest), and
tabs pinned with `enter` that stay while other tasks are browsed."""

from __future__ import annotations

from pathlib import Path

from textual.content import Content
from textual.css.query import NoMatches
from textual.widgets import TabbedContent, TabPane

from gputui.tui.widgets.log_view import LogPane
from gputui.views.runview import TaskView

SELECTED = "log-selected"


def attempt_shown(view: TaskView, chosen: int | None) -> tuple[int, Path | None]:
    """(attempt number, its log) for a task: `chosen` if it has that attempt, else the latest."""
    if not view.history:
        return 0, None
    attempt = next((a for a in view.history if a.number == chosen), view.history[-1])
    return attempt.number, Path(attempt.log_path)


class LogTabs(TabbedContent):
    """Compose it with one `TabPane(id=SELECTED)` holding `LogPane(id="log-selected-pane")`."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._chosen: dict[str, int] = {}  # task -> attempt shown, when not the latest
        self._shown: Path | None = None
        self.task_id: str | None = None  # the task the selected tab follows

    def show(self, view: TaskView) -> None:
        """The selected tab follows `view` (a new attempt's log once it exists); the same log stays as
        scrolled."""
        self.task_id = view.task.id
        number, path = attempt_shown(view, self._chosen.get(view.task.id))
        label = (
            f"log: {view.task.id} #{number}/{len(view.history)}" if path else f"log: {view.task.id} (not started)"
        )
        try:
            tab = self.get_tab(SELECTED)
        except NoMatches:  # not mounted yet: the next refresh labels it
            tab = None
        if tab is not None and str(tab.label) != label:
            tab.label = Content(label)
        try:
            pane = self.query_one("#log-selected-pane", LogPane)
        except NoMatches:  # not mounted yet: the next refresh shows it
            return
        if path != self._shown:
            self._shown = path
            pane.open(path)
        # Every time, not only when the log changes: from one task without a log to another, the path stays None.
        pane.log_view.placeholder = f"{view.task.id} has not started yet: no log" if path is None else ""

    def older(self, view: TaskView) -> None:
        """Show the attempt before the one shown (wrapping to the latest)."""
        number, _ = attempt_shown(view, self._chosen.get(view.task.id))
        numbers = [a.number for a in view.history]
        self._chosen[view.task.id] = numbers[(numbers.index(number) - 1) % len(numbers)]
        self.active = SELECTED
        self.show(view)

    def pin(self, view: TaskView) -> bool:
        """The shown attempt's log in a tab of its own; False when there is no log yet."""
        number, path = attempt_shown(view, self._chosen.get(view.task.id))
        if path is None:
            return False
        pane_id = f"log-{view.task.id}-{number}"
        if not self.query(f"#{pane_id}"):
            self.add_pane(TabPane(Content(f"{view.task.id} #{number}"), LogPane(path), id=pane_id))
        self.active = pane_id
        return True

    @property
    def pinned_active(self) -> bool:
        return bool(self.active) and self.active != SELECTED

    def step(self, by: int) -> None:
        ids = [pane.id for pane in self.query(TabPane)]
        if self.active in ids and len(ids) > 1:
            self.active = ids[(ids.index(self.active) + by) % len(ids)]

    def close_active(self) -> None:
        if self.pinned_active:
            self.remove_pane(self.active)
            self.active = SELECTED

    @property
    def visible(self) -> LogPane | None:
        try:
            active = self.active_pane
        except NoMatches:  # not mounted yet
            return None
        return active.query_one(LogPane) if active is not None and active.query(LogPane) else None
