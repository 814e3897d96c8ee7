"""The floor: a bare Textual app that updates one label per second."""

import time

from textual.app import App, ComposeResult
from textual.widgets import Label


class Bare(App):
    def compose(self) -> ComposeResult:
        yield Label(id="clock")

    def on_mount(self) -> None:
        self.set_interval(1.0, lambda: self.query_one(Label).update(time.strftime("%H:%M:%S")))


if __name__ == "__main__":
    Bare().run()
