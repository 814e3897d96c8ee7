"""What the scheduler says: its Output, which a settle done again can hush (what it says was said the first
time), and the progress line, paced so thousands of short tasks do not flood the terminal."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from gputui.engine.attempt import Output
from gputui.engine.run_state import RunState


class Voice:
    """The run's Output, shared by the scheduler's parts so one hush reaches whatever a settle calls."""

    def __init__(self, out: Output):
        self.out = out
        self.quiet = False

    @property
    def show_output(self) -> bool:
        return self.out.show_output

    def info(self, text: str) -> None:
        if not self.quiet:
            self.out.info(text)

    def worker_lines(self, label: str, lines: Sequence[str]) -> None:
        if not self.quiet:
            self.out.worker_lines(label, lines)

    def progress(self, counts: Mapping[str, int], elapsed: float) -> None:
        if not self.quiet:
            self.out.progress(counts, elapsed)

    @contextmanager
    def hushed(self, hush: bool = True) -> Iterator[None]:
        """Silent inside (if `hush`, or if already hushed), as it was after."""
        quiet = self.quiet
        self.quiet = quiet or hush
        try:
            yield
        finally:
            self.quiet = quiet


class Progress:
    """The counts line: after a task ends (at most once a second), and every `every` seconds."""

    def __init__(self, voice: Voice, state: RunState, every: float):
        self.voice = voice
        self.state = state
        self.every = every
        self.started = time.monotonic()
        self.next_at = time.monotonic() + every
        self.said_at = -1.0
        self.due = False  # a change waits to be said

    def changed(self) -> None:
        """A task ended: said now, or within a second."""
        self.say(changed=True)

    def tick(self) -> None:
        """Each turn: said if its time has come, or if a change waits."""
        now = time.monotonic()
        if now >= self.next_at or (self.due and now - self.said_at >= 1.0):
            self.say(changed=False)

    def say(self, *, changed: bool) -> None:
        now = time.monotonic()
        if changed and now - self.said_at < 1.0:
            self.due = True
            return
        self.said_at, self.due = now, False
        self.next_at = now + self.every
        self.voice.progress(self.state.counts, now - self.started)
