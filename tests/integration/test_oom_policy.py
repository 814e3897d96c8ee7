"""[retry].on_oom: a worker that runs out of CUDA memory is retried with half the batch or twice the GPUs,
with real processes on simulated GPUs; the change outlives a scheduler restart, and a policy that cannot help
any more fails the task saying why."""

from __future__ import annotations

import json
import sqlite3
import sys

from tests.conftest import gputui

WORKER = """
import os, sys
batch, out = int(sys.argv[1]), sys.argv[2]
gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
print(f"batch {batch} on {len(gpus)} GPU(s)", flush=True)
if batch > FIT_BATCH or len(gpus) < FIT_GPUS:
    print("Traceback (most recent call last):", file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
open(out, "w").write("data_id\\n")
"""


def job(tmp_path, on_oom: str, *, fit_batch: int = 4, fit_gpus: int = 1, gpus: int = 1, attempts: int = 4):
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(4)))
    code = WORKER.replace("FIT_BATCH", str(fit_batch)).replace("FIT_GPUS", str(fit_gpus))
    (tmp_path / "worker.py").write_text(code)
    path = tmp_path / "job.toml"
    path.write_text(
        f"""
[job]
name = "oom"
command = "{sys.executable} worker.py {{batch_size}} {{output}}"
[shards]
input = "ids.csv"
num_workers = 1
[resources]
gpus_per_worker = {gpus}
[retry]
max_attempts = {attempts}
backoff_s = 0
on_oom = "{on_oom}"
[params]
batch_size = 16
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
"""
    )
    return path


def attempts(tmp_path) -> list[tuple[list[str], str, str | None]]:
    db = sqlite3.connect(tmp_path / "runs" / "oom" / "state.db")
    rows = db.execute("SELECT command, gpus, reason FROM attempts ORDER BY number").fetchall()
    return [(json.loads(c), g, r) for c, g, r in rows]


def test_out_of_memory_is_retried_with_half_the_batch_until_it_fits(tmp_path):
    r = gputui("run", "--jobs", job(tmp_path, "smaller_batch"), "--simulate", "2x24")
    assert r.returncode == 0, r.stdout + r.stderr
    tried = attempts(tmp_path)
    assert [a[0][2] for a in tried] == ["16", "8", "4"], "16 and 8 ran out of memory; 4 fits"
    assert all(a[2].startswith("CUDA out of memory") for a in tried[:2]) and tried[2][2] is None
    assert "retrying in 0s with batch size 8 (attempt 2/4)" in r.stdout
    assert "retrying in 0s with batch size 4 (attempt 3/4)" in r.stdout
    assert "1/1 done" in r.stdout


def test_out_of_memory_is_retried_on_twice_the_gpus(tmp_path):
    r = gputui("run", "--jobs", job(tmp_path, "more_gpus", fit_batch=99, fit_gpus=4), "--simulate", "4x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [len(a[1].split(",")) for a in attempts(tmp_path)] == [1, 2, 4]
    assert "with 2 GPUs per worker" in r.stdout and "with 4 GPUs per worker" in r.stdout


def test_a_policy_that_cannot_help_fails_the_task_saying_why(tmp_path):
    r = gputui("run", "--jobs", job(tmp_path, "more_gpus", fit_batch=99, fit_gpus=8), "--simulate", "4x24")
    assert r.returncode != 0
    assert len(attempts(tmp_path)) == 3, "1, 2 and 4 GPUs tried; 8 do not exist here"
    assert "not retried: out of memory with 4 GPU(s) per worker, and this machine has 4" in r.stdout
    status = gputui("status", "--run-dir", tmp_path / "runs" / "oom", "--json")
    task = json.loads(status.stdout)["tasks"][0]
    assert task["status"] == "failed" and task["reason"].endswith("and this machine has 4)")


def test_the_smaller_batch_outlives_a_scheduler_restart(tmp_path):
    path = job(tmp_path, "smaller_batch", fit_batch=2, attempts=2)
    r = gputui("run", "--jobs", path, "--simulate", "2x24")
    assert r.returncode != 0 and [a[0][2] for a in attempts(tmp_path)] == ["16", "8"]
    r = gputui("retry", "--run-dir", tmp_path / "runs" / "oom", "--all")
    r = gputui("run", "--jobs", path, "--simulate", "2x24")
    assert [a[0][2] for a in attempts(tmp_path)][2] == "4", "resumed at the batch it had reached, not 16"


def test_a_bad_policy_is_named_in_the_job_file(tmp_path):
    path = job(tmp_path, "smaller_batch")
    path.write_text(path.read_text().replace("{batch_size} {output}", "{output}"))
    r = gputui("run", "--jobs", path, "--simulate", "2x24")
    assert r.returncode == 2
    assert "[retry].on_oom: 'smaller_batch' halves {batch_size}, but no command uses {batch_size}" in r.stderr
    path.write_text(path.read_text().replace('"smaller_batch"', '"bigger"'))
    r = gputui("run", "--jobs", path)
    assert "[retry].on_oom: expected one of more_gpus, smaller_batch, got 'bigger'" in r.stderr
