"""Job files (TOML) -> frozen dataclasses. Every error names the file, the key path and what was expected."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
MODEL_PLACEHOLDERS = ("model", "dtype", "tensor_parallel_size", "gpu_memory_utilization")  # with a [model] table


class JobSpecError(ValueError):
    """A job file problem; str() is the full, user-facing message (file, key path, expectation)."""


@dataclass(frozen=True)
class ResourceSpec:
    gpus_per_worker: int = 2  # 0 = CPU task
    min_free_memory_gb: float = 0.0
    max_parallel: int | None = None  # None = as many as resources allow
    memory_per_worker_gb: float | None = None
    mode: str | None = None  # single | data_parallel | tensor_parallel | auto: GPUs per worker from [model]
    tensor_parallel_size: int | None = None  # mode = "tensor_parallel": GPUs per worker (default: all)
    share_gpu: bool = False  # several tasks of the run on one GPU once their measured peaks fit (rules/packing.py)
    max_tasks_per_gpu: int = 4  # with share_gpu: at most this many tasks on one GPU


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
class HealthSpec:
    # 300 s: torchtitan allows 300 s (comm.init_timeout_seconds) for start-up and the first train step; a
    # task that gets through the same span with sane values has passed its risky start and is marked healthy.
    window_s: float = 300.0
    metric: str = "loss"  # the value the explode and stagnation rules watch (lower is better)
    # On: Megatron-LM checks the loss and grads for NaN by default (check_for_nan_in_loss_and_grad); a NaN
    # loss never comes back on its own.
    nan: bool = True
    # Off: a loss's scale depends on the task (an LM starts near ln(vocab) ~ 10, a regression anywhere), so
    # no absolute cap is safe for every job.
    explode_above: float | None = None
    # 10x: Megatron-LM calls a loss "spiky" at 10x the maximum seen (SPIKY_LOSS_FACTOR). Against the minimum
    # of the first values that is already past where any healthy run goes; llm-foundry's KillLossSpike uses
    # 2x the window mean but only after 5 outliers in a row over a 100-value window, which we do not keep.
    explode_ratio: float | None = 10.0
    # On: an lr of exactly 0 after warm-up's first step is a broken schedule (warm-up longer than the run,
    # a scheduler stepped per epoch, lr * 0 scale), and the task would burn its GPUs learning nothing.
    lr_zero: bool = True
    # Off: plateaus are normal (LMs sit on one for many steps early on); the right patience is per task.
    stagnation_steps: int = 0
    # 600 s: twice torchtitan's start-up allowance and PyTorch's NCCL collective timeout (10 min), so a
    # silent import, data load or checkpoint save does not trip it, while a hung collective whose watchdog
    # never fires is still caught. It applies at any time, not only in the window.
    no_output_s: float = 600.0
    # NaN, explosion, lr = 0 and stagnation come back on a retry with the same seed and config: retrying
    # burns GPU time for the same result. OOM, CUDA/NCCL errors and hangs are often transient and follow
    # [retry] as any other failure does.
    retry_deterministic: bool = False
    # On: a rank that hits CUDA OOM or an NCCL error often leaves the other ranks hung until the collective
    # timeout; stopping at the line frees the GPUs at once.
    cuda_errors: bool = True
    # Off: no new step for this many times the task's own median step interval (after a few steps) is a
    # stall. The right factor depends on the longest pause a job makes without saying so (checkpoint saves,
    # an evaluation not marked with gputui.hooks.phase("eval")), which only its author knows.
    stall_factor: float | None = None


@dataclass(frozen=True)
class JobSpec:
    path: Path  # the job file, absolute
    name: str
    command: tuple[str, ...]  # argv template: shlex-split [job].command (or the list given)
    workdir: Path  # absolute; commands run here
    run_dir: Path  # absolute
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    retry: RetrySpec = field(default_factory=RetrySpec)
    outputs: OutputSpec | None = None
    params: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float = 10.0
    # An attempt running longer (time paused by gputui not counted) is stopped as a kill stops it and fails,
    # not retried (as Slurm's TIMEOUT is not requeued). None: no limit.
    time_limit_s: float | None = None
    alerts: AlertSpec = field(default_factory=AlertSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    model: ModelSpec | None = None
    text: str = ""  # the job file as read, kept in the run directory for the record
    kind: str = ""  # [job].kind (the loader sets it): a name in gputui.jobs.kinds.registry.KINDS
    kind_spec: Any = None  # its kind's table as that kind parsed it (jobs/kinds/: ShardSpec, SweepSpec, ...)
    health: HealthSpec | None = None  # when the file has [health]
    resident: bool = False  # [job].resident: a worker takes task after task, keeping its model loaded
