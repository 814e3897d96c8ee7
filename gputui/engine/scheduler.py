"""The scheduler loop: place, launch, watch, settle, retry; re-adopt what a previous instance left.

It wakes when a waiter reports a worker's start or end, so a finished task is settled and its GPUs
reused at once, and otherwise every `poll` seconds to stream logs, apply control verbs posted by
other processes, advance kills and watch adopted workers. Each turn is one SQLite transaction, and an
attempt is committed before it is launched; a task with a live attempt is never launched again.

The loop only orders the work; each part takes what it needs and lives beside it: setup.py (what the
run works with, and its one GPU policy), run_state.py (the tasks and attempts as the loop knows them),
inbox.py (control verbs; parallel.py: max_parallel set while it runs), stops.py (kills in progress),
settler.py (an ended attempt), leftovers.py (what is left of one), adopter.py (attempts no waiter of ours
reports on), health_checks.py ([health]), time_limits.py ([job].time_limit_s),
launcher.py (starting tasks), gpu_sampler.py (GPU samples, accounting, idle and ghost alerts),
outbox.py (what waits for the commit), voice.py (what it says).
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import time

from gputui.engine.accounting import Meter
from gputui.engine.adopter import Adopter
from gputui.engine.alerter import Alerter
from gputui.engine.attempt import Live, Options, Output
from gputui.engine.control import Controller, Stop
from gputui.engine.gpu_sampler import GpuSampler, SimulatedLoad
from gputui.engine.gpuwatch import GhostWatch, IdleWatch
from gputui.engine.health_checks import HealthChecks
from gputui.engine.inbox import Inbox
from gputui.engine.launcher import Launcher, RetryClock
from gputui.engine.leftovers import Leftovers
from gputui.engine.outbox import Outbox
from gputui.engine.parallel import Parallel
from gputui.engine.run_state import RunState
from gputui.engine.settler import Settler
from gputui.engine.setup import RunSetup
from gputui.engine.stops import Stops
from gputui.engine.time_limits import TimeLimits
from gputui.engine.voice import Progress, Voice
from gputui.executors.base import LaunchSpec
from gputui.executors.journal import AttemptEnds, JournalReader, parse
from gputui.files.wakeup import Wakeup
from gputui.gpus.detect import describe
from gputui.gpus.reservations import Reservations
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status
from gputui.rundir import exports
from gputui.rundir.meta import read_meta, write_meta
from gputui.rundir.opening import Run

ENDED, STOPPED, DETACHED = "ended", "stopped", "detached"  # how Scheduler.run came back
BUSY_TIMEOUT_S = 1.0  # a turn waits this long for another writer of state.db, then is tried again later
# A SIGTERM stopping a run on Slurm waits this long past stop_grace_s for its jobs, then leaves them to their
# stand-ins: each cancels a job not ended in its grace 5 s after it, and sees it gone a second or so later.
# GPUTUI_SLURM_TERM_MARGIN_S sets it (a test shortens the wait).
SLURM_TERM_MARGIN_S = float(os.environ.get("GPUTUI_SLURM_TERM_MARGIN_S", "20"))

Launches = list[tuple[LaunchSpec, Live]]


class Scheduler:
    """One run's driver: the loop, over the parts that live beside it (see the module's docstring)."""

    def __init__(self, job: JobSpec, run: Run, out: Output, options: Options | None = None):
        self.job = job
        self.store = store = run.store
        self.notes = run.notes
        store.busy_timeout(BUSY_TIMEOUT_S)
        self.paths = paths = run.paths
        self.opts = opts = options or Options()
        self.scheduler_id = sid = run.scheduler_id
        self.state = state = RunState(store)
        self.voice = voice = Voice(out)
        self.setup = setup = RunSetup(job, run, opts, SimulatedLoad(state))  # executor, probe, cluster, policy
        executor, probe = setup.executor, setup.probe
        self.executor, self.probe, self.cluster = executor, probe, setup.cluster
        self._unapplied: list[str] = []  # waiter records read but not yet committed (a failed turn)
        self._db_trouble = ""  # what keeps the state from being written, as last told
        self.stop_requested = False
        self.detach_requested = False
        self.leave_requested = False  # Ctrl-C again while stopping on Slurm: leave the jobs as they are
        self.stop_signals = 0  # Ctrl-Cs and SIGTERMs received (a stop control is not one of them)
        self.stopped_by_term = False  # the first was a SIGTERM: nobody may be there to press Ctrl-C again
        self.controller = controller = Controller(paths, store, opts.on_merge, executor.recorded, state.over)
        self.meter = meter = Meter(simulated=bool(probe and probe.simulated))
        self.alerter = alerter = Alerter(
            paths.alerts,
            job.alerts.command,
            cwd=job.workdir,
            env=setup.base_env(),
            log_path=paths.root / "logs" / "alert-command.log",
            say=out.info,
        )
        idle = IdleWatch(job.alerts.idle_minutes) if job.alerts.idle_minutes and probe else None
        ghosts = GhostWatch(sid) if probe is not None else None
        self.sampler = sampler = GpuSampler(probe, opts.probe_every, state, meter, idle, ghosts, alerter, voice)
        self.outbox = outbox = Outbox(paths, alerter, voice, opts.on_settled)
        self.progress = Progress(voice, state, opts.progress_every)
        self.stops = stops = Stops(controller, store, voice, job.stop_grace_s)
        self.health = health = HealthChecks(job.health, paths, state, store, stops, outbox, voice)
        placed_by = executor.recorded if self.cluster is not None else None  # a cluster's clock starts on its node
        self.time_limits = TimeLimits(job.time_limit_s, state, store, stops, voice, placed_by)
        journal = JournalReader(paths.journal)
        self.leftovers = leftovers = Leftovers(
            state, store, journal, executor, controller, stops, sampler, sid, voice
        )
        self.settler = settler = Settler(
            setup, state, store, meter, sampler, leftovers, outbox, voice, self.progress
        )
        self.adopter = Adopter(
            state, store, executor.recorded, settler, leftovers, health, stops, meter, outbox, sid, voice
        )
        self.retries = retries = RetryClock(job.retry.backoff_max_s)
        claims = Reservations.for_probe(probe, paths.root) or Reservations()  # (private simulated GPUs: the run's)
        self.launcher = launcher = Launcher(
            setup, state, store, sampler, claims, meter, retries, health, settler, outbox, voice
        )
        parallel = Parallel(setup, launcher, store)
        self.inbox = Inbox(store, controller, state, stops, settler, voice, self._request_stop, parallel)
        self._started_wall = time.time()
        self._next_poll = 0.0

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> str:
        """Drive the run to its end, or until interrupted or detached: returns ENDED, STOPPED or DETACHED."""
        wakeup = Wakeup()
        old = self._install_signals()
        try:
            self._announce()
            self.state.load()
            todo = self.state.todo()
            if todo:  # its waiters start while we do
                self.executor.start(prefork=min(todo, self.setup.policy.max_parallel or 8))
            self.inbox.expire_old(self._started_wall)
            self.adopter.resume()
            if self.probe is not None:
                self.setup.check_feasible(self.sampler.snapshot(force=True))
            while not (self.stop_requested or self.detach_requested):
                self._turn()
                if not self._anything_left():
                    break
                self._wait(wakeup)
            if self.stop_requested:
                self._shutdown()
            elif self.detach_requested:
                self.voice.info(
                    f"detached; {len(self.state.live)} task(s) keep running. Run the same command to re-attach."
                )
            self._leave_reasons()
        finally:
            self.outbox.sync_signals()
            self.outbox.send_alerts()
            self.alerter.close()
            self.leftovers.orphans.sweep(wait=1.0)  # before the keeper removes our run folder
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

    def _leave_reasons(self) -> None:
        """No task waits on this scheduler any more: the reasons it gave waiting tasks go (best effort: a state
        that cannot be written keeps them, and the next scheduler gives its own)."""
        try:
            with self.store.transaction():
                self.launcher.reasons.clear_all()
        except (sqlite3.OperationalError, OSError):
            pass

    def _anything_left(self) -> bool:
        """Whether the run goes on: an attempt runs, a kill or leftovers are waited for, or a task is not final."""
        state = self.state
        return bool(state.live or self.stops or self.leftovers.waited_for() or not state.all_final())

    # -- one turn of the loop ------------------------------------------------------------------
    def _turn(self) -> None:
        """Gather what happened (outside the write lock), apply it and plan launches in one transaction,
        then, once committed, launch and hand on what waited for the commit. A turn that cannot be
        committed did nothing: it is done again later."""
        launches: Launches = []
        lines = self._unapplied + self.executor.events()
        self._unapplied = []
        try:
            self.inbox.take()
            self.stops.advance()
            self._hear_lost_waiters()
            news = self._news(lines)
            manifests = self.settler.write_manifests(news)  # hashing big outputs happens outside the write lock
            if self.probe is not None and self.state.live:
                self.sampler.snapshot()  # GPU accounting and alerts sample the GPUs every probe_every seconds
            with self.store.transaction():
                self.settler.apply(news, manifests)
                self._poll_if_due()
                self.health.check_if_due()
                self.time_limits.check_if_due()
                self._write_usage()
                self.launcher.plan(launches)
        except (sqlite3.OperationalError, OSError) as e:
            self.outbox.forget()
            self.launcher.give_back(launches)
            if not self._recover(e):
                raise
            self._unapplied = lines  # applied again once the state can be written
            return
        self._committed()
        for spec, live in launches:  # committed: now start them
            self.launcher.launch(spec, live)
        self.outbox.hand_over_settled()  # the products of settled tasks: after the launches, which wait on nothing
        self.outbox.sync_if_due()
        self.alerter.poll()
        self._stream_output()
        self.progress.tick()
        self.leftovers.orphans.sweep()

    def _hear_lost_waiters(self) -> None:
        """An attempt whose waiter died: watched from now on by polling what is left of it."""
        for key in self.executor.lost():
            live = self.state.live.get(key[0]) or self.state.lingering.get(key)
            if live is not None and live.number == key[1]:
                live.ours = False

    @staticmethod
    def _news(lines: list[str]) -> dict[tuple[str, int], AttemptEnds]:
        news: dict[tuple[str, int], AttemptEnds] = {}
        for text in lines:
            parse(text, news)
        return news

    def _poll_if_due(self) -> None:
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.opts.poll
            self.adopter.poll()
            if self.cluster is not None:  # which submitted tasks still wait in the cluster's queue
                self.launcher.reasons.queued(self.state.live.values(), self.executor.recorded, self.executor.kind)

    def _write_usage(self) -> None:
        """Running attempts' GPU accounting, every few seconds."""
        for (task_id, number), fields in self.meter.due(time.monotonic()).items():
            self.store.update_attempt(task_id, number, **fields)

    def _committed(self) -> None:
        self._trouble_clear()
        self.settler.committed()
        self.meter.keep(live.key for live in self.state.live.values())  # attempts whose end is committed: done
        self.outbox.send_alerts()

    def _stream_output(self) -> None:
        if self.voice.show_output:
            for live in self.state.live.values():
                if live.log is not None:
                    self.voice.worker_lines(live.label, live.log.read_lines())

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
            self.voice.info(why)
            self._db_trouble = why
        self.adopter.reload()
        self._next_poll = time.monotonic() + 1.0
        return True

    def _trouble_clear(self) -> None:
        if self._db_trouble:
            self.voice.info("the run's state can be written again; going on")
            self._db_trouble = ""

    def _wait(self, wakeup: Wakeup) -> None:
        timeout = max(0.0, min(self._next_poll - time.monotonic(), self.opts.poll))
        state = self.state
        if state.counts[Status.RETRYING]:
            soonest = min((self.retries.wait(t) for t in state.retrying()), default=timeout)
            timeout = min(timeout, soonest)
        if self.stops:
            timeout = min(timeout, 0.05)
        wakeup.wait([self.executor.fileno()], timeout)

    def _request_stop(self) -> None:
        self.stop_requested = True

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

    # -- output --------------------------------------------------------------------------------
    def _announce(self) -> None:
        gpus = describe(self.probe) if self.probe is not None else "none (CPU tasks)"
        if self.cluster is not None:
            c = self.cluster
            gpus = f"{c.where} ({c.gpus:g} GPU(s), {c.nodes} node(s))"
        n = self.store.task_count()
        self.voice.info(
            f"run {self.job.name} (scheduler {self.scheduler_id[:8]}) in {self.paths.root}: "
            f"{n} task(s); GPUs: {gpus}"
        )
        exports.write_config(self.paths, self.job, self.scheduler_id, gpus)
        with self.store.transaction():  # how the app and verbs reach attempts
            write_meta(self.store, read_meta(self.store).started(self.executor.recorded.meta()))
        for note in self.notes:
            self.voice.info(note)

    # -- ending --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Ctrl-C / SIGTERM: stop our workers (only ours), keep their tasks pending for next time."""
        self.stops.finish_all()
        running = self.state.live
        if not running:
            return
        waits, grace_s = self.executor.stop_waits_for_backend, self.job.stop_grace_s
        self.voice.info(self.executor.stopping_line(len(running), grace_s))
        for live in running.values():
            live.interrupted = True
        # On Slurm a stand-in ends its job (the runner ends the tree, scancel a queued job) and is not
        # killed here: killing it would not end the job. It waits as long as that takes; Ctrl-C again leaves,
        # and a SIGTERM (systemd, timeout, a batch script: nobody to press Ctrl-C) waits `bound` at most.
        grace = float("inf") if waits else grace_s
        stop = Stop(self.controller, self.stops.pairs([self.state.tasks[i] for i in running]), grace)
        stop.begin()
        deadline = time.monotonic() + grace_s + 10.0
        bound, leave_at = grace_s + SLURM_TERM_MARGIN_S, float("inf")
        tell_at, told = time.monotonic() + 1.0, ""
        while self.state.live and (waits or time.monotonic() < deadline) and not self.leave_requested:
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
                line = self.executor.waiting_line([live.key for live in self.state.live.values()], leave)
                if line != told and ("controller" in line or time.monotonic() > deadline - 5.0):
                    self.voice.info(told := line)
            stop.step()
            news = self._news(self.executor.events())
            with self.store.transaction():  # one starting only now is stopped too
                self.settler.apply(news, self.settler.write_manifests(news))
                self.adopter.poll()
            self.outbox.send_alerts()
            self.stops.step_all()
            time.sleep(0.02)
        if self.leave_requested and self.state.live:
            why = f"SIGTERM: waited {bound:g}s; " if time.monotonic() >= leave_at else ""
            self.voice.info(why + self.executor.left_line(len(self.state.live)))
