"""The headless view: one line per event, worker output prefixed by its range, progress lines."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import TextIO

from gputui.records import Status, TaskRecord


def progress_line(tasks: Iterable[TaskRecord], elapsed: float) -> str:
    counts = Counter(t.status for t in tasks)
    total = sum(counts.values())
    running = counts[Status.RUNNING] + counts[Status.PAUSED]
    parts = [f"{counts[Status.DONE]}/{total} done", f"{running} running", f"{counts[Status.FAILED]} failed"]
    if counts[Status.PAUSED]:
        parts.append(f"{counts[Status.PAUSED]} paused")
    if counts[Status.RETRYING]:
        parts.append(f"{counts[Status.RETRYING]} retrying")
    if counts[Status.KILLED]:
        parts.append(f"{counts[Status.KILLED]} killed")
    return ", ".join(parts) + f", elapsed {elapsed:.1f}s"


class Printer:
    def __init__(self, out: TextIO | None = None, *, show_output: bool = True):
        self.out = out or sys.stdout
        self.show_output = show_output

    def line(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass  # a closed terminal must not stop the run

    def info(self, text: str) -> None:
        self.line(f"gputui: {text}")

    def worker_lines(self, label: str, lines: list[str]) -> None:
        if self.show_output and lines:
            self.line("\n".join(f"{label} {ln}" for ln in lines))

    def stamp(self) -> str:
        return time.strftime("%H:%M:%S")
