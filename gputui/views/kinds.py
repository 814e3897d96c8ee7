"""What the screens show of a run's job kind, asked of the kind itself (gputui.jobs.kinds): its task table's
columns, whether the metrics chart is offered and comes first, the metric its tasks are ranked by. The app
reads these, so no screen names a kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gputui.jobs.kinds.base import Columns
from gputui.jobs.kinds.registry import for_task, for_tasks, named

__all__ = ["Columns", "chart_offer", "ranked_by", "table_columns", "task_columns"]


def table_columns(task_kinds: Iterable[str]) -> Columns:
    """The columns of a table of tasks of these kinds (a run's: one kind)."""
    return for_tasks(task_kinds).columns


def task_columns(task_kind: str) -> Columns:
    """The columns a task of `task_kind` fills."""
    return for_task(task_kind).columns


def chart_offer(task_kinds: Iterable[str]) -> tuple[bool, bool]:
    """(offered before any metric is reported, shown instead of the log by default) for a run of these tasks."""
    kind = for_tasks(task_kinds)
    return kind.charts, kind.chart_first


def ranked_by(meta: Mapping[str, Any]) -> str | None:
    """The metric a run ranks its tasks by, from what it recorded (None: it ranks none)."""
    return named(meta.get("job_kind")).ranked_by(meta)
