"""The app over a large run: the first screen and key latency with 2,000 and 100,000 tasks, side by side with
the floor (a bare Textual app's first screen) and, given `--baseline`, another gputui checkout (the same
measurement on the same runs, in turn, each first every other time).

    python bench/app_scale.py [--tasks 2000,100000] [--repeat 3] [--rounds 4] [--baseline DIR] [--command CMD]
                              [--before-launch]

Each run is planned and stored by the engine (`open_for_job`: a shards job, `shard_size = 1`), then its
scheduler runs it (`gputui run`, 8 at a time, `sleep 2` each unless `--command` says otherwise) all through the
measurement: the store changes under the app every refresh. Each measurement is a fresh process driving the
real app headless (App.run_test, 200x50, 8 simulated GPUs):

- first screen: from the process's start to the first frame drawn with the table's rows on screen and the
  first task's log pane open;
- a key: from the key event to the first frame drawn showing the table's answer: the cursor on its row, every
  row on screen read, the log pane on the selected task (down, page down, end, home), or the rows of the new
  order or filter on screen (s, v).

`--before-launch`: the same over the job's plan, before any run exists (`gputui --jobs job.toml`: nothing
planned is stored; the table shows the plan a page at a time); the RSS is then the app's peak as well as its
last, the plan being read in a thread while the first screen is drawn.

Figures only; nothing here asserts. `--baseline DIR`: a gputui checkout (e.g. `git archive main | tar -x -C
DIR`) measured on the same runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("down", "pagedown", "end", "home", "s", "v")  # one round: s and v cycle on until back to the start
CYCLE = {"s": 3, "v": 5}


# -- the measuring process (imports gputui from wherever PYTHONPATH says) ----------------------------------
def _held(table) -> bool:
    """Every row on screen read (the table before pages held every row)."""
    at = getattr(table, "_at", None)
    if at is None:
        return True
    top, rows = round(table.scroll_y), max(1, table.size.height - 1)
    return all(r in at for r in range(top, min(table.row_count, top + rows)))


def _expected(table, key: str) -> int | tuple[str, str]:
    """The cursor's row a move key leads to; the view (sort, filter) before a key that changes it."""
    rows, page = table.row_count, max(1, table.size.height - 2)
    moves = {"down": table.cursor_row + 1, "pagedown": table.cursor_row + page, "end": rows - 1, "home": 0}
    return min(moves[key], rows - 1) if key in moves else (table.sort_by, table.filter_by)


def _answered(app, table, expected: int | tuple[str, str]) -> bool:
    """The table shows what the key asked for: the cursor on its row with every row on screen read and the log
    pane on the selected task, or the rows of the new view (sort, filter) on screen."""
    if isinstance(expected, int):
        return table.cursor_row == expected and _held(table) and _log_follows(app, table)
    now = (table.sort_by, table.filter_by)
    shown = getattr(table, "rows_query", None)  # the table before pages: at once
    return now != expected and (shown is None or (shown.sort, shown.filter) == now) and _held(table)


def _log_follows(app, table) -> bool:
    return table.selected_id is not None and app._tabs.task_id == table.selected_id


async def _measure(target: Path, rounds: int) -> dict:
    import resource

    import psutil
    from textual import events

    from gputui.tui.app import GpuTuiApp
    from gputui.tui.widgets.job_table import JobTable

    if target.suffix == ".toml":  # before launch: the job file's plan (its run directory does not exist)
        from gputui.jobs.loader import load_jobspec

        app = GpuTuiApp(job_path=target, run_dir=load_jobspec(target).run_dir, simulate="8x24")
    else:
        app = GpuTuiApp(run_dir=target, simulate="8x24")
    waiting: list[tuple] = []  # (what the frame must show, its future)
    async with app.run_test(size=(200, 50)):
        display = app._display

        def stamped(screen, renderable):  # headless: the frame is composed, then not written
            display(screen, renderable)
            if renderable is not None:
                for _, drawn in [w for w in waiting if not w[1].done() and w[0]()]:
                    drawn.set_result(time.perf_counter())

        app._display = stamped
        table = app.query_one(JobTable)

        async def drawn_after(ready, timeout: float = 30.0) -> float:
            """When the first frame drawn with `ready()` true was (inf: none within `timeout` s). An answer that
            leaves the screen as it was (the same rows) asks for a frame, or none would come until the next
            refresh: its latency is then the answer's and one frame's."""
            drawn = asyncio.get_running_loop().create_future()
            waiting.append((ready, drawn))
            deadline = time.perf_counter() + timeout
            try:
                while not ready() and time.perf_counter() < deadline:
                    await asyncio.sleep(0.001)
                table.refresh()
                return await asyncio.wait_for(drawn, max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                return math.inf
            finally:
                waiting.clear()

        await drawn_after(lambda: table.row_count > 0 and _held(table) and _log_follows(app, table), 120.0)
        first = time.time()
        await asyncio.sleep(1.5)  # past start-up (styles, the first refreshes)
        latency: dict[str, list[float]] = {k: [] for k in KEYS}
        for _ in range(rounds):
            for key in KEYS:
                for _ in range(CYCLE.get(key, 1)):
                    expected = _expected(table, key)
                    t = time.perf_counter()
                    app.post_message(events.Key(key, None))
                    latency[key].append(await drawn_after(lambda e=expected: _answered(app, table, e)) - t)
                    await asyncio.sleep(0.05)
        rss = psutil.Process().memory_info().rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"first": first, "latency": latency, "rss_mb": rss / 2**20, "peak_mb": peak / 2**20}


