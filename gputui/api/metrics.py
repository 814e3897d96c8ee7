"""`gputui metrics`: this machine's GPUs and gputui runs read for Prometheus, fresh on every scrape; printed,
served over HTTP (`/metrics`) or written atomically for node_exporter's textfile collector.

A scrape reads only what is cheap: the GPU probe (opened once and kept), and for each run its lock (is a
scheduler live?) and three reads of its state in one SQLite snapshot (task counts, meta, GPU use). Nothing is
written, locked or created in a run directory, and neither Textual nor the scheduler is imported. A run that
cannot be read is exported as `gputui_run_readable 0`, never as a failed scrape; GPUs that cannot be probed
leave `gputui_gpu_probe_ok 0` and the run series.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gputui.files.atomic import atomic_write_bytes
from gputui.gpus.detect import open_probe
from gputui.gpus.probe import GpuProbe, GpuSnapshot, NoGpuError
from gputui.rundir.meta import read_meta
from gputui.rundir.opening import open_existing
from gputui.rundir.paths import RunLock, RunPaths
from gputui.views.openmetrics import (
    OPENMETRICS_TYPE,
    PROMETHEUS_TYPE,
    RunSample,
    Scrape,
    exposition,
    wants_openmetrics,
)

__all__ = [
    "OPENMETRICS_TYPE",
    "PROMETHEUS_TYPE",
    "MetricsReader",
    "read_run",
    "start_server",
    "write_textfile",
]


class MetricsReader:
    """Reads the GPUs and the runs afresh at each `scrape()`; one scrape at a time (the probe is shared).

    `run_dirs`: these runs (each must be a run directory now: FileNotFoundError otherwise); None: the runs of
    this user on this machine (`list_runs`) that are live, or every one with `all_runs`. `say` is told each
    new problem once (a run that cannot be read, GPUs that cannot be probed), not at every scrape."""

    def __init__(
        self,
        run_dirs: Sequence[str | Path] | None = None,
        *,
        all_runs: bool = False,
        simulate: str | None = None,
        say: Callable[[str], None] | None = None,
        host: str | None = None,
    ) -> None:
        self.run_dirs = None if run_dirs is None else list(dict.fromkeys(Path(d).resolve() for d in run_dirs))
        for d in self.run_dirs or ():
            if not RunPaths(d).db.is_file():
                raise FileNotFoundError(f"{d} is not a gputui run directory (no state.db)")
        self.all_runs = all_runs
        self.host = host or socket.gethostname()
        self._say = say or (lambda _text: None)
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._names: dict[Path, str] = {}  # a run's job name as last read, for its series while unreadable
        self._probe: GpuProbe | None = None
        try:
            self._probe = open_probe(simulate)  # a bad spec: ValueError, at once
        except NoGpuError as e:
            self._tell("no GPU series: " + " ".join(line.strip() for line in str(e).splitlines()))

    def scrape(self) -> Scrape:
        with self._lock:
            started = time.perf_counter()
            gpus, ok = self._gpus()
            runs = [self._run(d) for d in self._targets()]
            return Scrape(gpus, runs, self.host, ok, time.perf_counter() - started)

    def text(self, *, openmetrics: bool = False) -> str:
        return exposition(self.scrape(), openmetrics=openmetrics)

    def close(self) -> None:
        with self._lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None

    def __enter__(self) -> MetricsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _gpus(self) -> tuple[tuple[GpuSnapshot, ...], bool]:
        if self._probe is None:
            return (), False
        try:
            return tuple(self._probe.snapshot()), True
        except Exception as e:  # a GPU fallen off the bus, a driver reloaded: this scrape goes on without them
            self._tell(f"GPUs could not be probed: {type(e).__name__}: {e}")
            return (), False

    def _targets(self) -> list[Path]:
        if self.run_dirs is not None:
            return self.run_dirs
        from gputui.api.runs import list_runs
        from gputui.views.run_list import ACTIVE

        try:
            return [r.run_dir for r in list_runs() if self.all_runs or r.state in ACTIVE]
        except Exception as e:  # the registry unreadable: this scrape has the GPUs only
            self._tell(f"the runs of this user could not be listed: {type(e).__name__}: {e}")
            return []

    def _run(self, run_dir: Path) -> RunSample:
        try:
            sample = read_run(run_dir)
        except Exception as e:  # gone, damaged, unreadable: said once, exported as unreadable
            self._tell(f"{run_dir}: cannot be read ({type(e).__name__}: {str(e)[:160]})")
            return RunSample(str(run_dir), self._names.get(run_dir, ""), readable=False)
        self._names[run_dir] = sample.job_name
        return sample

    def _tell(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self._say(text)


def read_run(run_dir: str | Path) -> RunSample:
    """A run's numbers for a scrape, of one moment of its state. Raises FileNotFoundError when it is no run."""
    paths, store = open_existing(run_dir, readonly=True)
    try:
        live = _scheduler_live(RunLock(paths))
        with store.snapshot():
            meta, counts, use = read_meta(store), store.status_counts(), store.gpu_use()
    finally:
        store.close()
    return RunSample(
        run_dir=os.fsdecode(paths.root),
        job_name=meta.job.name,
        counts=dict(counts),
        scheduler_live=live,
        gpu_seconds=None if use.gpu_seconds is None else round(use.gpu_seconds, 3),
        gpus_simulated=use.gpus_simulated,
        max_parallel=meta.max_parallel or meta.job.max_parallel,
    )


