"""The local stand-in for one attempt that runs on a cluster: the worker its waiter spawns and watches.

    python -S -P .../remote_task.py --kind ray --run-dir D --task T --attempt N --address A [--num-gpus N]
        --gpus G --grace S -- argv...
    python -S -P .../remote_task.py --kind slurm --run-dir D --task T --attempt N --scheduler ID
        (--job J | --error WHY) --grace S --                      (slurm_task.py: the job is submitted already)

Its waiter records it as the attempt's worker, so ownership, kills, pauses, adoption after a crash and
the journal treat it as the attempt. On Ray it asks the run's Ray bridge to run `argv` on the cluster with G
GPUs, turns the signals it gets into words in the attempt's signal file (SIGTERM -> TERM, SIGTSTP ->
STOP, SIGCONT -> CONT), which the runner on the node applies to the whole tree, and exits as the remote
command did (by the same signal, if a signal ended it). One starts per attempt, so it starts fast: its
waiter forks it (the command line is what `ps` shows and adoption recognises), having loaded everything it
needs with the keeper (the imports below), so a stand-in imports nothing (importing the bridge's client in
each one cost 12 ms of CPU, the largest part of an attempt's cost on Ray).
"""

from __future__ import annotations

import os
import signal
import sys

if __name__ == "__main__":  # run as a script (python -S -P): gputui is beside it, not installed maybe
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gputui.executors import ray_bridge, slurm_task  # noqa: E402 - found through the path set above

LOST = 255  # the bridge went away before the attempt's end was known: a failure, retried as one
_WORDS = {signal.SIGTERM: "TERM", signal.SIGINT: "TERM", signal.SIGHUP: "TERM", signal.SIGTSTP: "STOP"}
_WORDS[signal.SIGCONT] = "CONT"
_LOCAL = ("CUDA_VISIBLE_DEVICES",)  # the cluster chooses these; everything else goes along, as sbatch does


def command(executor, argv: list[str], run_dir, task_id: str, number: int, gpus: int, grace: float) -> list[str]:
    """The Ray stand-in's command line for an attempt of `argv` (`executor`: the job's ExecutorSpec)."""
    declared = [] if executor.num_gpus is None else ["--num-gpus", str(executor.num_gpus)]
    where = ["--kind", "ray", "--run-dir", str(run_dir), "--task", task_id, "--attempt", str(number)]
    where += ["--address", executor.address, *declared, "--gpus", str(gpus), "--grace", f"{grace:g}"]
    return [sys.executable, "-S", "-P", os.path.abspath(__file__), *where, "--", *argv]


def slurm_command(run_dir, task_id: str, number: int, grace: float, scheduler_id: str, job: str | None, error=""):
    """The Slurm stand-in's command line: for the submitted `job`, or saying why it could not be submitted."""
    where = ["--kind", "slurm", "--run-dir", str(run_dir), "--task", task_id, "--attempt", str(number)]
    where += ["--scheduler", scheduler_id, "--grace", f"{grace:g}"]
    where += ["--job", job] if job else ["--error", error]
    return [sys.executable, "-S", "-P", os.path.abspath(__file__), *where, "--"]


def is_standin(argv: list[str]) -> bool:
    """Whether `argv` is a stand-in's command line (which a waiter may run by forking itself)."""
    return argv[:4] == [sys.executable, "-S", "-P", os.path.abspath(__file__)]


def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--key value` pairs up to `--`, then the command (argparse alone would double the start-up time)."""
    cut = args.index("--")
    pairs = args[:cut]
    return {pairs[i].removeprefix("--"): pairs[i + 1] for i in range(0, len(pairs), 2)}, args[cut + 1 :]


def main(args: list[str]) -> int:
    o, argv = _options(args)
    if o["kind"] == "slurm":
        return _end_as(slurm_task.attend(o))
    run_dir, number = o["run-dir"], int(o["attempt"])
    num_gpus = int(o["num-gpus"]) if "num-gpus" in o else None
    signals = ray_bridge.signals_path(run_dir, o["task"], number)

    def forward(signum, _frame):
        with open(signals, "a") as f:
            f.write(_WORDS[signum] + "\n")

    for sig in _WORDS:
        signal.signal(sig, forward)
    try:
        sock = ray_bridge.ensure(run_dir, o["address"], num_gpus)
    except ray_bridge.RayUnavailable as e:
        print(f"gputui: {e}", flush=True)
        return 127
    request = {
        "op": "run",
        "task": o["task"],
        "n": number,
        "argv": argv,
        "env": {k: v for k, v in os.environ.items() if k not in _LOCAL and not k.startswith("RAY_")},
        "log": os.readlink("/proc/self/fd/1"),  # the attempt's log: its waiter opened it for us
        "cwd": os.getcwd(),
        "gpus": float(o["gpus"]),
        "grace": float(o["grace"]),
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
    return _end_as(int(answer.get("exit", LOST)))


def _end_as(code: int) -> int:
    if code < 0:  # ended by a signal on its node: end the same way, so the attempt is recorded as it was
        for sig in _WORDS:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
