"""`gputui merge` of a finished run against `cat` + fsync of the same shard files, both as a user runs them:
one process each, start-up included.

    python bench/merge.py [--rows 2000000] [--shards 8] [--format csv|jsonl|both] [--repeat 5]

A real run writes the shards first (`gputui run`: each shard's coverage checked as it finished, into its
done-manifest), from an input of `--rows` ids made an hour before the run, as a user's input is. Then,
interleaved, best of `--repeat`:
  cat      `cat shards > out && sync out`
  merge    `gputui merge --run-dir R` (what a user types after a run)
  verify   `gputui merge --run-dir R --verify` (every output hashed again against its manifest)
  here     merge_shards in one process, every shard read and its ids checked at merge time (no manifests):
           the merge's own throughput when it cannot trust the manifests (input ids given, not read)
Run it with PYTHONPATH pointing at another checkout to measure that one (a `--verify` it lacks shows n/a).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEN = r"""
import csv, json, random, sys
low, high, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog,", "said", "she;", '"quoted"',
         "text", "and", "more", "words", "here"]
rnd = random.Random(low)
with open(out, "w", newline="", encoding="utf-8") as f:
    if out.endswith(".csv"):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "text", "score"])
        w.writerows([i, " ".join(rnd.choices(WORDS, k=16))[:100], f"{rnd.random():.4f}"] for i in range(low, high))
    else:
        for i in range(low, high):
            text = " ".join(rnd.choices(WORDS, k=16))[:100]
            f.write(json.dumps({"id": i, "text": text, "score": round(rnd.random(), 4)}) + "\n")
"""

HERE = """
import json, sys, time
import numpy as np
from pathlib import Path
from gputui.results.idcheck import ShardOutput, int_key
from gputui.results.merge import merge_shards
shards = [ShardOutput(f"shard-{i}", 0, 0, Path(p)) for i, p in enumerate(json.loads(sys.argv[1]))]
for s in shards:
    lo, hi = Path(s.path).stem.split("_")[1:3]
    s.low, s.high = int(lo), int(hi)
expected = np.arange(int(sys.argv[3]))  # as gputui reads integer ids from the input
t = time.perf_counter()
s = merge_shards(shards, Path(sys.argv[2]), Path(sys.argv[2] + ".json"), id_column="id", key=int_key,
                 expected_ids=expected)
assert s["ok"] and s["coverage"] == "here", s["problems"]
print(time.perf_counter() - t)
"""


def make_run(root: Path, rows: int, shards: int, fmt: str) -> Path:
    """A finished run whose shards wrote `rows` rows in all; its run directory."""
    (root / "gen.py").write_text(GEN)
    ids = root / "ids.csv"
    ids.write_text("id\n" + "".join(f"{i}\n" for i in range(rows)))
    made = time.time() - 3600
    os.utime(ids, (made, made))
    (root / "job.toml").write_text(f"""
[job]
name = "m"
command = "{sys.executable} gen.py {{low}} {{high}} {{output}}"
[shards]
input = "ids.csv"
id_column = "id"
num_workers = {shards}
[resources]
gpus_per_worker = 0
max_parallel = 2
[outputs]
pattern = "out_{{low}}_{{high}}.{fmt}"
merged = "merged.{fmt}"
""")
    gputui("run", "--jobs", str(root / "job.toml"), "--quiet")
    return root / "runs" / "m"


def gputui(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gputui", *args], capture_output=True, text=True, check=True)


def timed(cmd: list[str]) -> float | None:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode == 2 and "unrecognized arguments" in r.stderr:
        return None  # a checkout without that option
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")
    return took


def here(outputs: list[str], dest: Path, rows: int) -> float:
    cmd = [sys.executable, "-c", HERE, json.dumps(outputs), str(dest), str(rows)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def best(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return min(got) if got else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--format", choices=["csv", "jsonl", "both"], default="csv")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    # A pip install leaves compiled bytecode; an editable checkout under PYTHONDONTWRITEBYTECODE would not.
    found = subprocess.run([sys.executable, "-c", "import gputui; print(gputui.__file__)"], capture_output=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(found.stdout.decode().strip()).parent)])
    for fmt in ["csv", "jsonl"] if a.format == "both" else [a.format]:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            root = Path(d)
            run = make_run(root, a.rows, a.shards, fmt)
            out = run / "outputs"
            shards = sorted(str(p) for p in out.glob(f"out_*.{fmt}"))
            bare = root / "bare"  # the same files without their manifests: read here
            bare.mkdir()
            for p in shards:
                shutil.copyfile(p, bare / Path(p).name)
            mb = sum(os.path.getsize(p) for p in shards) / 1e6
            cat_cmd = ["sh", "-c", 'cat "$@" > "$0" && sync "$0"', str(root / f"cat.{fmt}"), *shards]
            merge_cmd = [sys.executable, "-m", "gputui", "merge", "--run-dir", str(run)]
            times: dict[str, list[float | None]] = {"cat": [], "merge": [], "verify": [], "here": []}
            for _ in range(a.repeat):  # interleaved, so a busy moment of the machine hits all alike
                times["cat"].append(timed(cat_cmd))
                times["merge"].append(timed(merge_cmd))
                times["verify"].append(timed([*merge_cmd, "--verify"]))
                times["here"].append(here(sorted(str(p) for p in bare.iterdir()), root / f"here.{fmt}", a.rows))
            cat = best(times["cat"])
            print(f"{fmt}: {a.rows} rows, {len(shards)} shards, {mb:.1f} MB (best of {a.repeat}, interleaved)")
            print(f"  cat + sync:              {cat:7.3f} s ({mb / cat:5.0f} MB/s)")
            for name, words in (
                ("merge", "gputui merge:"),
                ("verify", "gputui merge --verify:"),
                ("here", "merge, ids read here:"),
            ):
                t = best(times[name])
                if t is None:
                    print(f"  {words:24} n/a")
                    continue
                speed = f"{cat / t:6.1%} of cat's speed ({t / cat:.2f}x)"
                print(f"  {words:24} {t:7.3f} s ({mb / t:5.0f} MB/s) | {speed}")
            print("  (here: inside one process, start-up and reading the input's ids not counted)")


if __name__ == "__main__":
    main()
