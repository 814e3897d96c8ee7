"""What a run works with, decided once as its scheduler starts: the executor, whether and how GPUs are
probed here, the cluster it joins (whose capacity it checks), the run mode's sizing, and the run's one
GPU `Policy` (rules/placement.gpu_policy). A job that could never start is refused here, saying why,
before anything is launched."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from gputui.engine.attempt import Infeasible, Options
from gputui.engine.gpu_sampler import SimulatedLoad
from gputui.engine.rules.placement import gpu_policy
from gputui.engine.run_modes import size_gpus, sized_values
from gputui.executors.base import Capacity, ExecutorUnavailable, RunContext
from gputui.executors.registry import open_executor
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot
from gputui.jobs.gpu_plan import NoFit
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.spec import JobSpec, ResourceSpec
from gputui.rundir.meta import read_meta
from gputui.rundir.opening import Run


class RunSetup:
    """The run's decisions, made in this order: executor, probe, cluster, sizing, policy. On a refusal the
    executor is closed and Infeasible (or the executor's error) raised."""

    def __init__(self, job: JobSpec, run: Run, opts: Options, load: SimulatedLoad):
        self.job = job
        self.paths = run.paths
        self.scheduler_id = run.scheduler_id
        self.opts = opts
        # `gputui set max_parallel=N` kept in the run's state: as if the job file said it, until set back
        self.max_parallel_set = read_meta(run.store).max_parallel
        self.resources = res = self._resources(self.max_parallel_set)
        self.needs = kind_of(job).own_gpus(job.kind_spec)  # tasks that ask for their own GPUs (a pipeline's steps)
        self.probe: GpuProbe | None = None
        self.executor = open_executor(job.executor, self._run_context())  # chosen once, here
        try:
            uses_gpus = res.mode is not None or max([res.gpus_per_worker, *self.needs.values()]) > 0
            if self.executor.places_gpus and uses_gpus:
                self.probe = open_probe(opts.simulate, load=load)
            # A cluster's GPUs, CPUs and nodes (it places tasks, not we); None here. Its environment depends
            # on how GPUs are probed.
            self.cluster = self._join(self.base_env())
        except BaseException:
            self.executor.close()
            raise
        self.slots = None  # a cluster's, where max_parallel is not set
        if self.cluster is not None:
            self.slots = self.executor.slots(self.cluster, res.gpus_per_worker)
        self.sizing = None  # the run mode's decision: GPUs per worker and workers, from the model and the GPUs
        if res.mode is not None:
            try:
                self.sizing = size_gpus(job, self.probe.snapshot())
            except NoFit as e:
                self.executor.close()
                raise Infeasible(str(e)) from None
        self.policy = gpu_policy(res, os.cpu_count() or 1, self.slots, self.sizing)
        load.memory_gb = self.policy.memory_per_worker_gb
        self.sized = sized_values(job, self.sizing)

    def _resources(self, max_parallel: int | None) -> ResourceSpec:
        res = self.job.resources
        return res if max_parallel is None else replace(res, max_parallel=max_parallel)

    def set_max_parallel(self, n: int | None) -> None:
        """`gputui set max_parallel=N` while the run goes (None: back to the job file's): the policy as if the job
        file said it; on Slurm, the arrays submitted from now on are throttled to it."""
        self.max_parallel_set = n
        self.resources = res = self._resources(n)
        self.policy = gpu_policy(res, os.cpu_count() or 1, self.slots, self.sizing)
        self.executor.run = replace(self.executor.run, max_parallel=res.max_parallel)

    @property
    def max_parallel_named(self) -> bool:
        """Whether max_parallel was given (job file or `gputui set`), not worked out by gputui."""
        return self.resources.max_parallel is not None

    def _run_context(self) -> RunContext:
        j = self.job
        return RunContext(self.paths.root, self.paths.journal, j.workdir, self.scheduler_id, j.name,
                          self.resources.max_parallel)  # fmt: skip

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

    def gpus_of(self, task_id: str) -> int:
        """The GPUs a worker of this task asks for before any out-of-memory retry: a pipeline step's own,
        else the policy's."""
        return self.needs.get(task_id, self.policy.gpus_per_worker)

    def base_env(self) -> dict[str, str]:
        """The environment every worker and alert command starts from. (GPUs per worker as the job asks: the
        run mode, which may size them otherwise, sizes only where GPUs are probed.)"""
        env = dict(os.environ)
        env.update(self.job.env)
        env.update({"GPUTUI_RUN_DIR": str(self.paths.root), "PYTHONUNBUFFERED": "1"})
        if self.probe is not None:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # so indices match NVML's
        elif self.job.resources.gpus_per_worker == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU task must not grab a GPU
        return env

    def check_feasible(self, gpus: list[GpuSnapshot]) -> None:
        """Refuse a job no GPU here could ever run (too few GPUs, or none with the memory it asks)."""
        need = self.policy.gpus_per_worker
        whole = [g for g in gpus if g.parent is None]
        if need > 1 and len(whole) < need <= len(gpus):
            raise Infeasible(
                f"{self.job.path}: [resources].gpus_per_worker = {need}, but only {len(whole)} whole GPU(s) "
                f"exist here ({describe(self.probe)}): a task needing several GPUs cannot be given MIG instances "
                "(a CUDA process sees one at most); lower gpus_per_worker to 1 or use GPUs not in MIG mode"
            )
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
