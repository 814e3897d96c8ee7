"""Run summaries: one JSON for tools, one short Markdown page a person can take in at a glance."""

from __future__ import annotations

import datetime as _dt
import signal
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gputui import clock
from gputui.files.atomic import atomic_write_json, atomic_write_text
from gputui.gpus.probe import GIB
from gputui.jobs.kinds.registry import KINDS, for_task
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.text_safety import one_line, visible

REASON_WIDTH = 80  # table cells are cut here; the Failures section has the full text


def took(seconds: float) -> str:
    """'42.0 s', '3m 05s', '2h 07m': a duration as the status table and report.md write it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def build_summary(
    *,
    job_name: str,
    run_dir: str,
    scheduler_id: str,
    tasks: list[TaskRecord],
    attempts: list[AttemptRecord],
    merge: dict | None = None,
    now: float | None = None,
    sweep: dict | None = None,
    run_failed: str | None = None,
) -> dict:
    """Everything the report shows, as plain JSON-able data.

    `now` stands in for the end of attempts still running, so a report taken mid-run shows time so far.
    """
    now = clock.now() if now is None else now
    by_task: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in attempts:
        by_task[a.task_id].append(a)

    counts = dict.fromkeys(Status.ALL, 0)
    for t in tasks:
        counts[t.status] = counts.get(t.status, 0) + 1

    rows = []
    for t in sorted(tasks, key=lambda t: (t.index, t.id)):
        details = [_attempt(a, now) for a in sorted(by_task.get(t.id, []), key=lambda a: a.number)]
        durations = [d["duration"] for d in details]
        gpu = gpu_totals(by_task.get(t.id, []))
        rows.append(
            {
                "id": t.id,
                "index": t.index,
                "kind": t.kind,
                "label": t.range_label,
                "info": dict(t.info),
                "after": list(t.after),
                "metric": t.metric,
                "rank": t.rank,
                "promoted": t.promoted,
                "note": t.note and one_line(t.note),  # rows older than the sanitiser too
                "range": [t.low, t.high],
                "count": t.count,
                "status": t.status,
                "attempts": t.attempts,
                "budget": t.budget,
                "gpus": list(t.gpus),
                "exit_code": t.exit_code,
                "reason": t.reason and one_line(t.reason),
                "started_at": _iso(t.started_at),
                "ended_at": _iso(t.ended_at),
                "attempt_durations": durations,
                "duration": round(sum(durations), 3) if durations else None,
                "last_log": details[-1]["log_path"] if details else None,
                **gpu,
                "attempt_details": details,
            }
        )

    starts = [a.started_at for a in attempts] + [t.started_at for t in tasks if t.started_at is not None]
    ends = [a.ended_at for a in attempts if a.ended_at is not None]
    ends += [t.ended_at for t in tasks if t.ended_at is not None]
    running = any(t.status in Status.LIVE for t in tasks) or any(a.ended_at is None for a in attempts)
    first_start = min(starts) if starts else None
    last_end = max(ends) if ends else None
    until = now if running else last_end
    wall = round(clock.between(first_start, until), 3) if first_start is not None and until is not None else None

    return {
        "job": job_name,
        "run_dir": str(run_dir),
        "scheduler_id": scheduler_id,
        "generated_at": _iso(now),
        "running": running,
        "total_tasks": len(tasks),
        "counts": counts,
        "retries": sum(max(0, t.attempts - 1) for t in tasks),
        "started_at": _iso(first_start),
        "ended_at": None if running else _iso(last_end),
        "wall_seconds": wall,
        "busy_seconds": round(sum(r["duration"] or 0 for r in rows), 3),
        **gpu_totals(attempts),
        "tasks": rows,
        "merge": merge,
        "sweep": sweep,  # {"metric", "goal", "top_k", "metric_mode"} of a sweep job
        "run_failed": run_failed,  # why the run could not succeed (a stage with no trial ranked)
    }


def _attempt(a: AttemptRecord, now: float) -> dict:
    return {
        "number": a.number,
        "status": a.status,
        "gpus": list(a.gpus),
        "exit_code": a.exit_code,
        "reason": a.reason and one_line(a.reason),
        "started": _iso(a.started_at),
        "ended": _iso(a.ended_at),
        "duration": round(a.elapsed(now), 3),  # never following a step of the wall clock (gputui.clock)
        "log_path": a.log_path,
        "gpu_seconds": a.gpu_seconds,
        "peak_memory": a.peak_memory,
    }


def gpu_totals(records: Sequence[AttemptRecord | TaskRecord]) -> dict:
    """GPU time summed over the attempts (or tasks), and the most memory any one of them used (None: not
    measured), as summary.json and `gputui status --json` both give them."""
    seconds = [r.gpu_seconds for r in records if r.gpu_seconds is not None]
    peaks = [r.peak_memory for r in records if r.peak_memory is not None]
    total = round(sum(seconds), 3) if seconds else None
    peak = max(peaks) if peaks else None
    return {
        "gpu_seconds": total,
        "gpu_hours": None if total is None else round(total / 3600, 2),
        "peak_memory": peak,
        "peak_memory_gib": None if peak is None else round(peak / GIB, 2),
        "gpus_simulated": any(r.gpus_simulated for r in records),
    }


def render_report(summary: dict) -> str:
    """Outcome first, then the table, then only what needs attention: failures and merge problems."""
    tasks = summary.get("tasks", [])
    lines = [f"# {summary.get('job', 'job')}: run report", "", _outcome(summary), ""]
    facts = [f"Run dir `{summary.get('run_dir')}`", f"scheduler `{summary.get('scheduler_id')}`"]
    if summary.get("started_at"):
        facts.append(f"started {summary['started_at']}")
    facts.append(f"report {summary.get('generated_at')}")
    lines += [" · ".join(facts), ""]
    gpu_columns = bool(summary.get("gpu_seconds"))
    if gpu_columns:
        lines += [_gpu_line(summary), ""]

    if tasks:
        extra = " GPU-hours | Peak GPU memory |" if gpu_columns else ""
        lines.append(f"| Task | Covers | Status | Attempts | Duration | Exit |{extra} Reason |")
        lines.append("|---|---|---|---|---|---|" + ("---|---|" if gpu_columns else "") + "---|")
        for t in tasks:
            cells = [
                t["id"],
                _label(t),
                t["status"],
                f"{t['attempts']}/{t['budget']}",
                _seconds(t.get("duration")),
                _exit(t.get("exit_code")),
                *([_hours(t.get("gpu_hours")), _gib(t.get("peak_memory"))] if gpu_columns else []),
                _cut(t.get("reason") or ""),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")

    failed = [t for t in tasks if t["status"] in (Status.FAILED, Status.KILLED, Status.SKIPPED)]
    if failed:
        lines += ["## Failures", ""]
        for t in failed:
            exit_text = f", exit {_exit(t['exit_code'])}" if t.get("exit_code") is not None else ""
            lines.append(
                f"- **{t['id']}** `{_label(t)}` {t['status']} after {t['attempts']}/{t['budget']} "
                f"attempt(s){exit_text}: {one_line(t.get('reason') or 'no reason recorded')}"
            )
            if t.get("last_log"):
                lines.append(f"  - last log: `{t['last_log']}`")
        lines.append("")

    for kind in KINDS.values():  # each kind's own section (a sweep's rankings, a pipeline's steps)
        lines += kind.report_section(summary, _MARKDOWN)

    merge = summary.get("merge")
    if merge is not None:
        lines += ["## Merge", ""]
        n_shards = len(merge.get("shards", []))
        if merge.get("ok"):
            lines.append(
                f"OK: {merge.get('total_rows', 0):,} rows from {n_shards} shard(s) into `{merge.get('merged')}`."
                + _error_rows(merge)
            )
        else:
            problems = merge.get("problems", [])
            lines.append(f"Not merged: {len(problems)} problem(s); any earlier merged file is untouched.")
            lines.append("")
            lines += [f"- {one_line(str(p))}" for p in problems]
        lines.append("")
    # Old state may hold a worker's raw escape sequences: `cat report.md` must not act on them.
    return visible("\n".join(lines), keep="\n")


def write_reports(folder: Path, summary: dict) -> tuple[Path, Path]:
    folder = Path(folder)
    json_path, md_path = folder / "summary.json", folder / "report.md"
    atomic_write_json(json_path, summary, indent=None)  # thousands of tasks: the C encoder, not pretty-printing
    atomic_write_text(md_path, render_report(summary))
    return json_path, md_path


def _outcome(summary: dict) -> str:
    """E.g. "3/4 shards done in 12.3 s; 1 failed; 2 retries. Merged 1,200 rows into `out.csv`."."""
    counts = summary.get("counts", {})
    total = summary.get("total_tasks", 0)
    nouns = {for_task(t.get("kind")).noun for t in summary.get("tasks", [])}
    word = f"{next(iter(nouns))}s" if len(nouns) == 1 else "tasks"
    text = f"{counts.get(Status.DONE, 0)}/{total} {word} done"
    if summary.get("wall_seconds") is not None:
        text += f" in {_seconds(summary['wall_seconds'])}"
        if summary.get("running"):
            text += " so far"
    unfinished = (
        Status.FAILED,
        Status.KILLED,
        Status.SKIPPED,
        Status.RUNNING,
        Status.PAUSED,
        Status.RETRYING,
        Status.PENDING,
    )
    others = [f"{counts[s]} {s}" for s in unfinished if counts.get(s)]
    if others:
        text += "; " + ", ".join(others)
    retries = summary.get("retries", 0)
    if retries:
        text += f"; {retries} retr{'y' if retries == 1 else 'ies'}"
    text += "."
    if summary.get("run_failed"):
        text += f" The run failed: {summary['run_failed']}."
    merge = summary.get("merge")
    if merge is not None:
        if merge.get("ok"):
            merged = f" Merged {merge.get('total_rows', 0):,} rows into `{merge.get('merged')}`."
            text += merged + _error_rows(merge)
        else:
            n = len(merge.get("problems", []))
            text += f" Merge refused: {n} problem(s), see below."
    return f"**Outcome:** {text}"


def _error_rows(merge: dict) -> str:
    """What the merge sentence adds when the shards' workers reported error rows (the continuation worker's
    prompts it could not continue), e.g. ' 3 of them are error rows (...).'; "" when none."""
    n = merge.get("error_rows")
    if not isinstance(n, int) or n <= 0:
        return ""
    return f' {n:,} of them {"is an error row" if n == 1 else "are error rows"} (finish_reason "error: ...").'


def _label(t: dict) -> str:
    return t.get("label") or t["id"]  # what the task covers (TaskRecord.range_label): a range, a trial's params


class _Markdown:
    """The report's rules for a table's cells, handed to each kind's section (jobs/kinds/base.Markdown)."""

    @staticmethod
    def row(cells) -> str:
        return "| " + " | ".join(_cell(c) for c in cells) + " |"

    @staticmethod
    def cut(text: str) -> str:
        return _cut(text)

    @staticmethod
    def seconds(value: Any) -> str:
        return _seconds(value)


_MARKDOWN = _Markdown()


def _gpu_line(summary: dict) -> str:
    """E.g. "**GPU time:** 1.25 GPU-hours; largest peak memory of a task 12.0 GiB (simulated GPUs ...)"."""
    text = f"**GPU time:** {_hours(summary.get('gpu_hours'))} GPU-hours"
    if summary.get("peak_memory") is not None:
        text += f"; largest peak memory of a task {_gib(summary['peak_memory'])} (summed over its GPUs)"
    if summary.get("gpus_simulated"):
        text += " — SIMULATED GPUs: time is real, memory is what the simulation attributes, not a measurement"
    return text + "."


def _hours(hours: Any) -> str:
    return "-" if hours is None else f"{float(hours):.2f}"


def _gib(nbytes: Any) -> str:
    return "-" if nbytes is None else f"{nbytes / GIB:.1f} GiB"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _seconds(s: Any) -> str:
    return "-" if s is None else took(float(s))


def _exit(code: int | None) -> str:
    """Negative codes are signals; their names (SIGKILL: likely the OOM killer) say more than -9."""
    if code is None:
        return ""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def _cut(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"


def _cell(value: Any) -> str:
    return one_line(str(value)).replace("|", "\\|")
