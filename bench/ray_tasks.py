"""Scheduling overhead per task on Ray: tiny tasks through gputui against plain `ray.remote` calls.

    python bench/ray_tasks.py [--tasks 500] [--gpus 4]

Starts its own Ray head on 127.0.0.1 with `--gpus` declared GPUs (stopped afterwards). Both sides run the
same command (`true`) once per task as a Ray task asking for one GPU, so at most `--gpus` run at once:
- plain: one driver, `ray.get([run.remote(["true"]) for each task])` (ray.init counted), with Ray's default
  for GPU tasks (a fresh worker process per task) and with workers reused (`max_calls=0`, as gputui does:
  the GPU is held by the command's own process, so the Ray worker may be reused safely);
- gputui: `gputui run` of a shard job with one id per shard and `[executor] kind = "ray"` (every attempt
  journaled, its log kept, its state committed; the run's bridge joining the cluster counted).
Reports wall time, time per task and the ratio. Figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ray_cluster import RAY_ENV, ray_head  # noqa: E402 - after the path it is found on

PLAIN = """
import subprocess, sys, time, ray
t = time.perf_counter()
ray.init(address=sys.argv[1], log_to_driver=False)

def command(argv):
    return subprocess.run(argv).returncode

# Ray's default for GPU tasks is a new worker process per task (max_calls=1); "reuse" keeps workers.
reuse = {"max_calls": 0} if sys.argv[3] == "reuse" else {}
run = ray.remote(num_gpus=1, num_cpus=0, max_retries=0, **reuse)(command)
codes = ray.get([run.remote(["true"]) for _ in range(int(sys.argv[2]))])
assert codes == [0] * len(codes)
print(time.perf_counter() - t)
"""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--ray-default", action="store_true", help="also time Ray's default for GPU tasks (slow)")
    a = p.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("needs Ray: pip install -e '.[ray]'")
        return 1
    os.environ.update(RAY_ENV)
    with ray_head(gpus=a.gpus, cpus=a.gpus) as address, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "plain.py").write_text(PLAIN)
        plain_run = [sys.executable, folder / "plain.py", address]
        subprocess.run([*plain_run, "8", "reuse"], check=True, capture_output=True)  # the workers warm
        plain = {}
        for how in ("default", "reuse") if a.ray_default else ("reuse",):
            out = subprocess.run([*plain_run, str(a.tasks), how], check=True, capture_output=True, text=True)
            plain[how] = float(out.stdout.split()[-1])
        (folder / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(a.tasks)))
        job = folder / "job.toml"
        job.write_text(
            textwrap.dedent(f"""
                [job]
                name = "bench"
                command = "true"
                [shards]
                input = "ids.csv"
                shard_size = 1
                [resources]
                gpus_per_worker = 1
                [executor]
                kind = "ray"
                address = "{address}"
                """)
        )
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gputui", "run", "--jobs", job, "--quiet"], check=True)
        ours = time.perf_counter() - t
    n = a.tasks
    print(f"{n} tiny tasks (`true`, 1 GPU each, {a.gpus} GPUs declared) on a local Ray head:")
    for how, what in (("default", "Ray's default for GPU tasks"), ("reuse", "workers reused, max_calls=0")):
        if how not in plain:
            continue
        took = plain[how]
        print(f"  plain ray.remote ({what}): {took:.2f} s ({1e3 * took / n:.1f} ms/task, ray.init included)")
    print(f"  gputui run: {ours:.2f} s ({1e3 * ours / n:.1f} ms/task, its bridge joining included)")
    print(f"  ratio gputui / plain (workers reused): {ours / plain['reuse']:.2f}x")
    if "default" in plain:
        print(f"  ratio gputui / plain (Ray's default): {ours / plain['default']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
