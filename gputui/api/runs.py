"""`gputui ls`: the runs of this user on this machine, found through the run registry (rundir/run_registry),
without being told where they are."""

from __future__ import annotations

from gputui.rundir import run_registry
from gputui.views.run_list import RunRow, newest_first, read_row

__all__ = ["RunRow", "list_runs"]


def list_runs() -> list[RunRow]:
    """Every recorded run, most recently active first. A run whose directory is gone is left out, and its
    entry removed from the registry."""
    rows = []
    for entry in run_registry.entries():
        row = read_row(entry)
        if row is None:
            run_registry.forget(entry)
        else:
            rows.append(row)
    return newest_first(rows)
