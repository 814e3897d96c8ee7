"""The `gputui status` table (rich; core, no Textual)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text

from gputui.gpus.probe import GIB
from gputui.jobs.kinds.registry import for_tasks
from gputui.jobs.tasks import Status, TaskRecord
from gputui.results.report import energy_text, took
from gputui.rundir.records import AttemptRecord
from gputui.text_safety import visible
from gputui.views.waiting import unsaid_reason

STATUS_STYLE = {
    Status.PENDING: "dim",
    Status.RUNNING: "cyan",
    Status.PAUSED: "yellow",
    Status.RETRYING: "magenta",
    Status.DONE: "green",
    Status.FAILED: "bold red",
    Status.KILLED: "red",
    Status.SKIPPED: "dim red",
}
NEEDS_A_LOOK = (Status.FAILED, Status.RETRYING, Status.KILLED, Status.SKIPPED)


def status_table(
    tasks: Sequence[TaskRecord],
    attempts: Sequence[AttemptRecord],
    *,
    now: float,
    metric: str | None = None,
    placed: Mapping[str, str] | None = None,
    header: bool = True,
    live: bool = False,
) -> Table:
    """One row per task. Log paths are not in it (a narrow cell would break them up): see `log_lines`.
    `metric`: a sweep's metric, shown with each trial's rank (★: promoted to the next stage). `placed`: the
    GPUs cell of a task on a cluster (`node:GPUs`, or "queued: held (JobHeldAdmin)" from Slurm's word).
    `header`: False for the pages after the first of a long run's table. `live`: whether a scheduler runs the
    run (what a pending task without a reason of its own waits for)."""
    last = latest_attempts(attempts)
    gpu_figures = any(t.gpu_seconds for t in tasks)
    simulated = any(t.gpus_simulated for t in tasks)
    energy = gpu_figures and any(t.energy_j is not None for t in tasks)
    table = Table(box=None, pad_edge=False, header_style="bold", show_header=header)
    columns = ["task", for_tasks(t.kind for t in tasks).covers, "status", "tries", "GPUs", "exit", "time"]
    if metric is not None:
        columns += [metric, "rank"]
    if gpu_figures:
        columns += ["GPU-h", *(["sim energy" if simulated else "energy"] if energy else [])]
        columns += ["sim mem" if simulated else "peak mem"]
    id_width = max((len(t.id) for t in tasks), default=4)
    for col in (*columns, "reason"):  # folded, never cut: a narrow terminal gets taller cells
        table.add_column(
            col, overflow="fold", no_wrap=col in ("task", "status"), min_width=id_width if col == "task" else None
        )
    for t in tasks:
        a = last.get(t.id)
        duration = "" if a is None else took(a.elapsed(now))
        cells = [
            t.id,
            t.range_label,
            f"[{STATUS_STYLE.get(t.status, '')}]{t.status}[/]",
            f"{t.attempts}/{t.budget}",
            Text(visible((placed or {}).get(t.id) or ",".join(map(str, t.gpus)) or "-")),
            "" if t.exit_code is None else str(t.exit_code),
            duration,
        ]
        if metric is not None:
            rank = "" if t.rank is None else f"{t.rank}{' ★' if t.promoted else ''}"
            cells += ["" if t.metric is None else f"{t.metric:.6g}", rank]
        if gpu_figures:
            cells += [gpu_hours_text(t.gpu_seconds)]
            cells += [energy_text(t.energy_j, t.energy_estimated)] if energy else []
            cells += [memory_text(t.peak_memory)]
        # Text, not markup: a worker's reason is shown as written ("[/x]" would stop rich), controls visible.
        table.add_row(*cells, Text(visible(t.reason or t.note or unsaid_reason(t, live))))
    return table


def log_lines(tasks: Sequence[TaskRecord], attempts: Sequence[AttemptRecord]) -> list[str]:
    """'TASK log: PATH' for each task that needs a look (failed, retrying, killed), to print whole."""
    last = latest_attempts(attempts)
    return [f"{t.id} log: {last[t.id].log_path}" for t in tasks if t.status in NEEDS_A_LOOK and t.id in last]


def unlisted_line(unlisted: Mapping[str, int], listed: int) -> str:
    """What a long run's status leaves out of its table (`listed` rows), by status: '… and 99,950 more tasks:
    97,393 pending, 2,557 done (--all lists every task)'."""
    total = sum(unlisted.values())
    parts = ", ".join(f"{unlisted[s]:,} {s}" for s in Status.ALL if unlisted.get(s))
    head = f"… and {total:,} more task{'s' if total != 1 else ''}" if listed else f"{total:,} tasks"
    return f"{head}: {parts} (--all lists every task)"


def latest_attempts(attempts: Sequence[AttemptRecord]) -> dict[str, AttemptRecord]:
    last: dict[str, AttemptRecord] = {}
    for a in attempts:
        if a.task_id not in last or a.number > last[a.task_id].number:
            last[a.task_id] = a
    return last


def totals_line(totals: Mapping) -> str:
    """The run's GPU totals as `gputui status` says them under its table (`gpu_totals()`): GPU-hours, energy where
    measured, the largest peak memory; "" where no GPU time was measured."""
    if not totals.get("gpu_seconds"):
        return ""
    joules, estimated = totals.get("energy_j"), bool(totals.get("energy_estimated"))
    energy = "" if joules is None else f", energy {energy_text(joules, estimated)}"
    text = (
        f"GPU-hours {gpu_hours_text(totals['gpu_seconds'])}{energy}, largest peak memory of a task "
        f"{memory_text(totals.get('peak_memory'))}"
    )
    if totals.get("gpus_simulated"):
        what = "memory and energy" if joules is not None else "memory"
        text += f" (SIMULATED GPUs: {what} as simulated, not measured)"
    if estimated:
        text += " (~: energy estimated from power x time, a GPU without an energy counter)"
    return text


def task_energy_text(t: TaskRecord) -> str:
    """A task's energy as the app's task bar says it: `energy 12.3 Wh`, `sim energy ~0.42 Wh`; "" if unmeasured."""
    if t.energy_j is None:
        return ""
    return f"{'sim energy' if t.gpus_simulated else 'energy'} {energy_text(t.energy_j, t.energy_estimated)}"


def gpu_hours_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}"


def memory_text(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / GIB:.1f} GiB"
