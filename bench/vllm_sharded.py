"""Where vLLM and NVIDIA GPUs are: samples per minute of the sharded continuation job (gputui's data
parallelism: one vLLM worker per GPU, each on its own id range) against one plain vLLM process over the
same prompts on one GPU, and the ratio to N x that process (the goal: within 5%).

    python bench/vllm_sharded.py --model PATH_OR_NAME [--prompts 20000] [--max-new-tokens 128]
                                 [--shards-per-gpu K [--resident]]

`--shards-per-gpu K` cuts the prompts into K shards per GPU (finer resume granularity); each loads the model
again, unless `--resident` (`[job] resident = true`): one worker per GPU then serves its K shards.

Both sides include loading the model, as a user's run does. Elsewhere it says why it cannot run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = """
import csv, sys, time
from vllm import LLM, SamplingParams
with open(sys.argv[1], newline="") as f:
    prompts = [r["prompt"] for r in csv.DictReader(f)]
llm = LLM(model=sys.argv[2], gpu_memory_utilization=0.85, seed=0)
out = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=int(sys.argv[3])), use_tqdm=False)
print(sum(len(o.outputs) for o in out))
"""


def gpus() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=int, default=20000)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--shards-per-gpu", type=int, default=1)
    ap.add_argument("--resident", action="store_true", help="[job] resident = true: a model load per GPU")
    a = ap.parse_args()
    n = gpus()
    if importlib.util.find_spec("vllm") is None or n == 0:
        print("needs vLLM and at least one NVIDIA GPU: pip install 'gputui[vllm]' on a GPU machine")
        return 2
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        prompts = root / "prompts.csv"
        prompts.write_text(
            "data_id,prompt\n"
            + "".join(f"{i},Write a short story about the number {i}.\n" for i in range(a.prompts))
        )
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", PLAIN, str(prompts), a.model, str(a.max_new_tokens)],
            check=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"},
        )
        plain = a.prompts / (time.perf_counter() - t) * 60
        command = (
            f"{sys.executable} -m gputui.workers.continuation --input {{input}} --id-column data_id --low {{low}} "
            f"--high {{high}} --output {{output}} --model {a.model} --engine vllm "
            f"--max-new-tokens {a.max_new_tokens} --gpu-memory-utilization 0.85"
        )
        job = root / "job.toml"
        job.write_text(
            f'[job]\nname = "bench"\ncommand = "{command}"\nresident = {str(a.resident).lower()}\n'
            f'[shards]\ninput = "prompts.csv"\nid_column = "data_id"\nnum_workers = {n * a.shards_per_gpu}\n'
            f"[resources]\ngpus_per_worker = 1\nmax_parallel = {n}\n"
            '[outputs]\npattern = "o_{low}_{high}.csv"\nmerged = "all.csv"\n'
        )
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gputui", "run", "--jobs", str(job), "--quiet"], check=True)
        sharded = a.prompts / (time.perf_counter() - t) * 60
    print(
        f"{a.prompts} prompts, {a.max_new_tokens} new tokens, model {a.model}: one vLLM process on one GPU "
        f"{plain:.0f} samples/min | gputui, {n} workers on {n} GPUs ({n * a.shards_per_gpu} shards"
        f"{', resident' if a.resident else ''}) {sharded:.0f} samples/min | "
        f"sharded / ({n} x one) = {sharded / (n * plain):.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
