"""What a run is, as its state records it: one frozen `RunMeta`, written by `write_meta` and read by
`read_meta`, so every reader gets the same typed facts with the same defaults (the job file's own).

The layout is the one every gputui wrote, so any run directory still opens both ways: the store's `meta`
table, one JSON value per key. The facts are grouped by when they are written: the run's identity once,
when it is created; the job's settings at every start (what may change safely between starts); the
executor as the scheduler starts; the probe when a start names one; whether the run can still succeed as
it runs. Two kinds of fact are named elsewhere, and kept here unread: the job kind's own (what its plan
records for its readers, `Plan.recorded`: keys its kind declares as `recorded_keys`, read back by the kind),
and the executor's (a Ray address...): every key neither this module nor a job kind names is the executor's
(`RecordedExecutor.meta()` writes them, its `from_meta` reads them).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gputui.jobs.kinds.base import JobKind
from gputui.jobs.kinds.registry import DEFAULT, KINDS, named
from gputui.jobs.plans import Plan
from gputui.jobs.spec import ExecutorSpec, JobSpec, ResourceSpec, RetrySpec
from gputui.rundir.store import Store

EXECUTOR_KEY = "executor"  # the executor's kind, as RecordedExecutor.meta() names it
STORE_KEYS = ("schema_version",)  # the store's own bookkeeping, no fact of the run's


@dataclass(frozen=True)
class RunIdentity:
    """Fixed when the run is created: the scheduler id its workers are tagged with, and the plan it was created
    with (a job file that plans otherwise is refused, so tasks are never processed twice or skipped)."""

    scheduler_id: str = ""
    created_at: float | None = None
    plan_fingerprint: str | None = None  # None: no plan recorded yet (a fresh state)
    plan_definition: Any = None  # what the fingerprint covers, as the job's kind records it (JSON)


@dataclass(frozen=True)
class OutputSettings:
    """What decides where shard outputs go: a job file that would move recorded outputs is refused by name."""

    dir: str | None = None
    pattern: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # the [params] the pattern uses

    @classmethod
    def of(cls, job: JobSpec) -> OutputSettings:
        if job.outputs is None or job.outputs.pattern is None:
            return cls(None if job.outputs is None else str(job.outputs.dir))
        fields = string.Formatter().parse(job.outputs.pattern)
        used = {name.split(".")[0].split("[")[0] for _, name, _, _ in fields if name}
        return cls(str(job.outputs.dir), job.outputs.pattern, {k: v for k, v in job.params.items() if k in used})


@dataclass(frozen=True)
class JobFacts:
    """The job as the run was last started with it; a missing fact reads as the job file's own default."""

    name: str = ""
    file: str | None = None  # the job file, absolute: a re-attached app starts the run again from it
    kind: str = DEFAULT.name  # a run that recorded none is of the default kind
    # What the kind's plan records for its readers (Plan.recorded: the merge's input, ranking terms): the kind's
    # own, by its own names (its `recorded_keys`), read back only by the kind (JobKind.ranked_by ...).
    kind_facts: Mapping[str, Any] = field(default_factory=dict)
    outputs: OutputSettings | None = None  # None: a run recorded before these were kept
    merged: str | None = None  # the merged output file ([outputs].merged), absolute; None: the job merges none
    stop_grace_s: float = JobSpec.stop_grace_s
    max_attempts: int = RetrySpec.max_attempts  # a user's retry grants this many more
    backoff_max_s: float = RetrySpec.backoff_max_s
    gpus_per_worker: int = ResourceSpec.gpus_per_worker
    max_parallel: int | None = ResourceSpec.max_parallel  # the job file's; a `gputui set` one is RunMeta's
    memory_per_worker_gb: float | None = ResourceSpec.memory_per_worker_gb
    share_gpu: bool = ResourceSpec.share_gpu
    # Whether the app rings the bell on an alert ([alerts].bell). Unlike the job file's default (no bell), a run
    # that recorded none rings, as the app always did for one.
    alert_bell: bool = True

    @classmethod
    def of(cls, job: JobSpec, plan: Plan) -> JobFacts:
        merged = job.outputs.dir / job.outputs.merged if job.outputs and job.outputs.merged else None
        return cls(
            name=job.name,
            file=str(job.path),
            kind=job.kind,
            kind_facts=dict(plan.recorded),
            outputs=OutputSettings.of(job),
            merged=None if merged is None else str(merged),
            stop_grace_s=job.stop_grace_s,
            max_attempts=job.retry.max_attempts,
            backoff_max_s=job.retry.backoff_max_s,
            gpus_per_worker=job.resources.gpus_per_worker,
            max_parallel=job.resources.max_parallel,
            memory_per_worker_gb=job.resources.memory_per_worker_gb,
            share_gpu=job.resources.share_gpu,
            alert_bell=job.alerts.bell,
        )


