"""Throughput of `merge_shards` (coverage check on) against `cat` of the same shard files.

    python bench/merge.py [--rows 2000000] [--shards 8] [--format csv|jsonl|both]

Two merges: as a run does it (each shard's coverage checked when it finished, into its done-manifest; the
merge copies bytes), and with every shard read and checked at merge time (outputs without manifests).
Figures only: best of 3 for each, ratios to cat, and the merge's peak RSS (measured in a child process).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog,",
    "said",
    "she;",
    '"quoted"',
    "text",
    "and",
    "more",
    "words",
    "here",
]


def make_shards(root: Path, rows: int, shards: int, fmt: str) -> list[tuple[str, int, int, str]]:
    rnd = random.Random(0)
    per = rows // shards
    out = []
    for s in range(shards):
        low, high = s * per, (s + 1) * per if s < shards - 1 else rows
        path = root / f"s{s}.{fmt}"
        with open(path, "w", newline="", encoding="utf-8") as f:
            if fmt == "csv":
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["id", "text", "score"])
                for i in range(low, high):
                    text = " ".join(rnd.choices(WORDS, k=16))[:100]
                    w.writerow([i, text, f"{rnd.random():.4f}"])
            else:
                for i in range(low, high):
                    text = " ".join(rnd.choices(WORDS, k=16))[:100]
                    f.write(json.dumps({"id": i, "text": text, "score": round(rnd.random(), 4)}) + "\n")
        out.append((f"shard-{s}", low, high, str(path)))
    return out


def time_cat(paths: list[str], dest: Path) -> float:
    t = time.perf_counter()
    with open(dest, "wb") as f:
        subprocess.run(["cat", *paths], stdout=f, check=True)
    return time.perf_counter() - t


CHILD = """
import json, os, sys, time
import numpy as np
from pathlib import Path
from gputui.rundir.manifests import write_manifest
from gputui.results.idcheck import ShardOutput, int_key
from gputui.results.merge import check_shard, merge_shards
shards = [ShardOutput(t, lo, hi, Path(p)) for t, lo, hi, p in json.loads(sys.argv[1])]
expected = np.arange(int(sys.argv[4]))  # as gputui reads integer ids from the input
checking = 0.0
if sys.argv[5] == "vouched":  # as the scheduler does when each shard finishes
    for s in shards:
        t = time.perf_counter()
        found, problems = check_shard(s, id_column="id", key=int_key, expected_ids=expected)
        checking = max(checking, time.perf_counter() - t)
        old = time.time() - 60
        os.utime(s.path, (old, old))
        write_manifest(s.path, task_id=s.task_id, low=s.low, high=s.high, scheduler_id="b", attempt=1, ids=found)
t = time.perf_counter()
s = merge_shards(shards, Path(sys.argv[2]), Path(sys.argv[3]), id_column="id", key=int_key, expected_ids=expected)
seconds = time.perf_counter() - t
for sh in shards:
    Path(str(sh.path) + ".done.json").unlink(missing_ok=True)
print(json.dumps({"seconds": seconds, "check": checking, "ok": s["ok"], "coverage": s["coverage"]}))
"""


def time_merge(shards, dest: Path, rows: int, mode: str) -> tuple[float, float, float, bool]:
    """One merge in a child process: (seconds inside merge_shards, the slowest shard's check as it
    finished, peak RSS MiB of the child, ok)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    args = [sys.executable, "-c", CHILD, json.dumps(shards), str(dest), str(dest) + ".json", str(rows), mode]
    res = subprocess.run(args, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["coverage"] == ("as each shard finished" if mode == "vouched" else "here"), got
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return got["seconds"], got["check"], max(rss, before) / 1024, got["ok"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--format", choices=["csv", "jsonl", "both"], default="csv")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    fmts = ["csv", "jsonl"] if a.format == "both" else [a.format]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        root = Path(d)
        for fmt in fmts:
            shards = make_shards(root, a.rows, a.shards, fmt)
            size = sum(os.path.getsize(p) for *_, p in shards)
            mb = size / 1e6
            cat = min(time_cat([p for *_, p in shards], root / f"cat.{fmt}") for _ in range(a.repeat))
            print(f"{fmt}: {a.rows} rows, {a.shards} shards, {mb:.0f} MB | cat {cat:.3f}s ({mb / cat:.0f} MB/s)")
            for mode, words in (("vouched", "checked as each shard finished"), ("here", "every shard read here")):
                runs = [time_merge(shards, root / f"merged.{fmt}", a.rows, mode) for _ in range(a.repeat)]
                merge = min(r[0] for r in runs)
                check = min(r[1] for r in runs)
                rss = max(r[2] for r in runs)
                extra = f" | each shard's check as it finished: {check:.3f}s at most" if mode == "vouched" else ""
                print(
                    f"  merge, {words}: {merge:.3f}s ({mb / merge:.0f} MB/s, ok={runs[0][3]}) | "
                    f"merge/cat throughput {cat / merge:.1%} | peak RSS {rss:.0f} MiB{extra}"
                )
            for p in root.iterdir():
                p.unlink()


if __name__ == "__main__":
    main()
