"""Start a run's scheduler as a detached background `gputui run`, so closing the app (or losing the
terminal) never stops the run, and another app or shell can attach to it later."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gputui.engine.rules.failures import read_tail
from gputui.rundir.paths import RunLock, RunPaths


class StartFailed(RuntimeError):
    pass


def _said(log_path: Path, start: int) -> str:
    """What this start wrote to the log (its error, every line of it; at most the last 2000 bytes)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        text = ""
    text = text[-2000:].strip() or read_tail(log_path, 2000).strip()
    return text or f"it exited at once; see {log_path}"


def start_scheduler(
    job_path: Path,
    run_dir: Path,
    simulate: str | None = None,
    timeout: float = 15.0,
    *,
    only_pending: bool = False,
) -> int:
    """Spawn `gputui run` in its own session (output to `scheduler.log`); returns its pid once it
    holds the run lock. Raises StartFailed with what it said (its error, whole) if it exits first."""
    paths = RunPaths(Path(run_dir).resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    log_path = paths.root / "scheduler.log"
    argv = [
        sys.executable,
        "-m",
        "gputui",
        "run",
        "--jobs",
        str(job_path),
        "--run-dir",
        str(paths.root),
        "--quiet",
    ]
    if simulate:
        argv += ["--simulate", simulate]
    if only_pending:
        argv.append("--only-pending")
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    lock = RunLock(paths)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if proc.returncode == 0:  # it ran to the end at once (everything was done already)
                return proc.pid
            raise StartFailed(_said(log_path, start))
        holder = lock.holder() or {}
        if lock.is_live() and holder.get("pid") == proc.pid:
            return proc.pid
        time.sleep(0.05)
    raise StartFailed(f"the scheduler did not start within {timeout:.0f}s; see {log_path}")
