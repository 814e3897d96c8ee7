"""Scheduling overhead per task on Ray: tiny tasks through gputui against plain `ray.remote` calls.

    python bench/ray_tasks.py [--tasks 500] [--gpus 4]

Starts its own Ray head on 127.0.0.1 with `--gpus` declared GPUs (stopped afterwards). Both sides run the
same command (`true`) once per task as a Ray task asking for one GPU, so at most `--gpus` run at once:
- plain: one driver, `ray.get([run.remote(["true"]) for each task])` (ray.init counted), with Ray's default
  for GPU tasks (a fresh worker process per task) and with workers reused (`max_calls=0`, as gputui does:
  the GPU is held by the command's own process, so the Ray worker may be reused safely);
- gputui: `gputui run` of a shard job with one id per shard and `[executor] kind = "ray"` (every attempt
  journaled, its log kept, its state committed; the run's bridge joining the cluster counted).
Reports wall time, time per task and the ratio, and the machine's busy CPU per task (all processes:
Ray's own, the driver's, gputui's), which says whether the machine's cores were the limit. Figures
only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

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


def timed(argv: list) -> tuple[float, float, str]:
    """(wall seconds, busy CPU seconds of the whole machine, stdout) of running `argv`."""
    busy = lambda t: t.user + t.system + t.nice + t.irq + t.softirq  # noqa: E731
    before, t = busy(psutil.cpu_times()), time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, busy(psutil.cpu_times()) - before, out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="rounds, each side once per round; medians reported")
    p.add_argument("--ray-default", action="store_true", help="also time Ray's default for GPU tasks (slow)")
    a = p.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("needs Ray: pip install -e '.[ray]'")
        return 1
    os.environ.update(RAY_ENV)
    sides = ["default", "reuse"] if a.ray_default else ["reuse"]
    took: dict[str, list[float]] = {side: [] for side in [*sides, "gputui"]}
    cpu: dict[str, list[float]] = {side: [] for side in took}
    with ray_head(gpus=a.gpus, cpus=a.gpus) as address, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "plain.py").write_text(PLAIN)
        plain_run = [sys.executable, folder / "plain.py", address]
        subprocess.run([*plain_run, "8", "reuse"], check=True, capture_output=True)  # the workers warm
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
        for round_ in range(a.repeat):  # alternated, so a slow spell of the machine falls on both sides
            for how in sides:
                _, busy, out = timed([*plain_run, str(a.tasks), how])
                took[how].append(float(out.split()[-1]))
                cpu[how].append(busy)
            run = ["--jobs", job, "--run-dir", folder / f"run-{round_}", "--quiet"]
            wall, busy, _ = timed([sys.executable, "-m", "gputui", "run", *run])
            took["gputui"].append(wall)
            cpu["gputui"].append(busy)
    n = a.tasks
    print(f"{n} tiny tasks (`true`, 1 GPU each, {a.gpus} GPUs declared) on a local Ray head, {a.repeat} round(s):")
    what = {
        "default": "plain ray.remote (Ray's default for GPU tasks), ray.init included",
        "reuse": "plain ray.remote (workers reused, max_calls=0), ray.init included",
        "gputui": "gputui run, its bridge joining included",
    }
    for side, times in took.items():
        runs = ", ".join(f"{t:.2f}" for t in times)
        mid, busy = statistics.median(times), statistics.median(cpu[side])
        print(f"  {what[side]}: {mid:.2f} s ({1e3 * mid / n:.1f} ms/task; runs {runs} s)")
        print(f"      busy CPU of the machine: {1e3 * busy / n:.1f} ms/task")
    for side in sides:
        ratio = statistics.median(took["gputui"]) / statistics.median(took[side])
        print(f"  ratio gputui / plain ({what[side].split('(')[1].split(')')[0]}): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
