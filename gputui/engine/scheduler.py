"""The scheduler loop: place, launch, watch, settle, retry; re-adopt what a previous instance left.

It wakes when a waiter reports a worker's start or end, so a finished task is settled and its GPUs
reused at once, and otherwise every `poll` seconds to stream logs, apply control verbs posted by
other processes, advance kills and watch adopted workers. Each turn is one SQLite transaction, and an
attempt is committed before it is launched; a task with a live attempt is never launched again.
"""

from __future__ import annotations

import errno
import heapq
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

from gputui.engine.accounting import Meter
from gputui.engine.adoption import Adoption
from gputui.engine.alerter import Alerter
from gputui.engine.attempt import WAITING, Infeasible, Live, Options, Output
from gputui.engine.control import Controller, Stop
from gputui.engine.gpuwatch import GhostWatch, IdleWatch
from gputui.engine.launching import Launching, _release
from gputui.engine.rules.placement import Policy
from gputui.engine.run_modes import size_gpus, sized_values
from gputui.engine.settling import Settling
from gputui.engine.steering import Steering
from gputui.executors.base import LaunchSpec, RunContext
from gputui.executors.journal import AttemptEnds, JournalReader, parse
from gputui.executors.registry import open_executor
from gputui.files.wakeup import Wakeup
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GpuProbe, GpuSnapshot
from gputui.gpus.reservations import Reservations
from gputui.jobs.gpu_plan import NoFit
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir import exports
from gputui.rundir.opening import Run
from gputui.rundir.signal_files import make_durable

ENDED, STOPPED, DETACHED = "ended", "stopped", "detached"  # how Scheduler.run came back
HEALTH_EVERY_S = 1.0  # how often running attempts' new events and log lines are read for the [health] rules
BUSY_TIMEOUT_S = 1.0  # a turn waits this long for another writer of state.db, then is tried again later
SIGNAL_SYNC_S = 5.0  # signal files written since are fsynced together, at most this often (and at the end)
# A SIGTERM stopping a run on Slurm waits this long past stop_grace_s for its jobs, then leaves them to their
# stand-ins: each cancels a job not ended in its grace 5 s after it, and sees it gone a second or so later.
SLURM_TERM_MARGIN_S = 20.0


