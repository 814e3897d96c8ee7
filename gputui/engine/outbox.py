"""What a turn's settles hand on only once the turn is committed: the alerts they raised, the tasks they
settled (whose products the caller writes), and the signal files they wrote (fsynced together, at most
every SIGNAL_SYNC_S). A turn that is rolled back drops its alerts and settled tasks: its settles are done
again, and raise them again, once the state can be written."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gputui.engine.alerter import Alerter
from gputui.engine.voice import Voice
from gputui.rundir.paths import RunPaths
from gputui.rundir.signal_files import make_durable

SIGNAL_SYNC_S = 5.0  # signal files written since are fsynced together, at most this often (and at the end)


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
