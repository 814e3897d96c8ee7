"""The README's sample on this machine's CPUs: rows per second of `gputui run` (4 shards of the real
continuation worker, transformers on CPU, the tiny model) against the same four worker commands under
`xargs -P 4` followed by a header-once concatenation of their outputs, and gputui's own time per shard
outside the workers.

    python bench/sample.py [--repeat 2]

gputui's time outside the workers is its wall time minus the span from the first worker's start to the last
one's end (read from its state.db): start-up, planning, launching, settling, the merge and the report. The
tiny model is built once before timing (both sides use it built).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4


def prepare(root: Path) -> Path:
    jobs = root / "sample_jobs"
    shutil.copytree(ROOT / "sample_jobs", jobs, ignore=shutil.ignore_patterns("runs"))
    job = jobs / "continuation.toml"
    job.write_text(job.read_text().replace("python -m gputui", f"{sys.executable} -m gputui"))
    from gputui.workers.tiny_model import ensure_tiny_model

    with open(jobs / "data" / "prompts.csv", newline="") as f:
        prompts = [r["prompt"] for r in csv.DictReader(f)]
    ensure_tiny_model(jobs / "models" / "tiny-llama", prompts)
    return job


def rows_of(path: Path) -> int:
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def time_gputui(job: Path) -> tuple[float, float, int]:
    """(wall seconds, seconds outside the workers, rows merged)."""
    run_dir = job.parent / "runs" / "continuation"
    shutil.rmtree(run_dir, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gputui", "run", "--jobs", str(job), "--simulate", "8x24", "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t
    db = sqlite3.connect(run_dir / "state.db")
    first, last = db.execute("SELECT MIN(started_at), MAX(ended_at) FROM attempts").fetchone()
    db.close()
    merged = run_dir / "outputs" / "generation_results_data_all_merged.csv"
    return wall, wall - (last - first), rows_of(merged)


def commands(job: Path, out: Path) -> list[str]:
    """The four worker commands gputui runs, as a user would write them for xargs."""
    from gputui.jobs.loader import load_jobspec
    from gputui.jobs.plans import plan_job
    from gputui.jobs.templates import render_command

    spec = load_jobspec(job)
    lines = []
    for t in plan_job(spec).tasks:
        values = {"low": t.low, "high": t.high, "input": spec.kind_spec.input, "output": out / f"{t.low}.csv"}
        lines.append(shlex.join(render_command(spec, values)))
    return lines


def time_xargs(job: Path, root: Path) -> tuple[float, int]:
    out = root / "xargs"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    script = "\n".join(commands(job, out)) + "\n"
    merged = root / "xargs-merged.csv"
    t = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(WORKERS), "-d", "\n", "-I", "{}", "sh", "-c", "{}"],
        input=script,
        text=True,
        check=True,
        cwd=job.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parts = sorted(out.glob("*.csv"), key=lambda p: int(p.stem))
    with open(merged, "w") as f:
        subprocess.run(["awk", "FNR > 1 || NR == 1", *map(str, parts)], stdout=f, check=True)
    return time.perf_counter() - t, rows_of(merged)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        job = prepare(root)
        g_runs, x_runs = [], []
        for _ in range(a.repeat):  # interleaved: both see the same machine
            g_runs.append(time_gputui(job))
            x_runs.append(time_xargs(job, root))
        g_wall, g_outside, g_rows = min(g_runs)
        x_wall, x_rows = min(x_runs)
        print(
            f"sample ({g_rows} rows, {WORKERS} shards, CPU): gputui {g_wall:.1f}s = {g_rows / g_wall:.1f} rows/s"
            " | "
            f"xargs -P {WORKERS} + concat {x_wall:.1f}s = {x_rows / x_wall:.1f} rows/s | "
            f"gputui/xargs wall {g_wall / x_wall:.2f}x | gputui outside the workers {g_outside:.2f}s "
            f"= {g_outside / WORKERS:.2f}s per shard"
        )


if __name__ == "__main__":
    main()
