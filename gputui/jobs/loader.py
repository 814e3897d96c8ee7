"""Job files (TOML) -> JobSpec: the [job] table, and the assembly of the rest. Every table is read with the job
file's checks (checks.py): the plain ones in tables.py, the kind's by its kind (jobs/kinds/), [health] in
health_spec.py. Every error names the file, the key path and what was expected."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gputui.jobs import tables
from gputui.jobs.checks import NAME_RE, Checks, got, is_int, toml_key, toml_position
from gputui.jobs.health_spec import parse_health
from gputui.jobs.kinds.base import JobKind
from gputui.jobs.kinds.registry import DEFAULT, KINDS
from gputui.jobs.spec import (
    MODEL_PLACEHOLDERS,
    PLACEHOLDERS,
    ExecutorSpec,
    JobSpec,
    JobSpecError,
    ModelSpec,
    OutputSpec,
    ResourceSpec,
)
from gputui.jobs.templates import name_problem, render_template

JOB_KEYS = ("name", "kind", "command", "workdir", "run_dir", "stop_grace_s", "time_limit_s", "env", "resident")
PLAIN_TABLES: dict[str, tuple[str, ...] | None] = {  # each table's keys; None: its own reader checks them
    "resources": (
        "gpus_per_worker",
        "min_free_memory_gb",
        "max_parallel",
        "memory_per_worker_gb",
        "mode",
        "tensor_parallel_size",
        "share_gpu",
        "max_tasks_per_gpu",
    ),
    "model": ("path", "dtype", "max_model_len"),
    "retry": ("max_attempts", "backoff_s", "backoff_max_s", "on_oom"),
    "outputs": ("dir", "pattern", "merged"),
    "alerts": ("command", "idle_minutes", "bell"),
    "executor": ("kind", "address", "num_gpus", "partition", "extra_args"),
    "params": None,  # free-form: name -> value
    "health": None,  # checked by jobs/health_spec.py
}


def job_tables() -> dict[str, tuple[str, ...] | None]:
    """Every table a job file may hold, with its keys: [job], each kind's (KINDS), the plain ones."""
    return {"job": JOB_KEYS, **{kind.table: kind.table_keys for kind in KINDS.values()}, **PLAIN_TABLES}


_REQUIRED_TABLES = {"job": "expected [job] with name and command"}
_ANOTHER_SHARD = {"low": 1000, "high": 1001, "task_id": "shard-1"}  # other values than the samples' own


def job_checks(where: str, base: Path) -> Checks:
    """The checks for a job file at `where` (as given) in the folder `base`, knowing every table's keys."""
    return Checks(where, base, job_tables())


