"""Scheduling overhead: 500 tasks that each run `true`, 8 at a time: gputui vs `xargs -P 8` and
task-spooler (`tsp -S 8`, Debian's `task-spooler`, when installed).

    python bench/overhead.py [--tasks 500] [--parallel 8] [--repeat 5]

gputui runs them as 500 shards on 8 simulated GPUs (one GPU per task), with its full machinery:
state database, keeper and waiters, journal and exit files, per-attempt cgroups where the machine
allows them, machine-wide GPU reservations, logs. task-spooler is used as its users do: one `tsp`
command per task, then waiting until its queue is empty. Prints the best wall time of each and the
ratios, from interleaved runs; as root, also the CPU each spends per task, every process it starts
counted (from a cgroup's cpu.stat), since on a small machine that, not waiting, sets the pace.

Nothing a run wrote is deleted until every run is over: on an ext4 without a journal (this project's
VMs) the kernel will not reuse an inode freed in the last minute or so and scans past each one on every
file created in that block group, so deleting one run's 4,000 files would tax the next run's (and
task-spooler's) file creation by ~0.5 ms per file. A /tmp where many files came and went can keep paying it (seen
here: 0.3-0.65 ms per new file in /tmp, 0.03 ms in /var/tmp on the same disk): `TMPDIR=/dev/shm python
bench/overhead.py` measures both tools on a tmpfs instead, where a file costs what it costs on a journaled disk.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gputui.executors import cgroup as cgroups


def time_cmd(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def cpu_cmd(cmd: list[str], **kw) -> tuple[float, float] | None:
    """CPU seconds of every process `cmd` starts (its keeper, waiters and workers too, wherever they are
    reparented: they stay in the cgroup it is started in) and of `cmd`'s own process with what it waited for;
    None without a writable cgroup v2 (not root)."""
    base = cgroups.of("self")
    if base is None:
        return None
    folder = Path(base) / f"gputui-overhead-{os.getpid()}"
    try:
        folder.mkdir()
    except OSError:
        return None
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            cmd,
            check=True,
            stdout=subprocess.DEVNULL,
            preexec_fn=lambda: (folder / "cgroup.procs").write_text("0"),
            **kw,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        while cgroups.members(str(folder)):  # the keeper and its waiters leave after their scheduler
            time.sleep(0.01)
        usage = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
        own = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return int(usage["usage_usec"]) / 1e6, own
    finally:
        cgroups.remove(str(folder))


SCRATCH = Path(tempfile.mkdtemp(prefix="gputui-overhead-"))  # removed at the end (see above)


def gputui_once(tasks: int, parallel: int) -> float:
    return time_cmd(gputui_cmd(tasks, parallel))


def numbers(tasks: int) -> bytes:
    return "".join(f"{i}\n" for i in range(tasks)).encode()


def gputui_cmd(tasks: int, parallel: int) -> list[str]:
    """The command that runs `tasks` shards of `true`, in a job folder of its own."""
    root = Path(tempfile.mkdtemp(dir=SCRATCH))
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
    return [sys.executable, "-m", "gputui", "run", "--jobs", str(root / "job.toml"), "--quiet", "--simulate",
            f"{parallel}x24"]  # fmt: skip


def xargs_once(tasks: int, parallel: int) -> float:
    seq = numbers(tasks)
    t = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-I{}", "true"], input=seq, check=True)
    return time.perf_counter() - t


def tsp_once(tasks: int, parallel: int) -> float | None:
    tsp = shutil.which("tsp") or shutil.which("ts")
    if tsp is None or "Task Spooler" not in subprocess.run([tsp, "-V"], capture_output=True, text=True).stdout:
        return None  # Debian's moreutils also ships a `ts` that is not task-spooler
    tmp = tempfile.mkdtemp(dir=SCRATCH)
    env = os.environ | {"TS_SOCKET": f"{tmp}/ts.sock", "TS_MAXFINISHED": str(tasks + 10), "TMPDIR": tmp}
    t = time.perf_counter()
    subprocess.run([tsp, "-S", str(parallel)], env=env, check=True)
    for _ in range(tasks):
        subprocess.run([tsp, "true"], env=env, check=True, stdout=subprocess.DEVNULL)
    while True:  # until its queue is empty
        listing = subprocess.run([tsp, "-l"], env=env, capture_output=True, text=True).stdout
        if " running " not in listing and " queued " not in listing:
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - t
    subprocess.run([tsp, "-K"], env=env, capture_output=True)
    return elapsed


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
    # A pip install leaves compiled bytecode; an editable checkout under PYTHONDONTWRITEBYTECODE would not.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(__file__).parents[1] / "gputui")], check=True
    )
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=500)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    try:
        report(a)
    finally:
        shutil.rmtree(SCRATCH)
    return 0


def report(a: argparse.Namespace) -> None:
    g_runs, x_runs, t_runs = [], [], []
    for _ in range(a.repeat):  # interleaved, so a busy moment of the machine hits all alike
        g_runs.append(gputui_once(a.tasks, a.parallel))
        x_runs.append(xargs_once(a.tasks, a.parallel))
        t_runs.append(tsp_once(a.tasks, a.parallel))
    g, x = min(g_runs), min(x_runs)
    t_runs = [v for v in t_runs if v is not None]
    gp = [v for v in (parallel_once(a.tasks, a.parallel) for _ in range(a.repeat)) if v is not None]
    startup = min(time_cmd([sys.executable, "-m", "gputui", "--version"]) for _ in range(a.repeat))
    # The slope between N and 4N tasks: what each further task costs, without start-up and summaries.
    big = 4 * a.tasks
    g_big = min(gputui_once(big, a.parallel) for _ in range(max(1, a.repeat // 2)))
    x_big = min(xargs_once(big, a.parallel) for _ in range(max(1, a.repeat // 2)))
    g_slope, x_slope = (g_big - g) / (big - a.tasks), (x_big - x) / (big - a.tasks)
    print(f"{a.tasks} tasks of `true`, {a.parallel} at a time (best of {a.repeat})")
    print(f"  xargs -P {a.parallel}:     {x:7.3f} s")
    if gp:
        print(f"  GNU parallel -j {a.parallel}: {min(gp):7.3f} s")
    if t_runs:
        print(f"  tsp -S {a.parallel}:       {min(t_runs):7.3f} s")
    print(f"  gputui run:      {g:7.3f} s   ({startup:.3f} s of it is Python start-up)")
    print(
        f"  ratio gputui / xargs: {g / x:.2f}x (best of each); medians {statistics.median(g_runs):.3f} s / "
        f"{statistics.median(x_runs):.3f} s = {statistics.median(g_runs) / statistics.median(x_runs):.2f}x"
    )
    if t_runs:
        print(
            f"  ratio gputui / tsp:   {g / min(t_runs):.2f}x (best of each); medians "
            f"{statistics.median(g_runs) / statistics.median(t_runs):.2f}x"
        )
    else:
        print("  task-spooler not installed (apt-get install task-spooler) : no tsp figures")
    print(
        f"  per further task (slope {a.tasks}..{big}): gputui {g_slope * 1e3:.2f} ms, xargs "
        f"{x_slope * 1e3:.2f} ms = {g_slope / x_slope:.2f}x; gputui fixed cost {g - g_slope * a.tasks:.3f} s"
    )
    g_cpu, x_cpu = cpu_cmd(gputui_cmd(big, a.parallel)), cpu_cmd(["xargs", "-P", str(a.parallel), "-I{}", "true"],
                                                                 input=numbers(big))  # fmt: skip
    if g_cpu is None or x_cpu is None:
        print("  CPU per task: needs a writable cgroup v2 (root)")
        return
    print(
        f"  CPU per task ({big} tasks, every process): gputui {g_cpu[0] / big * 1e3:.2f} ms, of which its "
        f"scheduler process {g_cpu[1] / big * 1e3:.2f} ms; xargs {x_cpu[0] / big * 1e3:.2f} ms (`true` included)"
    )


if __name__ == "__main__":
    sys.exit(main())