def _scheduler_live(lock: RunLock) -> bool:
    """Whether a scheduler drives the run (a control verb holding its lock for a moment is none)."""
    if not lock.is_live():
        return False
    return (lock.holder() or {}).get("role", "scheduler") == "scheduler"


def write_textfile(reader: MetricsReader, path: str | Path, *, openmetrics: bool = False) -> None:
    """The exposition written whole or not at all: a temp file beside `path` (a hidden `.tmp` name, which
    node_exporter's collector, reading `*.prom`, never reads) renamed over it. Not fsynced: it is written
    again at the next turn, and a rename is atomic without."""
    atomic_write_bytes(path, reader.text(openmetrics=openmetrics).encode("utf-8"), fsync=False)


# -- over HTTP --------------------------------------------------------------------------------------------
def start_server(reader: MetricsReader, host: str = "127.0.0.1", port: int = 0, *, loopback_names: bool = True):
    """Serve `/metrics` on HOST:PORT (0: a free port; `server.server_address` says which) from a thread;
    `server.shutdown()` then `server.server_close()` end it. Each scrape reads afresh; a scraper that asks
    for OpenMetrics (Accept) gets it, any other the 0.0.4 text format.

    `loopback_names` (for a server on loopback): a request whose Host header names anything but this machine
    (localhost, 127.0.0.1, [::1], any port: an SSH tunnel's too) is refused, so that a web page cannot read the
    run directories through a name it makes point here (DNS rebinding)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    class Handler(BaseHTTPRequestHandler):
        server_version = "gputui-metrics"
        timeout = 30  # a client that sends nothing does not hold a thread for ever

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _answer(self, *, with_body: bool) -> None:
            path = urlsplit(self.path).path
            if loopback_names and not names_this_machine(self.headers.get("Host")):
                body, ctype, code = b"refused: this server answers only to localhost\n", _PLAIN, 403
            elif path == "/metrics":
                om = wants_openmetrics(self.headers.get("Accept"))
                try:
                    body, ctype, code = reader.text(openmetrics=om).encode("utf-8"), _TYPES[om], 200
                except Exception as e:  # said to the scraper (its target goes down), the server goes on
                    body, ctype, code = f"gputui metrics: {type(e).__name__}: {e}\n".encode(), _PLAIN, 500
            elif path == "/":
                body, ctype, code = b"gputui metrics: scrape /metrics\n", _PLAIN, 200
            else:
                body, ctype, code = b"not found: gputui serves /metrics\n", _PLAIN, 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            """Quiet: a scrape every few seconds is not news."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = _family(host)

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="gputui-metrics", daemon=True).start()
    return server


_TYPES = {True: OPENMETRICS_TYPE, False: PROMETHEUS_TYPE}
_PLAIN = "text/plain; charset=utf-8"


def names_this_machine(host_header: str | None) -> bool:
    """Whether a Host header names loopback: localhost, 127.0.0.0/8 or [::1], with any port (none: a client
    too old to send one, which no browser is)."""
    if not host_header:
        return True
    name = host_header.strip().lower()
    if name.startswith("["):  # [::1]:9400
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (`::1`, `::`), else IPv4 (a name is looked up by the bind)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET
