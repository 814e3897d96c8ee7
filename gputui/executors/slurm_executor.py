"""Slurm: attempts are submitted with sbatch (shards as one job array, a step behind the jobs of the steps
it waits for with afterok), and each is watched here by its stand-in (slurm_task.py), a local process a
waiter forks, so the journal, ownership, kills and adoption treat it as the attempt (see slurm.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from gputui.executors import slurm, slurm_task
from gputui.executors.base import Capacity, ExecutorUnavailable, Key, LaunchSpec, Placement, RunContext, Say, T
from gputui.executors.local import SIGNALS, LocalExecutor, RecordedLocal
from gputui.executors.ownership import ProcessRef


class SlurmExecutor(LocalExecutor):
    kind = "slurm"
    places_gpus = False
    stop_waits_for_backend = True  # a stand-in ends its job (scancel, the runner on the node): Slurm's pace

    def __init__(self, run: RunContext, partition: str | None, extra_args: tuple[str, ...]):
        super().__init__(run)
        self.partition, self.extra_args = partition, extra_args
        self.recorded = RecordedSlurm(run.root, partition)
        self.jobs: dict[str, str] = {}  # task id -> the Slurm job of its attempt this process submitted

    @classmethod
    def open(cls, spec, run: RunContext) -> SlurmExecutor:
        return cls(run, spec.partition, spec.extra_args)

    def join(self, env: Mapping[str, str]) -> Capacity:
        """The partition's capacity; the keeper starts meanwhile (stand-ins need waiters)."""
        super().join(env)
        self.start()
        try:
            found = slurm.capacity(self.partition)
        except slurm.SlurmUnavailable as e:
            raise ExecutorUnavailable(str(e)) from None
        where = f"Slurm partition {self.partition!r}" if self.partition else "Slurm's default partition"
        return Capacity(found.gpus, found.node_gpus, found.cpus, found.nodes, where)

    def slots(self, capacity: Capacity, gpus_per_worker: int) -> int:
        return slurm.SUBMIT_WINDOW

    def queues_after(self, task_id: str) -> bool:
        """A follower may be submitted while `task_id`'s job is queued or runs: it waits in Slurm (afterok)."""
        return task_id in self.jobs

    def submit(self, launches: list[tuple[LaunchSpec, T]], say: Say) -> list[tuple[LaunchSpec, T]]:
        """One sbatch per launch: shards as one job array (per GPU count), each trial or step a job of its
        own (a step with afterok on the jobs of the steps it waits for). Each attempt's launch becomes its
        stand-in for its job, or for why sbatch refused it (it then fails with that reason, and is retried)."""
        groups: dict[tuple, list[tuple[LaunchSpec, T]]] = {}
        for spec, live in launches:
            key = ("array", spec.asked) if spec.batch else ("job", spec.task_id)
            groups.setdefault(key, []).append((spec, live))
        out, run = [], self.run
        standin = slurm_task.command
        for (shape, _), group in groups.items():
            first = group[0][0]
            elements = [self._element(spec) for spec, _ in group]
            args = slurm.sbatch_args(
                name=run.job_name,
                scheduler_id=run.scheduler_id,
                run_dir=run.root,
                gpus=first.asked,
                partition=self.partition,
                extra=self.extra_args,
                elements=len(elements),
                array=shape == "array",
                throttle=run.max_parallel,
                after=tuple(sorted({self.jobs[d] for d in first.after})),
            )
            job, error = None, ""
            try:
                job = slurm.submit(args, slurm.write_batch(run.root, elements))
            except (slurm.SlurmUnavailable, OSError) as err:
                error = f"cannot submit to Slurm: {err}"
                say(f"{len(group)} task(s) not submitted: {error}")
            for i, (spec, live) in enumerate(group):
                jid = None if job is None else f"{job}_{i}" if shape == "array" else job
                if jid is not None:
                    slurm.attempt_file(run.root, spec.task_id, spec.number, "job").write_text(jid)
                    self.jobs[spec.task_id] = jid
                argv = standin(run.root, spec.task_id, spec.number, spec.grace, run.scheduler_id, jid, error)
                out.append((replace(spec, argv=argv), live))
        return out

    def _element(self, spec: LaunchSpec) -> dict:
        """What the runner on the node needs for one attempt. sbatch hands the job this process's
        environment; the element carries only what the attempt's differs in (the run's env, its tags)."""
        env = {k: v for k, v in {**self.env, **spec.env}.items() if os.environ.get(k) != v}
        env.pop("CUDA_VISIBLE_DEVICES", None)  # Slurm's choice
        files = {w: str(slurm.attempt_file(self.run.root, spec.task_id, spec.number, w)) for w in slurm.FILES}
        return {"task": spec.task_id, "argv": list(spec.argv), "env": env, "log": str(spec.log_path),
                "cwd": str(self.run.cwd), "grace": spec.grace, **files}  # fmt: skip

    def requeue_reason(self, exit_code: int | None) -> str | None:
        if exit_code == slurm.NOT_STARTED:
            return "Slurm dropped it before it ran (a step it waits for failed); it waits for that step again"
        return None

    def after_end(self, task_id: str, number: int, exit_code: int | None) -> str | None:
        """A stand-in that was killed (or lost) leaves its job to run on unwatched: end it, if it is ours."""
        if exit_code not in (None, -signal.SIGKILL):
            return None
        with contextlib.suppress(OSError):  # holds with the controller away; unwritten, the scancel is still tried
            slurm.forbid(self.run.root, task_id, number)
        try:
            job = slurm.attempt_file(self.run.root, task_id, number, "job").read_text().strip()
            if job and slurm.ours(job, self.run.scheduler_id) is not None:
                refused = slurm.control("cancel", job)
                return f"{task_id}: cancelled Slurm job {job}, its stand-in gone" + (
                    f" (scancel: {refused})" if refused else "")  # fmt: skip
        except (OSError, slurm.SlurmUnavailable) as e:
            return f"{task_id}: cannot check its Slurm job: {e}"
        return None

    def stopping_line(self, running: int, grace_s: float) -> str:
        return (
            f"stopping {running} Slurm job(s): running ones get SIGTERM on their node, then SIGKILL "
            f"after {grace_s:g}s; queued ones are cancelled; they will run again on restart"
        )

    def waiting_line(self, keys: list[Key], leave: str) -> str:
        return slurm.waiting_line(self.run.root, keys, leave)

    def left_line(self, running: int) -> str:
        return (
            f"left {running} Slurm job(s) to their stand-ins, which cancel them once the controller answers; "
            "the next run finds them"
        )

    def abandon(self) -> None:
        """Stop waiting for Slurm in this process (a second Ctrl-C): safe in a signal handler."""
        slurm.abandon()


class RecordedSlurm(RecordedLocal):
    """A recorded run on Slurm: each attempt's stand-in is a process here; its job runs on a node."""

    kind = "slurm"
    places_gpus = False
    label = "slurm cluster"
    signals = SIGNALS | {"pause": signal.SIGTSTP}  # the stand-in catches it: it suspends or holds the job

    def __init__(self, run_dir: Path | None, partition: str | None = None):
        self.run_dir, self.partition = run_dir, partition

    @classmethod
    def from_meta(cls, run_dir: Path | None, meta: Callable) -> RecordedSlurm:
        return cls(run_dir)

    @staticmethod
    def runs_on(spec) -> str | None:
        return f"Slurm partition {spec.partition}" if spec.partition else "Slurm's default partition"

    def placement(self, task_id: str, number: int, log_path: str) -> Placement | None:
        """From the `started` file its runner wrote on the node."""
        found = slurm.started(self.run_dir, task_id, number)
        return None if found is None else Placement.of(found)

    def standing(self, task_id: str, number: int) -> str:
        return slurm.standing(self.run_dir, task_id, number)

    def job_of(self, task_id: str, number: int) -> str:
        """The Slurm job id of the attempt, as written at its submission ("" if none yet)."""
        try:
            return slurm.attempt_file(self.run_dir, task_id, number, "job").read_text().strip()
        except OSError:
            return ""

    def paused(self, sent: list[ProcessRef]) -> str:
        return f"paused on the {self.kind} cluster (its log says how: suspended, held or stopped)"

    def kill_target(self, refs: list[ProcessRef], placed: str | None, job: str) -> str:
        """Its job, cancelled by its stand-in here."""
        if not (refs and job):
            return super().kill_target(refs, placed, job)
        pids = ", ".join(str(r.pid) for r in refs[:6]) + (" …" if len(refs) > 6 else "")
        node, _, gpus = (placed or "").rpartition(":")
        where = f" on {node} (GPUs {gpus})" if placed else ", pending"
        return f"Slurm job {job}{where}, cancelled by its stand-in here (pid {pids})"

    def node_gpus(self, simulate: str | None) -> tuple[list[dict] | None, str]:
        return None, (
            f"this run's tasks run on a {self.kind} cluster: the table's GPUs column says which node and GPUs "
            "each one got; the cluster's GPU panels are not shown"
        )
