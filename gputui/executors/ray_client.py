"""The run's side of the Ray bridge (ray_bridge.py): find it or start it, hand it the run's records, ask it
for the cluster's capacity and its nodes' GPUs, and tell an attempt's runner on its node a word.

Loaded by every scheduler and app: what only the bridge or a bridge's start needs (selectors, fcntl,
subprocess, ray) is imported there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 120.0  # joining a cluster, or starting a private one, within this long


class RayUnavailable(RuntimeError):
    """Ray is not installed, or its cluster cannot be reached; the message says which and what to do."""


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / "ray"


def address_of(run_dir: Path, address: str, num_gpus: int | None) -> str:
    """The bridge's socket: an abstract name (no 108-character path limit), one per run directory and
    cluster. The directory's inode is part of it: one deleted and made again is another run, whose
    attempts must not reach the bridge of the old one (which records its own under the same names)."""
    try:
        st = os.stat(run_dir)
        inode = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        inode = ""
    key = f"{Path(run_dir).resolve()}\0{inode}\0{address}\0{num_gpus}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return f"\0gputui-ray-{digest}"


def signals_path(run_dir: Path, task_id: str, number: int) -> Path:
    return folder(run_dir) / f"{task_id}.attempt{number}.signals"


def connect(run_dir: Path, address: str, num_gpus: int | None) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(address_of(run_dir, address, num_gpus))
    except OSError:
        s.close()
        return None
    return s


def ensure(run_dir: Path, address: str, num_gpus: int | None) -> socket.socket:
    """A connection to the run's bridge, started first if none listens; RayUnavailable says why not."""
    s = connect(run_dir, address, num_gpus)
    if s is not None:
        return s
    import subprocess

    log = Path(run_dir) / "logs" / "ray-bridge.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    folder(run_dir).mkdir(parents=True, exist_ok=True)
    start = log.stat().st_size if log.exists() else 0
    argv = [sys.executable, "-P", "-m", "gputui.executors.ray_bridge", str(run_dir), address, str(num_gpus or "")]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=run_dir
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        s = connect(run_dir, address, num_gpus)
        if s is not None:
            return s
        if proc.poll() not in (None, 0):  # 0: another bridge holds the run; wait for it to listen
            raise RayUnavailable(_why(log, start) or f"the Ray bridge exited with status {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RayUnavailable(f"the Ray bridge did not start within {START_TIMEOUT_S:.0f}s (see {log})")


def _why(log: Path, offset: int) -> str:
    """The bridge's last word: the line it wrote before leaving."""
    with contextlib.suppress(OSError), open(log, "rb") as f:
        f.seek(offset)
        lines = [line for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("gputui:")]
        return (said or lines or [""])[-1].removeprefix("gputui: ")
    return ""


def ask(sock: socket.socket, request: dict, fds: list[int] | None = None) -> dict:
    """One request (with descriptors `fds`, if given), one answer: a JSON line each way."""
    data = json.dumps(request).encode() + b"\n"
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the Ray bridge closed the connection")
        data += chunk
    return json.loads(data)


def attach(sock: socket.socket, journal: int, exits: int, wake: int) -> tuple[int, int]:
    """Hand the bridge where to record attempts (the journal, its copy of exits, the scheduler's wake pipe);
    the bridge's (pid, start time), the waiter every attempt it runs is recorded under."""
    answer = ask(sock, {"op": "attach"}, [journal, exits, wake])
    return int(answer["pid"]), int(answer["start"])


def tell(signals: str | Path, word: str) -> None:
    """Ask the runner on the attempt's node to signal its whole tree (TERM, KILL, STOP or CONT); the runner
    reads the file from its start, so a word written before the command starts is applied as it starts."""
    with contextlib.suppress(OSError), open(signals, "a") as f:
        f.write(word + "\n")


def capacity(run_dir: Path, address: str, num_gpus: int | None) -> dict:
    """The cluster's GPUs, CPUs and nodes, as Ray counts them."""
    with ensure(run_dir, address, num_gpus) as s:
        found = ask(s, {"op": "capacity"})
    if "gpus" not in found:
        raise RayUnavailable(found.get("why") or f"the Ray bridge did not say what the cluster holds: {found}")
    return found


def node_gpus(run_dir: Path, address: str, num_gpus: int | None, simulate: str | None) -> list[dict] | None:
    """Every alive node's GPUs, as the run's bridge last read them: [{node, declared, gpus | why}] by node
    name; None when no bridge serves the run (it has ended). An app asks; it never starts a bridge."""
    s = connect(run_dir, address, num_gpus)
    if s is None:
        return None
    with s:
        try:
            return ask(s, {"op": "gpus", "simulate": simulate}).get("nodes", [])
        except (OSError, ValueError):  # it was leaving
            return None


def leave(run_dir: Path, address: str, num_gpus: int | None) -> None:
    """The run is over: its bridge (if one runs) leaves once nothing runs, stopping a private cluster."""
    s = connect(run_dir, address, num_gpus)
    if s is not None:
        with s, contextlib.suppress(OSError, ValueError):
            ask(s, {"op": "leave"})
