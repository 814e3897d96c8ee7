"""What a job-table row says, apart from drawing it: the columns by width (or as the job kind lists them), each
cell's text, and which rows a filter and a sort show. Pure (no widget), so the table, the task bar and the tests
share it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.style import Style

from gputui.gpus.probe import GIB
from gputui.jobs.tasks import Status
from gputui.text_safety import one_line, visible
from gputui.tui import glyphs, modes
from gputui.views.executor_facts import queued_word
from gputui.views.kinds import Columns, table_columns, task_columns
from gputui.views.runview import TaskView
from gputui.views.status_view import STATUS_STYLE
from gputui.views.task_page import FILTERS as FILTER_STATUSES
from gputui.views.task_page import STATUS_ORDER

LAYOUTS = {  # by width: accounting columns from 150 cells, the task bar shows what narrow leaves out
    "full": (
        "id",
        "range",
        "GPUs",
        "status",
        "progress",
        "rate",
        "ETA",
        "tries",
        "elapsed",
        "GPU·h",
        "peak",
        "reason",
    ),
    "wide": ("id", "range", "GPUs", "status", "progress", "rate", "ETA", "tries", "elapsed", "reason"),
    "narrow": ("id", "GPUs", "status", "progress", "ETA", "elapsed", "reason"),
}
FULL_FROM, WIDE_FROM = 150, 120  # cells
WIDTHS = {
    "id": 9,
    "range": 12,
    "GPUs": 5,
    "status": 8,
    "rate": 8,
    "ETA": 7,
    "tries": 5,
    "elapsed": 7,
    "GPU·h": 6,
    "peak": 8,
}
SIZED = {  # columns sized to what they hold: (least, most) cells
    "id": (5, 14),
    "stage": (5, 12),
    "params": (6, 28),
    "parent": (6, 10),
    "after": (5, 24),
    "metric": (7, 10),
}
RANK_WIDTH = 4
BAR = {"full": 10, "wide": 10, "narrow": 5}
PROGRESS = {"full": 22, "wide": 22, "narrow": 14}
MIN_REASON = 12
PAD = 1  # cells on each side of a cell
FILTERS = tuple(FILTER_STATUSES)
_STATUS_ORDER = {s: i for i, s in enumerate(STATUS_ORDER)}
STATUS_STYLES = {status: Style.parse(style) for status, style in STATUS_STYLE.items()}


def hms(seconds: float | None) -> str:
    """'1:02:03', '2:03'; empty when unknown."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def duration(seconds: float | None, exact: bool = True) -> str:
    """'42s', '3m12s', '1h02m', '2d03h'. Not `exact` (a running task's age): whole minutes past the first, so
    a table of running tasks changes once a minute, not every second (the header's clock ticks instead)."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{m}m{s % 60:02d}s" if exact else f"{m}m"
    return f"{h}h{m % 60:02d}m" if h < 100 else f"{d}d{h % 24:02d}h"


def number(value: object) -> str:
    """A parameter or metric in few cells: 3e-4, 0.001 -> 1e-3, 0.9312, 32, 1e+06 -> 1e6."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 100_000 else number(float(value))
    if not math.isfinite(value):
        return str(value)
    plain = f"{value:.4g}"
    mantissa, _, exponent = f"{value:.3e}".partition("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    short = f"{mantissa}e{int(exponent)}"
    return short if len(short) < len(plain) else plain


def params_text(params: Mapping) -> str:
    """'lr=3e-4 bs=32'."""
    return visible(" ".join(f"{k}={number(v)}" for k, v in params.items()))


@dataclass(frozen=True)
class RowContext:
    """What a row needs besides its own task: the metric trials are ranked by, every task's status."""

    metric: str | None = None
    statuses: Mapping[str, str] = field(default_factory=dict)


def metric_value(view: TaskView, metric: str | None) -> float | None:
    """A trial's metric: as ranked once it settled, else the latest value it reported through hooks."""
    if view.task.metric is not None:
        return view.task.metric
    return None if metric is None else view.metrics.get(metric)


def rank_text(rank: int | None, promoted: bool) -> str:
    star = glyphs.now().star
    if rank is None:
        return star if promoted else ""
    return f"{rank} {star}" if promoted else str(rank)


def _kind_cells(view: TaskView, context: RowContext, columns: Sequence[str]) -> dict[str, str]:
    """The cells of the columns a task's kind lists besides every task's: a trial's stage, parameters, parent,
    metric and rank, a step's waits (and the reason of a task still waiting for others)."""
    t = view.task
    reason = one_line(t.reason) or view.unsaid
    statuses = context.statuses
    waiting = [d for d in t.after if statuses.get(d) != Status.DONE]
    value = metric_value(view, context.metric)
    cells = {
        "stage": str(t.info.get("stage") or ""),
        "params": params_text(t.info.get("params") or {}),
        "parent": str(t.info.get("parent_id") or ""),
        "metric": "" if value is None else number(value),
        "rank": rank_text(t.rank, t.promoted),
        "note": glyphs.now().sep.join(x for x in (reason, one_line(t.note)) if x),
        "after": ", ".join(f"{d}{glyphs.now().done}" if statuses.get(d) == Status.DONE else d for d in t.after),
        "reason": reason or (f"waits for {', '.join(waiting)}" if t.status == Status.PENDING and waiting else ""),
    }
    return {column: text for column, text in cells.items() if column in columns}


def row_cells(
    view: TaskView, now: float, layout: str = "wide", context: RowContext | None = None
) -> dict[str, str]:
    """What each column of one task's row says (the status column is styled by its value)."""
    t, p = view.task, view.progress
    width = BAR[layout]
    progress = ""
    if t.status == Status.RETRYING and t.next_try_at is not None:
        progress = f"next try in {hms(t.next_try_at - now)}"
    elif p is not None:
        filled = round(p.fraction * width)
        g = glyphs.now()
        progress = f"{g.block * filled}{g.shade * (width - filled)} {p.done}/{p.total}"
    elif t.status == Status.DONE:
        progress = glyphs.now().block * width + " done"
    elif view.placed == "":
        progress = f"queued: {queued_word(view.queued)}" if view.queued else "queued"  # submitted, not started
    running = t.status == Status.RUNNING
    rate = f"{p.rate:.1f}/s" if running and p is not None and p.rate else ""
    eta = hms(p.eta) if running and p is not None and p.eta is not None else ""
    if t.status == Status.PAUSED:
        rate = "paused"
    a = view.attempt
    elapsed = None if a is None else a.elapsed(now)  # `now`: the snapshot's clock.Stamp
    sim = "~" if t.gpus_simulated else ""  # simulated GPUs: not a real GPU's figures
    cells = {
        "id": t.id,
        "range": t.range_label,
        "GPUs": view.placed or ",".join(map(str, t.gpus)) or "-",
        "status": t.status,
        "progress": progress,
        "rate": rate,
        "ETA": eta,
        "tries": f"{t.attempts}/{t.budget}",
        "elapsed": duration(elapsed, exact=a is None or a.ended_at is not None),
        "GPU·h": "" if t.gpu_hours is None else f"{t.gpu_hours:.2f}{sim}",
        "peak": "" if not t.peak_memory else f"{t.peak_memory / GIB:.1f}G{sim}",
        "reason": one_line(t.reason) or view.unsaid,
    }
    fitted = task_columns(t.kind).fitted  # its kind's own columns (none: a shard's fixed layouts)
    if fitted:
        cells.update(_kind_cells(view, context or RowContext(), fitted))
    if view.queued and one_line(view.queued) != queued_word(view.queued):  # the rest of Slurm's word on it
        said = "note" if "note" in fitted else "reason"
        if one_line(view.queued) not in cells.get(said, ""):  # the waiting reason may say it already
            cells[said] = glyphs.now().sep.join(x for x in (one_line(view.queued), cells.get(said, "")) if x)
    return cells


def table_shape(views: Sequence[TaskView]) -> Columns:
    """The table's columns, as the kind of its tasks lists them (empty: a shard's fixed layouts by width)."""
    return table_columns(v.task.kind for v in views)


def sized_widths(columns: Columns, cells: Sequence[Mapping[str, str]], metric: str | None) -> dict[str, int]:
    """Widths of a kind's columns sized to what they hold (header included), within SIZED's bounds."""
    if not columns.fitted:
        return {}
    widths = {"rank": RANK_WIDTH}
    titles = {**columns.titles, "metric": metric or "metric"}
    for column in columns.fitted:
        if column in SIZED:
            least, most = SIZED[column]
            longest = max((cell_len(c.get(column, "")) for c in cells), default=0)
            widths[column] = max(least, min(most, max(longest, cell_len(titles.get(column, column)))))
    return widths


def fitted_widths(shape: Columns, layout: str, sized: Mapping[str, int], width: int) -> dict[str, int]:
    """The columns shown in `width` cells, each with its width: a shard's by the layout, a kind's own (sized
    to what they hold) leaving out those that give way, first to last, until the last (the note) has its
    least (a column the kind keeps by narrowing another, `narrows_for`, stays if that cut makes room); the
    last column takes the room left."""
    fixed = {**WIDTHS, "progress": PROGRESS[layout], **sized}
    shown = list(shape.fitted) if shape.fitted else list(LAYOUTS[layout])

    def need() -> int:
        return sum(fixed[c] + 2 * PAD for c in shown[:-1]) + MIN_REASON + 2 * PAD

    if shape.fitted:
        for column in shape.gives_way:
            if need() <= width:
                break
            cut = shape.narrows_for.get(column)
            if cut in shown and column in shown and need() - (fixed[cut] - SIZED[cut][0]) <= width:
                fixed[cut] -= need() - width
                break
            shown.remove(column)
        if need() > width and "params" in shown:
            fixed["params"] = max(SIZED["params"][0], fixed["params"] - (need() - width))
    flex = shown[-1]  # the reason (a trial's note): what room is left
    used = sum(fixed[c] + 2 * PAD for c in shown if c != flex)
    rest = max(MIN_REASON, width - used - 2 * PAD)
    return {c: fixed.get(c, rest) if c != flex else rest for c in shown}


def matches(view: TaskView, flt: str) -> bool:
    shown = FILTER_STATUSES.get(flt)
    return shown is None or view.task.status in shown


def ordered(views: Sequence[TaskView], flt: str, sort_by: str) -> list[str]:
    """Task ids shown, in order: the filter, then the sort (ties by plan order)."""
    shown = [v for v in views if matches(v, flt)]
    if sort_by == "status":
        shown.sort(key=lambda v: (_STATUS_ORDER.get(v.task.status, 99), v.task.index))
    elif sort_by == "elapsed":
        shown.sort(key=lambda v: (-(v.elapsed or 0.0), v.task.index))
    else:
        shown.sort(key=lambda v: v.task.index)
    return [v.task.id for v in shown]


def verb_acts(verb: str, status: str, mode: str) -> bool:
    """Whether `verb` does anything to a task in `status` while the app is in `mode`."""
    if verb == "pause":
        return mode == modes.LIVE and status in Status.LIVE
    if verb == "kill":
        return mode in (modes.LIVE, modes.FINISHED) and status not in Status.FINAL
    if verb == "retry":
        return mode in (modes.LIVE, modes.FINISHED) and status in (Status.FAILED, Status.KILLED, Status.RETRYING)
    return True
