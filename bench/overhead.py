"""Scheduling overhead: 500 tasks that each run `true`, 8 at a time, gputui vs `xargs -P 8`.

    python bench/overhead.py [--tasks 500] [--parallel 8] [--repeat 3]

gputui runs them as 500 shards on 8 simulated GPUs (one GPU per task), with its full machinery:
state database, supervisors, exit files, logs. Prints the best wall time of each and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_cmd(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def gputui_once(tasks: int, parallel: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(tasks)))
        (root / "job.toml").write_text(f"""
[job]
name = "overhead"
command = "true"
[shards]
input = "ids.csv"
shard_size = 1
[resources]
gpus_per_worker = 1
max_parallel = {parallel}
""")
        return time_cmd(
            [
                sys.executable,
                "-m",
                "gputui",
                "run",
                "--jobs",
                str(root / "job.toml"),
                "--quiet",
                "--simulate",
                f"{parallel}x24",
            ]
        )


def xargs_once(tasks: int, parallel: int) -> float:
    seq = "".join(f"{i}\n" for i in range(tasks)).encode()
    t = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-I{}", "true"], input=seq, check=True)
    return time.perf_counter() - t


def parallel_once(tasks: int, parallel: int) -> float | None:
    if not shutil.which("parallel"):
        return None
    seq = "".join(f"{i}\n" for i in range(tasks)).encode()
    t = time.perf_counter()
    subprocess.run(
        ["parallel", "-j", str(parallel), "true"],
        input=seq,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    g = min(gputui_once(a.tasks, a.parallel) for _ in range(a.repeat))
    x = min(xargs_once(a.tasks, a.parallel) for _ in range(a.repeat))
    gp = [v for v in (parallel_once(a.tasks, a.parallel) for _ in range(a.repeat)) if v is not None]
    startup = min(time_cmd([sys.executable, "-m", "gputui", "--version"]) for _ in range(a.repeat))
    print(f"{a.tasks} tasks of `true`, {a.parallel} at a time (best of {a.repeat})")
    print(f"  xargs -P {a.parallel}:     {x:7.3f} s")
    if gp:
        print(f"  GNU parallel -j {a.parallel}: {min(gp):7.3f} s")
    print(f"  gputui run:      {g:7.3f} s   ({startup:.3f} s of it is Python start-up)")
    print(f"  ratio gputui / xargs: {g / x:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
