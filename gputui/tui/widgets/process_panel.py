"""The monitor's process panel: its title (the filter in force), the process list, the filter's input (`/`),
and ending a process (`k`) by the one rule in `gputui.views.processes`: only the user's own, after a
confirmation naming pid, user and command, pid, start time and uid read again just before the signal.

Reading a process (/proc) and signalling it run in thread workers, never on the event loop.
"""

from __future__ import annotations

import signal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from gputui import api
from gputui.tui import glyphs
from gputui.tui.screens.dialogs import ChoiceScreen
from gputui.tui.widgets.process_list import ProcessList, ProcessRow
from gputui.views.processes import ProcessFilter, Target, end_process, read_target, refusal

SIGNALS = (  # (key, signal, what it is): nvitop's three
    ("i", signal.SIGINT, "SIGINT (as Ctrl-C)"),
    ("t", signal.SIGTERM, "SIGTERM"),
    ("K", signal.SIGKILL, "SIGKILL"),
)
THROUGH_RUN = "run"


class ProcessPanel(Vertical):
    """Title line (shown while a filter narrows the list), the list, and the filter input under it."""

    DEFAULT_CSS = """
    ProcessPanel { height: 1fr; }
    ProcessPanel > #process-title { height: 1; padding: 0 1; background: $panel; color: $text-accent;
        text-wrap: nowrap; text-overflow: ellipsis; display: none; }
    ProcessPanel > #process-title.-shown { display: block; }
    ProcessPanel > #process-filter { height: 1; border: none; padding: 0 1; display: none; }
    ProcessPanel > #process-filter.-shown { display: block; }
    ProcessPanel > #process-filter.-invalid { color: $error; }
    """
    BINDINGS = [Binding("escape", "close_filter", "Clear filter", show=False)]

    def __init__(
        self,
        *,
        only: frozenset[int] = frozenset(),
        filter: ProcessFilter | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.only = only
        self.initial = filter or ProcessFilter()
        self._counts = (0, 0)

    def compose(self) -> ComposeResult:
        yield Static(id="process-title", markup=False)
        yield ProcessList(id="processes", only=self.only)
        yield Input(placeholder="user:NAME gpu:N pid:N or words of the command", id="process-filter")

    def on_mount(self) -> None:
        self.list = self.query_one(ProcessList)
        self.input = self.query_one("#process-filter", Input)
        self.list.filter = self.initial
        self.watch(self.list, "filter", self._show_title)

    # -- the filter ----------------------------------------------------------------------------------------
    def title_text(self) -> str:
        """'processes: gpu:0,1 user:alice (3 of 12) | / edit | esc clear', or '' with no filter."""
        words = []
        if self.only:
            words.append("only GPUs " + ",".join(map(str, sorted(self.only))))
        if self.list.filter:
            words.append(self.list.filter.text())
        if not words:
            return ""
        shown, total = self._counts
        sep = glyphs.now().sep
        keys = f"{sep}/ edit{sep}esc clear" if self.list.filter else ""
        return f"processes: {'; '.join(words)} ({shown} of {total}){keys}"

    def _show_title(self) -> None:
        title = self.query_one("#process-title", Static)
        text = self.title_text()
        title.set_class(bool(text), "-shown")
        title.update(text)

    @on(ProcessList.Filtered)
    def _on_filtered(self, msg: ProcessList.Filtered) -> None:
        self._counts = (msg.shown, msg.total)
        self._show_title()

    @on(ProcessList.FilterWanted)
    def _edit_filter(self) -> None:
        self.input.value = self.list.filter.text()
        self.input.add_class("-shown")
        self.input.focus()

    @on(Input.Changed, "#process-filter")
    def _on_typed(self, event: Input.Changed) -> None:
        """The list narrows as the filter is typed; a half-typed key (`gpu:x`) leaves it as it was."""
        try:
            wanted = ProcessFilter.parse(event.value)
        except ValueError as e:
            self.input.add_class("-invalid")
            self.input.tooltip = str(e)
            return
        self.input.remove_class("-invalid")
        self.input.tooltip = None
        self.list.filter = wanted

    @on(Input.Submitted, "#process-filter")
    def _on_submitted(self, event: Input.Submitted) -> None:
        try:
            ProcessFilter.parse(event.value)
        except ValueError as e:
            self.app.notify(str(e), severity="warning", markup=False)
            return
        self._close_input()

    def action_close_filter(self) -> None:
        """esc in the filter's input: the filter cleared and the input closed."""
        if self.input.has_focus:
            self.list.filter = ProcessFilter()
            self._close_input()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_filter":
            return self.input.has_focus  # else esc goes on (the list clears its filter, the app goes back)
        return True

    def _close_input(self) -> None:
        self.input.remove_class("-shown", "-invalid")
        self.list.focus()

    # -- ending a process ----------------------------------------------------------------------------------
    @on(ProcessList.EndWanted)
    def _on_end_wanted(self, msg: ProcessList.EndWanted) -> None:
        self._read(msg.row)

    @work(thread=True, group="end-process", exit_on_error=False)
    def _read(self, row: ProcessRow) -> None:
        target = read_target(row.pid)
        self.app.call_from_thread(self._confirm, row, target)

    def _confirm(self, row: ProcessRow, target: Target | None) -> None:
        if target is None:
            self.app.notify(f"pid {row.pid} has ended: nothing to signal", markup=False)
            return
        why = refusal(target)
        if why is not None:
            self.app.notify(why, severity="warning", markup=False, timeout=10)
            return
        self.app.push_screen(confirmation(row, target), lambda choice: self._answered(target, choice))

    def _answered(self, target: Target, choice: str | None) -> None:
        if choice == THROUGH_RUN:
            self._kill_through_run(target)
        elif choice is not None:
            self._signal(target, signal.Signals[choice])

    @work(thread=True, group="end-process", exit_on_error=False)
    def _signal(self, target: Target, sig: signal.Signals) -> None:
        said = end_process(target, sig)
        severity = "information" if said.startswith(sig.name) else "warning"
        self.app.call_from_thread(self.app.notify, said, severity=severity, markup=False)

    @work(thread=True, group="end-process", exit_on_error=False)
    def _kill_through_run(self, target: Target) -> None:
        """`gputui kill --run-dir DIR TASK`, once the run there is the one whose tag the worker carries."""
        assert target.run_dir is not None and target.task_id is not None
        try:
            with api.open_run(target.run_dir) as run:
                if run.status().scheduler_id != target.scheduler:
                    said = f"{target.run_dir} is not the run pid {target.ref.pid} is of: nothing was sent"
                else:
                    said = run.kill([target.task_id]).report
        except Exception as e:  # no such run, unreadable: said, never raised into the app
            said = f"cannot ask run {target.run_dir}: {e}"
        self.app.call_from_thread(self.app.notify, said, markup=False, timeout=10)


def confirmation(row: ProcessRow, target: Target) -> ChoiceScreen:
    """The question, naming pid, user and command (and the run a gputui worker is of)."""
    body = [f"pid {target.ref.pid}, user {target.user}", f"command: {target.command}"]
    choices = [(key, sig.name, what) for key, sig, what in SIGNALS]
    if target.run is not None:
        body.append(f"It is {target.run}: better ended through its run, which then records it as killed.")
        if target.run_dir and target.task_id:
            body.append(f"(gputui kill --run-dir {target.run_dir} {target.task_id})")
            choices.insert(0, ("r", THROUGH_RUN, "kill the task through its run"))
    elif row.ours:
        body.append(f"It is gputui's own (task {row.task_id}): better ended through its run (gputui kill).")
    return ChoiceScreen(f"End pid {target.ref.pid}?", "\n".join(body), choices)