@dataclass(frozen=True)
class ExecutorFacts:
    """How the run's attempts are reached, as its executor recorded itself when the scheduler started: its
    kind and its own settings, whose names only it knows. `get` answers its `from_meta` (executors.registry
    `recorded_executor(run_dir, facts.get)`)."""

    kind: str = ExecutorSpec.kind  # a run that recorded none ran here
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, recorded: Mapping[str, Any]) -> ExecutorFacts:
        """From what `RecordedExecutor.meta()` returns."""
        settings = dict(recorded)
        return cls(settings.pop(EXECUTOR_KEY, None) or cls.kind, settings)

    def get(self, key: str, default: Any = None) -> Any:
        return self.kind if key == EXECUTOR_KEY else self.settings.get(key, default)


@dataclass(frozen=True)
class RunMeta:
    """What a run is: its identity (set once), its job (each start), how its executor reaches attempts (each
    scheduler start), how its GPUs are probed, and whether it can still succeed (as it runs). The methods
    say how each moment changes it; `write_meta` records the result."""

    identity: RunIdentity = field(default_factory=RunIdentity)
    job: JobFacts = field(default_factory=JobFacts)
    executor: ExecutorFacts = field(default_factory=ExecutorFacts)
    simulate: str | None = None  # how the run's GPUs are probed: the `--simulate` a start was given, kept
    run_failed: str | None = None  # why the run cannot succeed any more (a job kind's rule said so)
    # `gputui set max_parallel=N`: kept over the job file's across starts until set back (None: the job file's)
    max_parallel: int | None = None
    # Why tasks of a `share_gpu` job no longer share GPUs (one of them ran out of GPU memory sharing one: the line
    # said then); None: they share as the job file says. Kept for the rest of the run, across starts.
    packing_off: str | None = None

    def opened(self, identity: RunIdentity, job: JobFacts, simulate: str | None) -> RunMeta:
        """As a start records the run: `simulate` None keeps the probe an earlier start named."""
        return replace(self, identity=identity, job=job, simulate=self.simulate if simulate is None else simulate)

    def started(self, executor: Mapping[str, Any]) -> RunMeta:
        """As a scheduler records itself when it starts: what its executor's `recorded.meta()` says."""
        return replace(self, executor=ExecutorFacts.of(executor))

    def parallel(self, n: int | None) -> RunMeta:
        """`gputui set max_parallel=N` (None: back to the job file's)."""
        return replace(self, max_parallel=n)

    def unpacked(self, why: str) -> RunMeta:
        """Tasks share no GPU from now on (`why`: a task ran out of GPU memory sharing one)."""
        return replace(self, packing_off=why)

    def failed(self, why: str | None) -> RunMeta:
        """The run cannot succeed any more (`why`), or can again (None: a stage ranked after all)."""
        return replace(self, run_failed=why)


def read_meta(store: Store) -> RunMeta:
    """The run's facts from its store (a read-only one too); what a run never recorded reads as the default."""
    return _from_keys(store.all_meta())


def write_meta(store: Store, meta: RunMeta) -> None:
    """Record every fact of `meta`, in one transaction (the lock holder's: a start, its scheduler)."""
    with store.transaction():
        for key, value in _to_keys(meta).items():
            store.set_meta(key, value)


# -- the layout: key -> JSON value ---------------------------------------------------------------------
OWN_KEYS = frozenset(
    {"scheduler_id", "created_at", "plan_fingerprint", "plan_definition", "job_name", "job_file", "job_kind"}
    | {"merged", "stop_grace_s", "max_attempts", "backoff_max_s"}
    | {
        "gpus_per_worker",
        "memory_per_worker_gb",
        "share_gpu",
        "alert_bell",
        "simulate",
        "run_failed",
        EXECUTOR_KEY,
    }
    | {"job_max_parallel", "max_parallel_set", "packing_off"}
    | {"outputs_dir", "outputs_pattern", "outputs_params"}
)
KIND_KEYS = frozenset(key for kind in KINDS.values() for key in kind.recorded_keys)  # no executor's, whatever kind
NAMED_KEYS = OWN_KEYS | KIND_KEYS | frozenset(STORE_KEYS)


