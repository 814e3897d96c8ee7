"""The menu (`m`): merge, write summaries, and read their results without leaving the app."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option

MENU = (
    ("merge", "Merge shard outputs (coverage-checked)"),
    ("summary", "Write summary.json and report.md"),
    ("view-merge", "View merge_summary.json"),
    ("view-report", "View report.md"),
)


VIEW_ONLY = ("view-merge", "view-report")


class MenuScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss_none", "Close"), Binding("m", "dismiss_none", "Close", show=False)]

    def __init__(self, *, readonly: bool = False) -> None:
        super().__init__()
        self.items = [(k, t) for k, t in MENU if not readonly or k in VIEW_ONLY]  # read-only writes nothing

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Menu", classes="dialog-title")
            yield OptionList(*(Option(text, id=key) for key, text in self.items), id="menu-options")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class FileScreen(ModalScreen[None]):
    """A file shown in the app: Markdown rendered, anything else as plain text."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", "Close", show=False)]

    def __init__(self, path: Path, missing: str = "") -> None:
        """`missing`: what to say when the file does not exist yet (e.g. which menu item writes it)."""
        super().__init__()
        self.path, self.missing = path, missing

    def compose(self) -> ComposeResult:
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            text = f"{self.path.name} does not exist yet. {self.missing}".strip()
        except OSError as e:
            text = f"cannot read {self.path}: {e}"
        with Vertical(classes="dialog wide"):
            yield Label(str(self.path), classes="dialog-title", markup=False)
            with VerticalScroll():
                if self.path.suffix == ".md" and self.path.exists():
                    yield Markdown(text)
                else:
                    yield Static(text, markup=False)
            yield Label("[b]esc[/b] close", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)
