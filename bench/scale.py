"""Many tasks: what a run of 2,000 / 100,000 / 1,000,000 shards costs the scheduler and the commands that
read it, side by side with the sqlite3 shell reading the same state database.

    python bench/scale.py [--sizes 2000,100000] [--finish 2000] [--repeat 3] [--parallel 8]

For each size: a job of that many shards (`shard_size = 1`, command `true`, `max_parallel` at a time) is
planned with `gputui plan`, run headless with `gputui run --quiet` until `--finish` tasks are done (then
stopped with SIGINT, as Ctrl-C does), and read with `gputui status` and `gputui status --json` (output to a
file, as a pipe to a pager or `jq` would take it). Each command's wall time (best of `--repeat`, runs
interleaved) and peak RSS (its own VmHWM, from wait4) are printed; the scheduler's peak RSS is its own
VmHWM read while it runs (the keeper and waiters it forks are not counted: they are other processes), with the
time to its first finished task (planning and storing the tasks) and from its Ctrl-C to its exit. With
`--finish` at the size, the run is left to end by itself instead: the time from its last task done to its exit
is its end (summary.json and report.md), and its peak RSS before that end is shown beside the peak with it.
The floor beside them: `sqlite3 state.db "SELECT status, count(*) FROM tasks GROUP BY status"` and
`gputui --version` (Python's start-up and gputui's import).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GPUTUI = [sys.executable, "-m", "gputui"]


def measured(cmd: list[str], out=subprocess.DEVNULL) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit status of one command (its own process: wait4's ru_maxrss)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 1):  # status says 1 while some task is not done
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, proc.returncode


def make_job(root: Path, tasks: int, parallel: int) -> Path:
    with (root / "ids.csv").open("w") as f:
        f.write("data_id\n")
        for start in range(0, tasks, 100_000):
            f.write("".join(f"{i}\n" for i in range(start, min(tasks, start + 100_000))))
    job = root / "job.toml"
    job.write_text(f"""
[job]
name = "scale"
command = "true"
[shards]
input = "ids.csv"
shard_size = 1
[resources]
gpus_per_worker = 1
max_parallel = {parallel}
""")
    return job


def hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def done_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def run_scheduler(job: Path, run_dir: Path, total: int, finish: int, parallel: int, limit_s: float) -> dict:
    """Run until `finish` tasks are done (or `limit_s`), then Ctrl-C: its figures. With every task done
    (`finish` >= `total`) it is left to end by itself: the time from its last task done to its exit is the run's
    end (summary.json, report.md), and its peak RSS then beside the peak while it ran."""
    cmd = [*GPUTUI, "run", "--jobs", str(job), "--run-dir", str(run_dir), "--quiet", "--simulate"]
    t = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, f"{parallel}x24", "--progress-every", "3600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = run_dir / "state.db"
    peak, first_done_at, done = 0.0, None, 0
    while proc.poll() is None:
        peak = max(peak, hwm_mb(proc.pid))
        done = done_count(db)
        if done and first_done_at is None:
            first_done_at = time.perf_counter() - t
        if done >= finish or time.perf_counter() - t > limit_s:
            break
        time.sleep(0.2)
    ran = time.perf_counter() - t
    peak = max(peak, hwm_mb(proc.pid))
    peak_running = peak
    stop = time.perf_counter()
    ends = done >= finish and finish >= total  # every task done: the run ends by itself (summary, report)
    if proc.poll() is None and not ends:
        proc.send_signal(signal.SIGINT)
    while proc.poll() is None and time.perf_counter() - stop < 600:  # its exit's peak counts too
        peak = max(peak, hwm_mb(proc.pid))
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    stopped = time.perf_counter() - stop
    if proc.returncode not in (0, 130):
        raise RuntimeError(f"gputui run exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
    done = done_count(db)
    return {
        "peak_mb": peak,
        "peak_running_mb": peak_running,
        "first_done_s": first_done_at,
        "ran_s": ran,
        "done": done,
        "stopped_s": stopped,
        "ended": ends,
    }


def best(cmds: dict[str, list[str]], repeat: int, outs: dict[str, Path]) -> dict[str, tuple[float, float]]:
    """Best wall time and largest peak RSS of each command, runs interleaved."""
    times: dict[str, list[float]] = {k: [] for k in cmds}
    rss: dict[str, float] = dict.fromkeys(cmds, 0.0)
    for _ in range(repeat):
        for name, cmd in cmds.items():
            target = outs.get(name)
            with open(target or os.devnull, "wb") as out:
                wall, peak, _ = measured(cmd, out)
            times[name].append(wall)
            rss[name] = max(rss[name], peak)
    return {k: (min(times[k]), rss[k]) for k in cmds}


def one_size(tasks: int, args) -> list[tuple[str, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        job = make_job(root, tasks, args.parallel)
        run_dir = root / "run"
        plan = best({"plan": [*GPUTUI, "plan", "--jobs", str(job)]}, args.repeat, {})["plan"]
        rows.append(("gputui plan", *plan, ""))
        finish = min(tasks, args.finish)
        sched = run_scheduler(job, run_dir, tasks, finish, args.parallel, args.limit)
        first = sched["first_done_s"]
        note = f"{sched['done']} done in {sched['ran_s']:.1f} s, first after {first or 0:.1f} s"
        if sched["ended"]:
            note += f", last done to exit {sched['stopped_s']:.1f} s (run end: summary, report)"
            note += f", peak {sched['peak_running_mb']:.0f} MB before it"
        else:
            note += f", Ctrl-C to exit {sched['stopped_s']:.1f} s"
        rows.append(("gputui run (scheduler)", sched["ran_s"], sched["peak_mb"], note))
        db = str(run_dir / "state.db")
        json_out = root / "status.json"
        cmds = {
            "gputui status": [*GPUTUI, "status", "--run-dir", str(run_dir)],
            "gputui status --json": [*GPUTUI, "status", "--run-dir", str(run_dir), "--json"],
            "sqlite3 GROUP BY status": ["sqlite3", db, "SELECT status, count(*) FROM tasks GROUP BY status"],
            "gputui --version": [*GPUTUI, "--version"],
        }
        found = best(cmds, args.repeat, {"gputui status --json": json_out})
        for name, (wall, peak) in found.items():
            note = f"{json_out.stat().st_size / 1e6:.1f} MB of JSON" if name.endswith("--json") else ""
            rows.append((name, wall, peak, note))
    return rows


def main() -> int:
    # A pip install leaves compiled bytecode; an editable checkout under PYTHONDONTWRITEBYTECODE would not.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(__file__).parents[1] / "gputui")], check=True
    )
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="2000,100000", help="comma-separated task counts (1000000 is slow)")
    p.add_argument("--finish", type=int, default=2000, help="stop the scheduler once this many are done")
    p.add_argument("--limit", type=float, default=600.0, help="stop the scheduler after this many seconds")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--parallel", type=int, default=8)
    a = p.parse_args()
    print(f"{os.cpu_count()} CPU(s); shards of `true`, {a.parallel} at a time; best of {a.repeat}, interleaved")
    for size in (int(s) for s in a.sizes.split(",")):
        print(f"\n{size:,} tasks")
        print(f"  {'command':26} {'wall s':>8} {'peak MB':>8}")
        for name, wall, peak, note in one_size(size, a):
            print(f"  {name:26} {wall:8.3f} {peak:8.1f}  {note}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
