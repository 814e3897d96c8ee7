"""A local run's workers are given OMP_NUM_THREADS / MKL_NUM_THREADS as the cores per running task, unless the
job (or the environment gputui runs in) sets them."""

from __future__ import annotations

import json
import os
import sys

from tests.conftest import gputui

SHOW = "import os; print('threads', os.environ.get('OMP_NUM_THREADS'), os.environ.get('MKL_NUM_THREADS'))"


def run_printing_threads(tmp_path, env_line: str = "", max_parallel: int = 2) -> list[str]:
    (tmp_path / "data.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(4)))
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "threads"
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(SHOW)}]
{env_line}
[shards]
input = "data.csv"
num_workers = 2
[resources]
gpus_per_worker = 0
max_parallel = {max_parallel}
""")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = gputui("run", "--jobs", job, "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    logs = sorted((tmp_path / "runs" / "threads" / "logs").glob("*.log"))
    assert len(logs) == 2
    return [next(line for line in p.read_text().splitlines() if line.startswith("threads ")) for p in logs]


def test_a_local_worker_gets_the_cores_per_running_task(tmp_path):
    each = max(1, len(os.sched_getaffinity(0)) // 2)
    assert run_printing_threads(tmp_path) == [f"threads {each} {each}"] * 2


def test_a_job_setting_omp_num_threads_keeps_its_own(tmp_path):
    lines = run_printing_threads(tmp_path, 'env = { OMP_NUM_THREADS = "3" }', max_parallel=1)
    each = len(os.sched_getaffinity(0))
    assert lines == [f"threads 3 {each}"] * 2
