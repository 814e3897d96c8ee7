"""The job file's plain tables: [resources], [model], [retry], [alerts], [executor], [outputs], each read and
checked with the job file's checks (errors name the file, the key and what was expected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gputui.jobs.checks import Checks, got, resolve_path
from gputui.jobs.gpu_plan import DTYPE_BYTES, MODES
from gputui.jobs.oom import ON_OOM
from gputui.jobs.spec import AlertSpec, ExecutorSpec, ModelSpec, OutputSpec, ResourceSpec, RetrySpec
from gputui.jobs.templates import name_problem

_SHARD_PLACEHOLDERS = ("low", "high", "task_id")  # one of these makes a per-shard file name unique
_ATTEMPT_PLACEHOLDERS = ("attempt", "gpus", "num_gpus")  # change between attempts: not in output names


def resources(checks: Checks, table: dict[str, Any]) -> ResourceSpec:
    checks.check_table(table, "resources")
    d = ResourceSpec()
    return ResourceSpec(
        gpus_per_worker=checks.value(table, "resources", "gpus_per_worker", "int>=0", d.gpus_per_worker),
        min_free_memory_gb=checks.value(table, "resources", "min_free_memory_gb", "num>=0", d.min_free_memory_gb),
        max_parallel=checks.value(table, "resources", "max_parallel", "int>=1", d.max_parallel),
        memory_per_worker_gb=checks.value(
            table, "resources", "memory_per_worker_gb", "num>0", d.memory_per_worker_gb
        ),
        mode=one_of(checks, table, "resources", "mode", MODES),
        tensor_parallel_size=checks.value(table, "resources", "tensor_parallel_size", "int>=1", None),
        share_gpu=checks.value(table, "resources", "share_gpu", "bool", d.share_gpu),
        max_tasks_per_gpu=checks.value(table, "resources", "max_tasks_per_gpu", "int>=1", d.max_tasks_per_gpu),
    )


def model(checks: Checks, table: dict[str, Any]) -> ModelSpec:
    checks.check_table(table, "model")
    raw = checks.value(table, "model", "path", "str", missing="a local model folder (with config.json)")
    local = resolve_path(raw, checks.base)
    dtype = checks.value(table, "model", "dtype", "str", "auto")
    if dtype not in DTYPE_BYTES:
        raise checks.error("[model].dtype", f"expected one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    return ModelSpec(
        path=str(local) if local.exists() else raw,
        dtype=dtype,
        max_model_len=checks.value(table, "model", "max_model_len", "int>=1", None),
    )


def retry(checks: Checks, table: dict[str, Any]) -> RetrySpec:
    checks.check_table(table, "retry")
    d = RetrySpec()
    return RetrySpec(
        max_attempts=checks.value(table, "retry", "max_attempts", "int>=1", d.max_attempts),
        backoff_s=checks.value(table, "retry", "backoff_s", "num>=0", d.backoff_s),
        backoff_max_s=checks.value(table, "retry", "backoff_max_s", "num>=0", d.backoff_max_s),
        on_oom=one_of(checks, table, "retry", "on_oom", ON_OOM),
    )


def one_of(checks: Checks, table: dict[str, Any], tname: str, key: str, allowed: tuple[str, ...]) -> str | None:
    value = checks.value(table, tname, key, "str", None)
    if value is not None and value not in allowed:
        raise checks.error(f"[{tname}].{key}", f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def alerts(checks: Checks, table: dict[str, Any]) -> AlertSpec:
    checks.check_table(table, "alerts")
    return AlertSpec(
        command=checks.value(table, "alerts", "command", "str", default=None),
        idle_minutes=checks.value(table, "alerts", "idle_minutes", "num>0", default=None),
        bell=checks.value(table, "alerts", "bell", "bool", default=False),
    )


EXECUTORS = ("local", "ray", "slurm")
_ONLY = {"address": "ray", "num_gpus": "ray", "partition": "slurm", "extra_args": "slurm"}


def executor(checks: Checks, table: dict[str, Any]) -> ExecutorSpec:
    checks.check_table(table, "executor")
    kind = checks.value(table, "executor", "kind", "str", default="local")
    if kind not in EXECUTORS:
        raise checks.error("[executor].kind", f"expected one of {', '.join(map(repr, EXECUTORS))}, got {kind!r}")
    for key, only in _ONLY.items():
        if key in table and kind != only:
            raise checks.error(f"[executor].{key}", f'applies to kind = "{only}" only (kind is {kind!r})')
    address = checks.value(table, "executor", "address", "str", default="auto")
    num_gpus = checks.value(table, "executor", "num_gpus", "int>=0", default=None)
    if num_gpus is not None and address != "local":
        raise checks.error(
            "[executor].num_gpus",
            f'declares the GPUs of a private cluster (address = "local"); the cluster at {address!r} has its own',
        )
    partition = checks.value(table, "executor", "partition", "str", default=None)
    extra = table.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) and a.strip() for a in extra):
        raise checks.error("[executor].extra_args", f"expected a list of sbatch options as strings, {got(extra)}")
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in _SBATCH_OURS:
            raise checks.error(
                "[executor].extra_args", f"{name} is gputui's to set ({_SBATCH_OURS[name]}), got {arg!r}"
            )
    return ExecutorSpec(kind, address, num_gpus, partition, tuple(extra))


_SBATCH_OURS = {
    "--array": "one array per launch of shards, its throttle from [resources].max_parallel",
    "--gres": "from [resources].gpus_per_worker",
    "--gpus": "from [resources].gpus_per_worker",
    "--dependency": "from the pipeline's `after`",
    "--comment": "it carries the scheduler's UUID",
    "--output": "Slurm's messages go to the run directory",
    "--partition": "set [executor].partition",
    "--wrap": "the command is the job's",
    "--parsable": "gputui reads the job id",
}


def relative_name(checks: Checks, keypath: str, name: str, given: str) -> None:
    """An output file name (`given`, `name` once filled) must name a file inside [outputs].dir (the rule is
    templates.name_problem, the one each task's own name is held to)."""
    problem = name_problem(name)
    if problem is not None:
        shown = repr(given) if name == given else f"{given!r} (filled in: {name!r})"
        raise checks.error(keypath, f"expected a file name relative to [outputs].dir, got {shown}: it {problem}")


def outputs(checks: Checks, table: dict[str, Any], run_dir: Path, known: list[str]) -> OutputSpec:
    checks.check_table(table, "outputs")
    out_dir = checks.path(table, "outputs", "dir") or run_dir / "outputs"
    pattern = checks.value(table, "outputs", "pattern", "str", default=None)
    if pattern is not None:
        used = checks.check_template("[outputs].pattern", pattern, known)
        per_attempt = [name for name in _ATTEMPT_PLACEHOLDERS if name in used]
        if per_attempt:
            why = "a shard's output file must be the same for every attempt"
            raise checks.error("[outputs].pattern", f"cannot use {{{per_attempt[0]}}}: {why}")
        if not used & set(_SHARD_PLACEHOLDERS):
            raise checks.error(
                "[outputs].pattern",
                f"must use {{low}}, {{high}} or {{task_id}} so each shard writes its own file, got {pattern!r}",
            )
    merged = checks.value(table, "outputs", "merged", "str", default=None)
    if merged is not None:
        relative_name(checks, "[outputs].merged", merged, merged)
    return OutputSpec(dir=out_dir, pattern=pattern, merged=merged)
