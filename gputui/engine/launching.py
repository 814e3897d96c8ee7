"""Starting tasks: which waiting tasks start now and on which GPUs, the worker's command line and
environment, and the launch itself (committed first, so a task with a live attempt never starts twice)."""

from __future__ import annotations

import heapq
import os
import shlex
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from gputui import clock
from gputui.engine.attempt import WAITING, Infeasible, Live
from gputui.engine.monitor import draining
from gputui.engine.rules.placement import place, usable_gpus, why_waiting
from gputui.executors import ownership
from gputui.executors.base import Capacity, ExecutorUnavailable, LaunchFailed, LaunchSpec
from gputui.executors.journal import AttemptEnds
from gputui.files.tail import LogTail
from gputui.gpus.detect import describe
from gputui.gpus.probe import GIB
from gputui.gpus.reservations import Reservations
from gputui.jobs import oom
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.oom import batch_for, gpus_for
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status, TaskRecord
from gputui.jobs.templates import render_command
from gputui.rundir.paths import RunPaths

MIN_FREE_DISK = 64 * 1024 * 1024  # below this much free space in the run directory no new task starts


def _release(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def worker_request(
    job: JobSpec,
    task: TaskRecord,
    number: int,
    gpus: tuple[int, ...],
    scheduler_id: str,
    run_dir: Path,
    output: str | None = None,
    sized: Mapping[str, object] | None = None,
    num_gpus: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The worker's command line and its own variables (ownership tags, range, GPUs, events file). Pure.
    `output`: a shard's output file ({output}); `sized`: what a [model] table fills ({model}, ...);
    `num_gpus`: GPUs a cluster gives the task (none placed here, so `gpus` is empty)."""
    num_gpus = len(gpus) if num_gpus is None else num_gpus
    values: dict[str, object] = {
        "run_dir": run_dir,
        "output_dir": job.outputs.dir,
        "task_id": task.id,
        "attempt": number,
        "gpus": ",".join(map(str, gpus)),
        "num_gpus": num_gpus,
        **(sized or {}),
    }
    env = {
        ownership.TAG_SCHEDULER: scheduler_id,
        ownership.TAG_TASK: task.id,
        ownership.TAG_ATTEMPT: str(number),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        "GPUTUI_EVENTS": str(RunPaths(run_dir).events(task.id, number)),
    }
    on_oom = job.retry.on_oom
    if on_oom == "smaller_batch":
        values["batch_size"] = batch_for(on_oom, int(job.params["batch_size"]), task.info)
    elif on_oom == "more_gpus" and oom.changes(task.info):
        values["tensor_parallel_size"] = num_gpus
    own = kind_of(job).values(job, task, output)  # the kind's: a shard's range, a trial's params, a step's
    values |= own.values
    env |= own.env
    return render_command(job, values, own.command), env


class Launching:
    """Part of Scheduler (see scheduler.py): its state lives there."""

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
        now = clock.now()  # the launches' time: wall, and CLOCK_BOOTTIME to measure them by
        lingering = {task_id for task_id, _ in self.lingering}
        ready, later, seen = [], [], set()
        while self.waiting and (slots is None or len(ready) < slots):
            index, task_id = heapq.heappop(self.waiting)
            t = self.tasks[task_id]
            if t.status not in WAITING or task_id in seen:
                continue  # stale heap entry
            seen.add(task_id)
            not_due = self._retry_wait(t) > 0
            blocked = any(not self._may_follow(d) for d in t.after if d in self.tasks)
            if task_id in self.live or task_id in lingering or not_due or blocked:
                later.append((index, task_id))  # a process of its last attempt lives, it is not due, or it waits
            else:
                ready.append(t)
        if ready and not self.executor.ready(time.monotonic(), self.out.info):  # (the Ray bridge is not up)
            later.extend((t.index, t.id) for t in ready)  # tried again next turn
            ready = []
        if self.cluster is not None:  # the cluster places them: as many start as there are slots
            new = [self._record_launch(t, (), now, []) for t in ready]
            launches.extend(self.executor.submit(new, self.out.info))  # (Slurm: sbatch, arrays, afterok)
            for entry in later:
                heapq.heappush(self.waiting, entry)
            return
        gpus = self._snapshot() if self.probe is not None and ready else []
        reserved = {g for live in [*self.live.values(), *self.lingering.values()] for g in live.gpus}
        reserved |= draining(gpus, self.scheduler_id, self.live)  # a killed task's GPU memory not yet released
        usable = usable_gpus(gpus, reserved, self.policy)
        needs = {t.id: self._gpus_needed(t) for t in ready}
        claims, foreign = self.reservations.claim_some([g for g in gpus if g.index in usable], sum(needs.values()))
        unclaimed = {g.index for g in gpus} - set(claims)
        placed = dict(place([t.id for t in ready], gpus, reserved | unclaimed, busy, self.policy, needs))
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

    def _may_follow(self, dep: str) -> bool:
        """Whether a task waiting for `dep` may be launched: once `dep` is done, or while `dep` runs where its
        executor holds the follower back until `dep` ends well (Slurm: afterok on `dep`'s job)."""
        status = self.tasks[dep].status
        return status == Status.DONE or (status == Status.RUNNING and self.executor.queues_after(dep))

    def _gpus_needed(self, task: TaskRecord) -> int:
        """The policy's GPUs per worker, a pipeline step's own, or twice as many per out-of-memory retry."""
        return gpus_for(self.job.retry.on_oom, self.needs.get(task.id, self.policy.gpus_per_worker), task.info)

    def _join(self, env: Mapping[str, str]) -> Capacity | None:
        """Join the executor's backend (a cluster: its capacity, asked of the run's Ray bridge or of Slurm);
        one that cannot be reached, or whose largest node is too small, stops the run before anything is
        launched, saying why."""
        try:
            found = self.executor.join(env)
        except (ExecutorUnavailable, OSError) as e:
            raise Infeasible(f"{self.job.path}: [executor]: {e}") from None
        need = max([self.job.resources.gpus_per_worker, *self.needs.values()])
        if found is not None and need > found.node_gpus:
            raise Infeasible(
                f"{self.job.path}: [resources].gpus_per_worker = {need}, but no node of {found.where} has that "
                f"many (the largest has {found.node_gpus:g}, {found.gpus:g} in all); a task's GPUs are on one "
                "node, so no task could ever start"
            )
        return found

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
        argv, env = worker_request(
            self.job,
            task,
            number,
            gpus,
            self.scheduler_id,
            self.paths.root,
            self.outputs.get(task.id),
            self.sized,
            num_gpus=None if self.cluster is None else self._gpus_needed(task),
        )
        if self.probe is None:
            env.pop("CUDA_VISIBLE_DEVICES")
        shown = shlex.join(argv)
        if "CUDA_VISIBLE_DEVICES" in env:
            shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {shown}"
        log_path = self.paths.log(task.id, number)
        if task.info.get("output_dir"):  # a trial's or a step's own folder
            Path(task.info["output_dir"]).mkdir(parents=True, exist_ok=True)
        # Recorded before the launch: while it lives, the end will be known.
        waiter = self.executor.waiter()
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
        if self.cluster is not None:
            where = f" on the {self.executor.kind} cluster ({self._gpus_needed(task)} GPU)"
        self.out.info(f"launch {task.id} {task.range_label} attempt {number}/{task.budget}{where}: {shown}")
        live = self.live[task.id] = Live(task.id, number, gpus, task.range_label, str(log_path), now, waiter.ref)
        live.handle = waiter
        self._watch(live)
        asked = len(gpus) if self.cluster is None else self._gpus_needed(task)
        self.meter.start(live.key, asked, now)  # GPU-hours: the GPUs given, here or by the cluster
        after = tuple(d for d in task.after if d in self.tasks and self.tasks[d].status != Status.DONE)
        spec = LaunchSpec(task.id, number, argv, env, log_path, self.job.stop_grace_s, held, asked, after,
                          batch=kind_of(self.job).alike_tasks)  # fmt: skip
        return spec, live

    def _launch(self, spec: LaunchSpec, live: Live) -> None:
        if self.out.show_output:
            live.log = LogTail(spec.log_path)
        try:
            try:
                self.executor.launch(live.handle, spec)
            except LaunchFailed as e:  # that waiter died while idle: another one, recorded first
                if not e.retry:
                    raise  # the bridge died just now: this attempt fails, the next ones go to a new bridge
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
                self._settle(live, AttemptEnds(exit_code=127, ended_at=clock.now()), None)
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
