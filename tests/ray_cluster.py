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


@contextlib.contextmanager
def environment() -> Iterator[None]:
    """RAY_ENV in os.environ, so every Ray process started meanwhile (heads, bridges, drivers) inherits it."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


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


# Two nodes on one machine: `ray start --address` rewrites 127.0.0.1 to the LAN address (which nothing
# listens on), so the nodes are started with Ray's own test helper, in a process of their own.
_NODES = """
import signal, sys, time
from ray.cluster_utils import Cluster
temp, nodes, gpus, cpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
head = {"num_gpus": gpus, "num_cpus": cpus, "node_ip_address": "127.0.0.1", "include_dashboard": False}
cluster = Cluster(initialize_head=True, head_node_args=head | {"temp_dir": temp})
for _ in range(nodes - 1):
    cluster.add_node(num_gpus=gpus, num_cpus=cpus, node_ip_address="127.0.0.1")
signal.signal(signal.SIGTERM, lambda *_: (cluster.shutdown(), sys.exit(0)))
print(cluster.address, flush=True)
while True:
    time.sleep(1)
"""


@contextlib.contextmanager
def ray_nodes(nodes: int = 2, gpus: int = 2, cpus: int = 2) -> Iterator[str]:
    """A cluster of `nodes` nodes on loopback, each with `gpus` declared GPUs (RAY_ENV must be in
    os.environ); its address. Stopped, and its folder removed, after."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    argv = [sys.executable, "-c", _NODES, temp, str(nodes), str(gpus), str(cpus)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    address = ""
    try:
        address = proc.stdout.readline().strip()
        if not address.startswith("127.0.0.1:"):
            raise RuntimeError(f"the Ray nodes did not start (exit {proc.wait(30)})")
        yield address
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if address.startswith("127.0.0.1:"):
            stop_cluster(temp, address)  # whatever the helper left: only this cluster's processes
        proc.kill()
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
