"""Slurm, through its own commands (sbatch, squeue, sinfo, scontrol, scancel): no daemon of ours.

    scheduler ──sbatch (one array per launch of shards)──► slurmctld ──► slurm_runner.py on a node
        waiter ──► stand-in (remote_task.py --kind slurm): waits for the attempt's exit file, asks squeue
                   now and then, turns signals into scontrol suspend/resume, hold/release, scancel

Each submission's elements (one per attempt) are written to `slurm/batch-<n>.json` in the run directory,
which the nodes share (as they share the logs); the runner on the node writes the attempt's `started`
and `exit` files there, because Slurm's accounting, which would know the exit status, is often off.
Every job carries the scheduler's UUID in its comment, and nothing is cancelled, held or suspended
unless squeue shows that comment on it. Jobs are submitted with --no-requeue, and the runner refuses to
run an attempt whose start or end is already recorded: a controller that restarts from state saved
before the job started would otherwise start it again. What squeue last said of a job (held, a node
drained, the controller not answering) is kept by its stand-in in the attempt's `squeue` file, for
`gputui status` and the app.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SUBMIT_WINDOW = 512  # attempts submitted at once when [resources].max_parallel is not given (each has a stand-in)
FILES = ("started", "exit", "signals")  # per attempt, in slurm/: what the runner on the node writes and reads
TIMEOUT_S = 60.0  # a busy slurmctld answers slowly; one that does not answer in a minute is down
NOT_STARTED = 75  # a stand-in's exit: Slurm dropped the job before it ran (a dependency failed): run it again
MUTE = "the Slurm controller does not answer"  # Slurm's "word" on a job while squeue fails
ORDINARY = ("", "None", "Priority", "Resources")  # why a job pends, when there is nothing worth a word


class SlurmUnavailable(RuntimeError):
    """Slurm's commands are missing or its controller does not answer."""


def comment(scheduler_id: str) -> str:
    return f"gputui:{scheduler_id}"


