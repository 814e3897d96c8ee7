"""Why did a worker fail? Classified from its exit status and the tail of its log."""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from gputui.executors.local import LOST_LOCALLY  # each executor says its own (Executor.lost_wording)
from gputui.text_safety import one_line

# Most specific first: an OOM traceback also contains "CUDA error" and "Traceback".
FAILURE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "cuda_oom",
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
            r"cudaErrorMemoryAllocation|out of memory on device",
            re.I,
        ),
    ),
    ("nccl", re.compile(r"NCCL (error|WARN)|ncclInternalError|ncclSystemError|NCCL timeout", re.I)),
    ("cuda_error", re.compile(r"CUDA error|CUDA_ERROR_|cudaError|device-side assert", re.I)),
    ("slurm", re.compile(r"\*\*\* (JOB|STEP) \S+ ON \S+ CANCELLED AT .*\*\*\*")),  # time limit, scancel...
)
_LABELS = {"cuda_oom": "CUDA out of memory", "nccl": "NCCL error", "cuda_error": "CUDA error", "slurm": "Slurm"}
_NOT_SUBMITTED = re.compile(r"^gputui: (cannot submit to Slurm: .*)$", re.M)
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*)$")


@dataclass(frozen=True)
class Failure:
    kind: str  # cuda_oom | nccl | cuda_error | slurm | exception | signal | not_found | exit_code | missing_output
    # | lost | not_submitted | time_limit
    reason: str  # one line for people


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify(exit_code: int | None, log_tail: str, lost: str = LOST_LOCALLY) -> Failure:
    """`exit_code`: negative (Python) or 128+N (shell) for death by signal N; None when unknown, for the
    reason `lost` gives."""
    for kind, pattern in FAILURE_PATTERNS:
        m = pattern.search(log_tail)
        if m:
            return Failure(kind, f"{_LABELS[kind]}: {_line_of(log_tail, m.start())}")
    if exit_code is None:
        return Failure("lost", f"exit status unknown ({lost})")
    if exit_code < 0 or 128 < exit_code <= 128 + 64:  # Python's -N, or the shell's 128+N
        signum = -exit_code if exit_code < 0 else exit_code - 128
        hint = " (out of host memory? check dmesg)" if signum == signal.SIGKILL else ""
        return Failure("signal", f"killed by {signal_name(signum)}{hint}")
    exc = _last_exception(log_tail)
    if exc:
        return Failure("exception", f"Python exception: {exc}")
    if exit_code == 127 and (submit := _NOT_SUBMITTED.search(log_tail)):  # a Slurm stand-in's, not a command's
        return Failure("not_submitted", clip_reason(submit.group(1)))
    if exit_code == 127:
        return Failure("not_found", f"command not found (exit 127): {_last_line(log_tail)}".rstrip(": "))
    return Failure(
        "exit_code", f"exit code {exit_code}" + (f": {_last_line(log_tail)}" if log_tail.strip() else "")
    )


def read_tail(path: str | os.PathLike[str], max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _line_of(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return clip_reason(text[start : end if end >= 0 else len(text)].strip())


def _last_exception(text: str) -> str | None:
    if "Traceback (most recent call last)" not in text:
        return None
    for line in reversed(text.splitlines()):
        m = _EXCEPTION_LINE.match(line.strip())
        if m:
            return clip_reason(m.group(1))
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return clip_reason(lines[-1]) if lines else ""


def clip_reason(s: str, n: int = 200) -> str:
    """A log line fit for a reason (`one_line`: an escape sequence a worker printed must not retitle or clear
    the terminal that shows the reason), at most `n` characters."""
    s = one_line(s)
    return s if len(s) <= n else s[: n - 1] + "…"
