"""A trainer reporting 1,000 metric events per second while the app is attached.

    python bench/events.py [--seconds 60]

Key latency (Pilot: a key the table answers), the app's memory, the scheduler's CPU, and whether every event
reached the task's metrics.csv. Figures only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAINER = """
import sys, time
from gputui import hooks
seconds, rate = float(sys.argv[1]), 1000
t0, step = time.time(), 0
while time.time() - t0 < seconds:
    for _ in range(50):
        step += 1
        hooks.log_metrics(step, loss=1.0 / step, lr=0.001)
    hooks.progress(time.time() - t0, seconds)
    time.sleep(max(0.0, step / rate - (time.time() - t0)))
hooks.mark_done(loss=1.0 / step)
print("total", step)
"""


def job(folder: Path, seconds: float) -> Path:
    (folder / "trainer.py").write_text(TRAINER)
    path = folder / "job.toml"
    path.write_text(
        f'[job]\nname = "events"\nkind = "pipeline"\n[[pipeline.step]]\nname = "train"\n'
        f'command = "{sys.executable} trainer.py {seconds}"\n[resources]\ngpus_per_worker = 0\n'
    )
    return path


async def attached(seconds: float) -> dict:
    from gputui.tui.app import GpuTuiApp
    from gputui.tui.widgets.job_table import JobTable

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_dir = folder / "runs" / "events"
        app = GpuTuiApp(job_path=job(folder, seconds), run_dir=run_dir, simulate="8x24")
        latencies, rss, sched_cpu = [], [], None
        me = psutil.Process()
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.press("l")
            table = app.query_one(JobTable)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                before = table.sort_by
                t = time.perf_counter()
                app.simulate_key("s")
                while table.sort_by == before:
                    await asyncio.sleep(0.001)
                latencies.append(time.perf_counter() - t)
                rss.append(me.memory_info().rss)
                await asyncio.sleep(0.2)
            for p in me.children(recursive=True):
                if "run" in p.cmdline() and "gputui" in " ".join(p.cmdline()):
                    sched_cpu = sum(p.cpu_times()[:2])
            metrics = run_dir / "tasks" / "train" / "metrics.csv"
            for _ in range(300):  # the scheduler writes it once the task settles
                if metrics.exists():
                    break
                await pilot.pause(0.1)
        rows = list(csv.reader(metrics.open())) if metrics.exists() else []
        log = next((run_dir / "logs").glob("train.*.log")).read_text().split()
        total = int(log[log.index("total") + 1]) if "total" in log else None
    return {
        "latency_ms": sorted(x * 1e3 for x in latencies),
        "rss_mb": [r / 2**20 for r in rss],
        "events_sent": total,
        "rows_in_metrics_csv": max(0, len(rows) - 1),
        "scheduler_cpu_s": sched_cpu,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0)
    a = p.parse_args()
    r = asyncio.run(attached(a.seconds))
    lat = r["latency_ms"]
    print(f"a trainer reporting 1,000 metric events/s for {a.seconds:.0f}s, the app attached (200x50):")
    print(
        f"  key latency median {statistics.median(lat):.1f} ms, p95 {lat[int(0.95 * (len(lat) - 1))]:.1f} ms, "
        f"max {lat[-1]:.1f} ms over {len(lat)} presses"
    )
    start, peak, end = r["rss_mb"][0], max(r["rss_mb"]), r["rss_mb"][-1]
    print(f"  app RSS {start:.0f} MB at start, {peak:.0f} MB peak, {end:.0f} MB end")
    print(f"  events sent {r['events_sent']}, rows in metrics.csv {r['rows_in_metrics_csv']}")
    if r["scheduler_cpu_s"] is not None:
        print(f"  scheduler CPU {100 * r['scheduler_cpu_s'] / a.seconds:.1f}% of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
