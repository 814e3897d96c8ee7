"""Scheduling overhead per task on Ray: tiny tasks through gputui against plain `ray.remote` calls.

    python bench/ray_tasks.py [--tasks 500] [--gpus 4] [--repeat 5] [--dir bench/runs]

Starts its own Ray head on 127.0.0.1 with `--gpus` declared GPUs (stopped afterwards). Both sides run the
same command (`true`) once per task as a Ray task asking for one GPU, so at most `--gpus` run at once:
- plain: one driver, `ray.get([run.remote(["true"]) for each task])`, with Ray's default for GPU tasks
  (a fresh worker process per task) and with workers reused (`max_calls=0`, as gputui does: the GPU is
  held by the command's own process, so the Ray worker may be reused safely);
- gputui: `gputui run` of a shard job with one id per shard and `[executor] kind = "ray"` (every attempt
  journaled, its log kept, its state committed, its signal and summary files written).
Each side is timed as a user waits for it, from the command's start to its end (Python, imports, joining
the cluster included), with `--tasks` and with twice as many: the difference, per task, is the overhead
per further task without the fixed start-up costs. Also the machine's busy CPU per task (all processes:
Ray's own, the driver's, gputui's), which says whether the cores were the limit. Rounds alternate the
sides; medians are reported (on a 2-core VM one run differs from the next by up to 20%, on both sides, hence
five rounds). The run directories go under `--dir` (by default bench/runs, in the project, as a run directory
beside its job file does): gputui leaves a few files per task there, and what a new file costs depends on the
filesystem (on this project's VM, 0.02 ms in /root and 0.4-0.9 ms in /tmp, measured side by side).
Figures only; nothing here asserts.
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
import subprocess, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)

def command(argv):
    return subprocess.run(argv).returncode

# Ray's default for GPU tasks is a new worker process per task (max_calls=1); "reuse" keeps workers.
reuse = {"max_calls": 0} if sys.argv[3] == "reuse" else {}
run = ray.remote(num_gpus=1, num_cpus=0, max_retries=0, **reuse)(command)
codes = ray.get([run.remote(["true"]) for _ in range(int(sys.argv[2]))])
assert codes == [0] * len(codes)
"""


def busy_cpu() -> float:
    """Seconds the machine's cores have been busy since boot (every process, the kernel's work included)."""
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + t.irq + t.softirq


def timed(argv: list) -> tuple[float, float]:
    """(wall seconds, busy CPU seconds of the whole machine) of running `argv`."""
    before, t = busy_cpu(), time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t, busy_cpu() - before


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--gpus", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5, help="rounds, each side once per round and size")
    p.add_argument("--ray-default", action="store_true", help="also time Ray's default for GPU tasks (slow)")
    p.add_argument("--dir", type=Path, default=ROOT / "bench" / "runs", help="where the run directories go")
    a = p.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("needs Ray: pip install -e '.[ray]'")
        return 1
    os.environ.update(RAY_ENV)
    n, sizes = a.tasks, (a.tasks, 2 * a.tasks)
    sides = ["default", "reuse"] if a.ray_default else ["reuse"]
    took: dict[tuple[str, int], list[float]] = {(side, k): [] for side in [*sides, "gputui"] for k in sizes}
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in took}
    a.dir.mkdir(parents=True, exist_ok=True)
    with ray_head(gpus=a.gpus, cpus=a.gpus) as address, tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        folder = Path(tmp)
        (folder / "plain.py").write_text(PLAIN)
        plain_run = [sys.executable, folder / "plain.py", address]
        subprocess.run([*plain_run, "8", "reuse"], check=True, capture_output=True)  # the workers warm
        for k in sizes:
            (folder / f"ids-{k}.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(k)))
            (folder / f"job-{k}.toml").write_text(
                textwrap.dedent(f"""
                    [job]
                    name = "bench"
                    command = "true"
                    [shards]
                    input = "ids-{k}.csv"
                    shard_size = 1
                    [resources]
                    gpus_per_worker = 1
                    [executor]
                    kind = "ray"
                    address = "{address}"
                    """)
            )
        for round_ in range(a.repeat):  # alternated, so a slow spell of the machine falls on both sides
            for k in sizes:
                runs = {side: [*plain_run, str(k), side] for side in sides}
                runs["gputui"] = [sys.executable, "-m", "gputui", "run", "--jobs", folder / f"job-{k}.toml"]
                runs["gputui"] += ["--run-dir", folder / f"run-{round_}-{k}", "--quiet"]
                for side, argv in runs.items():
                    wall, busy = timed(argv)
                    took[side, k].append(wall)
                    cpu[side, k].append(busy)
    med = {key: statistics.median(v) for key, v in took.items()}
    slope = {side: (med[side, 2 * n] - med[side, n]) / n for side in [*sides, "gputui"]}
    print(f"tiny tasks (`true`, 1 GPU each) on a local Ray head with {a.gpus} GPUs declared; {a.repeat} round(s);")
    print(f"run directories in {a.dir.resolve()}:")
    what = {
        "default": "plain ray.remote, Ray's default for GPU tasks",
        "reuse": "plain ray.remote, workers reused (max_calls=0)",
        "gputui": "gputui run",
    }
    for side in [*sides, "gputui"]:
        print(f"  {what[side]}:")
        for k in sizes:
            runs = ", ".join(f"{t:.2f}" for t in took[side, k])
            busy = 1e3 * statistics.median(cpu[side, k]) / k
            print(f"    {k} tasks: {med[side, k]:.2f} s (runs {runs}); machine busy CPU {busy:.1f} ms/task")
        print(f"    per further task: {1e3 * slope[side]:.1f} ms")
    for side in sides:
        print(f"  ratio gputui / {what[side]}:")
        print(f"    {n} tasks, start to end: {med['gputui', n] / med[side, n]:.2f}x")
        print(f"    per further task: {slope['gputui'] / slope[side]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
