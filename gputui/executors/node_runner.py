"""What runs on a cluster's node for one attempt (inside a Ray task, or a Slurm job's batch step): the
attempt's command, as a process tree of its own.

    ray task (num_gpus=G) / slurm batch step ──► run() on a node ──spawn──► the task's command (own session)
                                                   └── polls the attempt's signal file: STOP / CONT / TERM / KILL

The cluster sets CUDA_VISIBLE_DEVICES; the command gets it with the run's tags, so on every node
its processes carry the scheduler UUID, task id and attempt like local ones. Output goes to the
attempt's log in the run directory (a filesystem the nodes share, as Slurm's output files do), after a first
line saying where it runs. Signals arrive through the signal file, written by whoever acts on the attempt
(control verbs, the bridge, Slurm's stand-in), so the whole tree on its node is paused, resumed or ended,
not only the process the cluster knows: its process group, its descendants, and the processes carrying its
tags and the runner's mark, a child that left the session among them (node_tree.py says which, and why
nothing else). When run() ends, however it ends, what is left of the tree is killed; if the process running
it is killed (a Ray task cancelled with force, a Slurm job cancelled), the cluster ends its children, the
command's first process among them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

from gputui.executors import ownership
from gputui.executors.node_tree import TAG_RUNNER, NodeTree, new_mark

POLL_S = 0.05  # how often the command and the signal file are looked at
SIGNALS = {"STOP": signal.SIGSTOP, "CONT": signal.SIGCONT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}


def run(
    argv: list[str], env: dict[str, str], log: str, cwd: str, signals: str, grace: float, where: str = "Ray node"
) -> int:
    """The command's exit code, or minus the signal that ended it (as the local waiter records it). The log's
    first line says where it runs (`placement` reads it back: the app's GPUs column, the node's panel)."""
    full = {**os.environ, **env}
    full["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # the cluster's choice for this task
    mark = new_mark(full)
    full[TAG_RUNNER] = mark.runner  # what its processes carry wherever they go on the node
    node_id = _ray_node_id()
    with open(log, "ab", buffering=0) as out:
        if {"TERM", "KILL"} & set(_new_words(signals, 0)):  # ended while it waited in the cluster's queue
            out.write(b"gputui: ended before it started\n")
            return -signal.SIGTERM
        gpus = full["CUDA_VISIBLE_DEVICES"] or "none"
        on = f"{where} {socket.gethostname()} (pid {os.getpid()}" + (f", node id {node_id}" if node_id else "")
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        out.write(f"gputui: on {on}), GPUs {gpus}, since {since}\n".encode())
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a process group of its own: what it forks is in it from the start
            )
        except OSError as e:
            out.write(f"gputui: cannot run {argv[0]!r} in {cwd}: {e.strerror}\n".encode())
            return 127
    tree = NodeTree(ownership.ProcessRef(proc.pid, ownership.start_of(proc.pid) or 0), mark)
    try:
        return _watch(proc, tree, signals, grace)
    finally:
        tree.kill()  # nothing of the tree outlives its attempt


_PLACED = re.compile(r"gputui: on \w+ node (\S+) \(pid (\d+)(?:, node id (\w+))?\), GPUs (\S+), since (\S+)")


def placement(log: str) -> dict | None:
    """Where and since when an attempt runs, from its log's first line as run() wrote it: {node, pid, node_id,
    gpus, since (epoch seconds)}, or None while it is queued (a file written per attempt for this alone cost
    a fifth of a short task's work)."""
    try:
        with open(log, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace")
    except OSError:
        return None
    found = _PLACED.match(first)
    if found is None:
        return None
    node, pid, node_id, gpus, since = found.groups()
    try:
        started = datetime.datetime.fromisoformat(since).timestamp()
    except ValueError:
        return None
    gpus = "" if gpus == "none" else gpus
    return {"node": node, "pid": int(pid), "node_id": node_id or "", "gpus": gpus, "since": started}


def _ray_node_id() -> str:
    """The Ray node this runs on ("" outside Ray): hosts may hold several nodes, the panels tell them apart."""
    ray = sys.modules.get("ray")  # loaded in a Ray worker; never imported here
    try:
        return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""
    except Exception:  # an older or newer Ray without it: the host name alone
        return ""


def _watch(proc: subprocess.Popen, tree: NodeTree, signals: str, grace: float) -> int:
    try:
        ended = os.pidfd_open(proc.pid)  # readable the moment the command ends (Linux 5.3 and later)
    except (AttributeError, OSError):
        ended = None
    try:
        return _watch_until(proc, tree, ended, signals, grace)
    finally:
        if ended is not None:
            os.close(ended)


def _watch_until(proc: subprocess.Popen, tree: NodeTree, ended: int | None, signals: str, grace: float) -> int:
    seen, kill_at = 0, None
    while (code := proc.poll()) is None:
        for word in _new_words(signals, seen):
            seen += 1
            sig = SIGNALS.get(word)
            if sig is None:
                continue
            if sig == signal.SIGKILL:
                tree.kill()
                continue
            tree.signal(sig)
            if sig == signal.SIGSTOP:
                tree.signal(sig)  # what was forked while the first pass looked
            elif sig == signal.SIGTERM:
                tree.signal(signal.SIGCONT)  # a paused tree must run to act on it
                kill_at = time.monotonic() + grace if kill_at is None else kill_at
        if kill_at is not None and time.monotonic() >= kill_at:
            tree.kill()
            kill_at = float("inf")
        if ended is not None:
            select.select([ended], [], [], POLL_S)
        else:  # polls, with sleeps growing to POLL_S: a short command's end is seen a little late
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(POLL_S)
    return code


def _new_words(path: str, seen: int) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()[seen:]
    except OSError:
        return []


def probe_gpus(simulate: str | None) -> list[dict] | str:
    """The node's GPUs, as the app's panels need them (no processes: pids mean nothing off the node), or
    why they cannot be read (no NVML there). Light: one NVML read; run as a Ray task pinned to a node."""
    import dataclasses

    from gputui.gpus.detect import open_probe

    try:
        probe = open_probe(simulate)
        try:
            return [dataclasses.asdict(g) | {"processes": ()} for g in probe.snapshot()]
        finally:
            probe.close()
    except Exception as e:  # NoGpuError, a driver error: the panel says so
        return str(e).splitlines()[0] if str(e) else type(e).__name__
