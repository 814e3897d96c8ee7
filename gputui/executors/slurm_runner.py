"""A Slurm job's batch step for one attempt: picks its element of the submission, runs the command as
a process tree of its own (node_runner.run), and records the end in the run directory.

    python -S -P .../slurm_runner.py RUN_DIR/slurm/batch-N.json      (sbatch --wrap; SLURM_ARRAY_TASK_ID picks)

It writes the attempt's `started` file first (the stand-in then knows the job ran) and its `exit` file
last, atomically, with the exit code or minus the signal that ended the command; both name the job, so a
stale job of a run directory that was deleted and made again cannot end a newer attempt. scancel's SIGTERM
reaches every process of the step: the runner survives it (it waits for the command, which got it
too) so the end is still recorded; Slurm's SIGKILL after KillWait ends everything.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(batch: str) -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from gputui.executors import node_runner

    with open(batch) as f:
        elements = json.load(f)
    e = elements[int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)]
    signal.signal(signal.SIGTERM, lambda *_: None)  # scancel: the command got it too; record how it ends
    element = os.environ.get("SLURM_ARRAY_TASK_ID")  # the job as squeue names it (and the stand-in knows it)
    job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{element}" if element else os.environ.get("SLURM_JOB_ID", "?")
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # Slurm's choice, as the command gets it
    _write(e["started"], json.dumps({"job": job, "node": os.uname().nodename, "pid": os.getpid(), "gpus": gpus}))
    code = node_runner.run(e["argv"], e["env"], e["log"], e["cwd"], e["signals"], e["grace"], where="Slurm node")
    _write(e["exit"], json.dumps({"exit": code, "job": job}))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
