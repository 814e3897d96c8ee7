"""Job files (TOML) -> JobSpec. Every error names the file, the key path and what was expected; each kind's
table ([sweep], [[pipeline.step]], [health]) is read by its own module with this loader's checks."""

from __future__ import annotations

import difflib
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gputui.jobs import tables
from gputui.jobs.checks import (
    NAME_RE,
    got,
    is_int,
    is_number,
    placeholder_list,
    resolve_path,
    toml_key,
    toml_position,
)
from gputui.jobs.spec import (
    GENERIC_PLACEHOLDERS,
    KINDS,
    MODEL_PLACEHOLDERS,
    PLACEHOLDERS,
    JobSpec,
    JobSpecError,
)
from gputui.jobs.templates import FORMATTER, name_problem, render_template

_TABLES: dict[str, tuple[str, ...] | None] = {
    "job": ("name", "kind", "command", "workdir", "run_dir", "stop_grace_s", "env"),
    "shards": ("input", "format", "id_column", "num_workers", "shard_size"),
    "resources": (
        "gpus_per_worker",
        "min_free_memory_gb",
        "max_parallel",
        "memory_per_worker_gb",
        "mode",
        "tensor_parallel_size",
    ),
    "model": ("path", "dtype", "max_model_len"),
    "retry": ("max_attempts", "backoff_s", "backoff_max_s", "on_oom"),
    "outputs": ("dir", "pattern", "merged"),
    "alerts": ("command", "idle_minutes", "bell"),
    "executor": ("kind", "address", "num_gpus", "partition", "extra_args"),
    "params": None,  # free-form: name -> value
    "sweep": None,  # checked by jobs/sweep.py
    "pipeline": None,  # checked by jobs/pipeline.py
    "health": None,  # checked by jobs/health_spec.py
}
_REQUIRED_TABLES = {"job": "expected [job] with name and command"}
_KIND_TABLES = {  # the table each kind needs, and what it should hold
    "shards": ("shards", "expected [shards] with input and num_workers or shard_size"),
    "sweep": ("sweep", "expected [sweep] with metric and [[sweep.stage]] tables"),
    "pipeline": ("pipeline", "expected [[pipeline.step]] tables with name and command"),
}
_MISSING: Any = object()


