"""One line between the table and the logs: the table's view (filter, sort) and the selected task's
state in words (attempt, exit, energy, reason), so a narrow terminal loses no fact the wide table shows."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from gputui.jobs.tasks import TaskRecord
from gputui.text_safety import one_line
from gputui.tui import glyphs
from gputui.tui.widgets.job_rows import params_text
from gputui.tui.widgets.metrics_chart import metrics_text
from gputui.views.kinds import task_columns
from gputui.views.runview import TaskView
from gputui.views.status_view import STATUS_STYLE, task_energy_text


def task_bar_text(
    view: TaskView | None,
    *,
    filter_by: str,
    sort_by: str,
    follow: bool | None,
    metrics: dict[str, float] | None = None,
    metric: str | None = None,
    tagged: int = 0,
) -> Text:
    """`metrics`: the task's latest reported values (`metric`, the ranked one, first); `tagged`: rows tagged."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(f"view {filter_by}{glyphs.now().sep}sort {sort_by}", "dim")
    if follow is not None:
        text.append(f"{glyphs.now().sep}follow {'on' if follow else 'off'}", "dim")
    if tagged:
        text.append(glyphs.now().sep, "dim")
        text.append(f"{tagged} tagged", "bold")
    if view is None:
        return text
    t = view.task
    text.append(f"  {glyphs.now().divider}  ")
    text.append(t.id, "bold")
    text.append(" ")
    text.append(t.status, STATUS_STYLE.get(t.status, ""))
    if metrics:
        text.append(glyphs.now().sep)
        text.append(one_line(metrics_text(metrics, metric)), "bold")  # names a worker chose
    if words := kind_words(t, task_columns(t.kind).bar):
        text.append(glyphs.now().sep + words)
    if t.attempts:
        text.append(f"{glyphs.now().sep}attempt {t.attempts}/{t.budget}")
    if t.exit_code is not None:
        text.append(f"{glyphs.now().sep}exit {t.exit_code}")
    if energy := task_energy_text(t):  # the table has no room for it: GPU-hours and peak memory come first
        text.append(glyphs.now().sep + energy)
    if t.reason:
        text.append(glyphs.now().sep + one_line(t.reason))
    return text


def kind_words(t: TaskRecord, bar: Sequence[str]) -> str:
    """What the task bar says of a task as its kind lists it (`bar`): a trial's parameters and parent, a step's
    waits."""
    parent = t.info.get("parent_id")
    words = {
        "params": params_text(t.info.get("params") or {}),
        "parent": f"{glyphs.now().parent} {parent}" if parent else "",
        "after": f"after {', '.join(t.after)}" if t.after else "",
    }
    return " ".join(words[column] for column in bar if words.get(column))


class TaskBar(Static):
    DEFAULT_CSS = """
    TaskBar { height: 1; padding: 0 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self._shown = ""

    def show(self, text: Text) -> None:
        if text.markup != self._shown:
            self._shown = text.markup
            self.update(text, layout=False)
