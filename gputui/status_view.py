"""The `gputui status` table (rich; core, no Textual)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from gputui.records import AttemptRecord, Status, TaskRecord

STATUS_STYLE = {
    Status.PENDING: "dim",
    Status.RUNNING: "cyan",
    Status.PAUSED: "yellow",
    Status.RETRYING: "magenta",
    Status.DONE: "green",
    Status.FAILED: "bold red",
    Status.KILLED: "red",
}


def status_table(tasks: Sequence[TaskRecord], attempts: Sequence[AttemptRecord], *, now: float) -> Table:
    last = {a.task_id: a for a in attempts}
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("task", "range", "status", "attempts", "GPUs", "exit", "time", "reason / log"):
        table.add_column(col, no_wrap=col != "reason / log")
    for t in tasks:
        a = last.get(t.id)
        took = ""
        if a is not None:
            took = f"{(a.ended_at or now) - a.started_at:.1f}s"
        reason = t.reason or ""
        if t.status in (Status.FAILED, Status.RETRYING, Status.KILLED) and a is not None:
            reason = f"{reason}  ({a.log_path})"
        table.add_row(
            t.id,
            t.range_label,
            f"[{STATUS_STYLE.get(t.status, '')}]{t.status}[/]",
            f"{t.attempts}/{t.budget}",
            ",".join(map(str, t.gpus)) or "-",
            "" if t.exit_code is None else str(t.exit_code),
            took,
            reason,
        )
    return table