class Loader:
    def __init__(self, where: str, base: Path) -> None:
        self.where = where  # the path as given, first in every message
        self.base = base  # the job file's folder: relative paths start here

    def error(self, keypath: str, message: str) -> JobSpecError:
        return JobSpecError(f"{self.where}: {keypath}: {message}")

    # -- tables and keys --------------------------------------------------------------------------

    def check_top_level(self, data: dict[str, Any]) -> None:
        tables = ", ".join(f"[{t}]" for t in _TABLES)
        for key, value in data.items():
            if key in _TABLES:
                if not isinstance(value, dict):
                    raise self.error(f"[{key}]", f"expected a table, {got(value)}")
            elif isinstance(value, dict):
                close = difflib.get_close_matches(key, list(_TABLES), n=1)
                hint = f"did you mean [{close[0]}]?" if close else f"expected one of: {tables}"
                raise self.error(f"[{toml_key(key)}]", f"unknown table; {hint}")
            else:
                owner = self.owner_of(key)
                if owner:
                    raise self.error(toml_key(key), f"key outside any table; put it under [{owner}]")
                raise self.error(toml_key(key), f"unknown top-level key; expected the tables {tables}")
        for name, expectation in _REQUIRED_TABLES.items():
            if name not in data:
                raise self.error(f"[{name}]", f"missing table; {expectation}")

    @staticmethod
    def owner_of(key: str, skip: str = "") -> str | None:
        return next((t for t, keys in _TABLES.items() if t != skip and keys and key in keys), None)

    def check_keys(self, table: dict[str, Any], name: str) -> None:
        allowed = _TABLES[name]
        assert allowed is not None
        for key in table:
            if key in allowed:
                continue
            owner = self.owner_of(key, skip=name)
            close = difflib.get_close_matches(key, allowed, n=1)
            if owner:
                hint = f"'{key}' belongs in [{owner}]"
            elif close:
                hint = f"did you mean '{close[0]}'?"
            else:
                hint = f"expected one of: {', '.join(allowed)}"
            raise self.error(f"[{name}].{toml_key(key)}", f"unknown key; {hint}")

    # -- typed values -----------------------------------------------------------------------------

    def value(
        self, table: dict[str, Any], tname: str, key: str, check: str, default: Any = _MISSING, missing: str = ""
    ) -> Any:
        """table[key] checked as `check`; `default` when absent (or an error saying `missing`)."""
        keypath = f"[{tname}].{key}"
        if key not in table:
            if default is _MISSING:
                raise self.error(keypath, f"missing; expected {missing}")
            return default
        value = table[key]
        if check == "str":
            ok, expected = isinstance(value, str) and value.strip() != "", "a non-empty string"
        elif check == "int>=0":
            ok, expected = is_int(value) and value >= 0, "a non-negative integer"
        elif check == "int>=1":
            ok, expected = is_int(value) and value >= 1, "a positive integer"
        elif check == "num>=0":
            ok, expected = is_number(value) and value >= 0, "a non-negative number"
        elif check == "num>0":
            ok, expected = is_number(value) and value > 0, "a positive number"
        elif check == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        else:  # pragma: no cover - programming error
            raise AssertionError(check)
        if not ok:
            raise self.error(keypath, f"expected {expected}, {got(value)}")
        return float(value) if check.startswith("num") else value

    def path(self, table: dict[str, Any], tname: str, key: str) -> Path | None:
        text = self.value(table, tname, key, "str", default=None)
        return None if text is None else resolve_path(text, self.base)

    # -- templates --------------------------------------------------------------------------------

    def check_template(self, keypath: str, template: str, known: list[str]) -> set[str]:
        """Raise on an unknown placeholder or bad braces; return the placeholder names used."""
        brace_hint = "write {{ or }} for a literal brace"
        try:
            parsed = list(FORMATTER.parse(template))
        except ValueError as e:
            raise self.error(keypath, f"bad template {template!r}: {e}; {brace_hint}") from None
        used: set[str] = set()
        for _literal, name, spec, _conversion in parsed:
            if name is None:
                continue
            if name == "":
                raise self.error(
                    keypath,
                    f"empty placeholder {{}} in {template!r}; name one of "
                    f"{placeholder_list(known)}, or {brace_hint}",
                )
            if name not in known:
                base = re.split(r"[.\[]", name, maxsplit=1)[0]
                if base in known:
                    raise self.error(
                        keypath, f"placeholder {{{name}}}: only plain names like {{{base}}} are allowed"
                    )
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {{{close[0]}}}? Known" if close else "known"
                message = f"unknown placeholder {{{name}}}; {hint}: {placeholder_list(known)}"
                if not name.isidentifier():
                    message += f"; {brace_hint}"
                raise self.error(keypath, message)
            used.add(name)
            if spec:
                used |= self.check_template(keypath, spec, known)
        return used

    def try_render(self, keypath: str, template: str, samples: Mapping[str, object]) -> str:
        try:
            return render_template(template, samples)
        except (ValueError, TypeError, KeyError) as e:
            raise self.error(keypath, f"cannot fill {template!r}: {e}") from None

    def check_on_oom(self, on_oom, resources, params, commands) -> None:
        if on_oom == "smaller_batch":
            batch = params.get("batch_size")
            if not is_int(batch) or batch < 1:
                raise self.error(
                    "[params].batch_size",
                    f"expected a positive integer, {got(batch) if batch is not None else 'missing'}; "
                    "[retry].on_oom = 'smaller_batch' halves it after CUDA out of memory",
                )
            if not any("{batch_size" in token for c in commands for token in c):
                raise self.error(
                    "[retry].on_oom", "'smaller_batch' halves {batch_size}, but no command uses {batch_size}"
                )
        if on_oom == "more_gpus" and resources.mode is None and resources.gpus_per_worker == 0:
            raise self.error(
                "[retry].on_oom", "'more_gpus' doubles the GPUs per worker, but [resources].gpus_per_worker = 0"
            )

    # -- sections ---------------------------------------------------------------------------------

    def params(self, data: dict[str, Any]) -> dict[str, str | int | float | bool]:
        params: dict[str, str | int | float | bool] = {}
        for key, value in data.get("params", {}).items():
            keypath = f"[params].{toml_key(key)}"
            if not key.isidentifier():
                raise self.error(
                    keypath,
                    "expected a name usable as a placeholder (letters, digits and _, not starting with a digit)",
                )
            if key in PLACEHOLDERS:
                raise self.error(keypath, f"shadows the built-in placeholder {{{key}}}; choose another name")
            if not isinstance(value, str | int | float | bool):
                raise self.error(keypath, f"expected a string, number or boolean, {got(value)}")
            params[key] = value
        return params

    def command(self, job: dict[str, Any], known: list[str]) -> tuple[tuple[str, ...], list[str]]:
        """The argv template and the key path of each token."""
        keypath = "[job].command"
        expected = "a command string or a list of strings"
        if "command" not in job:
            raise self.error(keypath, f"missing; expected {expected}")
        value = job["command"]
        if isinstance(value, str):
            try:
                tokens = shlex.split(value)
            except ValueError as e:
                raise self.error(keypath, f"cannot split the command string: {e}") from None
            keypaths = [keypath] * len(tokens)
        elif isinstance(value, list):
            for i, token in enumerate(value):
                if not isinstance(token, str):
                    raise self.error(f"{keypath}[{i}]", f"expected a string, {got(token)}")
            tokens = list(value)
            keypaths = [f"{keypath}[{i}]" for i in range(len(tokens))]
        else:
            raise self.error(keypath, f"expected {expected}, {got(value)}")
        if not tokens or not tokens[0].strip():
            raise self.error(keypath, f"expected a non-empty command, {got(value)}")
        for token, kp in zip(tokens, keypaths, strict=True):
            self.check_template(kp, token, known)
        return tuple(tokens), keypaths

    def env(self, job: dict[str, Any]) -> dict[str, str]:
        table = job.get("env", {})
        if not isinstance(table, dict):
            raise self.error("[job].env", f'expected a table of NAME = "value", {got(table)}')
        env: dict[str, str] = {}
        for key, value in table.items():
            keypath = f"[job].env.{toml_key(key)}"
            if not key or "=" in key or "\0" in key:
                raise self.error(keypath, "expected an environment variable name (non-empty, no '=')")
            if not isinstance(value, str | int | float | bool):
                raise self.error(keypath, f"expected a string, number or boolean, {got(value)}")
            text = str(value)
            if "\0" in text:
                raise self.error(keypath, "expected a value without NUL characters")
            env[key] = text
        return env

    def kind(self, job: dict[str, Any], data: dict[str, Any]) -> str:
        """[job].kind, and the table that kind needs (and none another kind needs)."""
        kind = self.value(job, "job", "kind", "str", default="shards")
        if kind not in KINDS:
            close = difflib.get_close_matches(kind, KINDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(KINDS)}"
            raise self.error("[job].kind", f"unknown kind {kind!r}; {hint}")
        table, expectation = _KIND_TABLES[kind]
        if table not in data:
            needs = "" if kind == "shards" else f"a {kind} job needs it: "
            raise self.error(f"[{table}]", f"missing table; {needs}{expectation}")
        for other, (other_table, _) in _KIND_TABLES.items():
            if other != kind and other_table in data:
                raise self.error(
                    f"[{other_table}]", f"belongs to a {other} job, but [job].kind is {kind!r}; remove one"
                )
        return kind

    # -- the whole file ---------------------------------------------------------------------------

    def build(self, data: dict[str, Any], text: str, file: Path, run_dir: str | Path | None) -> JobSpec:
        self.check_top_level(data)
        job = data["job"]
        self.check_keys(job, "job")
        name = self.value(job, "job", "name", "str", missing="a job name (letters, digits, '.', '_', '-')")
        if not NAME_RE.fullmatch(name) or name in (".", ".."):
            raise self.error("[job].name", f"expected only letters, digits, '.', '_' or '-', got {name!r}")
        kind = self.kind(job, data)
        params = self.params(data)
        sized = MODEL_PLACEHOLDERS if "model" in data else ()  # a run mode's numbers, once GPUs are sized
        for name in set(sized) & set(params):
            raise self.error(f"[params].{name}", f"shadows the placeholder {{{name}}} that [model] sets")
        sweep = pipeline = None
        if kind == "sweep":
            from gputui.jobs import sweep as sweeps

            sweep = sweeps.parse_sweep(self, data["sweep"])
            names = dict.fromkeys(n for stage in sweep.stages for p in stage.params for n in p)
            known = [*GENERIC_PLACEHOLDERS, *sweeps.SWEEP_PLACEHOLDERS, *names, *sized, *params]
        elif kind == "pipeline":
            known = [*GENERIC_PLACEHOLDERS, "step", *sized, *params]
        else:
            known = [*PLACEHOLDERS, "output", *sized, *params]
        command, keypaths = self.command(job, known) if kind != "pipeline" or "command" in job else ((), [])
        if sweep is not None:
            used = set().union(
                *(self.check_template(kp, t, known) for t, kp in zip(command, keypaths, strict=True))
            )
            sweeps.check_command(self, sweep, used, "[job].command", defaults=params)
        workdir = self.path(job, "job", "workdir") or self.base.resolve()
        if not workdir.is_dir():
            what = "not a directory" if workdir.exists() else "directory not found"
            raise self.error("[job].workdir", f"{what}: {workdir}")
        if run_dir is not None:
            run = Path(run_dir).expanduser().resolve()  # from the command line: relative to the cwd
            self.value(job, "job", "run_dir", "str", default=None)  # still type-checked
        else:
            run = self.path(job, "job", "run_dir") or (self.base / "runs" / name).resolve()
        if kind == "pipeline":
            from gputui.jobs import pipeline as pipelines

            pipeline = pipelines.parse_pipeline(self, data["pipeline"], known)
        stop_grace_s = self.value(job, "job", "stop_grace_s", "num>=0", default=10.0)
        env = self.env(job)
        shards = tables.shards(self, data["shards"]) if kind == "shards" else None
        resources = tables.resources(self, data.get("resources", {}))
        retry = tables.retry(self, data.get("retry", {}))
        outputs = tables.outputs(self, data.get("outputs", {}), run, known)
        commands = [command, *(s.command for s in (pipeline.steps if pipeline is not None else ()))]
        self.check_on_oom(retry.on_oom, resources, params, commands)
        if kind != "shards" and outputs.pattern is not None:
            raise self.error("[outputs].pattern", f"names each shard's output file; a {kind} job has no shards")
        alerts = tables.alerts(self, data.get("alerts", {}))
        executor = tables.executor(self, data.get("executor", {}))
        if executor.remote and resources.mode is not None:
            raise self.error(
                "[resources].mode",
                f"sizes GPUs from this machine's; with [executor] kind = {executor.kind!r} the cluster places "
                "tasks: give [resources].gpus_per_worker instead",
            )
        model = tables.model(self, data["model"]) if "model" in data else None
        if resources.mode is not None and model is None:
            raise self.error("[model]", f"missing table; [resources].mode = {resources.mode!r} sizes GPUs for it")
        health = None
        if "health" in data:
            from gputui.jobs import health_spec as healths

            health = healths.parse_health(self, data["health"])

        # Fill every template once with example values, so a bad format spec fails now, not mid-run.
        samples: dict[str, object] = {
            **params,
            "low": 0,
            "high": 1,
            "input": "" if shards is None else str(shards.input),
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
        if sweep is not None:
            samples |= sweeps.trial_values(sweeps.first_trials(sweep, run)[0])
        for token, kp in zip(command, keypaths, strict=True):
            self.try_render(kp, token, samples)
        for i, step in enumerate(pipeline.steps if pipeline is not None else ()):
            for token in step.command:
                self.try_render(f"[[pipeline.step]] {i + 1} ({step.name}).command", token, samples)
        if outputs.pattern is not None:
            example = self.try_render("[outputs].pattern", outputs.pattern, samples)
            # The rule each task's own name is held to once planned (templates.name_problem), applied here
            # where another shard's name breaks it too: a problem of the sample ids alone ({low:c} of 0 is a
            # NUL) is left to each task's real name, checked when it is planned.
            if name_problem(_filled(outputs.pattern, samples | _ANOTHER_SHARD) or ""):
                tables.relative_name(self, "[outputs].pattern", example, outputs.pattern)

        return JobSpec(
            path=file,
            name=name,
            command=command,
            workdir=workdir,
            run_dir=run,
            shards=shards,
            resources=resources,
            retry=retry,
            outputs=outputs,
            params=params,
            env=env,
            stop_grace_s=stop_grace_s,
            alerts=alerts,
            executor=executor,
            model=model,
            text=text,
            kind=kind,
            sweep=sweep,
            pipeline=pipeline,
            health=health,
        )


_ANOTHER_SHARD = {"low": 1000, "high": 1001, "task_id": "shard-1"}  # other values than the samples' own


def _filled(template: str, values: Mapping[str, object]) -> str | None:
    try:
        return render_template(template, values)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


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
    return Loader(where, file.absolute().parent).build(data, text, file.resolve(), run_dir)
