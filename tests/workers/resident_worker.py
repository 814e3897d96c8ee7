"""A test worker that stays resident: one process takes shard after shard through gputui.hooks.resident_tasks,
recording each shard it serves with its pid (and its one "load"), so tests see which process served which
shard. Outside resident mode it runs its one shard from the command line, as any worker does.

Knobs: --sleep per shard; --fail TASK:ATTEMPT,... fails those attempts (task.fail, the worker goes on);
--die TASK:ATTEMPT,... ends the process mid-shard (exit 3); --stall TASK:ATTEMPT,... waits while --stall-file
exists (a test kills or pauses it meanwhile); --linger stays after its last task, deaf to SIGTERM.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import tempfile
import time

from gputui import hooks


def record(path: str, **event) -> None:
    event |= {"pid": os.getpid(), "t": time.time()}
    with open(path, "a") as f:  # O_APPEND: one small write per line, safe across processes
        f.write(json.dumps(event) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--low", type=int, required=True)
    p.add_argument("--high", type=int, required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--fail", default="")
    p.add_argument("--die", default="")
    p.add_argument("--stall", default="", help="TASK:ATTEMPT,... that wait while --stall-file exists")
    p.add_argument("--stall-file", default="")
    p.add_argument("--linger", action="store_true", help="after its last task, ignore SIGTERM and stay")
    return p


def main() -> int:
    p = parser()
    first = p.parse_args()
    record(first.record, event="load")  # the "model", loaded once per process
    for task in hooks.resident_tasks():
        a = p.parse_args(task.args)
        me = f"{task.task_id}:{task.attempt}"
        record(a.record, event="start", task=task.task_id, attempt=task.attempt, low=a.low, high=a.high,
               env_task=os.environ.get("GPUTUI_TASK_ID"), values_low=task.values.get("low"),
               gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
        print(f"shard {task.task_id} [{a.low}, {a.high}) attempt {task.attempt} on pid {os.getpid()}", flush=True)
        hooks.progress(0, a.high - a.low)
        time.sleep(a.sleep)
        while me in a.stall.split(",") and os.path.exists(a.stall_file):  # a test kills or pauses it meanwhile
            time.sleep(0.02)
        if me in a.die.split(","):
            print(f"dying in {me}", flush=True)
            os._exit(3)
        if me in a.fail.split(","):
            print(f"failing {me}", flush=True)
            record(a.record, event="fail", task=task.task_id, attempt=task.attempt)
            task.fail(f"asked to fail {me}")
            continue
        with open(a.input, newline="") as f:
            rows = [r for r in csv.DictReader(f) if a.low <= int(r["data_id"]) < a.high]
        os.makedirs(os.path.dirname(a.output), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(a.output))
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["data_id", "value"])
            w.writeheader()
            w.writerows({"data_id": r["data_id"], "value": r["value"].upper()} for r in rows)
        os.replace(tmp, a.output)
        hooks.progress(a.high - a.low, a.high - a.low)
        record(a.record, event="finish", task=task.task_id, attempt=task.attempt)
        print(f"finished {task.task_id}", flush=True)
    if first.linger:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record(first.record, event="linger")
        time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
