"""A changed plan, in words: where two recorded plan definitions differ, and what a refusal says may change."""

from __future__ import annotations

import json
from pathlib import Path

from gputui.jobs.spec import JobSpec

SAFE_CHANGES = (
    "the command, env and params of work still to do, [resources], [retry], [alerts], stop_grace_s and "
    "[outputs].merged"
)


def what_changed(old: object, new: object, path: str = "") -> str | None:
    """The first place two plan definitions differ, as `path: was X, now Y`; None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            found = what_changed(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = what_changed(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if old == new:
        return None
    return f"{path or 'the plan'}: was {_short(old)}, now {_short(new)}"


def definition_changed(job: JobSpec, table: str, old: object, new: object, run_dir: Path, why: str) -> str:
    """The refusal of a job file whose `table` no longer plans what the run recorded (`why`: what would no
    longer match it)."""
    change = what_changed(old, new) or "its definition changed"
    return (
        f"{job.path}: {table} changed since {run_dir} started ({change}); {why} would no longer "
        f"match it, so this is refused.\n  Restore it, or start afresh with another --run-dir. What may change "
        f"safely between runs: {SAFE_CHANGES}."
    )


def _short(value: object) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