# -- the driver -----------------------------------------------------------------------------------
def make_run(folder: Path, tasks: int, command: str) -> tuple[Path, subprocess.Popen]:
    """A shards job of `command`, planned and stored by the engine, its scheduler started (8 at a time)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from app import job

    from gputui.jobs.loader import load_jobspec
    from gputui.rundir.opening import open_for_job

    path = job(folder, tasks, command, 8)
    open_for_job(load_jobspec(path), simulate="8x24").close()
    run_dir = folder / "runs" / "bench"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sched = subprocess.Popen(
        [sys.executable, "-m", "gputui", "run", "--run-dir", str(run_dir), "--quiet", "--simulate", "8x24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    time.sleep(3.0)  # some tasks done, eight running
    return run_dir, sched


def make_plan(folder: Path, tasks: int, command: str) -> Path:
    """The same shards job, not launched: its job file (the app plans it; nothing is written)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from app import job

    return job(folder, tasks, command, 8)


def measure(tree: Path, run_dir: Path, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(run_dir), "--rounds", str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    found["first_s"] = found.pop("first") - t0
    return found


def bare_first_screen() -> float:
    """The floor: a bare Textual app's process start to its first frame."""
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--bare"], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1]) - t0


async def _bare() -> float:
    sys.path.insert(0, str(ROOT / "bench"))
    from bare_app import Bare

    app = Bare()
    frames: list[float] = []
    async with app.run_test(size=(200, 50)):
        display = app._display

        def stamped(screen, renderable):
            if renderable is not None:
                frames.append(time.time())
            display(screen, renderable)

        app._display = stamped
        while not frames:
            await asyncio.sleep(0.001)
    return frames[0]


def summary(name: str, runs: list[dict]) -> dict:
    """Best first screen; each key's median and worst over every press of every run."""
    keys = {k: sorted(x for r in runs for x in r["latency"][k]) for k in KEYS}
    return {
        "name": name,
        "first": min(r["first_s"] for r in runs),
        "keys": {k: (statistics.median(v) * 1e3, v[-1] * 1e3) for k, v in keys.items() if v},
        "rss": max(r["rss_mb"] for r in runs),
        "peak": max(r.get("peak_mb", 0.0) for r in runs),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", default="2000,100000")
    p.add_argument("--repeat", type=int, default=3, help="app processes per tree and size (interleaved)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of every key per process")
    p.add_argument("--baseline", type=Path, help="another gputui checkout, measured in turn on the same runs")
    p.add_argument("--command", default="sleep 2", help="each task's command (the run stays live throughout)")
    p.add_argument("--before-launch", action="store_true", help="the job's plan before launch, not a live run")
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure:
        print(json.dumps(asyncio.run(_measure(a.measure, a.rounds))))
        return 0
    if a.bare:
        print(asyncio.run(_bare()))
        return 0
    trees = [("this tree", ROOT)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    for tree in (t for _, t in trees):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "gputui")], check=True)
    floor = min(bare_first_screen() for _ in range(a.repeat))
    where = f"headless 200x50, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    what = "the app over a job's plan before launch" if a.before_launch else "the app over a live run"
    print(f"{what} (8 x `{a.command}` at a time), {where}", flush=True)
    print(f"floor: a bare Textual app's first screen {floor:.2f} s", flush=True)
    for n in (int(x) for x in a.tasks.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            if a.before_launch:
                run_dir, sched = make_plan(Path(tmp), n, a.command), None
            else:
                run_dir, sched = make_run(Path(tmp), n, a.command)
            try:
                found: dict[str, list[dict]] = {name: [] for name, _ in trees}
                for i in range(a.repeat):  # in turn, each first every other time
                    for name, tree in trees if i % 2 == 0 else trees[::-1]:
                        found[name].append(measure(tree, run_dir, a.rounds))
            finally:
                if sched is not None:
                    sched.send_signal(signal.SIGINT)
                    sched.wait(60)
        print(f"{n:,} tasks:", flush=True)
        for name, _ in trees:
            s = summary(name, found[name])
            keys = ", ".join(f"{k} {med:.0f}/{worst:.0f}" for k, (med, worst) in s["keys"].items())
            print(
                f"  {name:9s}: first screen {s['first']:.2f} s ({s['first'] / floor:.1f}x the floor), "
                f"app RSS {s['rss']:.0f} MB (peak {s['peak']:.0f}); keys ms median/worst: {keys}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
