"""Throughput of `merge_shards` (coverage check on) against `cat` of the same shard files.

    python bench/merge.py [--rows 2000000] [--shards 8] [--format csv|jsonl|both] [--module gputui.results.merge]

Figures only: best of 3 for each, their ratio, and the merge's peak RSS (measured in a child process).
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
import json, sys, time, importlib
from pathlib import Path
mod = importlib.import_module(sys.argv[1])
shards = [mod.ShardOutput(t, lo, hi, Path(p)) for t, lo, hi, p in json.loads(sys.argv[2])]
key = getattr(mod, "int_key", lambda raw: int(str(raw).strip())) if sys.argv[5] == "finalize" else None
t = time.perf_counter()
s = mod.merge_shards(shards, Path(sys.argv[3]), Path(sys.argv[4]), id_column="id", key=key,
                     expected_ids=list(range(int(sys.argv[6]))))
print(json.dumps({"seconds": time.perf_counter() - t, "ok": s["ok"], "problems": s["problems"][:2]}))
"""


def time_merge(module: str, shards, dest: Path, rows: int, key: str) -> tuple[float, float, bool]:
    """One merge in a child process: (seconds inside merge_shards, peak RSS MiB of the child, ok)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    args = [
        sys.executable,
        "-c",
        CHILD,
        module,
        json.dumps(shards),
        str(dest),
        str(dest) + ".json",
        key,
        str(rows),
    ]
    res = subprocess.run(args, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return got["seconds"], max(rss, before) / 1024, got["ok"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--format", choices=["csv", "jsonl", "both"], default="csv")
    ap.add_argument("--module", default="gputui.results.merge", help="module with merge_shards, to time old code")
    ap.add_argument("--key", choices=["default", "finalize"], default="finalize", help="as gputui passes it")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    fmts = ["csv", "jsonl"] if a.format == "both" else [a.format]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        root = Path(d)
        for fmt in fmts:
            shards = make_shards(root, a.rows, a.shards, fmt)
            size = sum(os.path.getsize(p) for *_, p in shards)
            cat = min(time_cat([p for *_, p in shards], root / f"cat.{fmt}") for _ in range(a.repeat))
            runs = [time_merge(a.module, shards, root / f"merged.{fmt}", a.rows, a.key) for _ in range(a.repeat)]
            merge = min(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            print(
                f"{fmt}: {a.rows} rows, {a.shards} shards, {size / 1e6:.0f} MB | cat {cat:.3f}s "
                f"({size / cat / 1e6:.0f} MB/s) | merge {merge:.3f}s ({size / merge / 1e6:.0f} MB/s, "
                f"ok={runs[0][2]}) | merge/cat throughput {cat / merge:.1%} | merge peak RSS {rss:.0f} MiB"
            )
            for p in root.iterdir():
                p.unlink()


if __name__ == "__main__":
    main()
