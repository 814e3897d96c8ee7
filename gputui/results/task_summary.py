"""Per-task result files built from a worker's events: metrics.csv (the curve) and summary.json (the verdict).

Both are written atomically so a report or a sweep table never reads half a file. summary.json is strict
JSON, as every JSON file the run writes: a number that is not finite (a diverged loss) is null, since strict
parsers refuse a bare `NaN`. metrics.csv, not JSON, writes it "nan", "inf" or "-inf" (floats to pandas and
any CSV reader). Metric names come from `worker_events.parse_line`, their control characters made
visible there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gputui.files.atomic import atomic_write_text, dumps_json

if TYPE_CHECKING:
    from gputui.hooks.reader import Event


def metric_rows(events: Iterable[Event]) -> tuple[list[str], list[tuple[int | None, dict[str, float]]]]:
    """Metric names in first-seen order, and (step, values) for every metrics event."""
    names: dict[str, None] = {}
    rows = []
    for ev in events:
        if ev.kind == "metrics":
            names.update(dict.fromkeys(ev.values))
            rows.append((ev.step, ev.values))
    return list(names), rows


def write_metrics_csv(events: Iterable[Event], path: str | os.PathLike[str], *, fsync: bool = True) -> None:
    """`step` then one column per metric name; one row per metrics event, empty where not reported."""
    names, rows = metric_rows(events)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", *names])
    for step, values in rows:
        w.writerow(["" if step is None else step, *(_cell(values.get(n)) for n in names)])
    atomic_write_text(path, buf.getvalue(), fsync=fsync)


def final_and_best(
    events: Iterable[Event], goal_by_metric: Mapping[str, str] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Last value per name, and best per name (min unless goal says "max"; NaN only when nothing else)."""
    goals = goal_by_metric or {}
    final: dict[str, float] = {}
    best: dict[str, float] = {}
    for ev in events:
        if ev.kind not in ("metrics", "done"):
            continue
        for name, v in ev.values.items():
            final[name] = v
            old = best.get(name)
            if old is None or math.isnan(old):
                best[name] = v
            elif not math.isnan(v):
                best[name] = max(old, v) if goals.get(name) == "max" else min(old, v)
    return final, best


def write_task_summary(
    path: str | os.PathLike[str],
    *,
    task_id: str,
    params: Mapping[str, Any],
    status: str,
    attempts: int,
    durations: Sequence[float],
    exit_code: int | None,
    events: Iterable[Event],
    goal_by_metric: Mapping[str, str] | None = None,
    fsync: bool = True,
) -> dict[str, Any]:
    """Write summary.json and return what was written."""
    final, best = final_and_best(events, goal_by_metric)
    summary = {
        "task_id": task_id,
        "status": status,
        "exit_code": exit_code,
        "attempts": attempts,
        "params": dict(params),
        "final_metrics": final,
        "best_metrics": best,
        "durations_s": [float(d) for d in durations],
        "total_duration_s": float(sum(durations)),
    }
    text = dumps_json(summary, indent=2)
    atomic_write_text(path, text + "\n", fsync=fsync)
    return json.loads(text)


def _cell(v: float | None) -> str:
    if v is None:
        return ""
    if math.isfinite(v):
        return repr(float(v))
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
