"""Attempts this scheduler did not launch, or no longer hears from: re-adopted after a restart (or after a
rolled-back turn), and watched by polling the journal until they end; their leftovers are Leftovers'."""

from __future__ import annotations

import time
from pathlib import Path

from gputui.engine.accounting import Meter
from gputui.engine.attempt import WAITING, Live
from gputui.engine.health_checks import HealthChecks
from gputui.engine.leftovers import Leftovers
from gputui.engine.outbox import Outbox
from gputui.engine.run_state import RunState
from gputui.engine.settler import Settler
from gputui.engine.stops import Stops
from gputui.engine.voice import Voice
from gputui.executors import ownership
from gputui.executors.base import RecordedExecutor
from gputui.files.tail import LogTail
from gputui.jobs.tasks import Status
from gputui.rundir.manifests import manifest_matches
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store

RECORD_GRACE_S = 2.0  # how long an ended worker's record may lag its reaping before the attempt is lost


class Adopter:
    def __init__(
        self,
        state: RunState,
        store: Store,
        recorded: RecordedExecutor,
        settler: Settler,
        leftovers: Leftovers,
        health: HealthChecks,
        stops: Stops,
        meter: Meter,
        outbox: Outbox,
        scheduler_id: str,
        voice: Voice,
    ):
        self.state = state
        self.store = store
        self.recorded = recorded  # says where an adopted worker runs
        self.settler = settler
        self.leftovers = leftovers
        self.health = health
        self.stops = stops
        self.meter = meter
        self.outbox = outbox
        self.scheduler_id = scheduler_id
        self.voice = voice

    # -- resume: settle or re-adopt what a previous instance left ------------------------------
    def live_from(self, a: AttemptRecord) -> Live:
        task = self.state.tasks[a.task_id]
        live = Live(a.task_id, a.number, a.gpus, task.range_label, a.log_path, a.started_at, a.waiter)
        live.worker, live.cgroup, live.start_noted = a.worker, a.cgroup, a.worker is not None
        if a.ended_at is None:
            self.meter.start(live.key, len(a.gpus), a.started_at, a.peak_memory, a.energy_j, a.energy_estimated)
        return live

    def resume(self) -> None:
        state = self.state
        to_stop = []
        with self.store.transaction():
            for a in self.store.unsettled_attempts():
                task = state.tasks[a.task_id]
                live = self.live_from(a)
                if a.ended_at is not None:  # ended, with processes of it possibly still alive
                    state.lingering[live.key] = live
                    self.leftovers.watch(live)
                    continue
                if self.voice.show_output:
                    live.log = LogTail(a.log_path, from_end=True)
                state.live[a.task_id] = live
                self.health.watch(live)
                ends = self.leftovers.learn(live)
                if ends.ended or not self._still_running(live):
                    # Recorded, then gputui stopped before the worker started: not the task's fault.
                    live.interrupted = not ends.ended and not ends.started and not self._tagged(live)
                    self.settler.settle(live, ends, self.settler.manifest_for(live, ends))
                    continue
                where = self.recorded.adopted_where(live.worker)
                self.voice.info(f"re-adopted {a.task_id} {live.label} attempt {a.number} ({where}), still running")
                self.store.add_event("adopted", f"re-adopted attempt {a.number}, {where}", a.task_id)
                if task.status == Status.KILLED:  # killed while no scheduler watched, before it had started
                    to_stop.append(task)
            for t in list(self.store.iter_tasks(Status.LIVE)):
                if t.id not in state.live:  # left running without a live attempt: it waits again
                    state.set(t.id, status=Status.PENDING)
            # A waiting task whose output is whole (its done-manifest matches) is done: read a page at a time.
            for task_id, low, high, output in self.store.named_outputs(WAITING):
                if self._output_done(output, low, high):
                    t = state.tasks[task_id]
                    state.set(task_id, status=Status.DONE, reason=None)
                    self.store.add_event("done", "found its finished output (done-manifest)", task_id)
                    self.voice.info(
                        f"{task_id} {t.range_label} already done (its output has a matching done-manifest)"
                    )
            self.settler.expand()  # a decision a user's retry or kill made due while no scheduler ran
        self.outbox.send_alerts()
        if to_stop:
            self.stops.begin(to_stop)

    def reload(self) -> None:
        """After a rolled-back turn: tasks and attempts as committed, keeping what we know of each
        attempt's processes and output streams."""
        state = self.state
        known = {live.key: live for live in state.attempts()}
        state.load()
        state.live, state.lingering = {}, {}
        for a in self.store.unsettled_attempts():
            live = known.get((a.task_id, a.number)) or self.live_from(a)
            if a.ended_at is None:
                state.live[a.task_id] = live
            else:
                state.lingering[live.key] = live
        self.meter.keep(live.key for live in state.live.values())

    def _still_running(self, live: Live) -> bool:
        """Could this attempt still end with a recorded exit status, or does a process of it live?"""
        if live.worker is not None and ownership.alive(live.worker, zombies=True):
            return True  # running, or ended and about to be reaped (and recorded) by its waiter or the keeper
        if live.waiter is not None and ownership.alive(live.waiter):
            return True  # it records the end before it does anything else
        if live.worker is not None:  # reaped by the keeper in its killed waiter's place: recorded a moment later
            live.gone_since = live.gone_since or time.monotonic()
            return time.monotonic() - live.gone_since < RECORD_GRACE_S
        if live.waiter is not None:
            return False
        # Known from a rebuilt state only, without its waiter: anything carrying its tag means a worker
        # was started after all (never launch a second copy beside it), though we cannot signal it.
        return self._tagged(live)

    def _tagged(self, live: Live) -> bool:
        """Whether a process that may be this attempt's lives: a member of its cgroup where it had one that
        can be read (membership decides: a process outside it only carries copied tags), else one carrying
        its tag."""
        members = live.processes().members()
        if members is not None:
            return bool(members)
        return bool(ownership.tagged_as(self.scheduler_id, live.task_id, live.number))

    @staticmethod
    def _output_done(output: str, low: int, high: int) -> bool:
        try:
            return manifest_matches(Path(output), low=low, high=high)
        except OSError:
            return False

    def poll(self) -> None:
        """Watch attempts no waiter of ours reports on (adopted, or whose waiter died), and
        leftovers whose waiter is gone."""
        for live in list(self.state.live.values()):
            if not live.ours:
                ends = self.leftovers.learn(live)
                if ends.ended or not self._still_running(live):
                    self.settler.settle(live, ends, self.settler.manifest_for(live, ends))
        for live in list(self.state.lingering.values()):
            if not live.ours or live.waiter is None or not ownership.alive(live.waiter):
                live.ours = False
                self.leftovers.watch(live)
