"""The app's costs, side by side with the floor Textual itself costs.

    python bench/app.py [--seconds 30]

1. Idle CPU in real tmux (200x50): gputui attached to a run with 64 running tasks and 8 simulated
   GPUs at the default 1 s interval, against bench/bare_app.py (one label updated per second); measured
   once the GPU history rows are full (idle GPUs then draw nothing), and in the first seconds too.
2. A worker printing 20,000 lines/s: key latency (Pilot, the log pane following), the app's memory,
   and whether every line reached the log file.
3. 2,000 tasks in the table: one refresh (keyed diff), and paging through the table.
Figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tmux_cpu(command: str, seconds: float, settle: float = 5.0) -> float:
    """CPU use (% of one core) of the process tree tmux runs `command` in."""
    name = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    tmux = ["tmux", "-L", name]  # a server of its own
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "200", "-y", "50", command], check=True)
    try:
        time.sleep(settle)
        pane_pid = int(
            subprocess.run(
                [*tmux, "display", "-p", "-t", name, "#{pane_pid}"], capture_output=True, text=True
            ).stdout
        )
        root = psutil.Process(pane_pid)
        procs = [root, *root.children(recursive=True)]
        t0 = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        time.sleep(seconds)
        used = sum(sum(p.cpu_times()[:2]) - t0[p.pid] for p in procs if p.is_running())
        return 100.0 * used / seconds
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def job(folder: Path, tasks: int, command: str, parallel: int) -> Path:
    (folder / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(tasks)))
    path = folder / "job.toml"
    path.write_text(f"""
[job]
name = "bench"
command = "{command}"
stop_grace_s = 1
[shards]
input = "ids.csv"
shard_size = 1
[resources]
gpus_per_worker = 0
max_parallel = {parallel}
""")
    return path


HISTORY_FILLED = 50.0  # seconds after which a 200-column GPU panel's history rows are full: an idle GPU is still


def idle_cpu(seconds: float) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = job(folder, 64, "sleep 600", 64)
        sched = subprocess.Popen(
            [sys.executable, "-m", "gputui", "run", "--jobs", str(path), "--quiet"], stdout=subprocess.DEVNULL
        )
        try:
            time.sleep(3)
            command = f"{sys.executable} -m gputui --run-dir {folder / 'runs' / 'bench'} --simulate 8x24"
            filling = tmux_cpu(command, seconds)  # GPU history still filling: every sparkline moves each second
            app = tmux_cpu(command, seconds, settle=HISTORY_FILLED)
            bare = tmux_cpu(f"{sys.executable} {ROOT / 'bench' / 'bare_app.py'}", seconds)
        finally:
            subprocess.run(
                [sys.executable, "-m", "gputui", "kill", "--run-dir", str(folder / "runs" / "bench"), "--all"],
                capture_output=True,
            )
            sched.wait(30)
    return filling, app, bare


async def flood(seconds: float) -> dict:
    from gputui.tui.app import GpuTuiApp
    from gputui.tui.widgets.job_table import JobTable

    rate = 20_000
    script = (
        f"import sys, time\nt = time.time()\nn = 0\nwhile time.time() - t < {seconds}:\n"
        f"    sys.stdout.write(''.join(f'line {{n + i}} of the flood\\n' for i in range(200)))\n"
        f"    n += 200\n    time.sleep(max(0, n / {rate} - (time.time() - t)))\nprint('total', n)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "flood.py").write_text(script)
        path = job(folder, 1, f"{sys.executable} flood.py", 1)
        app = GpuTuiApp(job_path=path, run_dir=folder / "runs" / "bench", simulate="8x24")
        latencies, rss = [], []
        me = psutil.Process()
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.press("l")
            table = app.query_one(JobTable)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                before = table.sort_by
                t = time.perf_counter()
                app.simulate_key("s")  # a key the table answers by changing a reactive
                while table.sort_by == before:
                    await asyncio.sleep(0.001)
                latencies.append(time.perf_counter() - t)
                rss.append(me.memory_info().rss)
                await asyncio.sleep(0.2)
            await pilot.pause(2.0)
        log = next((folder / "runs" / "bench" / "logs").glob("*.log"))
        lines = log.read_text().splitlines()
        total = int(lines[-1].split()[1]) if lines and lines[-1].startswith("total") else None
    return {
        "latency_ms": sorted(x * 1e3 for x in latencies),
        "rss_mb": [r / 2**20 for r in rss],
        "lines_in_log": len(lines) - 1,
        "lines_printed": total,
    }


async def big_table() -> dict:
    from textual.app import App

    from gputui.jobs.tasks import Status, TaskRecord
    from gputui.tui.widgets.job_table import JobTable
    from gputui.views.runview import TaskView

    def views(tick: int) -> list[TaskView]:
        out = []
        for i in range(2000):
            status = Status.RUNNING if (i + tick) % 7 == 0 else Status.PENDING
            out.append(
                TaskView(
                    TaskRecord(
                        f"shard-{i}", i, i * 10, i * 10 + 10, 10, status, 1, 3, (), None, None, 1.0, None, None
                    ),
                    None,
                )
            )
        return out

    class T(App):
        def compose(self):
            yield JobTable()

    app = T()
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(JobTable)
        t = time.perf_counter()
        table.update_tasks(views(0), time.time())
        await pilot.pause()
        first = time.perf_counter() - t
        updates = []
        for tick in range(1, 6):
            t = time.perf_counter()
            table.update_tasks(views(tick), time.time())
            await pilot.pause()
            updates.append(time.perf_counter() - t)
        table.focus()
        t = time.perf_counter()
        for _ in range(40):
            await pilot.press("pagedown")
        paging = (time.perf_counter() - t) / 40
    return {"first_s": first, "update_s": statistics.median(updates), "page_s": paging}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=30.0)
    a = p.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "gputui")], check=True)
    if shutil.which("tmux"):
        filling, app, bare = idle_cpu(a.seconds)
        print(f"idle CPU over {a.seconds:.0f}s (64 running tasks, 8 simulated GPUs, 1 s interval, tmux 200x50):")
        print(
            f"  gputui {app:.2f}% of one core once GPU history is full ({filling:.2f}% in the first"
            f" {a.seconds:.0f}s, while every sparkline moves), bare Textual app {bare:.2f}%"
            f" -> {app / max(bare, 1e-9):.1f}x the floor"
        )
    f = asyncio.run(flood(a.seconds))
    lat = f["latency_ms"]
    print(f"worker printing 20,000 lines/s for {a.seconds:.0f}s, its log followed in the app:")
    print(
        f"  key latency median {statistics.median(lat):.1f} ms, p95 {lat[int(0.95 * (len(lat) - 1))]:.1f} ms, "
        f"max {lat[-1]:.1f} ms over {len(lat)} presses"
    )
    print(
        f"  app RSS {f['rss_mb'][0]:.0f} MB at start, {max(f['rss_mb']):.0f} MB peak, {f['rss_mb'][-1]:.0f} MB end"
    )
    print(f"  lines printed {f['lines_printed']}, lines in the log file {f['lines_in_log']}")
    t = asyncio.run(big_table())
    print("2,000 tasks in the table:")
    print(
        f"  first fill {t['first_s'] * 1e3:.0f} ms, "
        f"a refresh with ~570 changed rows {t['update_s'] * 1e3:.0f} ms, "
        f"page down {t['page_s'] * 1e3:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
