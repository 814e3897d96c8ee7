"""A test worker: processes ids in [low, high) of a CSV and records every invocation.

Knobs (all optional) let tests make it slow, fail on given attempts, or spawn children that
escape into their own session, as torchrun ranks and vLLM engine processes do.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time


def record(path: str | None, **event) -> None:
    if not path:
        return
    event |= {
        "pid": os.getpid(),
        "t": time.time(),
        "attempt": int(os.environ.get("GPUTUI_ATTEMPT", "0")),
        "task": os.environ.get("GPUTUI_TASK_ID"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_order": os.environ.get("CUDA_DEVICE_ORDER"),
    }
    with open(path, "a") as f:  # O_APPEND: one small write per line, safe across processes
        f.write(json.dumps(event) + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--low", type=int, required=True)
    p.add_argument("--high", type=int, required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--record")
    p.add_argument("--fail-attempts", default="", help="comma list of attempt numbers that fail")
    p.add_argument("--fail-mode", default="exit", choices=["exit", "exception", "oom"])
    p.add_argument("--spawn-children", action="store_true", help="fork a child and a setsid grandchild")
    p.add_argument("--children-file")
    p.add_argument("--no-output", action="store_true")
    p.add_argument("--fail-early", action="store_true", help="fail before sleeping, not after")
    a = p.parse_args()

    record(a.record, event="start", low=a.low, high=a.high)
    print(f"start [{a.low}, {a.high})", flush=True)
    if a.spawn_children:
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        same_group = subprocess.Popen(sleeper)
        own_session = subprocess.Popen(sleeper, start_new_session=True)
        with open(a.children_file, "w") as f:
            json.dump([same_group.pid, own_session.pid], f)
    attempt = int(os.environ.get("GPUTUI_ATTEMPT", "0"))
    failing = str(attempt) in a.fail_attempts.split(",")
    if not (failing and a.fail_early):
        time.sleep(a.sleep)
    if failing:
        record(a.record, event="fail", low=a.low, high=a.high)
        if a.fail_mode == "exception":
            raise ValueError(f"bad row in shard [{a.low}, {a.high})")
        if a.fail_mode == "oom":
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
            return 1
        return 3
    if not a.no_output:
        with open(a.input, newline="") as f:
            rows = [r for r in csv.DictReader(f) if a.low <= int(r["data_id"]) < a.high]
        os.makedirs(a.output, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=a.output)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["data_id", "value"])
            w.writeheader()
            w.writerows({"data_id": r["data_id"], "value": r["value"].upper()} for r in rows)
        os.replace(tmp, os.path.join(a.output, f"out_{a.low}_{a.high}.csv"))
    record(a.record, event="finish", low=a.low, high=a.high)
    print(f"finish [{a.low}, {a.high})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
