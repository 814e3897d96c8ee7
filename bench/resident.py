"""Resident workers on the README's sample (the real continuation worker, transformers on CPU, the tiny model):
4 shards on 1 worker with `[job] resident = true` against one plain process looping over the same prompts, and
the same 4 shards without it (a process, and a model load, per shard). Also counts the model loads.

    python bench/resident.py [--repeat 3] [--threads N]

Every variant writes the same rows (same model, same batches of 16 prompts). gputui's times are its whole
`gputui run`: start-up, planning, launching, the workers, settling, the merge and the report. The tiny model is
built once before timing. Runs are interleaved and the best of each is kept. `--threads N` sets
OMP_NUM_THREADS and MKL_NUM_THREADS for every variant alike (torch's threads fight hardest for cores a busy
machine shares); by default each runs as a user's would (gputui gives its one worker every core, as torch does).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample import prepare  # noqa: E402

LOADED = "loaded the transformers engine"


def variant(job: Path, name: str, resident: bool) -> Path:
    """The sample job as one worker at a time (max_parallel = 1), resident or not."""
    text = job.read_text().replace('name = "continuation"', f'name = "{name}"')
    text = text.replace("max_parallel = 8", "max_parallel = 1")
    if resident:
        text = text.replace("[shards]", "resident = true\n\n[shards]", 1)
    path = job.with_name(f"{name}.toml")
    path.write_text(text)
    return path


def time_gputui(job: Path, name: str) -> tuple[float, int]:
    """(wall seconds, model loads)."""
    run_dir = job.parent / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gputui", "run", "--jobs", str(job), "--simulate", "8x24", "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t
    loads = sum(log.read_text().count(LOADED) for log in (run_dir / "logs").glob("*.log"))
    return wall, loads


def plain_command(job: Path, out: Path) -> list[str]:
    """The worker's command over every prompt at once: the same loop, one process, one model load."""
    from gputui.jobs.loader import load_jobspec
    from gputui.jobs.plans import plan_job
    from gputui.jobs.templates import render_command

    spec = load_jobspec(job)
    tasks = plan_job(spec).tasks
    values = {"low": tasks[0].low, "high": tasks[-1].high, "input": spec.kind_spec.input, "output": out}
    return render_command(spec, values)


def time_plain(job: Path, out: Path) -> tuple[float, int]:
    out.unlink(missing_ok=True)
    t = time.perf_counter()
    p = subprocess.run(plain_command(job, out), cwd=job.parent, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, p.stdout.count(LOADED)


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS and MKL_NUM_THREADS for every variant")
    ap.add_argument("--no-each", action="store_true", help="leave out the process-per-shard run (the slowest)")
    a = ap.parse_args()
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(a.threads)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        job = prepare(root)
        resident, each = variant(job, "resident", True), variant(job, "each", False)
        plain_out = root / "plain.csv"
        print("plain:", shlex.join(plain_command(job, plain_out)), flush=True)
        runs: dict[str, list[tuple[float, int]]] = {"plain": [], "resident": [], "each": []}
        for _ in range(a.repeat):  # interleaved: every variant sees the same machine
            runs["plain"].append(time_plain(job, plain_out))
            runs["resident"].append(time_gputui(resident, "resident"))
            if not a.no_each:
                runs["each"].append(time_gputui(each, "each"))
            print({k: f"{v[-1][0]:.2f}s/{v[-1][1]} loads" for k, v in runs.items()}, flush=True)
        merged = root / "sample_jobs" / "runs" / "resident" / "outputs" / "generation_results_data_all_merged.csv"
        same = rows_of(merged) == rows_of(plain_out)
        (p, p_loads), (r, r_loads) = min(runs["plain"]), min(runs["resident"])
        each_line = ""
        if runs["each"]:
            e, e_loads = min(runs["each"])
            each_line = f"gputui a process per shard {e:.2f}s ({e_loads} loads) = {e / p:.2f}x | "
        print(
            f"sample, 4 shards on 1 worker (CPU, {a.threads or 'default'} threads, best of {a.repeat}): "
            f"plain loop {p:.2f}s ({p_loads} load) | gputui resident {r:.2f}s ({r_loads} load) = {r / p:.2f}x | "
            f"{each_line}same rows: {same}"
        )


if __name__ == "__main__":
    main()