def _to_keys(meta: RunMeta) -> dict[str, Any]:
    ident, job = meta.identity, meta.job
    keys = {
        **{k: v for k, v in job.kind_facts.items() if k not in OWN_KEYS},  # the kind's, by its names
        "scheduler_id": ident.scheduler_id,
        "created_at": ident.created_at,
        "plan_fingerprint": ident.plan_fingerprint,
        "plan_definition": ident.plan_definition,
        "job_name": job.name,
        "job_file": job.file,
        "job_kind": job.kind,
        "merged": job.merged,
        "stop_grace_s": job.stop_grace_s,
        "max_attempts": job.max_attempts,
        "backoff_max_s": job.backoff_max_s,
        "gpus_per_worker": job.gpus_per_worker,
        "job_max_parallel": job.max_parallel,
        "memory_per_worker_gb": job.memory_per_worker_gb,
        "share_gpu": job.share_gpu,
        "alert_bell": job.alert_bell,
        "simulate": meta.simulate,
        "run_failed": meta.run_failed,
        "max_parallel_set": meta.max_parallel,
        "packing_off": meta.packing_off,
        EXECUTOR_KEY: meta.executor.kind,
        **{k: v for k, v in meta.executor.settings.items() if k not in NAMED_KEYS},
    }
    out = job.outputs
    if out is not None:  # never recorded stays unrecorded: a refusal then judges from the paths
        keys |= {"outputs_dir": out.dir, "outputs_pattern": out.pattern, "outputs_params": dict(out.params)}
    return keys


def _from_keys(raw: Mapping[str, Any]) -> RunMeta:
    d = JobFacts  # its defaults: the job file's

    def got(key: str, default: Any = None, as_type: type | None = None) -> Any:
        """The recorded value, or `default` where it is missing, null or (damaged) not of its type."""
        value = raw.get(key)
        if value is None:
            return default
        if as_type is None:
            return value
        try:
            return as_type(value)
        except (TypeError, ValueError):
            return default

    params = raw.get("outputs_params")
    outputs = None
    if "outputs_pattern" in raw:  # recorded (a run from before these were kept has none)
        params = params if isinstance(params, dict) else {}
        outputs = OutputSettings(got("outputs_dir"), got("outputs_pattern"), params)
    identity = RunIdentity(
        got("scheduler_id", "", str),
        got("created_at", None, float),
        got("plan_fingerprint"),
        got("plan_definition"),
    )
    kind = got("job_kind") or d.kind
    job = JobFacts(
        name=got("job_name", d.name, str),
        file=got("job_file"),
        kind=kind,
        kind_facts={k: raw[k] for k in named(kind).recorded_keys if k in raw},
        outputs=outputs,
        merged=got("merged"),
        stop_grace_s=got("stop_grace_s", d.stop_grace_s, float),
        max_attempts=got("max_attempts", d.max_attempts, int),
        backoff_max_s=got("backoff_max_s", d.backoff_max_s, float),
        gpus_per_worker=got("gpus_per_worker", d.gpus_per_worker, int),
        max_parallel=got("job_max_parallel", d.max_parallel, int),
        memory_per_worker_gb=got("memory_per_worker_gb", d.memory_per_worker_gb, float),
        share_gpu=got("share_gpu", d.share_gpu, bool),
        alert_bell=got("alert_bell", d.alert_bell, bool),
    )
    settings = {k: v for k, v in raw.items() if k not in NAMED_KEYS}
    executor = ExecutorFacts(got(EXECUTOR_KEY, ExecutorFacts.kind, str), settings)
    return RunMeta(
        identity,
        job,
        executor,
        got("simulate"),
        got("run_failed"),
        got("max_parallel_set", None, int),
        got("packing_off", None, str),
    )


class MetaReader:
    """`read_meta` for a view that reads it every refresh (the app's). The plan's definition, megabytes of JSON
    for 100,000 shards, is read only for a kind that plans later (its `to_come` reads it: a sweep's stages; a
    kind keeping JobKind's has nothing to come), and again only when the plan's fingerprint changed."""

    def __init__(self) -> None:
        self._definition: tuple[Any, Any] = (None, None)  # (fingerprint, definition)

    def read(self, store: Store) -> RunMeta:
        rows = store.read("SELECT key, value FROM meta WHERE key != 'plan_definition'")
        raw = {key: json.loads(value) for key, value in rows}
        fingerprint = raw.get("plan_fingerprint")
        if type(named(raw.get("job_kind"))).to_come is JobKind.to_come:
            return _from_keys(raw)
        if fingerprint is None or self._definition[0] != fingerprint:
            row = store.read("SELECT value FROM meta WHERE key = 'plan_definition'").fetchone()
            self._definition = (fingerprint, None if row is None else json.loads(row[0]))
        if self._definition[1] is not None:
            raw["plan_definition"] = self._definition[1]
        return _from_keys(raw)
