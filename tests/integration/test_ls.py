"""`gputui ls`: the runs of this user on this machine, found without being told where they are: their state,
progress and path, newest first; a run whose directory is gone drops out; a home where the list cannot be
written never fails a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

from tests.conftest import gone, gputui, gputui_bg, wait_for


def ls_json(cwd) -> list[dict]:
    r = gputui("ls", "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["runs"]


def test_runs_started_in_other_folders_are_listed_newest_first(make_job, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert gputui("run", "--jobs", make_job(num_workers=2), "--quiet").returncode == 0
    failing = make_job(num_workers=3, max_attempts=1, worker_args="--fail-attempts 1")
    assert gputui("run", "--jobs", failing, "--run-dir", tmp_path / "b" / "failing", "--quiet").returncode == 1

    r = gputui("ls", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header.split() == ["STATE", "JOB", "PROGRESS", "ACTIVE", "RUN", "DIR"]
    assert lines[0].split()[0] == "failed" and lines[0].endswith(str(tmp_path / "b" / "failing")), r.stdout
    assert "0/3 done, 3 failed" in lines[0]
    assert lines[1].split()[0] == "finished" and lines[1].endswith(str(make_job.run_dir)), r.stdout
    assert "2/2 done" in lines[1]

    finished = ls_json(elsewhere)[1]
    assert finished["run_dir"] == str(make_job.run_dir) and finished["state"] == "finished"
    assert finished["job"] == "test" and finished["job_file"] == str(make_job.root / "job.toml")
    assert finished["tasks"]["total"] == finished["tasks"]["done"] == 2 and finished["tasks"]["failed"] == 0
    assert finished["scheduler_live"] is False and finished["scheduler_pid"] is None
    assert finished["scheduler_id"] == json.loads((make_job.run_dir / "run.json").read_text())["scheduler_id"]
    assert finished["created_at"] <= finished["last_activity"]


def test_a_live_run_shows_running_then_detached_when_its_scheduler_dies(make_job, tmp_path, reaper):
    job = make_job(num_workers=2, max_parallel=2, sleep=60)
    sched = gputui_bg("run", "--jobs", job, "--quiet", log=tmp_path / "sched.log")
    reaper.append(sched)

    def running():
        runs = ls_json(tmp_path)
        return runs and runs[0]["state"] == "running" and runs[0]["tasks"]["running"] == 2 and runs[0]

    live = wait_for(running, timeout=30, what="ls to show the run running")
    assert live["scheduler_live"] is True and live["scheduler_pid"] == sched.pid
    assert "0/2 done, 2 running" in gputui("ls", cwd=tmp_path).stdout

    sched.send_signal(signal.SIGKILL)  # its workers run on under their keeper: a later `gputui run` re-attaches
    sched.wait(10)
    wait_for(lambda: ls_json(tmp_path)[0]["state"] == "detached", timeout=10, what="ls to show it detached")


def test_a_run_the_app_launches_in_the_background_is_listed(make_job, tmp_path):
    from gputui import api  # the app's launch key starts its run this way

    pid = api.start_in_background(make_job(num_workers=1, sleep=60), make_job.run_dir)
    try:
        (run,) = wait_for(lambda: [r for r in ls_json(tmp_path) if r["state"] == "running"], what="the run listed")
        assert run["run_dir"] == str(make_job.run_dir) and run["scheduler_pid"] == pid
    finally:
        os.kill(pid, signal.SIGTERM)  # it stops its worker on the way out
        wait_for(lambda: gone(pid), what="the scheduler to stop")
    assert ls_json(tmp_path)[0]["state"] == "stopped"


def test_a_deleted_run_directory_drops_out_of_the_list(make_job, tmp_path):
    job = make_job(num_workers=1)
    for name in ("kept", "deleted"):
        assert gputui("run", "--jobs", job, "--run-dir", tmp_path / name, "--quiet").returncode == 0
    assert len(os.listdir(tmp_path / "registry")) == 2
    shutil.rmtree(tmp_path / "deleted")

    assert [r["run_dir"] for r in ls_json(tmp_path)] == [str(tmp_path / "kept")]
    assert str(tmp_path / "deleted") not in gputui("ls", cwd=tmp_path).stdout
    assert len(os.listdir(tmp_path / "registry")) == 1  # its entry is gone too


def test_a_run_whose_state_cannot_be_read_is_listed_as_unreadable(make_job, tmp_path):
    assert gputui("run", "--jobs", make_job(num_workers=1), "--quiet").returncode == 0
    (make_job.run_dir / "state.db").write_bytes(b"not a database at all" * 100)
    r = gputui("ls", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:3] == ["unreadable", "test", "?"], r.stdout
    (run,) = ls_json(tmp_path)
    assert run["state"] == "unreadable" and run["problem"], run


def test_no_runs_yet_says_how_to_start_one(tmp_path):
    r = gputui("ls", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "no runs yet; `gputui run --jobs FILE` starts one\n")
    assert ls_json(tmp_path) == []


def test_a_registry_that_cannot_be_written_does_not_fail_the_run(make_job, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a folder under a file cannot be made, even by root
    env = os.environ | {"GPUTUI_REGISTRY_DIR": str(blocker / "runs")}
    r = gputui("run", "--jobs", make_job(num_workers=2), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (make_job.run_dir / "outputs" / "merged.csv").exists()
    said = [line for line in r.stdout.splitlines() if "gputui ls" in line]
    assert len(said) == 1 and "not listed" in said[0], r.stdout
    assert gputui("ls", env=env).returncode == 0


def test_the_default_list_is_short_and_counts_the_rest(make_job, tmp_path):
    """25 finished runs: 20 lines and a count of the others; --all lists every one; a live run is always listed."""
    assert gputui("run", "--jobs", make_job(num_workers=1), "--run-dir", tmp_path / "runs" / "r00").returncode == 0
    entry = next((tmp_path / "registry").iterdir())
    recorded = json.loads(entry.read_text())
    for i in range(1, 25):  # copies of the run, recorded as a start records them
        copy = tmp_path / "runs" / f"r{i:02d}"
        shutil.copytree(tmp_path / "runs" / "r00", copy)
        for name in ("state.db", "attempts.journal"):  # r24 last active of the copies, r01 first
            os.utime(copy / name, (1000.0 + i, 1000.0 + i))
        (tmp_path / "registry" / f"copy{i:02d}.json").write_text(json.dumps(recorded | {"run_dir": str(copy)}))

    lines = gputui("ls", cwd=tmp_path).stdout.splitlines()
    assert len(lines) == 1 + 20 + 1
    assert lines[1].endswith("r00") and lines[2].endswith("r24") and lines[20].endswith("r06")
    assert lines[-1] == "… and 5 older runs: 5 finished (--all lists every run)"
    assert len(gputui("ls", "--all", cwd=tmp_path).stdout.splitlines()) == 1 + 25
    assert len(ls_json(tmp_path)) == 25


def test_ls_imports_neither_the_scheduler_nor_textual(make_job, tmp_path):
    """It stays quick with many runs: it reads counts through SQLite and never loads the engine or the app."""
    assert gputui("run", "--jobs", make_job(num_workers=1), "--quiet").returncode == 0
    code = (
        "import sys\n"
        "from gputui.cli import main\n"
        "assert main(['ls']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('textual', 'gputui.engine', 'gputui.tui.app', "
        "'gputui.rundir.store', 'gputui.jobs.kinds', 'rich')))\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(make_job.run_dir) in r.stdout
