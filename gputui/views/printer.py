"""The headless view: one line per event, worker output prefixed by its range, progress lines."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from gputui.jobs.tasks import Status


def progress_line(counts: Mapping[str, int], elapsed: float) -> str:
    """`2/4 done, 2 running, 0 failed, elapsed 180.5s`, from task counts by status."""
    total = sum(counts.values())
    parts = [
        f"{counts.get(Status.DONE, 0)}/{total} done",
        f"{counts.get(Status.RUNNING, 0)} running",  # paused ones are counted apart, below
        f"{counts.get(Status.FAILED, 0)} failed",
    ]
    for status in (Status.PAUSED, Status.RETRYING, Status.KILLED, Status.SKIPPED):
        if counts.get(status):
            parts.append(f"{counts[status]} {status}")
    return ", ".join(parts) + f", elapsed {elapsed:.1f}s"


class Printer:
    def __init__(self, out: TextIO | None = None, *, show_output: bool = True):
        self.out = out or sys.stdout
        self.show_output = show_output

    def line(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed or hung-up terminal must not stop the run

    def info(self, text: str) -> None:
        self.line(f"gputui: {text}")

    def worker_lines(self, label: str, lines: list[str]) -> None:
        if self.show_output and lines:
            self.line("\n".join(f"{label} {ln}" for ln in lines))

    def progress(self, counts: Mapping[str, int], elapsed: float) -> None:
        self.line(progress_line(counts, elapsed))
