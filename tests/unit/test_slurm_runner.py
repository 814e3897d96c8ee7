"""The Slurm batch step, run here as sbatch would run it (a real process, Slurm's variables set): an attempt
runs once, however often Slurm starts its job (a controller that restarted from older state, a requeue)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gputui.engine.rules.failures import classify
from gputui.executors import slurm
from gputui.jobs.tasks import Status, TaskRecord
from gputui.tui.widgets.job_rows import row_cells
from gputui.views.runview import TaskView

RUNNER = os.path.join(os.path.dirname(slurm.__file__), "slurm_runner.py")


def batch(tmp_path, task: str = "shard-0", number: int = 1) -> tuple:
    """A submission of one element whose command counts its runs in `ran`."""
    (tmp_path / "slurm").mkdir(exist_ok=True)
    files = {w: str(slurm.attempt_file(tmp_path, task, number, w)) for w in slurm.FILES}
    log = tmp_path / f"{task}.attempt{number}.log"
    element = {"task": task, "argv": ["sh", "-c", "echo run >> ran; echo working"], "env": {}, "log": str(log),
               "cwd": str(tmp_path), "grace": 2.0, **files}  # fmt: skip
    path = slurm.write_batch(tmp_path, [element])
    return path, files, log


def start(path, job: str = "41") -> subprocess.CompletedProcess:
    """The job's batch step, as slurmd starts it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"SLURM_JOB_ID": job}
    return subprocess.run([sys.executable, "-S", "-P", RUNNER, str(path)], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_a_job_started_again_after_its_end_runs_nothing_and_leaves_the_end_recorded(tmp_path):
    path, files, log = batch(tmp_path)
    assert start(path).returncode == 0
    assert (tmp_path / "ran").read_text() == "run\n"
    ended = Path(files["exit"]).read_text()
    stamp = os.stat(files["exit"]).st_mtime_ns
    assert json.loads(ended) == {"exit": 0, "job": "41"}

    again = start(path)  # the same job: Slurm's controller forgot it had run it

    assert again.returncode == 0
    assert (tmp_path / "ran").read_text() == "run\n", "the command ran once"
    assert Path(files["exit"]).read_text() == ended and os.stat(files["exit"]).st_mtime_ns == stamp
    said = log.read_text().splitlines()[-1]
    assert said.startswith("gputui: attempt 1 of shard-0 already ran as Slurm job 41 (started "), said
    assert ", ended " in said and said.endswith("not running it twice"), said
    assert said in again.stdout, "Slurm's output file for the job says it too"


def test_a_job_started_again_while_its_first_start_is_recorded_does_not_run(tmp_path):
    path, files, log = batch(tmp_path)
    with open(files["started"], "w") as f:  # its first execution runs, or its node was lost: no end yet
        json.dump({"job": "41", "node": "n1", "pid": 1, "gpus": "0"}, f)
    assert start(path).returncode == 0
    assert not (tmp_path / "ran").exists() and not os.path.exists(files["exit"])
    assert "already ran as Slurm job 41 (started " in log.read_text()
    assert json.loads(Path(files["started"]).read_text())["node"] == "n1", "the first start is left as it was"


def test_a_stale_jobs_start_does_not_stop_the_attempts_own_job(tmp_path):
    path, files, _ = batch(tmp_path)
    with open(files["started"], "w") as f:  # a job of a run directory deleted and made again
        json.dump({"job": "7", "node": "n1", "pid": 1, "gpus": "0"}, f)
    assert start(path, job="41").returncode == 0
    assert (tmp_path / "ran").read_text() == "run\n"
    assert json.loads(Path(files["started"]).read_text())["job"] == "41"
    assert json.loads(Path(files["exit"]).read_text()) == {"exit": 0, "job": "41"}


def test_jobs_are_submitted_never_to_be_requeued():
    args = slurm.sbatch_args(name="x", scheduler_id="u", run_dir="/r", gpus=1, partition=None, extra=(),
                             elements=2, array=True, throttle=None)  # fmt: skip
    assert "--no-requeue" in args


def test_an_attempt_sbatch_refused_fails_as_not_submitted_not_as_command_not_found():
    said = "gputui: cannot submit to Slurm: sbatch refused the job: Unable to contact slurm controller\n"
    failure = classify(127, said)
    assert failure.kind == "not_submitted"
    assert failure.reason == "cannot submit to Slurm: sbatch refused the job: Unable to contact slurm controller"


def heard(tmp_path, job: str, said: dict, task: str = "shard-0") -> None:
    """What a stand-in heard from squeue of the attempt's job (its `squeue` file)."""
    (tmp_path / "slurm").mkdir(exist_ok=True)
    slurm.attempt_file(tmp_path, task, 1, "job").write_text(job)
    slurm.attempt_file(tmp_path, task, 1, "squeue").write_text(json.dumps(said | {"job": "5_1"}))


def test_a_queued_job_is_shown_with_slurms_word_on_it_and_only_its_own(tmp_path):
    heard(tmp_path, "5_1", {"state": "PENDING", "reason": "Resources", "nodes": ""})
    assert slurm.shown(tmp_path, "shard-0", 1) == "queued"  # the ordinary wait: nothing to add
    heard(tmp_path, "5_1", {"state": "PENDING", "reason": "launch_failed_requeued_held",
                            "nodes": "node n1 drained: Duplicate jobid"})  # fmt: skip
    said = "queued: held (launch_failed_requeued_held); node n1 drained: Duplicate jobid"
    assert slurm.shown(tmp_path, "shard-0", 1) == said
    heard(tmp_path, "5_1", {"state": "PENDING", "reason": "ReqNodeNotAvail", "nodes": "node n1 down: dead"})
    assert slurm.shown(tmp_path, "shard-0", 1) == "queued: node n1 down: dead"
    heard(tmp_path, "5_1", {"trouble": "squeue: Unable to contact slurm controller"})
    assert slurm.shown(tmp_path, "shard-0", 1) == "queued: the Slurm controller does not answer"
    heard(tmp_path, "7_0", {"state": "PENDING", "reason": "JobHeldAdmin", "nodes": ""})  # an older job's word
    assert slurm.shown(tmp_path, "shard-0", 1) == "queued"
    line = slurm.waiting_line(tmp_path, [("shard-0", 1), ("shard-1", 1)])
    assert line.startswith("waiting for 2 Slurm job(s) to end; Ctrl-C again to leave them")


def test_a_queued_rows_progress_says_slurms_word_short_and_its_reason_the_rest_once():
    def cells(said: str) -> dict[str, str]:
        task = TaskRecord("shard-0", 0, 0, 4, 4, Status.RUNNING, 1, 3, (), None, None, 1.0, None, None)
        return row_cells(TaskView(task, None, placed="", queued=said), 3.0)

    for said, short in [
        ("held (JobHeldAdmin); node n1 drained: Duplicate jobid", "held"),
        ("node gpu-017 drained: maintenance", "node drained"),
        (slurm.MUTE, "no controller"),
    ]:
        row = cells(said)
        assert (row["progress"], row["reason"]) == (f"queued: {short}", said)
    waits = cells("Dependency")  # nothing more to say: said once
    assert waits["progress"] == "queued: Dependency" and waits["reason"] == ""
    assert cells("")["progress"] == "queued" and cells("")["reason"] == ""