class Scheduler(Launching, Adoption, Settling, Steering):
    """One run's driver. Its parts live beside it: launching.py, adoption.py, settling.py, steering.py."""

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
        self.leave_requested = False  # Ctrl-C again while stopping on Slurm: leave the jobs as they are
        self.stop_signals = 0  # Ctrl-Cs and SIGTERMs received (a stop control is not one of them)
        self.stopped_by_term = False  # the first was a SIGTERM: nobody may be there to press Ctrl-C again
        self.journal = JournalReader(self.paths.journal)
        res = job.resources
        max_parallel = res.max_parallel or (None if res.gpus_per_worker else (os.cpu_count() or 1))
        self.policy = Policy(res.gpus_per_worker, max_parallel, res.min_free_memory_gb, res.memory_per_worker_gb)
        self.needs = kind_of(job).own_gpus(job.kind_spec)  # tasks that ask for their own GPUs (a pipeline's steps)
        self.probe: GpuProbe | None = None
        self.executor = open_executor(job.executor, self._run_context())  # chosen once, here
        try:
            uses_gpus = res.mode is not None or max([res.gpus_per_worker, *self.needs.values()]) > 0
            if self.executor.places_gpus and uses_gpus:
                self.probe = open_probe(self.opts.simulate, load=self._simulated_load)
            # A cluster's GPUs, CPUs and nodes (it places tasks, not we); None here. Its environment depends
            # on how GPUs are probed.
            self.cluster = self._join(self._base_env())
        except BaseException:
            self.executor.close()
            raise
        if self.cluster is not None and res.max_parallel is None:
            slots = self.executor.slots(self.cluster, res.gpus_per_worker)
            self.policy = Policy(res.gpus_per_worker, slots, res.min_free_memory_gb)
        self.sizing = None  # the run mode's decision: GPUs per worker and workers, from the model and the GPUs
        if res.mode is not None:
            try:
                self.sizing = size_gpus(job, self.probe.snapshot())
            except NoFit as e:
                self.executor.close()
                raise Infeasible(str(e)) from None
            workers = min(self.sizing.workers, res.max_parallel or self.sizing.workers)
            self.policy = Policy(self.sizing.gpus_per_worker, workers, res.min_free_memory_gb)
        self.sized = sized_values(job, self.sizing)
        self.controller = Controller(self.paths, self.store, self.opts.on_merge, self.executor.recorded)
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
        self._said_ends: set[tuple[str, int]] = set()  # settles said in turns not committed yet (settling.py)
        self._unsynced: list[Path] = []  # signals written, not fsynced yet (see signals.py)
        self._synced_at = time.monotonic()
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
        self._retry_due: dict[str, tuple[float, float]] = {}  # see Steering._retry_wait

    def _run_context(self) -> RunContext:
        j = self.job
        return RunContext(self.paths.root, self.paths.journal, j.workdir, self.scheduler_id, j.name,
                          j.resources.max_parallel)  # fmt: skip

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
            self._sync_signals()
            self._send_alerts()
            self.alerter.close()
            self.executor.close()
            if not self.detach_requested:
                self.executor.leave()
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
                for (task_id, number), fields in self.meter.due(time.monotonic()).items():
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
        self._said_ends.clear()  # committed: none of its settles is done again
        self.meter.keep(live.key for live in self.live.values())  # attempts whose end is committed: done
        self._send_alerts()
        for spec, live in launches:  # committed: now start them
            self._launch(spec, live)
        self._hand_over_settled()  # the products of settled tasks: after the launches, which wait on nothing
        if self._unsynced and time.monotonic() - self._synced_at >= SIGNAL_SYNC_S:
            self._sync_signals()
        self.alerter.poll()
        if self.out.show_output:
            for live in self.live.values():
                if live.log is not None:
                    self.out.worker_lines(live.label, live.log.read_lines())
        now = time.monotonic()
        if now >= self._next_progress or (self._progress_due and now - self._progress_at >= 1.0):
            self._progress(changed=False)

    def _sync_signals(self) -> None:
        make_durable(self.paths, self._unsynced)
        self._unsynced, self._synced_at = [], time.monotonic()

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
            soonest = min(self._retry_wait(t) for t in self.tasks.values() if t.status == Status.RETRYING)
            timeout = min(timeout, soonest)
        if self.stops:
            timeout = min(timeout, 0.05)
        wakeup.wait([self.executor.fileno()], timeout)

    def _install_signals(self) -> dict:
        def on_stop(signum, _frame):
            self.stop_signals += 1
            if self.stop_signals == 1:
                self.stopped_by_term = signum == signal.SIGTERM
            elif self.executor.stop_waits_for_backend:
                self.leave_requested = True  # stop waiting for its backend (Slurm's controller; see _shutdown)
                self.executor.abandon()
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
        self.waiting = [(t.index, t.id) for t in self.tasks.values() if t.status in WAITING]
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
            if new.status in WAITING:
                heapq.heappush(self.waiting, (new.index, new.id))

    def _all_final(self) -> bool:
        return sum(self.counts[s] for s in Status.FINAL) == len(self.tasks)

    # -- output --------------------------------------------------------------------------------
    def _announce(self) -> None:
        gpus = describe(self.probe) if self.probe is not None else "none (CPU tasks)"
        if self.cluster is not None:
            c = self.cluster
            gpus = f"{c.where} ({c.gpus:g} GPU(s), {c.nodes} node(s))"
        n = len(self.store.tasks())
        self.out.info(
            f"run {self.job.name} (scheduler {self.scheduler_id[:8]}) in {self.paths.root}: "
            f"{n} task(s); GPUs: {gpus}"
        )
        exports.write_config(self.paths, self.job, self.scheduler_id, gpus)
        with self.store.transaction():
            self.store.set_meta("alert_bell", self.job.alerts.bell)  # the app rings the bell on an alert
            for key, value in self.executor.recorded.meta().items():  # how the app and verbs reach attempts
                self.store.set_meta(key, value)
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
        waits, grace_s = self.executor.stop_waits_for_backend, self.job.stop_grace_s
        self.out.info(self.executor.stopping_line(len(self.live), grace_s))
        for live in self.live.values():
            live.interrupted = True
        # On Slurm a stand-in ends its job (the runner ends the tree, scancel a queued job) and is not
        # killed here: killing it would not end the job. It waits as long as that takes; Ctrl-C again leaves,
        # and a SIGTERM (systemd, timeout, a batch script: nobody to press Ctrl-C) waits `bound` at most.
        grace = float("inf") if waits else grace_s
        stop = Stop(self.controller, self._pairs([self.tasks[i] for i in self.live]), grace)
        stop.begin()
        deadline = time.monotonic() + grace_s + 10.0
        bound, leave_at = grace_s + SLURM_TERM_MARGIN_S, float("inf")
        tell_at, told = time.monotonic() + 1.0, ""
        while self.live and (waits or time.monotonic() < deadline) and not self.leave_requested:
            if waits and self.stopped_by_term and leave_at == float("inf"):  # (it may come after a control)
                leave_at = time.monotonic() + bound
            if time.monotonic() >= leave_at:  # as for a second Ctrl-C
                self.leave_requested = True
                self.executor.abandon()
                break
            if waits and time.monotonic() >= tell_at:  # what it waits for: the controller, or a long time
                tell_at = time.monotonic() + 1.0
                leave = "Ctrl-C again to leave them"
                if self.stopped_by_term:
                    leave = f"left to their stand-ins {bound:g}s after the SIGTERM"
                line = self.executor.waiting_line([live.key for live in self.live.values()], leave)
                if line != told and ("controller" in line or time.monotonic() > deadline - 5.0):
                    self.out.info(told := line)
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
        if self.leave_requested and self.live:
            why = f"SIGTERM: waited {bound:g}s; " if time.monotonic() >= leave_at else ""
            self.out.info(why + self.executor.left_line(len(self.live)))
