"""Job files (TOML) -> frozen dataclasses. Every error names the file, the key path and what was expected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # each kind's spec lives with its rule
    from gputui.jobs.health_spec import HealthSpec
    from gputui.jobs.pipeline import PipelineSpec
    from gputui.jobs.sweep import SweepSpec

PLACEHOLDERS = (
    "low",
    "high",
    "input",
    "output_dir",
    "run_dir",
    "task_id",
    "attempt",
    "gpus",
    "num_gpus",
)
GENERIC_PLACEHOLDERS = ("run_dir", "output_dir", "task_id", "attempt", "gpus", "num_gpus")  # every kind has them
KINDS = ("shards", "sweep", "pipeline")
MODEL_PLACEHOLDERS = ("model", "dtype", "tensor_parallel_size", "gpu_memory_utilization")  # with a [model] table


class JobSpecError(ValueError):
    """A job file problem; str() is the full, user-facing message (file, key path, expectation)."""


@dataclass(frozen=True)
class ShardSpec:
    input: Path  # absolute
    id_column: str
    num_workers: int | None  # exactly one of num_workers / shard_size is set
    shard_size: int | None
    format: str  # "csv" | "jsonl" | "parquet"


@dataclass(frozen=True)
class ResourceSpec:
    gpus_per_worker: int = 2  # 0 = CPU task
    min_free_memory_gb: float = 0.0
    max_parallel: int | None = None  # None = as many as resources allow
    memory_per_worker_gb: float | None = None
    mode: str | None = None  # single | data_parallel | tensor_parallel | auto: GPUs per worker from [model]
    tensor_parallel_size: int | None = None  # mode = "tensor_parallel": GPUs per worker (default: all)


@dataclass(frozen=True)
class ModelSpec:
    """The model a run mode sizes GPUs for; `{model}`, `{dtype}` in commands."""

    path: str  # a local folder with config.json (a hub name cannot be sized offline)
    dtype: str = "auto"
    max_model_len: int | None = None


@dataclass(frozen=True)
class RetrySpec:
    max_attempts: int = 3
    backoff_s: float = 5.0  # delay before attempt n+1 is backoff_s * 2**(n-1), capped
    backoff_max_s: float = 300.0
    on_oom: str | None = None  # after CUDA out of memory: "more_gpus" | "smaller_batch" (jobs/oom.py)


@dataclass(frozen=True)
class OutputSpec:
    dir: Path  # absolute; the {output_dir} placeholder
    pattern: str | None = None  # per-shard output file name, relative to dir; may use placeholders
    merged: str | None = None  # merged file name, relative to dir


@dataclass(frozen=True)
class AlertSpec:
    command: str | None = None  # run through the shell with each alert as one JSON object on its stdin
    idle_minutes: float | None = None  # alert when a GPU of a running task stays at 0 % this long
    bell: bool = False  # the app rings the terminal bell on an alert


@dataclass(frozen=True)
class ExecutorSpec:
    """Where tasks run (gputui/executors/): this machine, or a cluster engine that places them itself."""

    kind: str = "local"  # "local" | "ray" | "slurm"
    address: str = "auto"  # ray: a running cluster ("auto": the one this machine is part of); "local": a private
    # cluster started for this run and stopped after it
    num_gpus: int | None = None  # ray, address "local": the GPUs the private cluster declares (default: detected)
    partition: str | None = None  # slurm: where jobs go (default: Slurm's default partition)
    extra_args: tuple[str, ...] = ()  # slurm: passed to sbatch as given (--time, --account, --qos...)

    @property
    def remote(self) -> bool:
        return self.kind != "local"


@dataclass(frozen=True)
class JobSpec:
    path: Path  # the job file, absolute
    name: str
    command: tuple[str, ...]  # argv template: shlex-split [job].command (or the list given)
    workdir: Path  # absolute; commands run here
    run_dir: Path  # absolute
    shards: ShardSpec | None  # kind "shards" only
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    retry: RetrySpec = field(default_factory=RetrySpec)
    outputs: OutputSpec | None = None
    params: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float = 10.0
    alerts: AlertSpec = field(default_factory=AlertSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    model: ModelSpec | None = None
    text: str = ""  # the job file as read, kept in the run directory for the record
    kind: str = "shards"  # "shards" | "sweep" | "pipeline"
    sweep: SweepSpec | None = None  # kind "sweep"
    pipeline: PipelineSpec | None = None  # kind "pipeline"
    health: HealthSpec | None = None  # when the file has [health]
