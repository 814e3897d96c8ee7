"""A Ray head of its own on 127.0.0.1 for tests and benchmarks: started with declared GPUs, stopped
without touching any other Ray on the machine."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's node address: 127.0.0.1, not the LAN's
    "RAY_AUTH_MODE": "token",  # a token of our own, whatever ~/.ray holds
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(gpus: int = 4, cpus: int = 4) -> Iterator[str]:
    """`ray start --head` with `gpus` declared GPUs on loopback (RAY_ENV must be in os.environ); its
    address. Stopped, and its folder removed, after."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    start = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", f"--num-gpus={gpus}", f"--num-cpus={cpus}",
        f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]  # fmt: skip
    r = subprocess.run(start, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_cluster(temp, f"127.0.0.1:{port}")
        shutil.rmtree(temp, ignore_errors=True)


def stop_cluster(temp: str, address: str) -> None:
    """End this head and the bridges that joined it, and no other Ray on the machine (which `ray stop`
    would end too): its processes name its temp folder or its address, the rest are their children."""

    assert temp.startswith("/tmp/ray") and address.startswith("127.0.0.1:"), (temp, address)  # never match all

    pattern = re.compile(f"{re.escape(temp)}(?![^/ ])|{re.escape(address)}(?!\\d)")

    def named(cmdline: list[str]) -> bool:
        return pattern.search(" ".join(cmdline)) is not None

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = [p for p in psutil.process_iter(["cmdline"]) if named(p.info["cmdline"] or []) and p.pid not in me]
    procs = set(roots)
    for p in roots:
        with contextlib.suppress(psutil.Error):
            procs.update(p.children(recursive=True))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(list(procs), timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
