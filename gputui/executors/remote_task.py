"""The local stand-in for one attempt that runs on a cluster: the worker its waiter spawns and watches.

    python -m gputui.executors.remote_task --run-dir D --address A [--num-gpus N] --gpus G --grace S -- argv...

It carries the attempt's tags like any worker, so ownership, kills, pauses, adoption after a crash and
the journal treat it as the attempt: it asks the run's Ray bridge to run `argv` on the cluster with G
GPUs, turns the signals it gets into words in the attempt's signal file (SIGTERM -> TERM, SIGTSTP ->
STOP, SIGCONT -> CONT), which the runner on the node applies to the whole tree, and exits as the remote
command did (by the same signal, if a signal ended it). Light on purpose: no Ray here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from gputui.executors import ownership, ray_bridge

LOST = 255  # the bridge went away before the attempt's end was known: a failure, retried as one
_WORDS = {signal.SIGTERM: "TERM", signal.SIGINT: "TERM", signal.SIGHUP: "TERM", signal.SIGTSTP: "STOP"}
_WORDS[signal.SIGCONT] = "CONT"
_LOCAL = ("CUDA_VISIBLE_DEVICES",)  # the cluster chooses these; everything else goes along, as sbatch does


def command(executor, argv: list[str], run_dir: Path, gpus: int, grace: float) -> list[str]:
    """The stand-in's command line for an attempt of `argv` (`executor`: the job's ExecutorSpec)."""
    declared = [] if executor.num_gpus is None else ["--num-gpus", str(executor.num_gpus)]
    where = ["--run-dir", str(run_dir), "--address", executor.address, *declared]
    where += ["--gpus", str(gpus), "--grace", f"{grace:g}"]
    return [sys.executable, "-P", "-m", "gputui.executors.remote_task", *where, "--", *argv]


def main(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gputui-remote-task")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--address", default="auto")
    p.add_argument("--num-gpus", type=int, default=None)
    p.add_argument("--gpus", type=float, default=0)
    p.add_argument("--grace", type=float, default=10.0)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    a = p.parse_args(args)
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    task, number = os.environ[ownership.TAG_TASK], int(os.environ[ownership.TAG_ATTEMPT])
    signals = ray_bridge.signals_path(a.run_dir, task, number)

    def forward(signum, _frame):
        with open(signals, "a") as f:
            f.write(_WORDS[signum] + "\n")

    for sig in _WORDS:
        signal.signal(sig, forward)
    try:
        sock = ray_bridge.ensure(a.run_dir, a.address, a.num_gpus)
    except ray_bridge.RayUnavailable as e:
        print(f"gputui: {e}", flush=True)
        return 127
    request = {
        "op": "run",
        "task": task,
        "n": number,
        "argv": argv,
        "env": {k: v for k, v in os.environ.items() if k not in _LOCAL and not k.startswith("RAY_")},
        "log": os.readlink("/proc/self/fd/1"),  # the attempt's log: its waiter opened it for us
        "cwd": os.getcwd(),
        "gpus": a.gpus,
        "grace": a.grace,
        "signals": str(signals),
    }
    try:
        answer = ray_bridge.ask(sock, request)
    except (OSError, ValueError) as e:
        print(f"gputui: lost the Ray bridge while the attempt ran ({e}); its end is unknown", flush=True)
        forward(signal.SIGTERM, None)
        return LOST
    if answer.get("why"):
        print(f"gputui: {answer['why']}", flush=True)
    code = int(answer.get("exit", LOST))
    if code < 0:  # ended by a signal on its node: end the same way, so the attempt is recorded as it was
        for sig in _WORDS:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
