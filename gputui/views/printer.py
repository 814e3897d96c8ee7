"""The headless view: one line per event, worker output prefixed by its range, progress lines."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from gputui.jobs.tasks import Status
from gputui.text_safety import log_line, visible

# The order the counts are said in, by the app's header and `gputui status` alike; running and failed always.
COUNTED = (
    Status.RUNNING,
    Status.PAUSED,
    Status.PENDING,
    Status.RETRYING,
    Status.FAILED,
    Status.KILLED,
    Status.SKIPPED,
)


def counted(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """(status, how many) for each status but done worth saying, in `COUNTED` order: every task is counted
    once, so with the done ones they add up to the run's tasks."""
    return [(s, counts.get(s, 0)) for s in COUNTED if counts.get(s) or s in (Status.RUNNING, Status.FAILED)]


def progress_line(counts: Mapping[str, int], elapsed: float) -> str:
    """`2/8 done, 2 running, 1 paused, 3 pending, 0 failed, elapsed 180.5s`, from task counts by status."""
    words = [f"{n} {s}" for s, n in counted(counts)]
    done = f"{counts.get(Status.DONE, 0)}/{sum(counts.values())} done"
    return ", ".join([done, *words]) + f", elapsed {elapsed:.1f}s"


class Printer:
    def __init__(self, out: TextIO | None = None, *, show_output: bool = True):
        self.out = out or sys.stdout
        self.show_output = show_output
        try:
            self.colour = self.out.isatty()  # a worker's colours reach a terminal, never a file
        except (OSError, ValueError, AttributeError):
            self.colour = False

    def line(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed or hung-up terminal must not stop the run

    def info(self, text: str) -> None:
        """Our line; what it quotes of a worker (a reason, an alert) shows its control characters."""
        self.line(f"gputui: {visible(text)}")

    def worker_lines(self, label: str, lines: list[str]) -> None:
        """A worker's output as its log pane shows it: colours at most (reset at the end of the line, so
        they never bleed into ours), no title, clear or cursor move; only what follows its last CR."""
        if self.show_output and lines:
            self.line("\n".join(f"{label} {self._safe(ln)}" for ln in lines))

    def _safe(self, line: str) -> str:
        shown = log_line(line, colour=self.colour)
        return shown + "\x1b[0m" if "\x1b" in shown else shown

    def progress(self, counts: Mapping[str, int], elapsed: float) -> None:
        self.line(progress_line(counts, elapsed))
