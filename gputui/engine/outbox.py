"""What a turn's settles hand on only once the turn is committed: the alerts they raised, the tasks they
settled (whose products the caller writes), and the signal files they wrote (fsynced together, at most
every SIGNAL_SYNC_S). A turn that is rolled back drops its alerts and settled tasks: its settles are done
again, and raise them again, once the state can be written.

Inside `writing()` (a turn's transaction), signal files are written side by side on a few threads while the
turn goes on, and all of them are whole before it ends, so before its settles are committed: a crash loses
none that the state says was settled. A new file costs the kernel's locks (on a busy disk, a millisecond
each) far more than the CPU, so a turn that settles several tasks waits for the slowest, not for the sum."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gputui.engine.alerter import Alerter
from gputui.engine.voice import Voice
from gputui.rundir.paths import RunPaths
from gputui.rundir.signal_files import make_durable, signal_writer

SIGNAL_SYNC_S = 5.0  # signal files written since are fsynced together, at most this often (and at the end)
SIGNAL_THREADS = 4  # signal files written at once within a turn


class Outbox:
    def __init__(
        self,
        paths: RunPaths,
        alerter: Alerter,
        voice: Voice,
        on_settled: Callable[[list[str]], None] | None,
    ):
        self.paths = paths
        self.alerter = alerter
        self.voice = voice
        self.on_settled = on_settled
        self.alerts: list[dict] = []  # raised by this turn's settles: sent once it is committed
        self.settled: list[str] = []  # tasks this turn settled: handed to on_settled once it is committed
        self.unsynced: list[Path] = []  # signals written, not fsynced yet (see signal_files.py)
        self.synced_at = time.monotonic()
        self._pool: ThreadPoolExecutor | None = None
        self._writes: list[Future] | None = None  # inside writing(): the signal files being written

    def signal(self, task_id: str, status: str, **facts) -> None:
        """A signal file (see signal_files.py), fsynced later with the others; inside `writing()`, written on
        a thread and whole by the time `writing()` ends, else written now."""
        twin_path, write = signal_writer(self.paths, task_id, status, durable=False, **facts)
        if self._writes is None:
            write()
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(SIGNAL_THREADS, thread_name_prefix="gputui-signals")
            self._writes.append(self._pool.submit(write))
        self.unsynced.append(twin_path)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Signal files asked for inside are written meanwhile; all are written (or have failed: the first
        error is raised, as if written at once) when it ends."""
        if self._writes is not None:  # already inside one
            yield
            return
        self._writes = writes = []
        try:
            yield
        finally:
            self._writes = None
            errors = [e for e in (f.exception() for f in writes) if e is not None]  # waits for each
        if errors:
            raise errors[0]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def forget(self) -> None:
        """The turn was rolled back: its settles are done again, and say so again, once it can be committed."""
        self.alerts.clear()
        self.settled.clear()

    def send_alerts(self) -> None:
        for event in self.alerts:
            self.alerter.emit(event)
        self.alerts.clear()

    def hand_over_settled(self) -> None:
        settled, self.settled = self.settled, []
        if settled and self.on_settled is not None:
            try:
                self.on_settled(settled)
            except Exception as e:  # a product that cannot be written must never stop the run
                self.voice.info(f"cannot write the products of {', '.join(settled)}: {e}")

    def sync_if_due(self) -> None:
        if self.unsynced and time.monotonic() - self.synced_at >= SIGNAL_SYNC_S:
            self.sync_signals()

    def sync_signals(self) -> None:
        make_durable(self.paths, self.unsynced)
        self.unsynced, self.synced_at = [], time.monotonic()
