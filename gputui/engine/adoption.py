"""Attempts this scheduler did not launch, or no longer hears from: re-adopted after a restart, watched by
polling the journal, and their leftover processes until the last one is gone."""

from __future__ import annotations

import time
from pathlib import Path

from gputui.engine.attempt import WAITING, Live
from gputui.engine.control import Stop
from gputui.executors import cgroup as cgroups
from gputui.executors import ownership
from gputui.executors.journal import AttemptEnds
from gputui.files.tail import LogTail
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.manifests import manifest_matches

RECORD_GRACE_S = 2.0  # how long an ended worker's record may lag its reaping before the attempt is lost


class Adoption:
    """Part of Scheduler (see scheduler.py): its state lives there."""

    # -- resume: settle or re-adopt what a previous instance left ------------------------------
    def _live_from(self, a) -> Live:
        task = self.tasks[a.task_id]
        live = Live(a.task_id, a.number, a.gpus, task.range_label, a.log_path, a.started_at, a.waiter)
        live.worker, live.cgroup, live.start_noted = a.worker, a.cgroup, a.worker is not None
        if a.ended_at is None:
            self.meter.start(live.key, len(a.gpus), a.started_at, a.peak_memory)
        return live

    def _resume(self) -> None:
        to_stop = []
        with self.store.transaction():
            for a in self.store.unsettled_attempts():
                task = self.tasks[a.task_id]
                live = self._live_from(a)
                if a.ended_at is not None:  # ended, with processes of it possibly still alive
                    self.lingering[live.key] = live
                    self._watch_lingering(live)
                    continue
                if self.out.show_output:
                    live.log = LogTail(a.log_path, from_end=True)
                self.live[a.task_id] = live
                self._watch(live)
                ends = self._learn(live)
                if ends.ended or not self._still_running(live):
                    # Recorded, then gputui stopped before the worker started: not the task's fault.
                    live.interrupted = not ends.ended and not ends.started and not self._tagged(live)
                    self._settle(live, ends, self._manifest_for(live, ends))
                    continue
                where = self.executor.recorded.adopted_where(live.worker)
                self.out.info(f"re-adopted {a.task_id} {live.label} attempt {a.number} ({where}), still running")
                self.store.add_event("adopted", f"re-adopted attempt {a.number}, {where}", a.task_id)
                if task.status == Status.KILLED:  # killed while no scheduler watched, before it had started
                    to_stop.append(task)
            for t in list(self.tasks.values()):
                if t.status in Status.LIVE and t.id not in self.live:
                    self._set(t.id, status=Status.PENDING)
                t = self.tasks[t.id]
                if t.status in WAITING and self._output_done(t):
                    self._set(t.id, status=Status.DONE, reason=None)
                    self.store.add_event("done", "found its finished output (done-manifest)", t.id)
                    self.out.info(f"{t.id} {t.range_label} already done (its output has a matching done-manifest)")
            self._expand()  # a decision a user's retry or kill made due while no scheduler ran
        self._send_alerts()
        if to_stop:
            self.stops.append(Stop(self.controller, self._pairs(to_stop), self.job.stop_grace_s).begin())

    def _learn(self, live: Live) -> AttemptEnds:
        """What the journal (or the attempt's exit file) says of an attempt no waiter reports to us."""
        ends = self.journal.get(live.task_id, live.number)
        if ends.started and not live.start_noted:
            self._note_start(live, ends)
        return ends

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

    def _watch_lingering(self, live: Live) -> None:
        """An ended attempt whose waiter is gone: end what of it we can prove is ours; release its GPUs
        once nothing of it is left. A process that only carries its tag is reported, never signalled."""
        ends = self._learn(live)
        if ends.cleared_at is not None or (live.waiter is not None and ownership.alive(live.waiter)):
            if ends.cleared_at is not None:
                self._clear(live, ends.cleared_at)
            return
        procs = live.processes()
        if procs.tree():
            if not any(live.task_id in {t.id for t, _ in stop.pairs} for stop in self.stops):
                attempt = self.store.attempt(live.task_id, live.number)
                self.stops.append(
                    Stop(self.controller, [(self.tasks[live.task_id], attempt)], self.job.stop_grace_s).begin()
                )
            return
        unprovable, foreign = procs.sort_tagged(ownership.tagged_as(self.scheduler_id, live.task_id, live.number))
        if foreign:  # said once: the attempt is cleared below, so it is not watched again
            pids = ", ".join(str(r.pid) for r in foreign)
            self.out.info(
                f"{live.task_id} attempt {live.number}: pid {pids} carries its tags but is outside the attempt's "
                f"cgroup, so it is not its process (its tags were copied); it is left alone and holds nothing"
            )
            copied = f"pid {pids} carries attempt {live.number}'s copied tags"
            self.store.add_event("foreign", copied, live.task_id)
        if not unprovable:
            self._clear(live, time.time())
        elif not live.said_unprovable:
            live.said_unprovable = True
            pids = ", ".join(str(r.pid) for r in unprovable)
            gpus = f"; it keeps GPU {','.join(map(str, live.gpus))} reserved until it ends" if live.gpus else ""
            why = f"its cgroup {procs.cgroup} cannot be read here" if procs.cgroup else "it has no cgroup"
            self.out.info(
                f"{live.task_id} attempt {live.number}: pid {pids} carries its tag but gputui cannot prove it is "
                f"its own (its waiter is gone and {why}), so it is not signalled{gpus}"
            )

    def _clear(self, live: Live, at: float) -> None:
        self.lingering.pop(live.key, None)
        self.executor.done(live.key)
        if live.cgroup and not live.ours:  # its waiter died before it could remove the attempt's cgroup
            cgroups.remove(live.cgroup, wait=0.0)
        self.store.update_attempt(live.task_id, live.number, cleared_at=at)
        self._gpus_at = 0.0

    def _lingering_watched(self) -> bool:
        """Leftovers we wait for before the run ends (not those only a tag connects to us)."""
        return any(not live.said_unprovable for live in self.lingering.values())

    def _output_done(self, t: TaskRecord) -> bool:
        output = self.outputs.get(t.id)
        try:
            return bool(output) and manifest_matches(Path(output), low=t.low, high=t.high)
        except OSError:
            return False

    def _note_start(self, live: Live, ends: AttemptEnds) -> None:
        """The waiter's start record: the worker's pid and start time as its parent saw them."""
        live.waiter, live.worker, live.cgroup, live.start_noted = ends.waiter, ends.worker, ends.cgroup, True
        fields = {"waiter_pid": ends.waiter.pid, "waiter_start": ends.waiter.start, "cgroup": ends.cgroup}
        if ends.worker is not None:
            fields |= {"worker_pid": ends.worker.pid, "worker_start": ends.worker.start}
        self.store.update_attempt(live.task_id, live.number, **fields)
        self._started_late(live)

    def _started_late(self, live: Live) -> None:
        """A worker whose start is reported after its task was killed or paused (or during our
        shutdown) is stopped or paused now: a kill must never miss a worker still being spawned."""
        status = self.tasks[live.task_id].status
        if status not in (Status.KILLED, Status.PAUSED) and not live.interrupted:
            return
        pairs = self._pairs([self.tasks[live.task_id]])
        if status == Status.PAUSED:
            self.controller.signal_trees(pairs, "pause")
        else:
            self.stops.append(Stop(self.controller, pairs, self.job.stop_grace_s).begin())

    def _poll(self) -> None:
        """Watch attempts no waiter of ours reports on (adopted, or whose waiter died), and
        leftovers whose waiter is gone."""
        for live in list(self.live.values()):
            if not live.ours:
                ends = self._learn(live)
                if ends.ended or not self._still_running(live):
                    self._settle(live, ends, self._manifest_for(live, ends))
        for live in list(self.lingering.values()):
            if not live.ours or live.waiter is None or not ownership.alive(live.waiter):
                live.ours = False
                self._watch_lingering(live)
