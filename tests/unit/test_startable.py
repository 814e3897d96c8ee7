"""G10: a job's commands checked before anything runs, as the local launcher would start them: the program on
PATH or from the workdir and executable, python's script or module there; `gputui plan` says which key is
wrong and exits 2, writing nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gputui.jobs.loader import load_jobspec
from gputui.jobs.spec import JobSpecError
from gputui.jobs.startable import check_startable, program_problem, python_target
from tests.conftest import gputui

SAMPLES = Path(__file__).resolve().parents[2] / "sample_jobs"
ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}  # the run's


def _script(folder: Path, name: str, executable: bool = True) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def _sweep(folder: Path, command: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    job = folder / "job.toml"
    job.write_text(
        f'[job]\nname = "t"\nkind = "sweep"\ncommand = \'{command}\'\n{extra}'
        '[sweep]\nmetric = "acc"\n[[sweep.stage]]\nname = "s"\nparams = [{ lr = 0.1 }]\n'
    )
    return job


# -- the rule, pure ---------------------------------------------------------------------------------


def test_a_program_is_found_as_the_launcher_finds_it(tmp_path):
    _script(tmp_path, "train.py")
    _script(tmp_path, "bin/tool")
    assert program_problem(["sh", "-c", "true"], tmp_path, ENV) is None  # on PATH
    assert program_problem(["train.py"], tmp_path, ENV) is None  # a bare name not on PATH: the workdir's
    assert program_problem(["./train.py"], tmp_path, ENV) is None
    assert program_problem(["bin/tool", "--x"], tmp_path, ENV) is None  # a path: from the workdir
    assert program_problem([str(tmp_path / "bin" / "tool")], Path("/"), ENV) is None


def test_a_missing_program_is_named_with_where_it_was_looked_for_and_a_close_name(tmp_path):
    _script(tmp_path, "train.py")
    assert program_problem(["trainz.py"], tmp_path, ENV) == (
        f"'trainz.py' is not a program found on PATH or in {tmp_path} (did you mean train.py?)"
    )
    assert program_problem(["bin/tol"], tmp_path, ENV) == f"'bin/tol' is not a program found at {tmp_path}/bin/tol"
    assert "found on PATH" in program_problem(["no-such-program-xyz"], tmp_path, ENV)


def test_a_file_that_cannot_be_run_says_why(tmp_path):
    _script(tmp_path, "train.py", executable=False)
    (tmp_path / "models").mkdir()
    assert program_problem(["./train.py"], tmp_path, ENV) == (
        f"'./train.py' ({tmp_path}/train.py) is not executable; chmod +x it, or start it with its interpreter "
        "(e.g. 'python ./train.py')"
    )
    assert (
        program_problem(["models"], tmp_path, ENV) == f"'models' is a directory ({tmp_path}/models), not a program"
    )


def test_pythons_script_and_module_are_looked_for(tmp_path):
    python = sys.executable
    (tmp_path / "train.py").write_text("")
    (tmp_path / "pkg").mkdir()
    assert program_problem([python, "-u", "train.py", "--lr", "1"], tmp_path, ENV) is None
    assert program_problem([python, "trainz.py"], tmp_path, ENV) == (
        f"the script 'trainz.py' that {python} runs is not found at {tmp_path}/trainz.py (did you mean train.py?)"
    )
    assert program_problem([python, "-m", "pkg.mod"], tmp_path, ENV) is None  # the workdir's package
    assert program_problem([python, "-m", "json.tool"], tmp_path, ENV) is None  # this python's own
    assert program_problem([python, "-m", "trainz"], tmp_path, ENV) == (
        f"no module 'trainz' for '{python} -m trainz' in {tmp_path} or {python}'s packages (did you mean train?)"
    )
    assert program_problem([python, "-c", "import nothing_here"], tmp_path, ENV) is None


def test_what_python_runs_is_read_past_its_options():
    assert python_target(["-u", "-W", "ignore", "t.py", "-m", "x"]) == ("script", "t.py")
    assert python_target(["-Bm", "pkg.mod"]) == ("module", "pkg.mod")
    assert python_target(["-mpkg"]) == ("module", "pkg")
    assert python_target(["-Xdev", "--", "-t.py"]) == ("script", "-t.py")
    assert python_target(["-c", "print(1)"]) is None
    assert python_target(["-"]) is None
    assert python_target(["-u"]) is None


# -- the job file ------------------------------------------------------------------------------------


def test_a_jobs_command_is_checked_with_its_placeholders_filled(tmp_path):
    _script(tmp_path / "jf", "train.py")
    job = _sweep(tmp_path / "jf", "{prog} --lr {lr}", extra='[params]\nprog = "./trainz.py"\n')
    with pytest.raises(JobSpecError) as e:
        check_startable(load_jobspec(job), "job.toml")
    assert str(e.value) == (
        f"job.toml: [job].command: './trainz.py' is not a program found at {tmp_path}/jf/trainz.py "
        "(did you mean train.py?)"
    )
    ok = _sweep(tmp_path / "jf", "{prog} --lr {lr}", extra='[params]\nprog = "./train.py"\n')
    check_startable(load_jobspec(ok))


def test_a_job_on_a_cluster_is_not_checked_here(tmp_path):
    job = _sweep(tmp_path, "trainz.py --lr {lr}", extra='[executor]\nkind = "slurm"\n')
    check_startable(load_jobspec(job))  # its node's PATH and files, not this machine's


def test_only_pipeline_steps_that_wait_for_none_are_checked(tmp_path):
    """A later step may run what an earlier one builds."""
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "p"\nkind = "pipeline"\n'
        '[[pipeline.step]]\nname = "build"\ncommand = "sh -c true"\n'
        '[[pipeline.step]]\nname = "use"\ncommand = "./built-by-build"\nafter = ["build"]\n'
    )
    check_startable(load_jobspec(job))
    job.write_text(job.read_text().replace('"sh -c true"', '"./buidl.sh"'))
    with pytest.raises(JobSpecError, match=r"\[\[pipeline.step\]\] 1 \(build\).command: './buidl.sh' is not a"):
        check_startable(load_jobspec(job))


@pytest.mark.parametrize("name", ["continuation.toml", "sweep.toml", "pipeline.toml", "health.toml"])
def test_the_samples_can_start(name):
    check_startable(load_jobspec(SAMPLES / name))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_input_is_refused_at_load(tmp_path):
    (tmp_path / "ids.csv").write_text("data_id\n1\n")
    (tmp_path / "ids.csv").chmod(0)
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "s"\ncommand = "sh -c true"\n[shards]\ninput = "ids.csv"\nnum_workers = 1\n')
    with pytest.raises(JobSpecError, match=r"\[shards\].input: cannot read .*ids.csv: permission denied"):
        load_jobspec(job)


# -- gputui plan ------------------------------------------------------------------------------------


def test_plan_refuses_a_command_that_cannot_start_and_writes_nothing(tmp_path):
    jf = tmp_path / "jf"
    _script(jf, "train.py")
    job = _sweep(jf, "trainz.py --lr {lr}")
    r = gputui("plan", "--jobs", job)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == (
        f"gputui: error: {job}: [job].command: 'trainz.py' is not a program found on PATH or in {jf} "
        "(did you mean train.py?)\n"
    )
    assert r.stdout == "" and not (jf / "runs").exists()
    job.write_text(job.read_text().replace("trainz.py", "train.py"))
    r = gputui("plan", "--jobs", job)
    assert r.returncode == 0 and r.stdout.startswith("t (sweep): sweep of 1 stage(s)"), r.stderr
