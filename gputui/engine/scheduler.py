"""The scheduler loop: place, launch, watch, settle, retry; re-adopt what a previous instance left.

It wakes when a waiter reports a worker's start or end, so a finished task is settled and its GPUs
reused at once, and otherwise every `poll` seconds to stream logs, apply control verbs posted by
other processes, advance kills and watch adopted workers. Each turn is one SQLite transaction, and an
attempt is committed before it is launched; a task with a live attempt is never launched again.
"""

from __future__ import annotations

import errno
import heapq
import math
import os
import re
import shlex
import shutil
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gputui.engine import alerts, exports
from gputui.engine.accounting import Meter
from gputui.engine.alerter import Alerter
from gputui.engine.control import ControlError, Controller, Stop
from gputui.engine.failures import read_tail
from gputui.engine.gpuwatch import Finding, GhostWatch, IdleWatch
from gputui.engine.health import Break, may_retry
from gputui.engine.logtail import LogTail
from gputui.engine.manifests import manifest_matches, write_manifest
from gputui.engine.placement import Policy, place, usable_gpus, why_waiting
from gputui.engine.rundir import RunPaths
from gputui.engine.session import Run
from gputui.engine.settle import Ended, decide
from gputui.engine.signals import write_signal
from gputui.engine.wakeup import Wakeup
from gputui.engine.watching import AttemptWatch
from gputui.engine.worker_events import read_all
from gputui.executors import cgroup as cgroups
from gputui.executors import ownership
from gputui.executors.journal import AttemptEnds, JournalReader, parse
from gputui.executors.local import LaunchFailed, LaunchSpec, LocalExecutor, WaiterHandle
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot
from gputui.gpus.reservations import Reservations
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.jobs import kinds, pipeline, sweep
from gputui.jobs.spec import JobSpec, render_command
from gputui.jobs.tasks import STEP, TRIAL, Status, TaskRecord

ENDED, STOPPED, DETACHED = "ended", "stopped", "detached"  # how Scheduler.run came back
_WAITING = (Status.PENDING, Status.RETRYING)
MIN_FREE_DISK = 64 * 1024 * 1024  # below this much free space in the run directory no new task starts
RECORD_GRACE_S = 2.0  # how long an ended worker's record may lag its reaping before the attempt is lost
HEALTH_EVERY_S = 1.0  # how often running attempts' new events and log lines are read for the [health] rules
BUSY_TIMEOUT_S = 1.0  # a turn waits this long for another writer of state.db, then is tried again later


class Output(Protocol):
    """Where the scheduler says what happens (the headless printer; a test's recorder)."""

    show_output: bool

    def info(self, text: str) -> None: ...

    def worker_lines(self, label: str, lines: Sequence[str]) -> None: ...

    def progress(self, counts: Mapping[str, int], elapsed: float) -> None: ...


class Infeasible(RuntimeError):
    """The job can never start here (too few or too small GPUs); said at once instead of waiting."""


@dataclass
class Live:
    """An attempt not known to be over: running (launched by us, or adopted from a previous scheduler
    instance), or ended with processes of its task still alive ("lingering": its GPUs stay reserved)."""

    task_id: str
    number: int
    gpus: tuple[int, ...]
    label: str
    log_path: str
    started_at: float
    waiter: ownership.ProcessRef | None = None  # while it lives, this attempt's end will be recorded
    worker: ownership.ProcessRef | None = None  # as its waiter recorded it
    cgroup: str | None = None
    ours: bool = False  # its waiter reports to our wake pipe; else watched by polling the journal
    log: LogTail | None = None  # opened when output is streamed
    handle: WaiterHandle | None = None  # the waiter chosen for it, until the launch is sent
    interrupted: bool = False  # stopped by our own shutdown: not the task's fault
    said_unprovable: bool = False  # told the user about a tagged leftover we may not signal
    gone_since: float | None = None  # when no process of it was seen any more
    watch: AttemptWatch | None = None  # the [health] rules, while it runs
    health_break: Break | None = None  # the rule it broke: it is being stopped for it

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.number)

    def processes(self) -> ownership.AttemptProcesses:
        return ownership.AttemptProcesses(self.waiter, self.worker, self.cgroup)


@dataclass
class Options:
    simulate: str | None = None
    show_output: bool = True
    poll: float = 0.25
    progress_every: float = 30.0
    probe_every: float = 1.0
    on_merge: Callable[[], str] | None = None  # the `merge` control verb: the run's merge, run by the caller
    on_settled: Callable[[list[str]], None] | None = None  # tasks settled (committed): the caller's products