def folder(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "slurm"


def attempt_file(run_dir: str | os.PathLike[str], task_id: str, number: int, what: str) -> Path:
    """The attempt's `job` (its Slurm job id, written at submission), `started`, `exit`, `signals` or `squeue`
    (what its stand-in last heard from Slurm) file."""
    return folder(run_dir) / f"{task_id}.attempt{number}.{what}"


def started(run_dir: str | os.PathLike[str], task_id: str, number: int) -> dict | None:
    """Where and since when the attempt's job runs, from the `started` file its runner wrote on the node:
    {job, node, pid, gpus, since (the file's mtime)}; None while queued, or if the file is a stale job's."""
    path = attempt_file(run_dir, task_id, number, "started")
    try:
        with open(path) as f:
            found = json.load(f)
        job = attempt_file(run_dir, task_id, number, "job").read_text()
        since = os.stat(path).st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("job") != job:
        return None
    return found | {"since": since}


def standing(run_dir: str | os.PathLike[str], task_id: str, number: int) -> str:
    """Slurm's word on a queued attempt's job, as its stand-in last heard it (the `squeue` file): "held
    (JobHeldAdmin)", "node n1 drained: Duplicate jobid", "Dependency", "the Slurm controller does not answer";
    "" when there is nothing to say (not asked yet, running, or pending for Priority or Resources)."""
    try:
        with open(attempt_file(run_dir, task_id, number, "squeue")) as f:
            found = json.load(f)
        job = attempt_file(run_dir, task_id, number, "job").read_text()
    except (OSError, ValueError):
        return ""
    if not isinstance(found, dict) or found.get("job") != job:
        return ""
    if found.get("trouble"):
        return MUTE
    if found.get("state") != "PENDING":
        return ""
    reason, nodes = str(found.get("reason") or ""), str(found.get("nodes") or "")
    if "held" in reason.lower():
        return "; ".join(x for x in (f"held ({reason})", nodes) if x)
    return nodes or ("" if reason in ORDINARY else reason)  # a drained node says more than ReqNodeNotAvail


def shown(run_dir: str | os.PathLike[str], task_id: str, number: int) -> str:
    """A live attempt as the GPUs columns show it: `node:GPUs` once its job runs, else "queued", with
    Slurm's word on it where there is one ("queued: held (launch_failed_requeued_held)")."""
    found = started(run_dir, task_id, number)
    if found is not None:
        return placed(found)
    word = standing(run_dir, task_id, number)
    return f"queued: {word}" if word else "queued"


def placed(found: Mapping) -> str:
    """`node:GPUs`, as the GPUs columns show where an attempt runs on a cluster, from what its runner on the
    node recorded (`started` here, the log's first line on Ray: node_runner.placement)."""
    return f"{found.get('node', '?')}:{found.get('gpus') or '-'}"


def ask_runner(signals: str | os.PathLike[str], word: str) -> None:
    """Ask the attempt's runner on its node to signal the command's tree (`TERM`, `STOP`, `CONT`: a line
    in the attempt's `signals` file); OSError if it cannot be written."""
    with open(signals, "a") as f:
        f.write(word + "\n")


def forbid(run_dir: str | os.PathLike[str], task_id: str, number: int) -> None:
    """Ask the attempt's runner to end its tree, or, if its job has not started, to end before the command
    starts (TERM in the `signals` file): it holds whatever Slurm does later, even with its controller away."""
    ask_runner(attempt_file(run_dir, task_id, number, "signals"), "TERM")


def waiting_line(
    run_dir: str | os.PathLike[str], attempts: list[tuple[str, int]], leave: str = "Ctrl-C again to leave them"
) -> str:
    """What a stopping run waits for, for its attempts still on Slurm (their stand-ins cancel them), and
    how it stops waiting (`leave`)."""
    mute = sum(standing(run_dir, t, n) == MUTE for t, n in attempts)
    rest = len(attempts) - mute
    what = f"waiting for the Slurm controller to cancel {mute} job(s) (it does not answer)" if mute else ""
    if rest:
        what += f"{' and for ' if mute else 'waiting for '}{rest} Slurm job(s) to end"
    return f"{what}; {leave}: they are recorded and the next run finds them"


_children: set[subprocess.Popen] = set()  # Slurm commands under way in this process (see `abandon`)
_abandoned = False


def abandon() -> None:
    """Stop waiting for Slurm in this process: its commands under way are ended (they fail as if Slurm did
    not answer) and later ones fail at once: a second Ctrl-C while the controller does not answer. Safe in a
    signal handler: it takes no lock."""
    global _abandoned
    _abandoned = True
    for child in list(_children):
        with contextlib.suppress(OSError):
            child.send_signal(signal.SIGKILL)


def _run(argv: list[str], what: str) -> str:
    if shutil.which(argv[0]) is None:
        raise SlurmUnavailable(f"Slurm's `{argv[0]}` is not on PATH: install Slurm's client commands here")
    if _abandoned:
        raise SlurmUnavailable(f"{what}: given up on Slurm (Ctrl-C)")
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        _children.add(child)
        try:
            out, err = child.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise SlurmUnavailable(f"`{argv[0]}` did not answer in {TIMEOUT_S:g}s ({what})") from None
        except BaseException:  # a KeyboardInterrupt: the command must not be waited for
            child.kill()
            raise
        finally:
            _children.discard(child)
    if _abandoned:
        raise SlurmUnavailable(f"{what}: given up on Slurm (Ctrl-C)")
    if child.returncode != 0:
        said = (err or out).strip().splitlines()
        raise SlurmUnavailable(f"{what}: {said[-1] if said else f'`{argv[0]}` exited {child.returncode}'}")
    return out


@dataclass(frozen=True)
class Capacity:
    gpus: int  # in the partition
    node_gpus: int  # on its largest node (a task's GPUs are on one node)
    cpus: int
    nodes: int


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES, as sinfo prints it: `gpu:4`, `gpu:a100:2(S:0-1),gpu:v100:1`, `(null)`."""
    return sum(int(m) for m in re.findall(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)", gres))


def capacity(partition: str | None) -> Capacity:
    """The partition's nodes, GPUs and CPUs (sinfo); SlurmUnavailable when the controller does not answer."""
    where = ["-p", partition] if partition else []
    out = _run(["sinfo", "-h", "-N", *where, "-o", "%N|%G|%c"], f"cannot ask Slurm for partition {partition!r}")
    nodes: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        name, gres, cpus = (line.split("|") + ["", ""])[:3]
        nodes[name] = (gpu_count(gres), int(cpus) if cpus.isdigit() else 1)
    if not nodes:
        raise SlurmUnavailable(f"Slurm has no partition {partition!r} (or it has no nodes)" if partition else
                               "Slurm has no nodes")  # fmt: skip
    gpus = [g for g, _ in nodes.values()]
    return Capacity(sum(gpus), max(gpus), sum(c for _, c in nodes.values()), len(nodes))


def sbatch_args(
    *,
    name: str,
    scheduler_id: str,
    run_dir: str | os.PathLike[str],
    gpus: int,
    partition: str | None,
    extra: tuple[str, ...],
    elements: int,
    array: bool,
    throttle: int | None,
    after: tuple[str, ...] = (),
) -> list[str]:
    """sbatch's options for one submission (pure). `array`: the elements are one job array (one job
    otherwise: `elements` is 1); `throttle`: at most this many of them run at once (`%N`)."""
    output = folder(run_dir) / ("job-%A_%a.out" if array else "job-%j.out")  # Slurm's own messages
    args = ["sbatch", "--parsable", f"--job-name=gputui-{name}", f"--comment={comment(scheduler_id)}"]
    args += [f"--chdir={run_dir}", f"--output={output}", "--open-mode=append", "--kill-on-invalid-dep=yes"]
    args.append("--no-requeue")  # a node lost, a restarted controller: Slurm must not run an attempt twice
    if partition:
        args.append(f"--partition={partition}")
    if gpus:
        args.append(f"--gres=gpu:{gpus}")
    if array:
        args.append(f"--array=0-{elements - 1}" + (f"%{throttle}" if throttle else ""))
    if after:
        args.append(f"--dependency=afterok:{':'.join(after)}")
    return [*args, *extra]


def submit(args: list[str], batch: Path) -> str:
    """Submit the runner for `batch` with these sbatch options: the job id."""
    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm_runner.py")
    wrap = f"exec {sys.executable} -S -P {runner} {batch}"
    out = _run([*args, f"--wrap={wrap}"], "sbatch refused the job")
    return out.strip().split(";")[0]


def write_batch(run_dir: str | os.PathLike[str], elements: list[dict]) -> Path:
    """The elements of one submission, for the runner on the node: `slurm/batch-<n>.json` (a new n each
    time, made with O_EXCL so two writers never share one)."""
    d = folder(run_dir)
    d.mkdir(exist_ok=True)
    n = sum(name.startswith("batch-") for name in os.listdir(d))
    while True:
        path = d / f"batch-{n}.json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(elements, f)
        return path


@dataclass(frozen=True)
class JobState:
    state: str  # PENDING, RUNNING, SUSPENDED, COMPLETING, ... ("" when squeue no longer lists it)
    reason: str  # why it pends (Priority, Resources, Dependency, DependencyNeverSatisfied, JobHeldUser...)
    node: str
    comment: str
    partition: str = ""


def job_state(job: str) -> JobState | None:
    """What squeue says of one job (`123` or an array element `123_4`); None once it has left the queue.
    Its fixed-field output, not --json: Slurm 22.05's `squeue --json` ignores `-j` (it lists every job)
    and shows a pending array as one record, with no element to match."""
    try:
        out = _run(["squeue", "-h", "-j", job, "-o", "%T|%r|%N|%P|%k"], "squeue")
    except SlurmUnavailable as e:
        if "Invalid job id" in str(e):
            return None
        raise
    for line in out.splitlines():
        state, reason, node, partition, note = (line.split("|", 4) + ["", "", "", ""])[:5]
        return JobState(state, reason, node, note, partition)
    return None


def unwell_nodes(partition: str) -> str:
    """The partition's nodes that are drained, down or failing, with the reason given (`sinfo -R`):
    "node n1 drained: Duplicate jobid"; "" if none, or if Slurm does not answer."""
    try:
        out = _run(["sinfo", "-h", "-R", "-p", partition, "-o", "%N|%T|%E"], "sinfo")
    except SlurmUnavailable:
        return ""
    said = []
    for line in out.splitlines():
        nodes, state, why = (line.split("|", 2) + ["", ""])[:3]
        said.append(f"node {nodes} {state.rstrip('*').lower()}" + (f": {why}" if why.strip() else ""))
    return "; ".join(said)


def ours(job: str, scheduler_id: str) -> JobState | None:
    """The job's state if squeue lists it with our comment; None otherwise (gone, or not ours)."""
    found = job_state(job)
    return found if found is not None and found.comment == comment(scheduler_id) else None


def control(action: str, job: str) -> str | None:
    """`scontrol suspend|resume|uhold|release JOB`, or `scancel JOB`: None if done, else what Slurm said."""
    argv = ["scancel", job] if action == "cancel" else ["scontrol", action, job]
    try:
        _run(argv, f"{action} {job}")
    except SlurmUnavailable as e:
        return str(e)
    return None
