"""Confirmations that name what will be signalled, and the quit dialog (detach or stop)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """`y` confirms, `n` or escape cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.body, classes="dialog-body", markup=False)
            yield Label("[b]y[/b] confirm    [b]n[/b] / [b]esc[/b] cancel", classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class QuitScreen(ModalScreen[str | None]):
    """Detach (the run goes on in the background), stop our tasks and quit, or cancel."""

    BINDINGS = [
        Binding("d", "answer('detach')", "Detach"),
        Binding("s", "answer('stop')", "Stop tasks and quit"),
        Binding("escape", "answer(None)", "Cancel"),
        Binding("q", "answer('detach')", "Detach", show=False),
    ]

    def __init__(self, running: int, can_stop: bool, run_dir: str = "DIR") -> None:
        super().__init__()
        self.running, self.can_stop, self.run_dir = running, can_stop, run_dir

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Quit gputui?", classes="dialog-title")
            body = (
                f"{self.running} task(s) are running. Detaching leaves them running in the background; "
                f"`gputui --run-dir {self.run_dir}` re-attaches."
            )
            yield Static(body, classes="dialog-body", markup=False)
            keys = "[b]d[/b] detach" + ("    [b]s[/b] stop our tasks and quit" if self.can_stop else "")
            yield Label(keys + "    [b]esc[/b] cancel", classes="dialog-keys")

    def action_answer(self, choice: str | None) -> None:
        if choice == "stop" and not self.can_stop:
            return
        self.dismiss(choice)


class ChoiceScreen(ModalScreen[str | None]):
    """A question with a few answers, each on its own key; `esc` cancels."""

    BINDINGS = [Binding("escape", "answer(None)", "Cancel")]

    def __init__(self, title: str, body: str, choices: list[tuple[str, str, str]]) -> None:
        """`choices`: (key, value returned, what it does)."""
        super().__init__()
        self.title_text, self.body, self.choices = title, body, choices
        for key, value, text in choices:
            self._bindings.bind(key, f"answer({value!r})", text)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.body, classes="dialog-body", markup=False)
            # A line per answer: side by side, long answers pushed `esc cancel` out of the dialog's width.
            width = max(len(key) for key, _, _ in [*self.choices, ("esc", "", "")])
            keys = [f"{key:<{width}}  {text}" for key, _, text in [*self.choices, ("esc", None, "cancel")]]
            yield Static("\n".join(keys), classes="dialog-keys", markup=False)

    def action_answer(self, choice: str | None) -> None:
        self.dismiss(choice)
