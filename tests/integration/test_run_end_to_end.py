"""`gputui run` from the command line, with real worker processes and real files."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

from tests.conftest import gputui

ROOT = Path(__file__).resolve().parents[2]


def test_sample_job_runs_on_simulated_gpus_and_merges(tmp_path):
    """The README's sample, as it is: the real continuation worker (transformers on CPU) with the tiny model
    it builds on first use, 4 shards on simulated GPUs, merged and checked."""
    jobs = tmp_path / "sample_jobs"
    shutil.copytree(ROOT / "sample_jobs", jobs, ignore=shutil.ignore_patterns("runs", "models"))
    job = jobs / "continuation.toml"
    job.write_text(job.read_text().replace("python -m gputui", f"{sys.executable} -m gputui"))

    r = gputui("run", "--jobs", job, "--simulate", "4x24", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIMULATED (4 x 24 GB)" in r.stdout
    # The full command is printed with the GPUs it was given, before launch.
    assert "CUDA_VISIBLE_DEVICES=0,1 " in r.stdout and "--low 0 --high 75" in r.stdout
    assert "4/4 done, 0 running, 0 failed" in r.stdout
    # Worker output is streamed, prefixed by its range.
    assert "[75, 150) processed" in r.stdout

    run_dir = jobs / "runs" / "continuation"
    merged = run_dir / "outputs" / "generation_results_data_all_merged.csv"
    with open(merged, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(jobs / "data" / "prompts.csv", newline="") as f:
        inputs = list(csv.DictReader(f))
    assert len(rows) == len(inputs) and all(r["continuation"] and r["finish_reason"] for r in rows)
    assert "building the tiny sample model" in r.stdout  # once: the other shards found it built
    assert r.stdout.count("building the tiny sample model") == 1
    assert [int(r["data_id"]) for r in rows] == sorted(int(r["data_id"]) for r in inputs)
    summary = json.loads((run_dir / "merge_summary.json").read_text())
    assert summary["ok"] and summary["total_rows"] == len(inputs) and len(summary["shards"]) == 4
    assert (run_dir / "summary.json").exists() and "4/4" in (run_dir / "report.md").read_text()
    # The continuation worker reports its progress through gputui.hooks: each shard has its products.
    for shard in ("shard-0", "shard-1", "shard-2", "shard-3"):
        assert json.loads((run_dir / "tasks" / shard / "summary.json").read_text())["status"] == "done"
    # Every shard output has a done-manifest beside it, so the folder alone tells what is done.
    # Each shard's coverage was checked as it finished, so the merge copied bytes without reading ids.
    assert summary["coverage"] == "as each shard finished"
    for shard in summary["shards"]:
        manifest = json.loads(Path(shard["path"] + ".done.json").read_text())
        assert manifest["rows"] == shard["rows"] and manifest["ids"]["column"] == "data_id"


def test_quiet_hides_worker_output_but_logs_keep_it(make_job):
    job = make_job(num_workers=2)
    r = gputui("run", "--jobs", job, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "start [" not in r.stdout
    logs = sorted((make_job.run_dir / "logs").glob("*.log"))
    assert len(logs) == 2 and all("finish [" in p.read_text() for p in logs)
    # Workers that report nothing through gputui.hooks leave no per-task products (a header-only
    # metrics.csv each); their states are in exports/tasks.json, and each has its signal.
    assert not (make_job.run_dir / "tasks").exists()
    signals = sorted(p.name for p in (make_job.run_dir / "signals").glob("*.done"))
    assert signals == ["shard-0.done", "shard-1.done"]


def test_failed_worker_is_retried_and_reason_shown(make_job):
    job = make_job(num_workers=2, worker_args="--fail-attempts 1 --fail-mode exception")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout
    assert "Python exception: ValueError: bad row in shard" in r.stdout
    status = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert [t["attempts"] for t in status["tasks"]] == [2, 2]
    assert all(t["status"] == "done" for t in status["tasks"])


def test_task_failing_every_attempt_fails_for_good_with_classified_reason(make_job):
    job = make_job(num_workers=2, max_attempts=2, worker_args="--fail-attempts 1,2 --fail-mode oom")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 1
    status = gputui("status", "--run-dir", make_job.run_dir)
    assert "failed" in status.stdout and "CUDA out of memory" in status.stdout
    data = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert {t["status"] for t in data["tasks"]} == {"failed"}
    assert not (make_job.run_dir / "outputs" / "merged.csv").exists()
    # Running the same command again gives failed tasks a fresh set of attempts.
    r2 = gputui("run", "--jobs", job)
    assert "launch shard-0" in r2.stdout and "attempt 3/4" in r2.stdout


def test_an_output_missing_an_id_of_its_range_fails_its_attempt_at_once_and_the_retry_mends_it(make_job):
    job = make_job(num_workers=2, max_attempts=2, worker_args="--drop-first-attempts 1")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "its output fails the coverage check: 1 expected id(s) have no output row, e.g. 0" in r.stdout
    assert "2/2 done" in r.stdout
    summary = json.loads((make_job.run_dir / "merge_summary.json").read_text())
    assert summary["ok"] and summary["coverage"] == "as each shard finished"


def test_missing_output_counts_as_failure(make_job):
    job = make_job(num_workers=1, max_attempts=1, worker_args="--no-output")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 1
    assert "exited 0 but its output" in r.stdout


def test_a_command_that_cannot_start_is_refused_before_anything_runs(make_job, tmp_path):
    job = make_job(num_workers=1, max_attempts=1)
    job.write_text(job.read_text().replace(sys.executable, str(tmp_path / "no-such-python")))
    r = gputui("run", "--jobs", job)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "[job].command" in r.stderr and "no-such-python" in r.stderr
    assert not (make_job.run_dir / "state.db").exists(), "nothing written, nothing launched"


def test_command_not_found_at_launch_is_reported(make_job):
    """A program not there when its task starts (here one a shell looks for: the check sees `sh`) fails the task,
    with the reason."""
    job = make_job(num_workers=1, max_attempts=1)
    text = job.read_text()
    line = next(x for x in text.splitlines() if x.startswith("command = "))
    job.write_text(text.replace(line, "command = \"sh -c 'no-such-python-xyz --input {input}'\""))
    r = gputui("run", "--jobs", job)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "command not found" in r.stdout and "no-such-python-xyz" in r.stdout


def test_gpu_job_without_gpus_says_so_and_suggests_simulate(make_job):
    job = make_job(gpus_per_worker=2)
    r = gputui("run", "--jobs", job)
    assert r.returncode == 2
    assert "--simulate" in r.stderr


def test_each_worker_gets_its_own_gpus(make_job):
    job = make_job(num_workers=4, gpus_per_worker=2, max_parallel=8, sleep=0.3)
    r = gputui("run", "--jobs", job, "--simulate", "4x24")
    assert r.returncode == 0, r.stdout
    starts = [e for e in make_job.events() if e["event"] == "start"]
    finishes = {e["task"]: e["t"] for e in make_job.events() if e["event"] == "finish"}
    assert {e["gpus"] for e in starts} <= {"0,1", "2,3"}
    # No GPU is handed to two tasks that overlap in time.
    for a in starts:
        for b in starts:
            if a is not b and a["gpus"] == b["gpus"]:
                assert finishes[a["task"]] <= b["t"] or finishes[b["task"]] <= a["t"]


def test_gpus_too_small_for_min_free_memory_is_an_error_not_a_hang(make_job):
    job = make_job(num_workers=1, gpus_per_worker=1)
    job.write_text(job.read_text().replace("gpus_per_worker = 1", "gpus_per_worker = 1\nmin_free_memory_gb = 30"))
    r = gputui("run", "--jobs", job, "--simulate", "2x24", timeout=30)
    assert r.returncode == 2
    assert "min_free_memory_gb" in r.stderr and "24" in r.stderr
