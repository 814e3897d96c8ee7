"""A Slurm job's batch step for one attempt: picks its element of the submission, runs the command as
a process tree of its own (node_runner.run), and records the end in the run directory.

    python -S -P .../slurm_runner.py RUN_DIR/slurm/batch-N.json      (sbatch --wrap; SLURM_ARRAY_TASK_ID picks)

It writes the attempt's `started` file first (the stand-in then knows the job ran) and its `exit` file
last, atomically, with the exit code or minus the signal that ended it; both name the job, so a
stale job of a run directory that was deleted and made again cannot end a newer attempt. scancel's SIGTERM
reaches every process of the step: the runner survives it (it waits for the command, which got it
too) so the end is still recorded; Slurm's SIGKILL after KillWait ends everything.

An attempt runs once. A job Slurm starts a second time (a controller that crashed and recovered from
state saved before the job started; a requeue the site forces) finds its `started` or `exit` file
naming it: that execution runs nothing, leaves the recorded end as it is, and says so in the attempt's
log. The `started` file is claimed with a hard link, so two executions at once cannot both run it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _record(path: str, job: str) -> float | None:
    """When the runner of `job` wrote this `started` or `exit` file (its mtime); None if none names it."""
    try:
        with open(path) as f:
            found = json.load(f)
        return os.stat(path).st_mtime if isinstance(found, dict) and found.get("job") == job else None
    except (OSError, ValueError):
        return None


def _claim(path: str, text: str, job: str) -> float | None:
    """Write the `started` file unless this job's start is recorded already: then when it was. A link
    creates the file whole, or fails if it exists; a stale job's file (another job id) is replaced."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        before = _record(path, job)
        if before is not None:
            return before
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return None


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def refusal(e: dict, job: str, started: float | None, ended: float | None) -> str:
    """The line a second execution of an attempt writes, instead of running it."""
    number = re.search(r"\.attempt(\d+)\.\w+$", e["exit"])
    seen = [f"started {_when(started)}" if started else "", f"ended {_when(ended)}" if ended else ""]
    return (
        f"gputui: attempt {number.group(1) if number else '?'} of {e.get('task', '?')} already ran as Slurm "
        f"job {job} ({', '.join(x for x in seen if x)}); Slurm started it again (a controller that restarted "
        f"from older state, or a requeue) on {os.uname().nodename}: not running it twice"
    )


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
    where = json.dumps({"job": job, "node": os.uname().nodename, "pid": os.getpid(), "gpus": gpus})
    ended = _record(e["exit"], job)
    started = _record(e["started"], job) if ended is not None else _claim(e["started"], where, job)
    if started is not None or ended is not None:
        line = refusal(e, job, started, ended)
        print(line, flush=True)  # Slurm's output file for the job
        with open(e["log"], "a") as log:
            log.write(line + "\n")
        return 0
    code = node_runner.run(e["argv"], e["env"], e["log"], e["cwd"], e["signals"], e["grace"], where="Slurm node")
    _write(e["exit"], json.dumps({"exit": code, "job": job}))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
