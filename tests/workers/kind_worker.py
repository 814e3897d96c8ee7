"""A fast CPU worker for sweep trials and pipeline steps: no torch, a metric known in advance.

Its metric is `--score` plus its parent's metric (read from `<init>/metric.txt`), so a trial's value says
which parent it was started from. It records every start and finish (task id, attempt, pid, --init) in a
shared file, one JSON line each, so tests can count how often each task ran and in which order.

    --mode hooks   report the metric through gputui.hooks (log_metrics + mark_done)   [default]
    --mode print   only print "val_acc=<value>" lines (the [sweep].metric_regex path)
    --mode both    hooks with the true value, and a misleading printed value (hooks must win)
    --mode peak    hooks, with twice the value first: its best value is not its last ([sweep].metric_mode)
    --mode silent  report nothing, exit 0
    --mode fail    exit 3 without reporting anything
    --gate PATH    wait while PATH exists before finishing (a test removes it to let the worker go on)
    --needs PATH   exit 4 unless PATH exists (a pipeline step reading what an earlier step wrote)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gputui import hooks


def record(path: str | None, event: str, **fields) -> None:
    if not path:
        return
    fields |= {
        "event": event,
        "task": os.environ.get("GPUTUI_TASK_ID"),
        "attempt": int(os.environ.get("GPUTUI_ATTEMPT", "0")),
        "pid": os.getpid(),
        "run_dir": os.environ.get("GPUTUI_RUN_DIR"),
        "t": time.time(),
    }
    with open(path, "a") as f:  # O_APPEND: one small write per line, safe across processes
        f.write(json.dumps(fields) + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--score", type=float, default=0.0)
    p.add_argument("--init", default="")
    p.add_argument("--out", required=True)
    p.add_argument("--record")
    p.add_argument("--mode", default="hooks", choices=["hooks", "print", "both", "peak", "silent", "fail"])
    p.add_argument("--gate")
    p.add_argument("--needs")
    p.add_argument("--sleep", type=float, default=0.0)
    a = p.parse_args()

    record(a.record, "start", init=a.init, out=a.out)
    print(f"start score={a.score} init={a.init!r}", flush=True)
    parent = Path(a.init) / "metric.txt" if a.init else None
    value = a.score + (float(parent.read_text()) if parent is not None and parent.is_file() else 0.0)
    time.sleep(a.sleep)
    while a.gate and os.path.exists(a.gate):
        time.sleep(0.02)
    if a.needs and not os.path.exists(a.needs):
        print(f"missing {a.needs}", flush=True)
        record(a.record, "fail")
        return 4
    if a.mode == "fail":
        print("failing on purpose", flush=True)
        record(a.record, "fail")
        return 3
    if a.mode in ("hooks", "both"):
        hooks.log_metrics(1, val_acc=value / 2)
        hooks.log_metrics(2, val_acc=value)
        hooks.mark_done(val_acc=value)
    if a.mode == "peak":
        hooks.log_metrics(1, val_acc=value * 2)
        hooks.log_metrics(2, val_acc=value)
        hooks.mark_done(val_acc=value)
    if a.mode == "print":
        print(f"step 1 val_acc={value / 2}", flush=True)
        print(f"step 2 val_acc={value}", flush=True)
    if a.mode == "both":
        print(f"val_acc={value + 100}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metric.txt").write_text(repr(value))
    record(a.record, "finish", value=value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
