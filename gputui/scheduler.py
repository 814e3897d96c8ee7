"""The scheduler loop: place, launch, watch, settle, retry; re-adopt what a previous instance left.

It wakes when its keeper reports a worker's start or end, so a finished task is settled and its GPUs
reused at once, and otherwise every `poll` seconds to stream logs, apply control verbs posted by
other processes, advance kills and watch adopted workers. Each turn is one SQLite transaction, and an
attempt is committed before it is launched; a task with a live attempt is never launched again.
"""

from __future__ import annotations

import heapq
import os
import shlex
import signal
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gputui import exports, ownership
from gputui.control import ControlError, Controller, Stop
from gputui.executors.journal import AttemptEnds, JournalReader
from gputui.executors.local import LaunchSpec, LocalExecutor
from gputui.failures import Failure, classify, read_tail
from gputui.finalize import merge_run, write_summary
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.jobspec import JobSpec, render_command
from gputui.logtail import LogTail
from gputui.merge import manifest_matches, write_manifest
from gputui.placement import Policy, place, why_waiting
from gputui.printer import Printer, progress_line
from gputui.records import Status, TaskRecord
from gputui.session import Run
from gputui.wakeup import Wakeup

_WAITING = (Status.PENDING, Status.RETRYING)


class Infeasible(RuntimeError):
    """The job can never start here (too few or too small GPUs); said at once instead of waiting."""


@dataclass
class Live:
    """An attempt in flight: launched by us, or adopted from a previous scheduler instance."""

    task_id: str
    number: int
    gpus: tuple[int, ...]
    label: str
    log_path: str
    started_at: float
    keeper: ownership.ProcessRef | None = None  # while it lives, this attempt's end will be recorded
    ours: bool = False  # launched through our keeper, which reports its end; else watched by polling
    pid: int | None = None  # the worker's pid, as the keeper reported it
    worker: ownership.ProcessRef | None = None  # pid + start time, taken while it carried our tag
    log: LogTail | None = None  # opened when output is streamed
    interrupted: bool = False  # stopped by our own shutdown: not the task's fault


@dataclass
class Options:
    simulate: str | None = None
    show_output: bool = True
    poll: float = 0.25
    progress_every: float = 30.0
    probe_every: float = 1.0