class Scheduler:
    def __init__(self, job: JobSpec, run: Run, out: Output, options: Options | None = None):
        self.job = job
        self.store = run.store
        self.notes = run.notes
        self.store.busy_timeout(BUSY_TIMEOUT_S)
        self.paths = run.paths
        self.opts = options or Options()
        self.out = out
        self.scheduler_id = run.scheduler_id
        self.tasks: dict[str, TaskRecord] = {}
        self.outputs: dict[str, str | None] = {}
        self.counts: Counter[str] = Counter()
        self.waiting: list[tuple[int, str]] = []  # heap of (index, task id); stale entries are skipped
        self.live: dict[str, Live] = {}  # running attempts, by task id
        self.lingering: dict[tuple[str, int], Live] = {}  # ended attempts with processes still alive
        self._unapplied: list[str] = []  # waiter records read but not yet committed (a failed turn)
        self._db_trouble = ""  # what keeps the state from being written, as last told
        self._disk_full = False
        self.stops: list[Stop] = []  # kills in progress (SIGTERM sent, SIGKILL due later)
        self.stop_requested = False
        self.detach_requested = False
        self.controller = Controller(self.paths, self.store, on_merge=self.opts.on_merge)
        self.journal = JournalReader(self.paths.journal)
        res = job.resources
        max_parallel = res.max_parallel or (None if res.gpus_per_worker else (os.cpu_count() or 1))
        self.policy = Policy(res.gpus_per_worker, max_parallel, res.min_free_memory_gb, res.memory_per_worker_gb)
        # A pipeline step may ask for its own number of GPUs.
        steps = job.pipeline.steps if job.pipeline is not None else ()
        self.needs = {step.name: step.gpus for step in steps if step.gpus is not None}
        self.probe: GpuProbe | None = None
        if max([res.gpus_per_worker, *self.needs.values()]) > 0:
            self.probe = open_probe(self.opts.simulate, load=self._simulated_load)
        self.executor = LocalExecutor(
            job.workdir, self._base_env(), self.paths.root / "keeper.log", self.paths.journal, self.scheduler_id
        )
        self.reservations = Reservations()
        self._gpus: list[GpuSnapshot] = []
        self._gpus_at = 0.0
        self.meter = Meter(simulated=bool(self.probe and self.probe.simulated))
        self.alerter = Alerter(
            self.paths.alerts,
            job.alerts.command,
            cwd=job.workdir,
            env=self._base_env(),
            log_path=self.paths.root / "logs" / "alert-command.log",
            say=self.out.info,
        )
        self._alerts_due: list[dict] = []  # raised by this turn's settles: sent once it is committed
        self._settled: list[str] = []  # tasks this turn settled: handed to on_settled once it is committed
        self.idle = IdleWatch(job.alerts.idle_minutes) if job.alerts.idle_minutes and self.probe else None
        self.ghosts = GhostWatch(self.scheduler_id) if self.probe is not None else None
        self._started = time.monotonic()
        self._started_wall = time.time()
        self._next_poll = 0.0
        self._next_health = 0.0
        self._next_progress = time.monotonic() + self.opts.progress_every
        self._progress_at = -1.0
        self._progress_due = False
        self._waiting_said = ""

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> str:
        """Drive the run to its end, or until interrupted or detached: returns ENDED, STOPPED or DETACHED."""
        wakeup = Wakeup()
        old = self._install_signals()
        try:
            self._announce()
            self._load_tasks()
            todo = sum(t.status not in Status.FINAL for t in self.tasks.values())
            if todo:
                self.executor.start(prefork=min(todo, self.policy.max_parallel or 8))  # overlaps our start-up
            self._expire_old_controls()
            self._resume()
            self._check_feasible()
            while not (self.stop_requested or self.detach_requested):
                self._turn()
                if not self.live and not self.stops and not self._lingering_watched() and self._all_final():
                    break
                self._wait(wakeup)
            if self.stop_requested:
                self._shutdown()
            elif self.detach_requested:
                self.out.info(
                    f"detached; {len(self.live)} task(s) keep running. Run the same command to re-attach."
                )
        finally:
            self._send_alerts()
            self.alerter.close()
            self.executor.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            wakeup.close()
            if self.probe is not None:
                self.probe.close()
            exports.write_tasks(self.paths, self.store)
        if self.stop_requested:
            return STOPPED
        return DETACHED if self.detach_requested else ENDED

    # -- one turn of the loop ------------------------------------------------------------------
    def _turn(self) -> None:
        launches: list[tuple[LaunchSpec, Live]] = []
        lines = self._unapplied + self.executor.events()
        self._unapplied = []
        try:
            controls = self.store.pending_controls()
            if controls:
                self._apply_controls(controls)
            if self.stops:
                self._advance_stops()
            for key in self.executor.lost():  # its waiter died: watch what is left of it by polling
                live = self.live.get(key[0]) or self.lingering.get(key)
                if live is not None and live.number == key[1]:
                    live.ours = False
            news: dict[tuple[str, int], AttemptEnds] = {}
            for text in lines:
                parse(text, news)
            manifests = self._write_manifests(news)  # hashing big outputs happens outside the write lock
            if self.probe is not None and self.live:
                self._snapshot()  # GPU accounting and alerts sample the GPUs every probe_every seconds
            with self.store.transaction():
                self._apply_events(news, manifests)
                if time.monotonic() >= self._next_poll:
                    self._next_poll = time.monotonic() + self.opts.poll
                    self._poll()
                if self.job.health is not None and time.monotonic() >= self._next_health:
                    self._next_health = time.monotonic() + HEALTH_EVERY_S
                    self._check_health()
                for (task_id, number), fields in self.meter.due(time.time()).items():
                    self.store.update_attempt(task_id, number, **fields)
                self._plan_launches(launches)
        except (sqlite3.OperationalError, OSError) as e:
            self._alerts_due.clear()  # its settles are done again, and say so again, once it can be committed
            self._settled.clear()
            for spec, live in launches:  # never launched: give back their GPUs and waiters
                _release(spec.held)
                self.executor.give_back(live.handle)
            if not self._recover(e):
                raise
            self._unapplied = lines  # applied again once the state can be written
            return
        self._trouble_clear()
        self.meter.keep(live.key for live in self.live.values())  # attempts whose end is committed: done
        self._send_alerts()
        self._hand_over_settled()
        for spec, live in launches:  # committed: now start them
            self._launch(spec, live)
        self.alerter.poll()
        if self.out.show_output:
            for live in self.live.values():
                if live.log is not None:
                    self.out.worker_lines(live.label, live.log.read_lines())
        now = time.monotonic()
        if now >= self._next_progress or (self._progress_due and now - self._progress_at >= 1.0):
            self._progress(changed=False)

    def _recover(self, e: Exception) -> bool:
        """A turn that could not be committed (the database is locked by another process, or the disk
        is full): nothing of it happened. Say so once, reload what is committed, try again later; the
        workers run on meanwhile. False for an error that is not of that kind."""
        text = str(e).lower()
        if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            why = f"{self.paths.db} is locked by another process; waiting for it (workers go on)"
        elif "full" in text or getattr(e, "errno", None) == errno.ENOSPC:
            why = f"the disk of {self.paths.root} is full; waiting for room (workers go on, no task starts)"
        else:
            return False
        if why != self._db_trouble:
            self.out.info(why)
            self._db_trouble = why
        self._reload()
        self._next_poll = time.monotonic() + 1.0
        return True

    def _trouble_clear(self) -> None:
        if self._db_trouble:
            self.out.info("the run's state can be written again; going on")
            self._db_trouble = ""

    def _reload(self) -> None:
        """After a rolled-back turn: tasks and attempts as committed, keeping what we know of each
        attempt's processes and output streams."""
        known = {live.key: live for live in [*self.live.values(), *self.lingering.values()]}
        self._load_tasks()
        self.live, self.lingering = {}, {}
        for a in self.store.unsettled_attempts():
            live = known.get((a.task_id, a.number)) or self._live_from(a)
            if a.ended_at is None:
                self.live[a.task_id] = live
            else:
                self.lingering[live.key] = live
        self.meter.keep(live.key for live in self.live.values())

    def _wait(self, wakeup: Wakeup) -> None:
        timeout = max(0.0, min(self._next_poll - time.monotonic(), self.opts.poll))
        if self.counts[Status.RETRYING]:
            soonest = min(t.next_try_at or 0 for t in self.tasks.values() if t.status == Status.RETRYING)
            timeout = max(0.0, min(timeout, soonest - time.time()))
        if self.stops:
            timeout = min(timeout, 0.05)
        wakeup.wait([self.executor.fileno()], timeout)

    def _install_signals(self) -> dict:
        def on_stop(signum, _frame):
            self.stop_requested = True

        def on_hup(signum, _frame):
            self.detach_requested = True

        handlers = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop}
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # under nohup, a hangup means nothing
            handlers[signal.SIGHUP] = on_hup
        return {sig: signal.signal(sig, h) for sig, h in handlers.items()}

    # -- task state: the store, and the in-memory copy the loop reads (it is the only writer) ----
    def _load_tasks(self) -> None:
        self.tasks = {t.id: t for t in self.store.tasks()}
        self.outputs = self.store.task_outputs()
        self.counts = Counter(t.status for t in self.tasks.values())
        self.waiting = [(t.index, t.id) for t in self.tasks.values() if t.status in _WAITING]
        heapq.heapify(self.waiting)

    def _set(self, task_id: str, **fields) -> None:
        self.store.update_task(task_id, **fields)
        if "gpus" in fields:
            fields["gpus"] = tuple(fields["gpus"])
        old = self.tasks[task_id]
        new = self.tasks[task_id] = TaskRecord(**{**vars(old), **fields})
        if new.status != old.status:
            self.counts[old.status] -= 1
            self.counts[new.status] += 1
            if new.status in _WAITING:
                heapq.heappush(self.waiting, (new.index, new.id))

    def _all_final(self) -> bool:
        return sum(self.counts[s] for s in Status.FINAL) == len(self.tasks)

    # -- resume: settle or re-adopt what a previous instance left ------------------------------
    def _live_from(self, a) -> Live:
        task = self.tasks[a.task_id]
        live = Live(a.task_id, a.number, a.gpus, task.range_label, a.log_path, a.started_at, a.waiter)
        live.worker, live.cgroup = a.worker, a.cgroup
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
                    self._settle(live, ends, self._manifest_for(live, ends))
                    continue
                pid = live.worker.pid if live.worker else "?"
                self.out.info(f"re-adopted {a.task_id} {live.label} attempt {a.number} (pid {pid}), still running")
                self.store.add_event("adopted", f"re-adopted attempt {a.number}, pid {pid}", a.task_id)
                if task.status == Status.KILLED:  # killed while no scheduler watched, before it had started
                    to_stop.append(task)
            for t in list(self.tasks.values()):
                if t.status in Status.LIVE and t.id not in self.live:
                    self._set(t.id, status=Status.PENDING)
                t = self.tasks[t.id]
                if t.status in _WAITING and self._output_done(t):
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
        if ends.started and live.worker is None:
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
        tagged = ownership.find_tagged(self.scheduler_id, [live.task_id]).get(live.task_id, [])
        return any(ownership.tags(r.pid)[2] == str(live.number) for r in tagged)

    def _watch_lingering(self, live: Live) -> None:
        """An ended attempt whose waiter is gone: end what of it we can prove is ours; release its GPUs
        once nothing of it is left. A process that only carries its tag is reported, never signalled."""
        ends = self._learn(live)
        if ends.cleared_at is not None or (live.waiter is not None and ownership.alive(live.waiter)):
            if ends.cleared_at is not None:
                self._clear(live, ends.cleared_at)
            return
        provable = live.processes().tree()
        if provable:
            if not any(live.task_id in {t.id for t, _ in stop.pairs} for stop in self.stops):
                attempt = self.store.attempt(live.task_id, live.number)
                self.stops.append(
                    Stop(self.controller, [(self.tasks[live.task_id], attempt)], self.job.stop_grace_s).begin()
                )
            return
        tagged = [
            r
            for r in ownership.find_tagged(self.scheduler_id, [live.task_id]).get(live.task_id, [])
            if ownership.tags(r.pid)[2] == str(live.number)
        ]
        if not tagged:
            self._clear(live, time.time())
        elif not live.said_unprovable:
            live.said_unprovable = True
            pids = ", ".join(str(r.pid) for r in tagged)
            gpus = f"; it keeps GPU {','.join(map(str, live.gpus))} reserved until it ends" if live.gpus else ""
            self.out.info(
                f"{live.task_id} attempt {live.number}: pid {pids} carries its tag but gputui cannot prove it is "
                f"its own (its waiter is gone and it has no cgroup), so it is not signalled{gpus}"
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

    def _check_feasible(self) -> None:
        if self.probe is None:
            return
        gpus = self._snapshot(force=True)
        need = self.policy.gpus_per_worker
        if len(gpus) < need:
            raise Infeasible(
                f"{self.job.path}: [resources].gpus_per_worker = {need}, but only {len(gpus)} GPU(s) exist "
                f"here ({describe(self.probe)}); lower gpus_per_worker or use a machine with more GPUs"
            )
        if len([g for g in gpus if g.memory_total >= self.policy.min_free_bytes]) < need:
            largest = max(g.memory_total for g in gpus) / GIB
            raise Infeasible(
                f"{self.job.path}: [resources].min_free_memory_gb / memory_per_worker_gb ask for "
                f"{self.policy.min_free_bytes / GIB:g} GB free per GPU, but the largest GPU here has "
                f"{largest:.0f} GB in all ({describe(self.probe)}); no task could ever start"
            )

    # -- launching -----------------------------------------------------------------------------
    def _plan_launches(self, launches: list[tuple[LaunchSpec, Live]]) -> None:
        busy = len(self.live) + len(self.lingering)
        slots = None if self.policy.max_parallel is None else self.policy.max_parallel - busy
        if not self.waiting or slots is not None and slots <= 0 or not self._room_on_disk():
            return
        now = time.time()
        lingering = {task_id for task_id, _ in self.lingering}
        ready, later, seen = [], [], set()
        while self.waiting and (slots is None or len(ready) < slots):
            index, task_id = heapq.heappop(self.waiting)
            t = self.tasks[task_id]
            if t.status not in _WAITING or task_id in seen:
                continue  # stale heap entry
            seen.add(task_id)
            not_due = t.status == Status.RETRYING and (t.next_try_at or 0) > now
            blocked = any(self.tasks[d].status != Status.DONE for d in t.after if d in self.tasks)
            if task_id in self.live or task_id in lingering or not_due or blocked:
                later.append((index, task_id))  # a process of its last attempt lives, it is not due, or it waits
            else:
                ready.append(t)
        gpus = self._snapshot() if self.probe is not None and ready else []
        reserved = {g for live in [*self.live.values(), *self.lingering.values()] for g in live.gpus}
        usable = usable_gpus(gpus, reserved, self.policy)
        wanted = sum(self.needs.get(t.id, self.policy.gpus_per_worker) for t in ready)
        claims, foreign = self.reservations.claim_some([g for g in gpus if g.index in usable], wanted)
        unclaimed = {g.index for g in gpus} - set(claims)
        placed = dict(place([t.id for t in ready], gpus, reserved | unclaimed, busy, self.policy, self.needs))
        for t in ready:
            if t.id in placed:
                held = [claims.pop(g) for g in placed[t.id]]
                for fd in held:
                    Reservations.annotate(fd, self._claim_note(t.id))
                launches.append(self._record_launch(t, placed[t.id], now, held))
            else:
                later.append((t.index, t.id))
        _release(claims.values())
        for entry in later:
            heapq.heappush(self.waiting, entry)
        if ready and not placed and not self.live and self.probe is not None:
            reason = why_waiting(gpus, reserved, self.policy)
            if foreign:
                reason += f"; {len(foreign)} held by another gputui run ({', '.join(sorted(foreign.values()))})"
            if reason != self._waiting_said:
                self.out.info(f"waiting for GPUs: {reason}")
                self._waiting_said = reason

    def _claim_note(self, task_id: str) -> dict:
        return {
            "run_dir": str(self.paths.root),
            "job": self.job.name,
            "scheduler_id": self.scheduler_id,
            "pid": os.getpid(),
            "task": task_id,
        }

    def _room_on_disk(self) -> bool:
        try:
            usage = shutil.disk_usage(self.paths.root)
        except OSError:
            return True
        free = usage.free
        full = free < min(MIN_FREE_DISK, usage.total // 20)  # 5 % of a small disk is room enough
        if full and not self._disk_full:
            self.out.info(
                f"the disk of {self.paths.root} is full ({free // (1024 * 1024)} MB free); no new task starts "
                f"until there is room (running tasks go on)"
            )
        elif self._disk_full and not full:
            self.out.info(f"there is room again on the disk of {self.paths.root}; tasks start again")
        self._disk_full = full
        return not full

    def _record_launch(
        self, task: TaskRecord, gpus: tuple[int, ...], now: float, held: list[int]
    ) -> tuple[LaunchSpec, Live]:
        number = task.attempts + 1
        argv, env = worker_request(self.job, task, number, gpus, self.scheduler_id, self.paths.root)
        if self.probe is None:
            env.pop("CUDA_VISIBLE_DEVICES")
        shown = shlex.join(argv)
        if "CUDA_VISIBLE_DEVICES" in env:
            shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {shown}"
        log_path = self.paths.log(task.id, number)
        if task.info.get("output_dir"):  # a trial's or a step's own folder
            Path(task.info["output_dir"]).mkdir(parents=True, exist_ok=True)
        waiter = self.executor.waiter()  # recorded before the launch: while it lives, the end will be known
        self.store.start_attempt(task.id, number, gpus, argv, str(log_path), now)
        self.store.update_attempt(task.id, number, waiter_pid=waiter.ref.pid, waiter_start=waiter.ref.start)
        fields = {
            "status": Status.RUNNING,
            "attempts": number,
            "gpus": gpus,
            "reason": None,
            "next_try_at": None,
            "exit_code": None,
            "ended_at": None,
        }
        if task.started_at is None:
            fields["started_at"] = now
        self._set(task.id, **fields)
        self.store.add_event("launch", f"attempt {number}: {shown}", task.id)
        where = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
        self.out.info(f"launch {task.id} {task.range_label} attempt {number}/{task.budget}{where}: {shown}")
        live = self.live[task.id] = Live(task.id, number, gpus, task.range_label, str(log_path), now, waiter.ref)
        live.handle = waiter
        self._watch(live)
        self.meter.start(live.key, len(gpus), now)
        spec = LaunchSpec(task.id, number, argv, env, log_path, self.job.stop_grace_s, held)
        return spec, live

    def _launch(self, spec: LaunchSpec, live: Live) -> None:
        if self.out.show_output:
            live.log = LogTail(spec.log_path)
        try:
            try:
                self.executor.launch(live.handle, spec)
            except LaunchFailed:  # that waiter died while idle: another one, recorded first
                waiter = self.executor.waiter()
                with self.store.transaction():
                    self.store.update_attempt(
                        spec.task_id, spec.number, waiter_pid=waiter.ref.pid, waiter_start=waiter.ref.start
                    )
                live.waiter = waiter.ref
                self.executor.launch(waiter, spec)
            live.ours = True
        except OSError as e:
            try:
                with open(spec.log_path, "a") as log:
                    log.write(f"gputui: cannot launch: {e}\n")
            except OSError:
                pass
            live.waiter = None
            with self.store.transaction():
                self._settle(live, AttemptEnds(exit_code=127, ended_at=time.time()), None)
            self._send_alerts()
        finally:
            live.handle = None
            _release(spec.held)  # the waiter holds its own copies now

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.job.env)
        env.update({"GPUTUI_RUN_DIR": str(self.paths.root), "PYTHONUNBUFFERED": "1"})
        if self.probe is not None:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # so indices match NVML's
        elif self.policy.gpus_per_worker == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task must not grab a GPU
        return env

    # -- watching ------------------------------------------------------------------------------
    def _apply_events(self, news: dict[tuple[str, int], AttemptEnds], manifests: dict[str, str | None]) -> None:
        for key, ends in news.items():
            live = self.live.get(key[0])
            if live is not None and live.number == key[1]:
                if ends.started and live.worker is None:
                    self._note_start(live, ends)
                if ends.ended:
                    self._settle(live, ends, manifests.get(key[0]))
            lingering = self.lingering.get(key)
            if lingering is not None and ends.cleared_at is not None:
                self._clear(lingering, ends.cleared_at)

    def _note_start(self, live: Live, ends: AttemptEnds) -> None:
        """The waiter's start record: the worker's pid and start time as its parent saw them."""
        live.waiter, live.worker, live.cgroup = ends.waiter, ends.worker, ends.cgroup
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
            self.controller.signal_trees(pairs, signal.SIGSTOP)
        else:
            self.stops.append(Stop(self.controller, pairs, self.job.stop_grace_s).begin())

    def _watch(self, live: Live) -> None:
        if self.job.health is not None:
            events = self.paths.events(live.task_id, live.number)
            live.watch = AttemptWatch(self.job.health, events, live.log_path, live.started_at)

    def _check_health(self) -> None:
        """The [health] rules over every running attempt's new events and log lines; a break stops the
        attempt's whole tree, and its settle records the rule and the evidence."""
        now = time.time()
        for live in list(self.live.values()):
            if live.watch is None or live.health_break is not None or live.handle is not None:
                continue
            if self.tasks[live.task_id].status != Status.RUNNING:  # paused: its silence is ours
                live.watch.watch.activity(now)
                continue
            verdict = live.watch.poll(now)
            loss = (verdict.values or {}).get(self.job.health.metric)
            if verdict.healthy:
                write_signal(self.paths, live.task_id, "healthy", step=verdict.step, loss=loss)
                self.store.add_event("healthy", "passed its health window", live.task_id)
            if verdict.broken is not None:
                live.health_break = verdict.broken
                self.store.add_event("health", verdict.broken.reason, live.task_id)
                self.out.info(f"{live.task_id} {live.label}: {verdict.broken.reason}; stopping it")
                pairs = self._pairs([self.tasks[live.task_id]])
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

    # -- settling an ended attempt -------------------------------------------------------------
    def _write_manifests(self, news: dict[tuple[str, int], AttemptEnds]) -> dict[str, str | None]:
        """Done-manifests for attempts that exited 0 with their output present; values are errors."""
        results: dict[str, str | None] = {}
        for (task_id, number), ends in news.items():
            live = self.live.get(task_id)
            if live is not None and live.number == number and ends.ended:
                results[task_id] = self._manifest_for(live, ends)
        return results

    def _manifest_for(self, live: Live, ends: AttemptEnds) -> str | None:
        task, output = self.tasks[live.task_id], self.outputs.get(live.task_id)
        if ends.exit_code != 0 or not output or not Path(output).exists() or task.status == Status.KILLED:
            return None
        try:
            write_manifest(
                Path(output),
                task_id=task.id,
                low=task.low,
                high=task.high,
                scheduler_id=self.scheduler_id,
                attempt=live.number,
            )
        except Exception as e:  # an odd output fails its task, never the scheduler
            return f"cannot record its output {output}: {e}"
        return None

    def _settle(self, live: Live, ends: AttemptEnds, manifest_error: str | None) -> None:
        """Record how an attempt ended; its GPUs stay reserved while any process of it is left."""
        self.live.pop(live.task_id, None)
        self._settle_task(live, ends, manifest_error)
        if ends.ended and ends.cleared:
            self.store.update_attempt(live.task_id, live.number, cleared_at=ends.ended_at or time.time())
            self.executor.done(live.key)
            if live.cgroup and not live.ours:  # its waiter died before it could remove the attempt's cgroup
                cgroups.remove(live.cgroup, wait=0.0)
            self._gpus_at = 0.0  # its GPUs are free now: look again before placing
            return
        self.lingering[live.key] = live
        if ends.ended:
            message = (
                f"attempt {live.number} ended with {ends.leftovers} process(es) of it still running; they are "
                f"ended (SIGTERM, then SIGKILL after {self.job.stop_grace_s:g}s) before its GPUs are reused"
            )
            self.store.add_event("leftovers", message, live.task_id)
            self.out.info(f"{live.task_id}: {message}")
        else:  # its waiter is gone: see for ourselves what is left
            live.ours = False
            self._watch_lingering(live)

    def _settle_task(self, live: Live, ends: AttemptEnds, manifest_error: str | None) -> None:
        if live.log is not None:
            self.out.worker_lines(live.label, live.log.read_lines(flush=True))
        task, output = self.tasks[live.task_id], self.outputs.get(live.task_id)
        code = ends.exit_code
        ended = Ended(
            number=live.number,
            exit_code=code,
            ended_at=ends.ended_at or time.time(),
            output=output,
            output_exists=bool(output) and Path(output).exists(),
            manifest_error=manifest_error,
            log_tail="" if code == 0 else read_tail(live.log_path),
            interrupted=live.interrupted,
            health=None if (b := live.health_break) is None else (b.rule, b.reason, may_retry(self.job.health, b)),
        )
        retry = self.job.retry
        d = decide(task, ended, backoff_s=retry.backoff_s, backoff_max_s=retry.backoff_max_s, now=time.time())
        self.store.update_attempt(task.id, live.number, **d.attempt, **self.meter.finish(live.key, ended.ended_at))
        if d.task:
            self._set(task.id, **d.task)
        if d.outcome == "done" and task.kind == TRIAL:
            self._set(
                task.id,
                metric=trial_metric(self.job.sweep, self.paths.events(task.id, live.number), live.log_path),
            )
        if d.event:
            self.store.add_event(*d.event, task.id)
        if d.outcome == "done":
            self.out.info(f"done {task.id} {live.label} in {ended.ended_at - live.started_at:.1f}s")
        elif d.say:
            self.out.info(d.say)
        self._alert_failure(live, d.outcome, d.failure, d.attempt.get("reason") or "")
        if d.outcome in ("done", "failed"):
            values = live.watch.latest if live.watch is not None else {}
            write_signal(
                self.paths,
                task.id,
                d.outcome,
                step=live.watch.watch.last_step if live.watch is not None else None,
                loss=values.get(self.job.health.metric if self.job.health else "loss"),
                exit_code=code,
                duration=ended.ended_at - live.started_at,
                reason=d.attempt.get("reason"),
            )
        if d.outcome not in ("closed", "requeued"):
            self._settled.append(task.id)
            self._expand()
            self._progress()

    def _expand(self) -> None:
        """The job kind's rule, in the transaction that settled a task: a sweep's next stage, a pipeline's
        skipped steps. Taken once: the tasks it adds or marks are committed with the settle."""
        e = kinds.on_settle(self.job, list(self.tasks.values()))
        if not e:
            return
        if e.new:
            self.store.add_tasks(e.new, budget=self.job.retry.max_attempts)
            for t in e.new:
                self.tasks[t.id] = self.store.task(t.id)
                self.outputs[t.id] = t.output
                self.counts[Status.PENDING] += 1
                heapq.heappush(self.waiting, (t.index, t.id))
        for task_id, fields in e.updates.items():
            self._set(task_id, **fields)
            if fields.get("status") in Status.FINAL:
                self._settled.append(task_id)
        for task_id, kind, message in e.events:
            self.store.add_event(kind, message, task_id)
            self.out.info(f"{task_id}: {message}" if task_id else message)
        if e.failed:
            self.store.set_meta("run_failed", e.failed)
            self.store.add_event("run_failed", e.failed)
            self.out.info(f"the run cannot succeed: {e.failed}")

    # -- controls ------------------------------------------------------------------------------
    def _apply_controls(self, controls) -> None:
        for c in controls:
            if any(stop.control_id == c.id for stop in self.stops):
                continue  # taken already: its kill is under way, and answered when it is over
            tasks = c.args.get("tasks")
            try:
                targets = self.controller.select(c.verb, tasks) if c.verb == "kill" else []
                if c.verb == "stop":
                    self.stop_requested = True
                    ok, result = True, "stopping: our running tasks get SIGTERM and stay pending for next time"
                elif c.verb == "start":
                    ok, result = self._start_now(tasks or [])
                elif targets:  # SIGKILL comes later, from the loop: answer when it is over
                    self.stops.append(self.controller.begin_kill(targets))
                    self.stops[-1].control_id = c.id
                    ok, result = None, ""
                else:
                    ok, result = self.controller.apply(c.verb, tasks, bool(c.args.get("force")))
            except ControlError as e:
                ok, result = False, str(e)
            except Exception as e:  # a bad request must never take the scheduler down
                ok, result = False, f"{c.verb} failed: {e}"
            if c.verb not in ("start", "stop"):
                self._load_tasks()  # the controller wrote to the store
            if ok is not None:
                with self.store.transaction():
                    self.store.finish_control(c.id, ok, result)
                for line in result.splitlines():
                    self.out.info(line)

    def _start_now(self, task_ids: list[str]) -> tuple[bool, str]:
        """Put waiting tasks first in line; they start as soon as resources allow."""
        lines, ok = [], True
        for task_id in task_ids:
            t = self.tasks.get(task_id)
            if t is None or t.status not in _WAITING:
                ok = False
                lines.append(f"{task_id}: is {t.status if t else 'unknown'}; only a waiting task can be started")
                continue
            if t.status == Status.RETRYING:
                self._set(task_id, next_try_at=None)
            heapq.heappush(self.waiting, (-1, task_id))
            lines.append(f"{task_id}: starts as soon as resources allow")
        return ok, "\n".join(lines)

    def _advance_stops(self) -> None:
        for stop in [s for s in self.stops if s.step()]:
            self.stops.remove(stop)
            result = "\n".join(stop.report())
            if stop.control_id is not None:
                with self.store.transaction():
                    self.store.finish_control(stop.control_id, True, result)
            for line in result.splitlines():
                self.out.info(line)

    def _expire_old_controls(self) -> None:
        """Requests posted before this scheduler started found no one to answer them: never act late."""
        with self.store.transaction():
            for c in self.store.pending_controls():
                if c.ts < self._started_wall:
                    self.store.finish_control(c.id, False, "expired: no scheduler took it in time")

    def _pairs(self, tasks: list[TaskRecord]) -> list:
        return [(t, a) for t in tasks if (a := self.store.attempt(t.id, t.attempts)) is not None]

    # -- GPUs ----------------------------------------------------------------------------------
    def _snapshot(self, force: bool = False) -> list[GpuSnapshot]:
        now = time.monotonic()
        if force or now - self._gpus_at >= self.opts.probe_every:
            self._gpus = self.probe.snapshot()
            self._gpus_at = now
            self._observe(self._gpus)
        return self._gpus

    def _observe(self, gpus: list[GpuSnapshot]) -> None:
        """Each GPU sample: the running attempts' GPU time and memory, idle GPUs, ghost memory."""
        now = time.time()
        running = [live for live in self.live.values() if live.handle is None]  # launched, not just recorded
        self.meter.sample(gpus, [(live.key, live.gpus, live.processes()) for live in running], now)
        findings: list[Finding] = []
        if self.idle is not None:
            busy = [(live.key, live.gpus) for live in running if self.tasks[live.task_id].status == Status.RUNNING]
            findings += self.idle.sample(gpus, busy, now)
        if self.ghosts is not None:
            findings += self.ghosts.sample(gpus, {t.id: t.status for t in self.tasks.values()}, now)
        for f in findings:  # not tied to this turn's commit: sent at once
            live = self.live.get(f.task_id or "") if f.kind == "gpu_idle" else None
            self.out.info(f"alert: {f.message}")
            log_path = None if live is None else live.log_path
            self.alerter.emit(alerts.alert(f.kind, f.message, task_id=f.task_id, gpu=f.gpu, log_path=log_path))

    def _alert_failure(self, live: Live, outcome: str, failure: str | None, reason: str) -> None:
        """An attempt that ran out of GPU memory, and a task that failed for good, raise alerts (sent once
        the settle is committed)."""
        if outcome not in ("failed", "retrying"):
            return
        about = {"task_id": live.task_id, "log_path": live.log_path, "gpus": live.gpus}
        if failure == "cuda_oom":
            message = f"{live.task_id} {live.label} attempt {live.number} ran out of GPU memory: {reason}"
            self._alerts_due.append(alerts.alert("out_of_memory", message, **about))
        if outcome == "failed":
            task = self.tasks[live.task_id]
            tries = f"{task.attempts}/{task.budget}"
            message = f"{live.task_id} {live.label} failed for good after {tries} attempt(s): {reason}"
            self._alerts_due.append(alerts.alert("task_failed", message, **about))

    def _hand_over_settled(self) -> None:
        settled, self._settled = self._settled, []
        if settled and self.opts.on_settled is not None:
            try:
                self.opts.on_settled(settled)
            except Exception as e:  # a product that cannot be written must never stop the run
                self.out.info(f"cannot write the products of {', '.join(settled)}: {e}")

    def _send_alerts(self) -> None:
        for event in self._alerts_due:
            self.alerter.emit(event)
        self._alerts_due.clear()

    def _simulated_load(self) -> Mapping[int, list[tuple[int, int]]]:
        per_task = int((self.policy.memory_per_worker_gb or TASK_MEMORY_GB) * GIB)
        load: dict[int, list[tuple[int, int]]] = {}
        for live in [*self.live.values(), *self.lingering.values()]:
            for g in live.gpus:
                load.setdefault(g, []).append((live.worker.pid if live.worker else 0, per_task))
        return load

    # -- output --------------------------------------------------------------------------------
    def _announce(self) -> None:
        gpus = describe(self.probe) if self.probe is not None else "none (CPU tasks)"
        n = len(self.store.tasks())
        self.out.info(
            f"run {self.job.name} (scheduler {self.scheduler_id[:8]}) in {self.paths.root}: "
            f"{n} task(s); GPUs: {gpus}"
        )
        exports.write_config(self.paths, self.job, self.scheduler_id, gpus)
        with self.store.transaction():
            self.store.set_meta("alert_bell", self.job.alerts.bell)  # the app rings the bell on an alert
        for note in self.notes:
            self.out.info(note)

    def _progress(self, *, changed: bool = True) -> None:
        """After a task ends (at most once a second, so thousands of short tasks do not flood the
        terminal), and every `progress_every` seconds."""
        now = time.monotonic()
        if changed and now - self._progress_at < 1.0:
            self._progress_due = True
            return
        self._progress_at, self._progress_due = now, False
        self._next_progress = now + self.opts.progress_every
        self.out.progress(self.counts, now - self._started)

    # -- ending --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Ctrl-C / SIGTERM: stop our workers (only ours), keep their tasks pending for next time."""
        for stop in self.stops:
            stop.finish()
        if not self.live:
            return
        self.out.info(
            f"stopping {len(self.live)} running task(s) (SIGTERM, then SIGKILL after "
            f"{self.job.stop_grace_s:g}s); they will run again on restart"
        )
        for live in self.live.values():
            live.interrupted = True
        stop = Stop(self.controller, self._pairs([self.tasks[i] for i in self.live]), self.job.stop_grace_s)
        stop.begin()
        deadline = time.monotonic() + self.job.stop_grace_s + 10.0
        while self.live and time.monotonic() < deadline:
            stop.step()
            news: dict[tuple[str, int], AttemptEnds] = {}
            for text in self.executor.events():
                parse(text, news)
            with self.store.transaction():
                self._apply_events(news, self._write_manifests(news))  # one starting only now is stopped too
                self._poll()
            self._send_alerts()
            for late in self.stops:
                late.step()
            time.sleep(0.02)


def trial_metric(spec, events: Path, log_path: str) -> float | None:
    """A trial's metric: the last value it reported through gputui.hooks, else the last match of
    `[sweep].metric_regex` in its log."""
    value = None
    for event in read_all(events):
        if spec.metric in event.values:
            value = event.values[spec.metric]
    if value is None and spec.metric_regex:
        found = re.findall(spec.metric_regex, read_tail(log_path, max_bytes=1 << 20))
        value = _number(found[-1]) if found else None
    return value if value is None or math.isfinite(value) else None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _release(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def worker_request(
    job: JobSpec, task: TaskRecord, number: int, gpus: tuple[int, ...], scheduler_id: str, run_dir: Path
) -> tuple[list[str], dict[str, str]]:
    """The worker's command line and its own variables (ownership tags, range, GPUs, events file). Pure."""
    values: dict[str, object] = {
        "run_dir": run_dir,
        "output_dir": job.outputs.dir,
        "task_id": task.id,
        "attempt": number,
        "gpus": ",".join(map(str, gpus)),
        "num_gpus": len(gpus),
    }
    env = {
        ownership.TAG_SCHEDULER: scheduler_id,
        ownership.TAG_TASK: task.id,
        ownership.TAG_ATTEMPT: str(number),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        "GPUTUI_EVENTS": str(RunPaths(run_dir).events(task.id, number)),
    }
    command = None
    if task.kind == TRIAL:
        values |= sweep.trial_values(task)
    elif task.kind == STEP:
        values |= pipeline.step_values(task)
        command = next((s.command for s in job.pipeline.steps if s.name == task.info.get("step")), None)
        command = command or tuple(task.info.get("command") or ())
    else:
        values |= {"low": task.low, "high": task.high, "input": job.shards.input}
        env |= {"GPUTUI_LOW": str(task.low), "GPUTUI_HIGH": str(task.high)}
    return render_command(job, values, command), env