def load_jobspec(path: str | Path, *, run_dir: str | Path | None = None) -> JobSpec:
    """Read and validate a job file. `run_dir` (from --run-dir) overrides [job].run_dir.

    Raises JobSpecError on the first problem; its message starts with `path` as given.
    """
    where = str(path)
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise JobSpecError(f"{where}: cannot read job file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobSpecError(
            f"{where}: cannot read job file: not UTF-8 text (bad byte at offset {e.start})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobSpecError(f"{where}: TOML syntax error {toml_position(str(e))}") from None
    return build(job_checks(where, file.absolute().parent), data, text, file.resolve(), run_dir)


def build(checks: Checks, data: dict[str, Any], text: str, file: Path, run_dir: str | Path | None) -> JobSpec:
    """The JobSpec of a job file's `data`; the kind reads its own table and says what its commands may use."""
    check_top_level(checks, data)
    job = data["job"]
    checks.check_table(job, "job")
    name = job_name(checks, job)
    kind = job_kind(checks, job, data)
    params = read_params(checks, data)
    sized = MODEL_PLACEHOLDERS if "model" in data else ()  # a run mode's numbers, once GPUs are sized
    for shadowed in set(sized) & set(params):
        raise checks.error(f"[params].{shadowed}", f"shadows the placeholder {{{shadowed}}} that [model] sets")
    spec = kind.parse(checks, data[kind.table], [*sized, *params])
    known = [*kind.placeholders(spec), *sized, *params]
    command, keypaths = job_command(checks, job, kind, spec, known, params)
    workdir, run = folders(checks, job, name, run_dir)
    stop_grace_s = checks.value(job, "job", "stop_grace_s", "num>=0", default=10.0)
    time_limit_s = checks.value(job, "job", "time_limit_s", "num>0", default=None)
    env = read_env(checks, job)
    resources = tables.resources(checks, data.get("resources", {}))
    retry = tables.retry(checks, data.get("retry", {}))
    outputs = tables.outputs(checks, data.get("outputs", {}), run, known)
    own = kind.templates(spec)  # its own commands (a pipeline's steps)
    check_on_oom(checks, retry.on_oom, resources, params, [command, *(tokens for _, tokens in own)])
    if not kind.names_outputs and outputs.pattern is not None:
        raise checks.error("[outputs].pattern", f"names each shard's output file; a {kind.name} job has no shards")
    alerts = tables.alerts(checks, data.get("alerts", {}))
    executor = tables.executor(checks, data.get("executor", {}))
    model = read_model(checks, data, resources, executor)
    health = parse_health(checks, data["health"]) if "health" in data else None
    resident = read_resident(checks, job, kind, executor)
    check_share_gpu(checks, resources, executor, resident, "max_tasks_per_gpu" in data.get("resources", {}))
    tokens = [*zip(keypaths, command, strict=True), *((kp, token) for kp, tokens in own for token in tokens)]
    check_filled(checks, tokens, outputs, sample_values(params, outputs, run) | kind.samples(spec, run))
    return JobSpec(
        path=file,
        name=name,
        command=command,
        workdir=workdir,
        run_dir=run,
        resources=resources,
        retry=retry,
        outputs=outputs,
        params=params,
        env=env,
        stop_grace_s=stop_grace_s,
        time_limit_s=time_limit_s,
        alerts=alerts,
        executor=executor,
        model=model,
        text=text,
        kind=kind.name,
        kind_spec=spec,
        health=health,
        resident=resident,
    )


# -- the file's shape -------------------------------------------------------------------------------


def check_top_level(checks: Checks, data: dict[str, Any]) -> None:
    tables = checks.tables
    names = ", ".join(f"[{t}]" for t in tables)
    for key, value in data.items():
        if key in tables:
            if not isinstance(value, dict):
                raise checks.error(f"[{key}]", f"expected a table, {got(value)}")
        elif isinstance(value, dict):
            close = difflib.get_close_matches(key, list(tables), n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"expected one of: {names}"
            raise checks.error(f"[{toml_key(key)}]", f"unknown table; {hint}")
        else:
            owner = checks.owner_of(key)
            if owner:
                raise checks.error(toml_key(key), f"key outside any table; put it under [{owner}]")
            raise checks.error(toml_key(key), f"unknown top-level key; expected the tables {names}")
    for name, expectation in _REQUIRED_TABLES.items():
        if name not in data:
            raise checks.error(f"[{name}]", f"missing table; {expectation}")


def job_kind(checks: Checks, job: dict[str, Any], data: dict[str, Any]) -> JobKind:
    """[job].kind, and the table that kind needs (and none another kind needs)."""
    name = checks.value(job, "job", "kind", "str", default=DEFAULT.name)
    if name not in KINDS:
        close = difflib.get_close_matches(name, list(KINDS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(KINDS)}"
        raise checks.error("[job].kind", f"unknown kind {name!r}; {hint}")
    kind = KINDS[name]
    if kind.table not in data:
        raise checks.error(f"[{kind.table}]", f"missing table; {kind.expects}")
    for other in KINDS.values():
        if other is not kind and other.table in data:
            raise checks.error(
                f"[{other.table}]", f"belongs to a {other.name} job, but [job].kind is {name!r}; remove one"
            )
    return kind


# -- the [job] table and [params] -------------------------------------------------------------------


def read_resident(checks: Checks, job: dict[str, Any], kind: JobKind, executor: ExecutorSpec) -> bool:
    """[job].resident: workers that stay up and take task after task (gputui.hooks.resident_tasks). Their
    tasks must be alike (one command over ranges), and their waiters are this machine's."""
    resident = checks.value(job, "job", "resident", "bool", default=False)
    if resident and not kind.alike_tasks:
        why = f"only workers of alike tasks (shards) can be resident, not a {kind.name} job's"
        raise checks.error("[job].resident", why)
    if resident and executor.remote:
        raise checks.error(
            "[job].resident",
            f"resident workers run on the local executor only, not on {executor.kind}; remove [job].resident "
            "or run the job here",
        )
    return resident


def job_name(checks: Checks, job: dict[str, Any]) -> str:
    name = checks.value(job, "job", "name", "str", missing="a job name (letters, digits, '.', '_', '-')")
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise checks.error("[job].name", f"expected only letters, digits, '.', '_' or '-', got {name!r}")
    return name


def folders(checks: Checks, job: dict[str, Any], name: str, run_dir: str | Path | None) -> tuple[Path, Path]:
    """Where commands run ([job].workdir, which must exist) and the run directory (`run_dir` from the command
    line wins over [job].run_dir)."""
    workdir = checks.path(job, "job", "workdir") or checks.base.resolve()
    if not workdir.is_dir():
        what = "not a directory" if workdir.exists() else "directory not found"
        raise checks.error("[job].workdir", f"{what}: {workdir}")
    if run_dir is not None:
        run = Path(run_dir).expanduser().resolve()  # from the command line: relative to the cwd
        checks.value(job, "job", "run_dir", "str", default=None)  # still type-checked
    else:
        run = checks.path(job, "job", "run_dir") or (checks.base / "runs" / name).resolve()
    return workdir, run


def read_params(checks: Checks, data: dict[str, Any]) -> dict[str, str | int | float | bool]:
    params: dict[str, str | int | float | bool] = {}
    for key, value in data.get("params", {}).items():
        keypath = f"[params].{toml_key(key)}"
        if not key.isidentifier():
            raise checks.error(
                keypath,
                "expected a name usable as a placeholder (letters, digits and _, not starting with a digit)",
            )
        if key in PLACEHOLDERS:
            raise checks.error(keypath, f"shadows the built-in placeholder {{{key}}}; choose another name")
        if not isinstance(value, str | int | float | bool):
            raise checks.error(keypath, f"expected a string, number or boolean, {got(value)}")
        params[key] = value
    return params


def read_env(checks: Checks, job: dict[str, Any]) -> dict[str, str]:
    table = job.get("env", {})
    if not isinstance(table, dict):
        raise checks.error("[job].env", f'expected a table of NAME = "value", {got(table)}')
    env: dict[str, str] = {}
    for key, value in table.items():
        keypath = f"[job].env.{toml_key(key)}"
        if not key or "=" in key or "\0" in key:
            raise checks.error(keypath, "expected an environment variable name (non-empty, no '=')")
        if not isinstance(value, str | int | float | bool):
            raise checks.error(keypath, f"expected a string, number or boolean, {got(value)}")
        text = str(value)
        if "\0" in text:
            raise checks.error(keypath, "expected a value without NUL characters")
        env[key] = text
    return env


# -- checks across tables ---------------------------------------------------------------------------


def job_command(
    checks: Checks, job: dict[str, Any], kind: JobKind, spec: Any, known: list[str], params: Mapping[str, object]
) -> tuple[tuple[str, ...], list[str]]:
    """[job].command (where the kind needs one, or one is given) and its tokens' key paths, checked by the kind
    too (a sweep's: every stage sets the parameters it uses)."""
    if not kind.command_required and "command" not in job:
        return (), []
    command, keypaths = checks.command(job, "[job].command", known)
    used = set().union(*(checks.check_template(kp, t, known) for t, kp in zip(command, keypaths, strict=True)))
    kind.check_command(checks, spec, used, params)
    return command, keypaths


def read_model(
    checks: Checks, data: dict[str, Any], resources: ResourceSpec, executor: ExecutorSpec
) -> ModelSpec | None:
    """[model], and the run mode that sizes GPUs for it from this machine's (so not on a cluster)."""
    if executor.remote and resources.mode is not None:
        raise checks.error(
            "[resources].mode",
            f"sizes GPUs from this machine's; with [executor] kind = {executor.kind!r} the cluster places "
            "tasks: give [resources].gpus_per_worker instead",
        )
    model = tables.model(checks, data["model"]) if "model" in data else None
    if resources.mode is not None and model is None:
        raise checks.error("[model]", f"missing table; [resources].mode = {resources.mode!r} sizes GPUs for it")
    return model


def check_share_gpu(
    checks: Checks, resources: ResourceSpec, executor: ExecutorSpec, resident: bool, cap_given: bool
) -> None:
    """[resources].share_gpu packs tasks of one GPU each onto GPUs this machine's scheduler places and claims."""
    if not resources.share_gpu:
        if cap_given:
            raise checks.error("[resources].max_tasks_per_gpu", "caps tasks sharing a GPU; set share_gpu = true")
        return
    why = None
    if resources.mode is not None:
        why = f"[resources].mode = {resources.mode!r} sizes GPUs per worker; give gpus_per_worker = 1 instead"
    elif resources.gpus_per_worker != 1:
        why = (
            f"shares a GPU among tasks of one GPU each, but gpus_per_worker = {resources.gpus_per_worker}; "
            "set gpus_per_worker = 1 or remove share_gpu"
        )
    elif executor.remote:
        why = f"packs tasks on this machine's GPUs, but [executor] kind = {executor.kind!r} places them itself"
    elif resident:
        why = "resident workers keep their GPUs between tasks; remove [job].resident or share_gpu"
    if why is not None:
        raise checks.error("[resources].share_gpu", why)


def check_on_oom(
    checks: Checks,
    on_oom: str | None,
    resources: ResourceSpec,
    params: Mapping[str, object],
    commands: Sequence[Sequence[str]],
) -> None:
    if on_oom == "smaller_batch":
        batch = params.get("batch_size")
        if not is_int(batch) or batch < 1:
            raise checks.error(
                "[params].batch_size",
                f"expected a positive integer, {got(batch) if batch is not None else 'missing'}; "
                "[retry].on_oom = 'smaller_batch' halves it after CUDA out of memory",
            )
        if not any("{batch_size" in token for c in commands for token in c):
            raise checks.error(
                "[retry].on_oom", "'smaller_batch' halves {batch_size}, but no command uses {batch_size}"
            )
    if on_oom == "more_gpus" and resources.mode is None and resources.gpus_per_worker == 0:
        raise checks.error(
            "[retry].on_oom", "'more_gpus' doubles the GPUs per worker, but [resources].gpus_per_worker = 0"
        )


def sample_values(params: Mapping[str, object], outputs: OutputSpec, run: Path) -> dict[str, object]:
    """Example values of every placeholder (a kind adds its own), to fill each template once at load."""
    return {
        **params,
        "low": 0,
        "high": 1,
        "input": "",
        "output_dir": str(outputs.dir),
        "run_dir": str(run),
        "task_id": "shard-0",
        "attempt": 1,
        "gpus": "0,1",
        "num_gpus": 2,
        "step": "step",
        "output": "out.csv",
        "model": "model",
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9,
    }


def check_filled(
    checks: Checks, tokens: list[tuple[str, str]], outputs: OutputSpec, samples: Mapping[str, object]
) -> None:
    """Fill every template once with example values, so a bad format spec fails now, not mid-run. `tokens`:
    (key path, argv token) of every command."""
    for kp, token in tokens:
        checks.try_render(kp, token, samples)
    if outputs.pattern is not None:
        example = checks.try_render("[outputs].pattern", outputs.pattern, samples)
        # The rule each task's own name is held to once planned (templates.name_problem), applied here
        # where another shard's name breaks it too: a problem of the sample ids alone ({low:c} of 0 is a
        # NUL) is left to each task's real name, checked when it is planned.
        if name_problem(_filled(outputs.pattern, {**samples, **_ANOTHER_SHARD}) or ""):
            tables.relative_name(checks, "[outputs].pattern", example, outputs.pattern)


def _filled(template: str, values: Mapping[str, object]) -> str | None:
    try:
        return render_template(template, values)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None