class Scheduler:
    def __init__(self, job: JobSpec, run: Run, options: Options | None = None, printer: Printer | None = None):
        self.job = job
        self.store = run.store
        self.paths = run.paths
        self.opts = options or Options()
        self.out = printer or Printer(show_output=self.opts.show_output)
        self.scheduler_id = run.scheduler_id
        self.tasks: dict[str, TaskRecord] = {}
        self.outputs: dict[str, str | None] = {}
        self.counts: Counter[str] = Counter()
        self.waiting: list[tuple[int, str]] = []  # heap of (index, task id); stale entries are skipped
        self.live: dict[str, Live] = {}
        self.stops: list[Stop] = []  # kills in progress (SIGTERM sent, SIGKILL due later)
        self.stop_requested = False
        self.detach_requested = False
        self.controller = Controller(self.paths, self.store, on_merge=lambda: merge_run(self.store, self.paths))
        self.journal = JournalReader(self.paths.journal)
        res = job.resources
        max_parallel = res.max_parallel or (None if res.gpus_per_worker else (os.cpu_count() or 1))
        self.policy = Policy(res.gpus_per_worker, max_parallel, res.min_free_memory_gb, res.memory_per_worker_gb)
        self.probe: GpuProbe | None = None
        if res.gpus_per_worker > 0:
            self.probe = open_probe(self.opts.simulate, load=self._simulated_load)
        self.executor = LocalExecutor(
            job.workdir, self._base_env(), self.paths.root / "keeper.log", self.paths.journal
        )
        self._gpus: list[GpuSnapshot] = []
        self._gpus_at = 0.0
        self._started = time.monotonic()
        self._started_wall = time.time()
        self._next_poll = 0.0
        self._next_progress = time.monotonic() + self.opts.progress_every
        self._progress_at = -1.0
        self._progress_due = False
        self._waiting_said = ""

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> int:
        """Drive the run to its end (or until interrupted / detached); returns the exit status."""
        wakeup = Wakeup()
        old = self._install_signals()
        try:
            self._announce()
            self._load_tasks()
            if any(t.status not in Status.FINAL for t in self.tasks.values()):
                self.executor.start()  # its start-up overlaps ours
            self._expire_old_controls()
            self._resume()
            self._check_feasible()
            while not (self.stop_requested or self.detach_requested):
                self._turn()
                if not self.live and not self.stops and self._all_final():
                    break
                self._wait(wakeup)
            if self.stop_requested:
                self._shutdown()
            elif self.detach_requested:
                self.out.info(
                    f"detached; {len(self.live)} task(s) keep running. Run the same command to re-attach."
                )
        finally:
            self.executor.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            wakeup.close()
            if self.probe is not None:
                self.probe.close()
            exports.write_tasks(self.paths, self.store)
        if self.stop_requested:
            return 130
        if self.detach_requested:
            return 0
        return self._finish()

    # -- one turn of the loop ------------------------------------------------------------------
    def _turn(self) -> None:
        controls = self.store.pending_controls()
        if controls:
            self._apply_controls(controls)
        if self.stops:
            self._advance_stops()
        news = self.executor.events()
        manifests = self._write_manifests(news)  # hashing big outputs happens outside the write lock
        launches: list[tuple[LaunchSpec, Live]] = []
        with self.store.transaction():
            self._apply_events(news, manifests)
            if time.monotonic() >= self._next_poll:
                self._next_poll = time.monotonic() + self.opts.poll
                self._poll()
            self._plan_launches(launches)
        for spec, live in launches:  # committed: now start them
            self._launch(spec, live)
        if self.out.show_output:
            for live in self.live.values():
                if live.log is not None:
                    self.out.worker_lines(live.label, live.log.read_lines())
        now = time.monotonic()
        if now >= self._next_progress or (self._progress_due and now - self._progress_at >= 1.0):
            self._progress(changed=False)

    def _wait(self, wakeup: Wakeup) -> None:
        timeout = max(0.0, min(self._next_poll - time.monotonic(), self.opts.poll))
        if self.counts[Status.RETRYING]:
            soonest = min(t.next_try_at or 0 for t in self.tasks.values() if t.status == Status.RETRYING)
            timeout = max(0.0, min(timeout, soonest - time.time()))
        if self.stops:
            timeout = min(timeout, 0.05)
        keeper = self.executor.fileno()
        wakeup.wait([] if keeper is None else [keeper], timeout)

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
    def _resume(self) -> None:
        unsettled = self.store.unsettled_attempts()
        tagged = ownership.find_tagged(self.scheduler_id) if unsettled else {}  # one /proc scan for all
        to_stop = []
        with self.store.transaction():
            for a in unsettled:
                task = self.tasks[a.task_id]
                live = Live(a.task_id, a.number, a.gpus, task.range_label, a.log_path, a.started_at)
                if a.worker_pid is not None:
                    live.worker = ownership.ProcessRef(a.worker_pid, a.worker_ctime)
                if a.keeper_pid is not None:
                    live.keeper = ownership.ProcessRef(a.keeper_pid, a.keeper_ctime)
                if self.out.show_output:
                    live.log = LogTail(a.log_path, from_end=True)
                self.live[a.task_id] = live
                ends = self._learn_worker(live)
                if ends.ended or not self._still_running(live, tagged):
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
        if to_stop:
            self.stops.append(Stop(self.controller, self._pairs(to_stop), self.job.stop_grace_s).begin())

    def _still_running(self, live: Live, tagged: dict | None = None) -> bool:
        """Could this attempt still end with a recorded exit status?"""
        if live.worker is not None and ownership.alive(live.worker):
            return True
        if live.keeper is not None and ownership.alive(live.keeper):
            return True  # its keeper will record the end (or still holds the launch request)
        if tagged is None:
            tagged = ownership.find_tagged(self.scheduler_id, [live.task_id])
        found = tagged.get(live.task_id)
        if found and live.worker is None:
            live.worker = found[0]
        return bool(found)

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
        slots = None if self.policy.max_parallel is None else self.policy.max_parallel - len(self.live)
        if not self.waiting or slots == 0:
            return
        now = time.time()
        ready, later, seen = [], [], set()
        while self.waiting and (slots is None or len(ready) < slots):
            index, task_id = heapq.heappop(self.waiting)
            t = self.tasks[task_id]
            if t.status not in _WAITING or task_id in seen:
                continue  # stale heap entry
            seen.add(task_id)
            if task_id in self.live or (t.status == Status.RETRYING and (t.next_try_at or 0) > now):
                later.append((index, task_id))  # its last attempt has not ended yet, or not due
            else:
                ready.append(t)
        gpus = self._snapshot() if self.probe is not None and ready else []
        reserved = {g for live in self.live.values() for g in live.gpus}
        placed = dict(place([t.id for t in ready], gpus, reserved, len(self.live), self.policy))
        for t in ready:
            if t.id in placed:
                launches.append(self._record_launch(t, placed[t.id], now))
            else:
                later.append((t.index, t.id))
        for entry in later:
            heapq.heappush(self.waiting, entry)
        if ready and not placed and not self.live and self.probe is not None:
            reason = why_waiting(gpus, reserved, self.policy)
            if reason != self._waiting_said:
                self.out.info(f"waiting for GPUs: {reason}")
                self._waiting_said = reason

    def _record_launch(self, task: TaskRecord, gpus: tuple[int, ...], now: float) -> tuple[LaunchSpec, Live]:
        number = task.attempts + 1
        values = {
            "low": task.low,
            "high": task.high,
            "input": self.job.shards.input,
            "run_dir": self.paths.root,
            "output_dir": self.job.outputs.dir,
            "task_id": task.id,
            "attempt": number,
            "gpus": ",".join(map(str, gpus)),
            "num_gpus": len(gpus),
        }
        argv = render_command(self.job, values)
        env = {
            ownership.TAG_SCHEDULER: self.scheduler_id,
            ownership.TAG_TASK: task.id,
            ownership.TAG_ATTEMPT: str(number),
            "GPUTUI_LOW": str(task.low),
            "GPUTUI_HIGH": str(task.high),
        }
        shown = shlex.join(argv)
        if self.probe is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
            shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {shown}"
        log_path = self.paths.log(task.id, number)
        keeper = self.executor.keeper_ref()
        self.store.start_attempt(task.id, number, gpus, argv, str(log_path), now)
        if keeper is not None:
            self.store.update_attempt(task.id, number, keeper_pid=keeper.pid, keeper_ctime=keeper.ctime)
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
        live = self.live[task.id] = Live(task.id, number, gpus, task.range_label, str(log_path), now, keeper)
        return LaunchSpec(task.id, number, argv, env, log_path), live

    def _launch(self, spec: LaunchSpec, live: Live) -> None:
        if self.out.show_output:
            live.log = LogTail(spec.log_path)
        try:
            self.executor.launch(spec)
            live.ours = True
        except OSError as e:
            try:
                with open(spec.log_path, "a") as log:
                    log.write(f"gputui: cannot launch: {e}\n")
            except OSError:
                pass
            with self.store.transaction():
                self._settle(live, AttemptEnds(exit_code=127, ended_at=time.time()), None)

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
    def _apply_events(self, news: dict | None, manifests: dict[str, str | None]) -> None:
        if news is None:  # the keeper died: its attempts are watched through the journal from now on
            for live in self.live.values():
                live.ours = False
            return
        for (task_id, number), ends in news.items():
            live = self.live.get(task_id)
            if live is None or live.number != number:
                continue
            if ends.pid is not None and live.pid is None:
                live.pid = ends.pid  # its start time is taken on the next poll, if it still runs then
                self._started_late(live)
            if ends.ended:
                self._settle(live, ends, manifests.get(task_id))

    def _started_late(self, live: Live) -> None:
        """A worker whose start is reported after its task was killed or paused (or during our
        shutdown) is stopped or paused now: a kill must never miss a worker still being spawned."""
        status = self.tasks[live.task_id].status
        if status not in (Status.KILLED, Status.PAUSED) and not live.interrupted:
            return
        self._record_worker(live, live.pid)
        pairs = self._pairs([self.tasks[live.task_id]])
        if status == Status.PAUSED:
            self.controller.signal_trees(pairs, signal.SIGSTOP)
        else:
            self.stops.append(Stop(self.controller, pairs, self.job.stop_grace_s).begin())

    def _poll(self) -> None:
        """Note running workers' start times; watch attempts no keeper of ours reports on (adopted)."""
        for live in list(self.live.values()):
            if live.worker is None and live.pid is not None:
                self._record_worker(live, live.pid)
            if not live.ours:
                ends = self._learn_worker(live)
                if ends.ended or not self._still_running(live):
                    self._settle(live, ends, self._manifest_for(live, ends))

    def _learn_worker(self, live: Live) -> AttemptEnds:
        ends = self.journal.get(live.task_id, live.number)
        if live.worker is None and ends.pid is not None and not ends.ended:
            self._record_worker(live, ends.pid)
        return ends

    def _record_worker(self, live: Live, pid: int) -> None:
        """pid + start time, taken only while the pid carries this attempt's tag (never a reused pid)."""
        ref = ownership.tagged_ref(pid, self.scheduler_id, live.task_id, live.number)
        if ref is not None:
            live.worker = ref
            self.store.update_attempt(live.task_id, live.number, worker_pid=ref.pid, worker_ctime=ref.ctime)

    # -- settling an ended attempt -------------------------------------------------------------
    def _write_manifests(self, news: dict | None) -> dict[str, str | None]:
        """Done-manifests for attempts that exited 0 with their output present; values are errors."""
        results: dict[str, str | None] = {}
        for (task_id, number), ends in (news or {}).items():
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
        self.live.pop(live.task_id, None)
        self._gpus_at = 0.0  # its GPUs are free now: look again before placing
        if live.log is not None:
            self.out.worker_lines(live.label, live.log.read_lines(flush=True))
        code, ended = ends.exit_code, ends.ended_at or time.time()
        task = self.tasks[live.task_id]
        ended_fields = {"exit_code": code, "ended_at": ended}
        if live.number != task.attempts:  # an old attempt (a retry was queued meanwhile): close it only
            self.store.update_attempt(
                task.id, live.number, status=Status.LOST if code is None else Status.FAILED, **ended_fields
            )
            return
        if task.status == Status.KILLED:
            self.store.update_attempt(
                task.id, live.number, status=Status.KILLED, reason=task.reason, **ended_fields
            )
            self._set(task.id, exit_code=code, ended_at=ended)
            self.out.info(f"killed {task.id} {live.label} ({task.reason})")
            self._progress()
            return
        output = self.outputs.get(task.id)
        if code == 0 and output and not Path(output).exists():
            failure = Failure("missing_output", f"exited 0 but its output {output} is missing")
        elif code == 0 and manifest_error:
            failure = Failure("missing_output", manifest_error)
        elif code == 0:
            self.store.update_attempt(task.id, live.number, status=Status.DONE, **ended_fields)
            self._set(task.id, status=Status.DONE, exit_code=0, ended_at=ended, reason=None)
            self.store.add_event("done", f"attempt {live.number} done", task.id)
            self.out.info(f"done {task.id} {live.label} in {ended - live.started_at:.1f}s")
            self._progress()
            return
        else:
            failure = classify(code, read_tail(live.log_path))
        status = Status.LOST if code is None else Status.FAILED
        self.store.update_attempt(task.id, live.number, status=status, reason=failure.reason, **ended_fields)
        if live.interrupted:
            self._set(
                task.id,
                status=Status.PENDING,
                budget=task.budget + 1,
                exit_code=code,
                ended_at=ended,
                reason="interrupted when gputui stopped",
            )
            return
        if task.attempts < task.budget:
            delay = min(self.job.retry.backoff_max_s, self.job.retry.backoff_s * 2 ** (task.attempts - 1))
            self._set(
                task.id,
                status=Status.RETRYING,
                next_try_at=time.time() + delay,
                exit_code=code,
                ended_at=ended,
                reason=failure.reason,
            )
            then = f"retrying in {delay:g}s (attempt {task.attempts + 1}/{task.budget})"
        else:
            self._set(task.id, status=Status.FAILED, exit_code=code, ended_at=ended, reason=failure.reason)
            then = f"no attempts left ({task.attempts}/{task.budget}); failed for good"
        self.store.add_event("failed", f"attempt {live.number}: {failure.reason}", task.id)
        self.out.info(f"FAILED {task.id} {live.label} attempt {live.number}: {failure.reason} — {then}")
        self._progress()

    # -- controls ------------------------------------------------------------------------------
    def _apply_controls(self, controls) -> None:
        for c in controls:
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
                    ok, result = self.controller.apply(c.verb, tasks)
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
        return self._gpus

    def _simulated_load(self) -> Mapping[int, list[tuple[int, int]]]:
        per_task = int((self.policy.memory_per_worker_gb or TASK_MEMORY_GB) * GIB)
        load: dict[int, list[tuple[int, int]]] = {}
        for live in self.live.values():
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

    def _progress(self, *, changed: bool = True) -> None:
        """After a task ends (at most once a second, so thousands of short tasks do not flood the
        terminal), and every `progress_every` seconds."""
        now = time.monotonic()
        if changed and now - self._progress_at < 1.0:
            self._progress_due = True
            return
        self._progress_at, self._progress_due = now, False
        self._next_progress = now + self.opts.progress_every
        self.out.line(progress_line(self.counts, now - self._started))

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
            news = self.executor.events()
            with self.store.transaction():
                self._apply_events(news, self._write_manifests(news))  # one starting only now is stopped too
                self._poll()
            for late in self.stops:
                late.step()
            time.sleep(0.02)

    def _finish(self) -> int:
        tasks = self.store.tasks()
        ok = all(t.status == Status.DONE for t in tasks)
        if ok and self.store.meta("merged"):
            line = merge_run(self.store, self.paths)
            self.out.info(line)
            ok = not line.startswith("merge failed")
        summary_path, report_path = write_summary(self.store, self.paths)
        self.out.line(progress_line(Counter(t.status for t in tasks), time.monotonic() - self._started))
        self.out.info(f"summary: {summary_path}, report: {report_path}")
        for t in [t for t in tasks if t.status != Status.DONE][:10]:
            self.out.info(f"{t.id} {t.range_label} {t.status}: {t.reason or ''}")
        return 0 if ok else 1
