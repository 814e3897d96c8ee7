"""The job file's plain tables: [shards], [resources], [retry], [alerts], [outputs], each read and checked
with the loader's checks (errors name the file, the key and what was expected)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gputui.jobs.checks import got, resolve_path
from gputui.jobs.gpu_plan import DTYPE_BYTES, MODES
from gputui.jobs.oom import ON_OOM
from gputui.jobs.spec import AlertSpec, ExecutorSpec, ModelSpec, OutputSpec, ResourceSpec, RetrySpec, ShardSpec
from gputui.jobs.templates import name_problem

if TYPE_CHECKING:
    from gputui.jobs.loader import Loader

_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_FORMAT_NAMES = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "parquet": "parquet"}
_SHARD_PLACEHOLDERS = ("low", "high", "task_id")  # one of these makes a per-shard file name unique
_ATTEMPT_PLACEHOLDERS = ("attempt", "gpus", "num_gpus")  # change between attempts: not in output names


def shards(loader: Loader, table: dict[str, Any]) -> ShardSpec:
    loader.check_keys(table, "shards")
    raw = loader.value(table, "shards", "input", "str", missing="the path of a .csv, .jsonl or .parquet file")
    if "format" in table:
        fmt = table["format"]
        if not isinstance(fmt, str) or fmt.lower() not in _FORMAT_NAMES:
            raise loader.error("[shards].format", f"expected 'csv', 'jsonl' or 'parquet', {got(fmt)}")
        fmt = _FORMAT_NAMES[fmt.lower()]
    else:
        fmt = _SUFFIX_FORMATS.get(Path(raw).suffix.lower())
        if fmt is None:
            raise loader.error(
                "[shards].input",
                f"cannot tell the format of {raw!r}; expected .csv, .jsonl or .parquet (or set [shards].format)",
            )
    path = resolve_path(raw, loader.base)
    if path.is_dir():
        raise loader.error("[shards].input", f"expected a file, found a directory: {path}")
    if not path.is_file():
        raise loader.error("[shards].input", f"file not found: {path}")
    id_column = loader.value(table, "shards", "id_column", "str", default="data_id")
    if ("num_workers" in table) == ("shard_size" in table):
        which = "both are set" if "num_workers" in table else "neither is set"
        raise loader.error("[shards]", f"set exactly one of num_workers or shard_size ({which})")
    num_workers = loader.value(table, "shards", "num_workers", "int>=1", default=None)
    shard_size = loader.value(table, "shards", "shard_size", "int>=1", default=None)
    return ShardSpec(input=path, id_column=id_column, num_workers=num_workers, shard_size=shard_size, format=fmt)


def resources(loader: Loader, table: dict[str, Any]) -> ResourceSpec:
    loader.check_keys(table, "resources")
    d = ResourceSpec()
    return ResourceSpec(
        gpus_per_worker=loader.value(table, "resources", "gpus_per_worker", "int>=0", d.gpus_per_worker),
        min_free_memory_gb=loader.value(table, "resources", "min_free_memory_gb", "num>=0", d.min_free_memory_gb),
        max_parallel=loader.value(table, "resources", "max_parallel", "int>=1", d.max_parallel),
        memory_per_worker_gb=loader.value(
            table, "resources", "memory_per_worker_gb", "num>0", d.memory_per_worker_gb
        ),
        mode=one_of(loader, table, "resources", "mode", MODES),
        tensor_parallel_size=loader.value(table, "resources", "tensor_parallel_size", "int>=1", None),
    )


def model(loader: Loader, table: dict[str, Any]) -> ModelSpec:
    loader.check_keys(table, "model")
    raw = loader.value(table, "model", "path", "str", missing="a local model folder (with config.json)")
    local = resolve_path(raw, loader.base)
    dtype = loader.value(table, "model", "dtype", "str", "auto")
    if dtype not in DTYPE_BYTES:
        raise loader.error("[model].dtype", f"expected one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    return ModelSpec(
        path=str(local) if local.exists() else raw,
        dtype=dtype,
        max_model_len=loader.value(table, "model", "max_model_len", "int>=1", None),
    )


def retry(loader: Loader, table: dict[str, Any]) -> RetrySpec:
    loader.check_keys(table, "retry")
    d = RetrySpec()
    return RetrySpec(
        max_attempts=loader.value(table, "retry", "max_attempts", "int>=1", d.max_attempts),
        backoff_s=loader.value(table, "retry", "backoff_s", "num>=0", d.backoff_s),
        backoff_max_s=loader.value(table, "retry", "backoff_max_s", "num>=0", d.backoff_max_s),
        on_oom=one_of(loader, table, "retry", "on_oom", ON_OOM),
    )


def one_of(loader: Loader, table: dict[str, Any], tname: str, key: str, allowed: tuple[str, ...]) -> str | None:
    value = loader.value(table, tname, key, "str", None)
    if value is not None and value not in allowed:
        raise loader.error(f"[{tname}].{key}", f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def alerts(loader: Loader, table: dict[str, Any]) -> AlertSpec:
    loader.check_keys(table, "alerts")
    return AlertSpec(
        command=loader.value(table, "alerts", "command", "str", default=None),
        idle_minutes=loader.value(table, "alerts", "idle_minutes", "num>0", default=None),
        bell=loader.value(table, "alerts", "bell", "bool", default=False),
    )


EXECUTORS = ("local", "ray", "slurm")
_ONLY = {"address": "ray", "num_gpus": "ray", "partition": "slurm", "extra_args": "slurm"}


def executor(loader: Loader, table: dict[str, Any]) -> ExecutorSpec:
    loader.check_keys(table, "executor")
    kind = loader.value(table, "executor", "kind", "str", default="local")
    if kind not in EXECUTORS:
        raise loader.error("[executor].kind", f"expected one of {', '.join(map(repr, EXECUTORS))}, got {kind!r}")
    for key, only in _ONLY.items():
        if key in table and kind != only:
            raise loader.error(f"[executor].{key}", f'applies to kind = "{only}" only (kind is {kind!r})')
    address = loader.value(table, "executor", "address", "str", default="auto")
    num_gpus = loader.value(table, "executor", "num_gpus", "int>=0", default=None)
    if num_gpus is not None and address != "local":
        raise loader.error(
            "[executor].num_gpus",
            f'declares the GPUs of a private cluster (address = "local"); the cluster at {address!r} has its own',
        )
    partition = loader.value(table, "executor", "partition", "str", default=None)
    extra = table.get("extra_args", [])
    if not isinstance(extra, list) or not all(isinstance(a, str) and a.strip() for a in extra):
        raise loader.error("[executor].extra_args", f"expected a list of sbatch options as strings, {got(extra)}")
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in _SBATCH_OURS:
            raise loader.error(
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


def relative_name(loader: Loader, keypath: str, name: str, given: str) -> None:
    """An output file name (`given`, `name` once filled) must name a file inside [outputs].dir (the rule is
    templates.name_problem, the one each task's own name is held to)."""
    problem = name_problem(name)
    if problem is not None:
        shown = repr(given) if name == given else f"{given!r} (filled in: {name!r})"
        raise loader.error(keypath, f"expected a file name relative to [outputs].dir, got {shown}: it {problem}")


def outputs(loader: Loader, table: dict[str, Any], run_dir: Path, known: list[str]) -> OutputSpec:
    loader.check_keys(table, "outputs")
    out_dir = loader.path(table, "outputs", "dir") or run_dir / "outputs"
    pattern = loader.value(table, "outputs", "pattern", "str", default=None)
    if pattern is not None:
        used = loader.check_template("[outputs].pattern", pattern, known)
        per_attempt = [name for name in _ATTEMPT_PLACEHOLDERS if name in used]
        if per_attempt:
            why = "a shard's output file must be the same for every attempt"
            raise loader.error("[outputs].pattern", f"cannot use {{{per_attempt[0]}}}: {why}")
        if not used & set(_SHARD_PLACEHOLDERS):
            raise loader.error(
                "[outputs].pattern",
                f"must use {{low}}, {{high}} or {{task_id}} so each shard writes its own file, got {pattern!r}",
            )
    merged = loader.value(table, "outputs", "merged", "str", default=None)
    if merged is not None:
        relative_name(loader, "[outputs].merged", merged, merged)
    return OutputSpec(dir=out_dir, pattern=pattern, merged=merged)
