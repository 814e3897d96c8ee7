"""Whether a job's commands can start here, checked before anything runs (`gputui plan`): the program of each
command (its first word, placeholders filled with the load's example values) is found as the local launcher
finds it (executors/local.py: a bare name on PATH, else a path from the job's workdir, where workers run) and
is executable; for `python script.py` the script is there, and for `python -m mod` the module's top-level name
is in the workdir or, where that python is this one's, importable (looked up, never imported).

Not checked: a job on a cluster (Slurm, Ray) runs its commands elsewhere, with that machine's PATH and files;
a pipeline step that waits for others may run what they make. Cheap: shutil.which and stat, nothing imported
or run. Errors name the file, the key and what was expected, as the loader's do."""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gputui.jobs.checks import Checks
from gputui.jobs.kinds.registry import KINDS
from gputui.jobs.loader import sample_values
from gputui.jobs.spec import JobSpec
from gputui.jobs.templates import render_template

PYTHON_RE = re.compile(r"python(\d+(\.\d+)*)?")  # python, python3, python3.12
_PY_FLAGS_WITH_VALUE = "WX"  # -W arg, -X opt: the next word (or the rest of this one) is theirs


def check_startable(job: JobSpec, where: str | None = None) -> None:
    """Raise JobSpecError on the first command that cannot start: `where` is the job file as the user gave it
    (first in the message; default its path)."""
    if job.executor.remote:
        return  # runs on a cluster node: its PATH and files are not this machine's
    checks = Checks(where or str(job.path), job.workdir)
    env = {**os.environ, **job.env}
    kind = KINDS[job.kind]
    values = sample_values(job.params, job.outputs, job.run_dir) | kind.samples(job.kind_spec, job.run_dir)
    for keypath, template in kind.first_commands(job):
        argv = _filled(template, values)
        if argv is None:
            continue  # a token only a task's own values fill: the launch says what went wrong
        problem = program_problem(argv, job.workdir, env)
        if problem:
            raise checks.error(keypath, problem)


def _filled(template: Sequence[str], values: Mapping[str, object]) -> list[str] | None:
    try:
        return [render_template(token, values) for token in template]
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


def program_problem(argv: Sequence[str], workdir: Path, env: Mapping[str, str]) -> str | None:
    """What keeps `argv` from starting in `workdir` with `env`'s PATH (None: nothing seen)."""
    program = argv[0]
    path_env = env.get("PATH", os.defpath)
    found = shutil.which(program, path=path_env) if os.sep not in program else None
    if found is None:
        at = Path(program) if os.path.isabs(program) else workdir / program  # posix_spawn from the workdir
        problem = _file_problem(program, at, os.sep not in program, workdir)
        if problem:
            return problem
        found = str(at)
    if PYTHON_RE.fullmatch(Path(program).name):
        return _python_problem(argv, found, workdir, env)
    return None


def _file_problem(program: str, at: Path, bare: bool, workdir: Path) -> str | None:
    if at.is_dir():
        return f"{program!r} is a directory ({at}), not a program"
    if not at.is_file():
        where = f"on PATH or in {workdir}" if bare else f"at {at}"
        return f"{program!r} is not a program found {where}{_did_you_mean(at)}"
    if not os.access(at, os.X_OK):
        return (
            f"{program!r} ({at}) is not executable; chmod +x it, or start it with its interpreter "
            f"(e.g. 'python {program}')"
        )
    return None


def _python_problem(argv: Sequence[str], python: str, workdir: Path, env: Mapping[str, str]) -> str | None:
    """`python script.py`: the script is there; `python -m mod`: the module's top-level package is found."""
    target = python_target(argv[1:])
    if target is None:
        return None
    what, name = target
    if what == "script":
        at = Path(name) if os.path.isabs(name) else workdir / name
        if at.exists():
            return None
        return f"the script {name!r} that {argv[0]} runs is not found at {at}{_did_you_mean(at)}"
    top = name.split(".")[0]
    if not top or (workdir / top).is_dir() or (workdir / f"{top}.py").is_file():
        return None
    # Another interpreter (or another PYTHONPATH) has other packages: only this one's are looked up.
    ours = Path(python).parent == Path(sys.executable).parent and env.get("PYTHONPATH") == os.environ.get(
        "PYTHONPATH"
    )
    if not ours or _importable(top):
        return None
    names = [p.stem for p in _listing(workdir) if p.suffix == ".py" or p.is_dir()]
    close = difflib.get_close_matches(top, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"no module {top!r} for '{argv[0]} -m {name}' in {workdir} or {python}'s packages{hint}"


def _importable(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is not None  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return False


def python_target(args: Sequence[str]) -> tuple[str, str] | None:
    """What `python ARGS` runs: ("script", path), ("module", name), or None (-c code, stdin, unknown)."""
    words = list(args)
    while words:
        word = words.pop(0)
        if word == "--":
            return ("script", words[0]) if words else None
        if not word.startswith("-") or word == "-":
            return None if word == "-" else ("script", word)
        if word.startswith("--"):
            continue  # a long option (--check-hash-based-pycs takes a value: too rare to follow)
        letters = word[1:]
        for i, letter in enumerate(letters):
            rest = letters[i + 1 :]
            if letter == "c":
                return None
            if letter == "m":
                name = rest or (words.pop(0) if words else "")
                return ("module", name) if name else None
            if letter in _PY_FLAGS_WITH_VALUE:
                if not rest and words:
                    words.pop(0)
                break
    return None


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(itertools.islice(folder.iterdir(), 1000))  # a did-you-mean, not a scan of a huge folder
    except OSError:
        return []


def _did_you_mean(at: Path) -> str:
    names = [p.name for p in _listing(at.parent)]
    close = difflib.get_close_matches(at.name, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
