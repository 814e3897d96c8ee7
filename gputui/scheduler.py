"""The scheduler loop: place, launch, watch, settle, retry; re-adopt what a previous instance left.

Single-threaded on purpose: supervisors are forked from it (see executors/local.py). It wakes on
SIGCHLD, so a finished task is settled and its GPUs reused at once, and otherwise every `poll`
seconds to stream logs, apply control verbs posted by other processes and watch adopted workers.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gputui import ownership
from gputui.atomic import atomic_write_json
from gputui.control import Controller
from gputui.executors.local import LaunchSpec, launch
from gputui.executors.pidfile import read_exit_file, read_pid_file
from gputui.failures import classify, read_tail
from gputui.finalize import merge_run, write_summary
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot
from gputui.jobspec import JobSpec, render_command
from gputui.logtail import LogTail
from gputui.merge import manifest_matches, write_manifest
from gputui.placement import Policy, place, why_waiting
from gputui.printer import Printer, progress_line
from gputui.records import Status, TaskRecord
from gputui.session import Run

SIMULATED_TASK_MEMORY_GB = 2.0  # what a simulated GPU shows for a task that declares no memory


class Infeasible(RuntimeError):
    """The job can never start here (too few or too small GPUs); said at once instead of waiting."""


@dataclass
class Live:
    """An attempt in flight: launched by us, or adopted from a previous scheduler instance."""

    task_id: str
    number: int
    gpus: tuple[int, ...]
    label: str
    log: LogTail
    child: int | None = None  # our supervisor child, to reap; None when adopted
    supervisor: ownership.ProcessRef | None = None
    worker: ownership.ProcessRef | None = None
    interrupted: bool = False  # stopped by our own shutdown: not the task's fault


@dataclass
class Options:
    simulate: str | None = None
    show_output: bool = True
    poll: float = 0.25
    progress_every: float = 30.0
    probe_every: float = 1.0


@dataclass
class _Flags:
    stop: bool = False
    detach: bool = False
    signals: list[int] = field(default_factory=list)


class Scheduler:
    def __init__(self, job: JobSpec, run: Run, options: Options | None = None, printer: Printer | None = None):
        self.job = job
        self.run_ = run
        self.store = run.store
        self.paths = run.paths
        self.opts = options or Options()
        self.out = printer or Printer(show_output=self.opts.show_output)
        self.scheduler_id = run.scheduler_id
        self.tasks: dict[str, TaskRecord] = {}
        self.live: dict[str, Live] = {}
        self.flags = _Flags()
        self.controller = Controller(self.paths, self.store, on_merge=self._merge)
        res = job.resources
        max_parallel = res.max_parallel or (None if res.gpus_per_worker else (os.cpu_count() or 1))
        self.policy = Policy(res.gpus_per_worker, max_parallel, res.min_free_memory_gb, res.memory_per_worker_gb)
        self.probe: GpuProbe | None = None
        if res.gpus_per_worker > 0:
            self.probe = open_probe(self.opts.simulate, load=self._simulated_load)
        self._gpus: list[GpuSnapshot] = []
        self._gpus_at = 0.0
        self._started = time.monotonic()
        self._next_poll = 0.0
        self._next_progress = 0.0
        self._waiting_said = ""
        self._dirty_exports: set[str] = set()

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> int:
        """Drive the run to its end (or until interrupted / detached); returns the exit status."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old = self._install_signals(wake_w)
        try:
            self._announce()
            self._reload()
            self._resume()
            self._check_feasible()
            while not (self.flags.stop or self.flags.detach):
                self._tick()
                if not self.live and all(t.status in Status.FINAL for t in self.tasks.values()):
                    break
                self._wait(wake_r)
            if self.flags.stop:
                self._shutdown()
            elif self.flags.detach:
                self.out.info(f"detached; {len(self.live)} task(s) keep running. Run the same command to re-attach.")
        finally:
            self._export_tasks()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            if self.probe is not None:
                self.probe.close()
        if self.flags.stop:
            return 130
        if self.flags.detach:
            return 0
        return self._finish()

    # -- one turn of the loop ------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.time()
        with self.store.transaction():
            self._reap()
            if time.monotonic() >= self._next_poll:
                self._next_poll = time.monotonic() + self.opts.poll
                self._poll_adopted()
        if self.store.pending_controls():
            self._apply_controls()
        self._launch_ready(now)
        self._stream_logs()
        if time.monotonic() >= self._next_progress:
            self._progress()

    def _wait(self, wake_r: int) -> None:
        timeout = max(0.0, min(self._next_poll - time.monotonic(), self.opts.poll))
        waiting = [t.next_try_at for t in self.tasks.values() if t.status == Status.RETRYING and t.next_try_at]
        if waiting:
            timeout = max(0.0, min(timeout, min(waiting) - time.time()))
        try:
            ready, _, _ = select.select([wake_r], [], [], timeout)
        except InterruptedError:
            ready = [wake_r]
        if ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _install_signals(self, wake_w: int) -> dict:
        def on_stop(signum, _frame):
            self.flags.stop = True

        def on_hup(signum, _frame):
            self.flags.detach = True

        handlers = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_hup,
                    signal.SIGCHLD: lambda *_: None}
        old = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        return old

    # -- state ---------------------------------------------------------------------------------
    def _reload(self) -> None:
        self.tasks = {t.id: t for t in self.store.tasks()}

    def _set(self, task_id: str, **fields) -> None:
        self.store.update_task(task_id, **fields)
        if "gpus" in fields:
            fields["gpus"] = tuple(fields["gpus"])
        t = self.tasks[task_id]
        self.tasks[task_id] = TaskRecord(**{**t.__dict__, **fields})
        self._dirty_exports.add(task_id)

    def _event(self, kind: str, message: str, task_id: str | None = None) -> None:
        self.store.add_event(kind, message, task_id)

    # -- resume: settle or re-adopt what a previous instance left ------------------------------
    def _resume(self) -> None:
        with self.store.transaction():
            for a in self.store.unsettled_attempts():
                task = self.tasks[a.task_id]
                live = Live(a.task_id, a.number, a.gpus, _label(task), LogTail(a.log_path, from_end=True))
                self._read_pid_file(live)
                if live.worker is None and a.worker_pid is not None:
                    live.worker = ownership.ProcessRef(a.worker_pid, a.worker_ctime)
                self.live[a.task_id] = live
                exit_info = read_exit_file(self.paths.exit_file(a.task_id, a.number))
                if exit_info is not None:
                    self._settle(live)
                    continue
                if not self._still_running(live):
                    tagged = ownership.find_tagged(self.scheduler_id, [a.task_id]).get(a.task_id)
                    if tagged:
                        live.worker = tagged[0]  # its supervisor is gone; watch the worker itself
                    else:
                        self._settle(live)
                        continue
                pid = live.worker.pid if live.worker else "?"
                self.out.info(f"re-adopted {a.task_id} {live.label} attempt {a.number} (pid {pid}), still running")
                self._event("adopted", f"re-adopted attempt {a.number}, pid {pid}", a.task_id)
            live_ids = set(self.live)
            for t in list(self.tasks.values()):
                if t.status in Status.LIVE and t.id not in live_ids:
                    self._set(t.id, status=Status.PENDING)
                if t.status in (Status.PENDING, Status.RETRYING) and self._output_done(t):
                    self._set(t.id, status=Status.DONE, reason=None)
                    self._event("done", "found its finished output (done-manifest)", t.id)
                    self.out.info(f"{t.id} {_label(t)} already done (its output has a matching done-manifest)")

    def _still_running(self, live: Live) -> bool:
        return any(ref and ownership.alive(ref) for ref in (live.supervisor, live.worker))

    def _output_done(self, t: TaskRecord) -> bool:
        output = self.store.task_output(t.id)
        return bool(output) and manifest_matches(Path(output), low=t.low, high=t.high)

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
        big = [g for g in gpus if g.memory_total >= self.policy.min_free_bytes]
        if len(big) < need:
            largest = max(g.memory_total for g in gpus) / GIB
            raise Infeasible(
                f"{self.job.path}: [resources].min_free_memory_gb / memory_per_worker_gb ask for "
                f"{self.policy.min_free_bytes / GIB:g} GB free per GPU, but the largest GPU here has "
                f"{largest:.0f} GB in all ({describe(self.probe)}); no task could ever start"
            )

    # -- launching -----------------------------------------------------------------------------
    def _launch_ready(self, now: float) -> None:
        ready = [
            t for t in self.tasks.values()
            if t.status == Status.PENDING or (t.status == Status.RETRYING and (t.next_try_at or 0) <= now)
        ]
        if not ready:
            return
        ready.sort(key=lambda t: t.index)
        gpus = self._snapshot() if self.probe is not None else []
        reserved = {g for live in self.live.values() for g in live.gpus}
        placed = place([t.id for t in ready], gpus, reserved, len(self.live), self.policy)
        for task_id, assigned in placed:
            self._start(self.tasks[task_id], assigned)
        if not placed and not self.live and self.probe is not None:
            reason = why_waiting(gpus, reserved, self.policy)
            if reason != self._waiting_said:
                self.out.info(f"waiting for GPUs: {reason}")
                self._waiting_said = reason

    def _start(self, task: TaskRecord, gpus: tuple[int, ...]) -> None:
        number = task.attempts + 1
        values = {
            "low": task.low, "high": task.high, "input": self.job.shards.input, "run_dir": self.paths.root,
            "output_dir": self.job.outputs.dir if self.job.outputs else self.paths.root / "outputs",
            "task_id": task.id, "attempt": number, "gpus": ",".join(map(str, gpus)), "num_gpus": len(gpus),
        }
        argv = render_command(self.job, values)
        env = self._worker_env(task, number, gpus)
        log_path = self.paths.log(task.id, number)
        visible = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} " if "CUDA_VISIBLE_DEVICES" in env else ""
        shown = visible + shlex.join(argv)
        # Committed before the fork: a crash right after must never lead to a second copy of this attempt.
        with self.store.transaction():
            self.store.start_attempt(task.id, number, gpus, argv, str(log_path), time.time())
            fields = {"status": Status.RUNNING, "attempts": number, "gpus": gpus, "reason": None,
                      "next_try_at": None, "exit_code": None, "ended_at": None}
            if task.started_at is None:
                fields["started_at"] = time.time()
            self._set(task.id, **fields)
            self._event("launch", f"attempt {number}: {shown}", task.id)
        where = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
        self.out.info(f"launch {task.id} {_label(task)} attempt {number}/{task.budget}{where}: {shown}")
        spec = LaunchSpec(argv, self.job.workdir, env, log_path, self.paths.pid_file(task.id, number),
                          self.paths.exit_file(task.id, number))
        child = launch(spec)
        self.live[task.id] = Live(task.id, number, gpus, _label(task), LogTail(log_path), child=child)

    def _worker_env(self, task: TaskRecord, number: int, gpus: tuple[int, ...]) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.job.env)
        env.update({
            ownership.TAG_SCHEDULER: self.scheduler_id, ownership.TAG_TASK: task.id,
            ownership.TAG_ATTEMPT: str(number), "GPUTUI_RUN_DIR": str(self.paths.root),
            "GPUTUI_LOW": str(task.low), "GPUTUI_HIGH": str(task.high), "PYTHONUNBUFFERED": "1",
        })
        if self.probe is not None:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # so indices match NVML's
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        elif self.policy.gpus_per_worker == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task must not grab a GPU
        return env

    # -- watching ------------------------------------------------------------------------------
    def _reap(self) -> None:
        for live in list(self.live.values()):
            if live.child is None:
                continue
            try:
                pid, _ = os.waitpid(live.child, os.WNOHANG)
            except ChildProcessError:
                pid = live.child
            if pid:
                live.child = None
                self._settle(live)

    def _poll_adopted(self) -> None:
        for live in list(self.live.values()):
            if live.worker is None:
                self._read_pid_file(live)
            if live.child is not None:
                continue
            if read_exit_file(self.paths.exit_file(live.task_id, live.number)) or not self._still_running(live):
                self._settle(live)

    def _read_pid_file(self, live: Live) -> None:
        info = read_pid_file(self.paths.pid_file(live.task_id, live.number))
        if not info or info.get("worker_ctime") is None:
            return
        live.worker = ownership.ProcessRef(info["worker_pid"], info["worker_ctime"])
        if info.get("supervisor_ctime") is not None:
            live.supervisor = ownership.ProcessRef(info["supervisor_pid"], info["supervisor_ctime"])
        self.store.update_attempt(
            live.task_id, live.number, worker_pid=live.worker.pid, worker_ctime=live.worker.ctime,
            supervisor_pid=info.get("supervisor_pid"), supervisor_ctime=info.get("supervisor_ctime"),
        )

    def _stream_logs(self) -> None:
        if not self.out.show_output:
            return
        for live in self.live.values():
            self.out.worker_lines(live.label, live.log.read_lines())

    # -- settling an ended attempt -------------------------------------------------------------
    def _settle(self, live: Live) -> None:
        self.live.pop(live.task_id, None)
        self._gpus_at = 0.0  # its GPUs are free now: look again before placing
        if self.out.show_output:
            self.out.worker_lines(live.label, live.log.read_lines(flush=True))
        if live.worker is None:
            self._read_pid_file(live)
        exit_info = read_exit_file(self.paths.exit_file(live.task_id, live.number))
        code = None if exit_info is None else exit_info.get("exit_code")
        ended = (exit_info or {}).get("ended_at") or time.time()
        task = self.tasks[live.task_id]
        attempt_fields = {"exit_code": code, "ended_at": ended}
        if task.status == Status.KILLED:
            self.store.update_attempt(task.id, live.number, status=Status.KILLED, reason=task.reason, **attempt_fields)
            self._set(task.id, exit_code=code, ended_at=ended)
            self.out.info(f"killed {task.id} {live.label} ({task.reason})")
            self._progress()
            return
        failure = None
        if code == 0:
            output = self.store.task_output(task.id)
            if output and not Path(output).exists():
                failure_reason = f"exited 0 but its output {output} is missing"
                from gputui.failures import Failure

                failure = Failure("missing_output", failure_reason)
            else:
                if output:
                    write_manifest(Path(output), task_id=task.id, low=task.low, high=task.high,
                                   scheduler_id=self.scheduler_id, attempt=live.number)
                self.store.update_attempt(task.id, live.number, status=Status.DONE, **attempt_fields)
                self._set(task.id, status=Status.DONE, exit_code=0, ended_at=ended, reason=None)
                self._event("done", f"attempt {live.number} done", task.id)
                took = ended - (self.store.attempt(task.id, live.number).started_at)
                self.out.info(f"done {task.id} {live.label} in {took:.1f}s")
                self._progress()
                return
        if failure is None:
            failure = classify(code, read_tail(self.paths.log(task.id, live.number)))
        self.store.update_attempt(task.id, live.number, status="failed", reason=failure.reason, **attempt_fields)
        if live.interrupted:
            self._set(task.id, status=Status.PENDING, budget=task.budget + 1, exit_code=code, ended_at=ended,
                      reason="interrupted when gputui stopped")
            return
        if task.attempts < task.budget:
            delay = min(self.job.retry.backoff_max_s, self.job.retry.backoff_s * 2 ** (task.attempts - 1))
            self._set(task.id, status=Status.RETRYING, next_try_at=time.time() + delay, exit_code=code,
                      ended_at=ended, reason=failure.reason)
            tail = f"retrying in {delay:g}s (attempt {task.attempts + 1}/{task.budget})"
        else:
            self._set(task.id, status=Status.FAILED, exit_code=code, ended_at=ended, reason=failure.reason)
            tail = f"no attempts left ({task.attempts}/{task.budget}); failed for good"
        self._event("failed", f"attempt {live.number}: {failure.reason}", task.id)
        self.out.info(f"FAILED {task.id} {live.label} attempt {live.number}: {failure.reason} — {tail}")
        self._progress()

    # -- controls ------------------------------------------------------------------------------
    def _apply_controls(self) -> None:
        for c in self.store.pending_controls():
            try:
                ok, result = self.controller.apply(c.verb, c.args.get("tasks"))
            except Exception as e:  # a bad request must never take the scheduler down
                ok, result = False, f"{c.verb} failed: {e}"
            with self.store.transaction():
                self.store.finish_control(c.id, ok, result)
            for line in result.splitlines():
                self.out.info(line)
            self._reload()
            with self.store.transaction():
                self._reap()

    # -- GPUs ----------------------------------------------------------------------------------
    def _snapshot(self, force: bool = False) -> list[GpuSnapshot]:
        now = time.monotonic()
        if force or now - self._gpus_at >= self.opts.probe_every or not self._gpus:
            self._gpus = self.probe.snapshot()
            self._gpus_at = now
        return self._gpus

    def _simulated_load(self) -> Mapping[int, list[tuple[int, int]]]:
        per_task = int((self.policy.memory_per_worker_gb or SIMULATED_TASK_MEMORY_GB) * GIB)
        load: dict[int, list[tuple[int, int]]] = {}
        for live in self.live.values():
            for g in live.gpus:
                load.setdefault(g, []).append((live.worker.pid if live.worker else 0, per_task))
        return load

    # -- output --------------------------------------------------------------------------------
    def _announce(self) -> None:
        tasks = self.store.tasks()
        gpus = describe(self.probe) if self.probe is not None else "none (CPU tasks)"
        self.out.info(
            f"run {self.job.name} (scheduler {self.scheduler_id[:8]}) in {self.paths.root}: {len(tasks)} task(s); "
            f"GPUs: {gpus}"
        )
        atomic_write_json(self.paths.exports / "config.json", {
            "job": self.job.name, "job_file": str(self.job.path), "run_dir": str(self.paths.root),
            "scheduler_id": self.scheduler_id, "gpu_backend": gpus, "argv": list(os.sys.argv),
            "command": list(self.job.command), "workdir": str(self.job.workdir),
            "shards": {"input": str(self.job.shards.input), "id_column": self.job.shards.id_column,
                       "num_workers": self.job.shards.num_workers, "shard_size": self.job.shards.shard_size},
            "resources": self.job.resources.__dict__, "retry": self.job.retry.__dict__,
            "outputs": None if self.job.outputs is None else self.job.outputs.__dict__, "params": dict(self.job.params),
        })

    def _progress(self) -> None:
        self._next_progress = time.monotonic() + self.opts.progress_every
        self.out.line(progress_line(self.tasks.values(), time.monotonic() - self._started))

    def _export_tasks(self) -> None:
        """Per-task arguments and status as JSON beside the state (the seed's worker_args_*.json)."""
        attempts = {}
        for a in self.store.attempts():
            attempts.setdefault(a.task_id, []).append(a)
        for task_id in sorted(self._dirty_exports):
            t = self.tasks[task_id]
            atomic_write_json(self.paths.exports / "tasks" / f"{task_id}.json", {
                "task": t.__dict__ | {"range": [t.low, t.high]}, "output": self.store.task_output(task_id),
                "attempts": [a.__dict__ for a in attempts.get(task_id, [])],
            }, fsync=False)
        self._dirty_exports.clear()

    # -- ending --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Ctrl-C / SIGTERM: stop our workers (only ours), keep their tasks pending for next time."""
        if not self.live:
            return
        self.out.info(f"stopping {len(self.live)} running task(s) (SIGTERM, then SIGKILL after "
                      f"{self.job.stop_grace_s:g}s); they will run again on restart")
        pairs = []
        for live in self.live.values():
            live.interrupted = True
            attempt = self.store.attempt(live.task_id, live.number)
            if attempt is not None:
                pairs.append((self.tasks[live.task_id], attempt))
        self.controller.stop_trees(pairs, self.job.stop_grace_s)
        deadline = time.monotonic() + 5.0
        while self.live and time.monotonic() < deadline:
            with self.store.transaction():
                self._reap()
                self._poll_adopted()
            time.sleep(0.02)

    def _merge(self) -> str:
        return merge_run(self.store, self.paths)

    def _finish(self) -> int:
        tasks = self.store.tasks()
        ok = all(t.status == Status.DONE for t in tasks)
        if ok and self.store.meta("merged"):
            line = merge_run(self.store, self.paths)
            self.out.info(line)
            ok = not line.startswith("merge failed")
        summary_path, report_path = write_summary(self.store, self.paths)
        self.out.line(progress_line(tasks, time.monotonic() - self._started))
        self.out.info(f"summary: {summary_path}, report: {report_path}")
        if not ok:
            bad = [t for t in tasks if t.status != Status.DONE]
            for t in bad[:10]:
                self.out.info(f"{t.id} {_label(t)} {t.status}: {t.reason or ''}")
        return 0 if ok else 1


def _label(task: TaskRecord) -> str:
    return task.range_label
