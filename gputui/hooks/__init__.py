"""Worker hooks: a training script tells gputui how it is doing by appending JSON lines to a file.

gputui sets ``GPUTUI_EVENTS`` to a per-attempt events file. Each call appends one whole line with a
single ``os.write`` on an ``O_APPEND`` fd, so the reader never sees interleaved or torn lines from
threads and a crash loses at most the line being written. No pipes or sockets: nothing blocks the
training loop, and the file outlives the process for post-mortems. Outside gputui every call is a cheap
no-op, so scripts can keep the calls in unconditionally. Standard library only, because this module
is imported inside users' training environments.

Line format: ``{"t": <unix time>, "event": <kind>, ...}`` with kinds ``progress`` (done, total),
``metrics`` (step, values), ``phase`` (phase), ``healthy``, ``done`` (values) and ``failed`` (reason).
Non-finite floats are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``.

``resident_tasks()`` (hooks/resident.py) lets one process take task after task (``[job] resident = true``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import threading
import time
from typing import Any

from gputui.hooks.resident import ResidentTask, resident_tasks

__all__ = [
    "ENV_VAR",
    "enabled",
    "progress",
    "log_metrics",
    "phase",
    "mark_healthy",
    "mark_done",
    "mark_failed",
    "resident_tasks",
    "ResidentTask",
]

ENV_VAR = "GPUTUI_EVENTS"
_MAX_REASON = 4000  # keep a failure line small; the full traceback belongs in the job's log

_lock = threading.Lock()
_fd: int | None = None
_fd_path: str | None = None
_warned: set[str] = set()


def enabled() -> bool:
    """True when running under gputui (``GPUTUI_EVENTS`` is set and not empty)."""
    return bool(os.environ.get(ENV_VAR))


def progress(done: float, total: float | None = None) -> None:
    """Report `done` units of work out of `total` (None when unknown)."""
    if not os.environ.get(ENV_VAR):
        return
    d = _number(done, "done")
    if d is None:
        return
    _emit({"event": "progress", "done": d, "total": None if total is None else _number(total, "total")})


def log_metrics(step: int, **values: Any) -> None:
    """Report scalar metrics at `step`; non-numeric values are dropped with a one-time warning."""
    if not os.environ.get(ENV_VAR):
        return
    try:
        s = int(step)
    except (TypeError, ValueError):
        _warn("step", f"step must be an integer, got {step!r}; event dropped")
        return
    _emit({"event": "metrics", "step": s, "values": _numbers(values)})


def phase(name: str) -> None:
    """Say what the job is doing now: "train" (the default), or anything else ("eval", "checkpoint"),
    during which no new step is expected, so [health] stall_factor waits until phase("train") again."""
    if os.environ.get(ENV_VAR):
        _emit({"event": "phase", "phase": str(name)[:100]})


def mark_healthy() -> None:
    """Say the job got past its risky start (loaded data, first step ran)."""
    if os.environ.get(ENV_VAR):
        _emit({"event": "healthy"})


def mark_done(**metrics: Any) -> None:
    """Say the job finished its work, with its final metrics; synced to disk before returning."""
    if os.environ.get(ENV_VAR):
        _emit({"event": "done", "values": _numbers(metrics)}, sync=True)


def mark_failed(reason: str) -> None:
    """Say the job failed and why; synced to disk before returning."""
    if os.environ.get(ENV_VAR):
        _emit({"event": "failed", "reason": str(reason)[:_MAX_REASON]}, sync=True)


def _number(v: Any, name: str) -> Any:
    """A JSON-safe number: bool/int kept, floats and `.item()` scalars as float, non-finite as strings."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        if isinstance(v, numbers.Integral):  # numpy ints
            return int(v)
        if isinstance(v, numbers.Real):
            f = float(v)
        elif hasattr(v, "item"):  # torch / numpy / jax scalars, without importing them
            f = float(v.item())
        else:
            raise TypeError(type(v).__name__)
    except (TypeError, ValueError, RuntimeError) as e:
        _warn(f"value:{name}", f"{name}={v!r} is not a number ({e}); dropped")
        return None
    if math.isfinite(f):
        return f
    return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")


def _numbers(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        n = _number(v, k)
        if n is not None:
            out[k] = n
    return out


def _emit(record: dict[str, Any], *, sync: bool = False) -> None:
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    data = (json.dumps({"t": time.time(), **record}) + "\n").encode("utf-8")
    global _fd, _fd_path
    with _lock:
        try:
            if _fd is None or _fd_path != path:
                _close()
                _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                _fd_path = path
            n = os.write(_fd, data)
            while n < len(data):  # only on a nearly full disk; the lock keeps our own threads out
                data = data[n:]
                n = os.write(_fd, data)
            if sync:
                os.fsync(_fd)
        except OSError as e:
            _close()  # reopen on the next call: the folder may come back
            _warn("io", f"cannot write events to {path}: {e}; training continues")


def _close() -> None:
    global _fd, _fd_path
    if _fd is not None:
        try:
            os.close(_fd)
        except OSError:
            pass
    _fd, _fd_path = None, None


def _warn(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    try:
        print(f"gputui.hooks: {message}", file=sys.stderr, flush=True)
    except Exception:
        pass


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
