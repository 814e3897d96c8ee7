"""A CPU stand-in for the vLLM continuation worker: same arguments, same output, no model download.

It continues each prompt with a word-bigram model built from the whole input (real, deterministic
work), processes only the ids in [low, high), prints progress, and writes its shard atomically.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from collections import defaultdict


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--low", type=int, required=True)
    p.add_argument("--high", type=int, required=True)
    p.add_argument("--max_new_tokens", type=int, default=12)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument(
        "--delay",
        type=float,
        default=float(os.environ.get("CONTINUE_TEXT_DELAY", "0.01")),
        help="seconds of simulated generation time per row",
    )
    args = p.parse_args()

    with open(args.input, newline="") as f:
        rows = list(csv.DictReader(f))
    model = _bigrams(r["prompt"] for r in rows)
    mine = [r for r in rows if args.low <= int(r["data_id"]) < args.high]
    print(
        f"shard [{args.low}, {args.high}): {len(mine)} rows, "
        f"{len({r['data_id'] for r in mine})} ids, GPUs {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}"
    )

    out_rows = []
    started = time.monotonic()
    for i, row in enumerate(mine, 1):
        rng = random.Random(f"{row['data_id']}:{row['prompt']}:{args.temperature}")
        out_rows.append(
            {
                "data_id": row["data_id"],
                "prompt": row["prompt"],
                "continuation": _continue(model, row["prompt"], args.max_new_tokens, rng),
            }
        )
        time.sleep(args.delay)
        if i % args.batch_size == 0 or i == len(mine):
            rate = i / max(time.monotonic() - started, 1e-9)
            print(f"processed {i}/{len(mine)} rows ({rate:.0f} rows/s)", flush=True)

    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, f"generation_results_data_{args.low}_to_{args.high}.csv")
    tmp = os.path.join(args.output, f".shard-{args.low}-{os.getpid()}.tmp")  # not mkstemp: its 0600 would stick
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["data_id", "prompt", "continuation"])
        w.writeheader()
        w.writerows(out_rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print(f"wrote {len(out_rows)} rows to {path}")
    return 0


def _bigrams(texts):
    model = defaultdict(list)
    for text in texts:
        words = text.split()
        for a, b in zip(words, words[1:], strict=False):
            model[a.lower()].append(b)
    return model


def _continue(model, prompt: str, n: int, rng: random.Random) -> str:
    word = prompt.split()[-1].lower() if prompt.split() else ""
    out = []
    for _ in range(n):
        choices = model.get(word)
        if not choices:
            word = rng.choice(list(model)) if model else "the"
            choices = model.get(word) or ["..."]
        word = rng.choice(choices)
        out.append(word)
        word = word.lower()
    return " ".join(out)


if __name__ == "__main__":
    sys.exit(main())
