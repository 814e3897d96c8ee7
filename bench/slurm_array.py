"""Submission to all-done on Slurm: a job array through gputui against `sbatch --array` alone.

    python bench/slurm_array.py [--tasks 100] [--gpus 4]      (as root, with slurm-wlm and munge installed)

Starts its own single-node Slurm on 127.0.0.1 (tests/slurm_cluster.py: `--gpus` fake GPUs, 8 CPUs),
stopped afterwards. Both sides run the same command (`true`) once per task, one GPU each, so at most
`--gpus` run at once:
- plain: `sbatch --array=0-N --gres=gpu:1 --wrap true`, then squeue every 0.1 s until the array has left the
  queue (`sbatch --wait` polls every few seconds: it would make Slurm alone look slower than it is);
- gputui: `gputui run` of a shard job with one id per shard and `[executor] kind = "slurm"` (one array, every
  attempt's exit recorded by gputui's runner, journaled, its log kept, its state committed, merge skipped).
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

from tests.slurm_cluster import missing, slurm_node  # noqa: E402 - after the path it is found on


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--gpus", type=int, default=4)
    a = p.parse_args()
    if why := missing():
        print(f"needs a private Slurm: {why}")
        return 1
    n = a.tasks
    with slurm_node(gpus=a.gpus) as env, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(env)
        folder = Path(tmp)
        t = time.perf_counter()
        array = subprocess.run(
            ["sbatch", "--parsable", f"--array=0-{n - 1}", "--gres=gpu:1", f"--output={folder}/p-%a.out",
             "--wrap=true"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        queued = ["squeue", "-h", "-j", array, "-t", "PD,R,CG,S"]
        while subprocess.run(queued, capture_output=True, text=True).stdout:
            time.sleep(0.1)
        plain = time.perf_counter() - t
        (folder / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(n)))
        job = folder / "job.toml"
        job.write_text(
            textwrap.dedent("""
                [job]
                name = "bench"
                command = "true"
                [shards]
                input = "ids.csv"
                shard_size = 1
                [resources]
                gpus_per_worker = 1
                [executor]
                kind = "slurm"
                """)
        )
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gputui", "run", "--jobs", job, "--quiet"], check=True)
        ours = time.perf_counter() - t
    print(f"{n} tiny tasks (`true`, 1 GPU each, {a.gpus} fake GPUs) on a local single-node Slurm:")
    print(f"  sbatch --array, squeue until done: {plain:.2f} s ({1e3 * plain / n:.1f} ms/task)")
    print(f"  gputui run: {ours:.2f} s ({1e3 * ours / n:.1f} ms/task, sinfo and the summary included)")
    print(f"  ratio gputui / sbatch: {ours / plain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
