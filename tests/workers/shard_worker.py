"""A test worker: processes ids in [low, high) of a CSV and records every invocation.

Knobs (all optional) let tests make it slow, fail on given attempts, or spawn children that
escape into their own session, as torchrun ranks and vLLM engine processes do.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
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
    p.add_argument("--fail-tasks", default="", help="task ids --fail-attempts is for (default: all)")
    p.add_argument("--spawn-children", action="store_true", help="fork a child and a setsid grandchild")
    p.add_argument("--children-file")
    p.add_argument("--no-output", action="store_true")
    p.add_argument(
        "--drop-first-attempts", default="", help="comma list of attempts whose output lacks its first id"
    )
    p.add_argument("--fail-early", action="store_true", help="fail before sleeping, not after")
    p.add_argument("--daemon-file", help="double-fork a daemon (setsid) that outlives the worker; write its pid")
    p.add_argument("--daemon-scrub", action="store_true", help="the daemon clears its environment (no tags)")
    p.add_argument("--daemon-stubborn", action="store_true", help="the daemon ignores SIGTERM")
    p.add_argument("--term-delay", type=float, default=0.0, help="on SIGTERM, take this long to exit")
    a = p.parse_args()
    if a.term_delay:
        signal.signal(signal.SIGTERM, lambda *_: (time.sleep(a.term_delay), sys.exit(143)))

    record(a.record, event="start", low=a.low, high=a.high)
    print(f"start [{a.low}, {a.high})", flush=True)
    if a.spawn_children:
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        same_group = subprocess.Popen(sleeper)
        own_session = subprocess.Popen(sleeper, start_new_session=True)
        with open(a.children_file, "w") as f:
            json.dump([same_group.pid, own_session.pid], f)
    if a.daemon_file:
        daemon(a.daemon_file, scrub=a.daemon_scrub, stubborn=a.daemon_stubborn)
    attempt = int(os.environ.get("GPUTUI_ATTEMPT", "0"))
    failing = str(attempt) in a.fail_attempts.split(",")
    if a.fail_tasks:
        failing = failing and os.environ.get("GPUTUI_TASK_ID") in a.fail_tasks.split(",")
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
        if str(attempt) in a.drop_first_attempts.split(","):
            rows = [r for r in rows if r["data_id"] != rows[0]["data_id"]]
        os.makedirs(a.output, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=a.output)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["data_id", "value"])
            w.writeheader()
            w.writerows({"data_id": r["data_id"], "value": r["value"].upper()} for r in rows)
        os.replace(tmp, os.path.join(a.output, f"out_{a.low}_{a.high}.csv"))
    # Printed before the record: a print that fails (a full disk under the log) fails the attempt, and a
    # "finish" on record then means the worker exits 0.
    print(f"finish [{a.low}, {a.high})", flush=True)
    record(a.record, event="finish", low=a.low, high=a.high)
    return 0


def daemon(pid_file: str, *, scrub: bool, stubborn: bool) -> None:
    """The classic double fork: the daemon's parent exits at once, so it is nobody's child of ours."""
    code = (
        "import os, signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if stubborn else "")
        + "open(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    )
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            env = {} if scrub else dict(os.environ)
            os.execve(sys.executable, [sys.executable, "-c", code, pid_file], env)
        os._exit(0)
    os.wait()
    deadline = time.time() + 10
    while not os.path.exists(pid_file) and time.time() < deadline:
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
