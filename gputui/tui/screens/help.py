"""`?`: gputui's own help: what each key does in the current mode, and what the views mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from gputui.tui import glyphs, modes
from gputui.tui.widgets.job_rows import FILTERS

NOTES = {
    modes.MONITOR: "Every GPU process is listed; ● marks a gputui run's own. k ends a process of yours (asks "
    "first; pid and start time checked again); other users' processes are never signalled, not even by root.",
    modes.BEFORE: "Nothing runs yet: l starts the job's scheduler in the background.",
    modes.LIVE: "The scheduler runs in the background: quitting (q, then d) leaves the run going.",
    modes.FINISHED: "No scheduler is running: l starts it again for pending (and, if you say so, failed) tasks.",
    modes.READONLY: "Read-only: nothing is written and nothing can be signalled; q quits.",
}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False, expand=True)
        table.add_column("key", style="bold", no_wrap=True, width=7)
        table.add_column("what it does", ratio=1)
        for key in modes.keys_for(self.mode):
            table.add_row(key.key, key.does)
        with Vertical(classes="dialog wide help"):
            yield Label(f"gputui keys ({self.mode})", classes="dialog-title")
            with VerticalScroll():
                yield Static(Text(glyphs.plain(NOTES[self.mode])), classes="help-note")
                yield Static(table)
                if self.mode in modes.RUN_MODES:
                    yield Static(
                        Text(
                            f"v shows {', '.join(FILTERS)} tasks (active: running, paused or retrying; failed: "
                            "failed, killed or retrying). K asks before it signals, naming every process; "
                            "only processes of this run (pid and start time checked) are ever signalled."
                        ),
                        classes="help-note",
                    )
            yield Label("esc close", classes="dialog-keys", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
