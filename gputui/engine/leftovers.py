"""An attempt's processes beyond its waiter's report: its start as the waiter recorded it (a worker whose
start comes after its task was killed or paused is stopped or paused at once), what the journal says of
one no waiter reports to us, and the leftovers of one that ended: ended where provably ours, its GPUs
released once nothing of it is left. A process that only carries its tag is reported, never signalled."""

from __future__ import annotations

import time

from gputui.engine.attempt import Live
from gputui.engine.control import Controller
from gputui.engine.gpu_sampler import GpuSampler
from gputui.engine.run_state import RunState
from gputui.engine.stops import Stops
from gputui.engine.voice import Voice
from gputui.executors import cgroup as cgroups
from gputui.executors import ownership
from gputui.executors.base import Executor
from gputui.executors.journal import AttemptEnds, JournalReader
from gputui.jobs.tasks import Status
from gputui.rundir.store import Store


class Leftovers:
    def __init__(
        self,
        state: RunState,
        store: Store,
        journal: JournalReader,
        executor: Executor,
        controller: Controller,
        stops: Stops,
        sampler: GpuSampler,
        scheduler_id: str,
        voice: Voice,
    ):
        self.state = state
        self.store = store
        self.journal = journal
        self.executor = executor
        self.controller = controller
        self.stops = stops
        self.sampler = sampler
        self.scheduler_id = scheduler_id
        self.voice = voice
        self.orphans = cgroups.Orphans(scheduler_id)  # cgroups whose waiter died before removing them

    # -- starts --------------------------------------------------------------------------------
    def learn(self, live: Live) -> AttemptEnds:
        """What the journal (or the attempt's exit file) says of an attempt no waiter reports to us."""
        ends = self.journal.get(live.task_id, live.number)
        if ends.started and not live.start_noted:
            self.note_start(live, ends)
        return ends

    def note_start(self, live: Live, ends: AttemptEnds, *, write: bool = True) -> dict:
        """The waiter's start record: the worker's pid and start time as its parent saw them. Its fields;
        `write=False`: not written, the caller writes them in this transaction (with the attempt's end)."""
        live.waiter, live.worker, live.cgroup, live.start_noted = ends.waiter, ends.worker, ends.cgroup, True
        fields = {"waiter_pid": ends.waiter.pid, "waiter_start": ends.waiter.start, "cgroup": ends.cgroup}
        if ends.worker is not None:
            fields |= {"worker_pid": ends.worker.pid, "worker_start": ends.worker.start}
        if write:
            self.store.update_attempt(live.task_id, live.number, **fields)
        self._started_late(live)
        return fields

    def _started_late(self, live: Live) -> None:
        """A worker whose start is reported after its task was killed or paused (or during our
        shutdown) is stopped or paused now: a kill must never miss a worker still being spawned."""
        status = self.state.tasks[live.task_id].status
        if status not in (Status.KILLED, Status.PAUSED) and not live.interrupted:
            return
        pairs = self.stops.pairs([self.state.tasks[live.task_id]])
        if status == Status.PAUSED:
            self.controller.signal_trees(pairs, "pause")
        else:
            self.stops.begin_attempts(pairs)

    # -- leftovers -----------------------------------------------------------------------------
    def watch(self, live: Live) -> None:
        """An ended attempt whose waiter is gone: end what of it we can prove is ours; release its GPUs
        once nothing of it is left. A process that only carries its tag is reported, never signalled."""
        ends = self.learn(live)
        if ends.cleared_at is not None or (live.waiter is not None and ownership.alive(live.waiter)):
            if ends.cleared_at is not None:
                self.clear(live, ends.cleared_at)
            return
        procs = live.processes()
        if procs.tree():
            if not self.stops.stopping(live.task_id):
                attempt = self.store.attempt(live.task_id, live.number)
                self.stops.begin_attempts([(self.state.tasks[live.task_id], attempt)])
            return
        unprovable, foreign = procs.sort_tagged(ownership.tagged_as(self.scheduler_id, live.task_id, live.number))
        if foreign:  # said once: the attempt is cleared below, so it is not watched again
            pids = ", ".join(str(r.pid) for r in foreign)
            self.voice.info(
                f"{live.task_id} attempt {live.number}: pid {pids} carries its tags but is outside the attempt's "
                f"cgroup, so it is not its process (its tags were copied); it is left alone and holds nothing"
            )
            copied = f"pid {pids} carries attempt {live.number}'s copied tags"
            self.store.add_event("foreign", copied, live.task_id)
        if not unprovable:
            self.clear(live, time.time())
        elif not live.said_unprovable:
            live.said_unprovable = True
            pids = ", ".join(str(r.pid) for r in unprovable)
            gpus = f"; it keeps GPU {','.join(map(str, live.gpus))} reserved until it ends" if live.gpus else ""
            why = f"its cgroup {procs.cgroup} cannot be read here" if procs.cgroup else "it has no cgroup"
            self.voice.info(
                f"{live.task_id} attempt {live.number}: pid {pids} carries its tag but gputui cannot prove it is "
                f"its own (its waiter is gone and {why}), so it is not signalled{gpus}"
            )

    def clear(self, live: Live, at: float) -> None:
        """Nothing of the attempt is left: its GPUs are free."""
        self.state.lingering.pop(live.key, None)
        self.executor.done(live.key)
        if live.cgroup and not live.ours:  # its waiter died before it could remove the attempt's cgroup
            self.orphans.add(live.cgroup)
        self.store.update_attempt(live.task_id, live.number, cleared_at=at)
        self.sampler.look_again()

    def waited_for(self) -> bool:
        """Leftovers we wait for before the run ends (not those only a tag connects to us)."""
        return any(not live.said_unprovable for live in self.state.lingering.values())
