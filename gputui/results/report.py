"""Run summaries: one JSON for tools, one short Markdown page a person can take in at a glance."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import signal
from array import array
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gputui import clock
from gputui.files.atomic import atomic_write_chunks, atomic_write_json, atomic_write_text, dumps_json
from gputui.gpus.probe import GIB
from gputui.jobs.kinds.registry import KINDS, for_task
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.text_safety import one_line, visible

if TYPE_CHECKING:
    from gputui.rundir.store import GpuUse

REASON_WIDTH = 80  # table cells are cut here; the Failures section has the full text
LIST_CAP = 1000  # report.md shows at most this many tasks in each table or list; summary.json has them all
_FAILED = (Status.FAILED, Status.KILLED, Status.SKIPPED)  # the statuses report.md's Failures lists


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
    A run's own summary is built a page of tasks at a time instead (finalize.write_summary, with SummaryTally).
    """
    now = clock.now() if now is None else now
    by_task: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in attempts:
        by_task[a.task_id].append(a)
    tally = SummaryTally(now)
    rows = []
    for t in sorted(tasks, key=lambda t: (t.index, t.id)):
        rows.append(tally.add(t, by_task.pop(t.id, [])))
    for orphans in by_task.values():  # attempts of no task listed: counted in the run's times all the same
        tally.add_attempts(orphans)
    head = tally.head(job_name=job_name, run_dir=run_dir, scheduler_id=scheduler_id)
    head.update(gpu_totals(attempts))  # summed in the order the store gives them
    return {**head, "tasks": rows, **summary_tail(merge=merge, sweep=sweep, run_failed=run_failed)}


def summary_tail(*, merge: dict | None, sweep: dict | None, run_failed: str | None) -> dict:
    """What summary.json says after its tasks."""
    return {
        "merge": merge,
        "sweep": sweep,  # {"metric", "goal", "top_k", "metric_mode"} of a sweep job
        "run_failed": run_failed,  # why the run could not succeed (a stage with no trial ranked)
    }


class SummaryTally:
    """What summary.json says of the run as a whole, added up a task at a time (a run of 100,000 tasks is
    never held whole): `add` gives each task's row of summary.json's "tasks", `head` what comes before them."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.counts = dict.fromkeys(Status.ALL, 0)
        self.total = self.retries = 0
        self.durations = array("d")  # each task's, summed once at the end as sum() over a list would
        self.gpu_seconds = array("d")
        self.peak: int | None = None
        self.simulated = False
        self.energy = array("d")  # each attempt's joules, where measured
        self.energy_estimated = False
        # The run's first start and last end: an attempt's (a clock.Stamp) is preferred to its task's on a tie
        self.attempt_start: float | None = None
        self.task_start: float | None = None
        self.attempt_end: float | None = None
        self.task_end: float | None = None
        self.running = False

    def add(self, t: TaskRecord, attempts: Sequence[AttemptRecord]) -> dict:
        """`t`'s row; `attempts`: its attempts, any order."""
        attempts = sorted(attempts, key=lambda a: a.number)
        self.add_attempts(attempts)
        self.total += 1
        self.counts[t.status] = self.counts.get(t.status, 0) + 1
        self.retries += max(0, t.attempts - 1)
        if t.started_at is not None and (self.task_start is None or t.started_at < self.task_start):
            self.task_start = t.started_at
        if t.ended_at is not None and (self.task_end is None or t.ended_at > self.task_end):
            self.task_end = t.ended_at
        self.running = self.running or t.status in Status.LIVE
        row = task_row(t, attempts, self.now)
        self.durations.append(row["duration"] or 0)
        return row

    def add_attempts(self, attempts: Sequence[AttemptRecord]) -> None:
        for a in attempts:
            if self.attempt_start is None or a.started_at < self.attempt_start:
                self.attempt_start = a.started_at
            if a.ended_at is None:
                self.running = True
            elif self.attempt_end is None or a.ended_at > self.attempt_end:
                self.attempt_end = a.ended_at
            if a.gpu_seconds is not None:
                self.gpu_seconds.append(a.gpu_seconds)
            if a.peak_memory is not None and (self.peak is None or a.peak_memory > self.peak):
                self.peak = a.peak_memory
            self.simulated = self.simulated or a.gpus_simulated
            if a.energy_j is not None:
                self.energy.append(a.energy_j)
                self.energy_estimated = self.energy_estimated or a.energy_estimated

    def head(self, *, job_name: str, run_dir: str, scheduler_id: str) -> dict:
        """summary.json's keys before "tasks", in their order."""
        first_start = _first(min, self.attempt_start, self.task_start)
        last_end = _first(max, self.attempt_end, self.task_end)
        until = self.now if self.running else last_end
        wall = (
            round(clock.between(first_start, until), 3) if first_start is not None and until is not None else None
        )
        total = round(sum(self.gpu_seconds), 3) if self.gpu_seconds else None
        return {
            "job": job_name,
            "run_dir": str(run_dir),
            "scheduler_id": scheduler_id,
            "generated_at": _iso(self.now),
            "running": self.running,
            "total_tasks": self.total,
            "counts": self.counts,
            "retries": self.retries,
            "started_at": _iso(first_start),
            "ended_at": None if self.running else _iso(last_end),
            "wall_seconds": wall,
            "busy_seconds": round(sum(self.durations), 3),
            "gpu_seconds": total,
            "gpu_hours": None if total is None else round(total / 3600, 2),
            "peak_memory": self.peak,
            "peak_memory_gib": None if self.peak is None else round(self.peak / GIB, 2),
            "gpus_simulated": self.simulated,
            **_energy_totals(sum(self.energy) if self.energy else None, self.energy_estimated),
        }


def _first(pick, attempt_value, task_value):
    """min or max of the two that are not None; the attempt's on a tie (min and max keep the first)."""
    values = [v for v in (attempt_value, task_value) if v is not None]
    return pick(values) if values else None


def task_row(t: TaskRecord, attempts: Sequence[AttemptRecord], now: float) -> dict:
    """One task's row of summary.json's "tasks"; `attempts`: its attempts, oldest first."""
    details = [_attempt(a, now) for a in attempts]
    durations = [d["duration"] for d in details]
    return {
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
        **gpu_totals(attempts),
        "attempt_details": details,
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
        "energy_j": a.energy_j,
    }


def gpu_totals(records: Sequence[AttemptRecord | TaskRecord | GpuUse]) -> dict:
    """GPU time summed over the attempts (or tasks), the most memory any one of them used, their energy summed
    (None: not measured), as summary.json and `gputui status --json` both give them."""
    seconds = [r.gpu_seconds for r in records if r.gpu_seconds is not None]
    peaks = [r.peak_memory for r in records if r.peak_memory is not None]
    joules = [r.energy_j for r in records if r.energy_j is not None]
    total = round(sum(seconds), 3) if seconds else None
    peak = max(peaks) if peaks else None
    return {
        "gpu_seconds": total,
        "gpu_hours": None if total is None else round(total / 3600, 2),
        "peak_memory": peak,
        "peak_memory_gib": None if peak is None else round(peak / GIB, 2),
        "gpus_simulated": any(r.gpus_simulated for r in records),
        **_energy_totals(
            sum(joules) if joules else None, any(r.energy_estimated for r in records if r.energy_j is not None)
        ),
    }


def _energy_totals(joules: float | None, estimated: bool) -> dict:
    """Energy as summary.json and `status --json` give it: joules, kWh, and whether any of it is estimated (power x
    time: a GPU without an energy counter). Simulated GPUs' energy is marked by `gpus_simulated`."""
    total = None if joules is None else round(joules, 3)
    return {
        "energy_j": total,
        "energy_kwh": None if total is None else round(total / 3.6e6, 6),
        "energy_estimated": total is not None and estimated,
    }


def energy_text(joules: float | None, estimated: bool = False) -> str:
    """'45.6 Wh', '1.23 kWh', '0.17 Wh' ('~' before it: estimated from power x time); '-' where not measured."""
    if joules is None:
        return "-"
    wh = joules / 3600
    text = f"{wh / 1000:.2f} kWh" if wh >= 1000 else f"{wh:.1f} Wh" if wh >= 10 else f"{wh:.2f} Wh"
    return ("~" if estimated else "") + text


def render_report(summary: dict) -> str:
    """Outcome first, then the table, then only what needs attention: failures and merge problems.

    `summary["tasks"]`: a list, or rows read again at each pass (SpooledRows); report.md's tables and lists
    show at most LIST_CAP tasks each, then say how many more summary.json lists."""
    tasks = summary.get("tasks", [])
    gpu_columns = bool(summary.get("gpu_seconds"))
    energy = gpu_columns and summary.get("energy_j") is not None  # its column, beside GPU-hours
    table, failures, nouns = [], [], set()
    shown = failed = 0
    spooled = isinstance(tasks, SpooledRows)  # only the rows shown are read back
    for i, t in tasks.listed(LIST_CAP) if spooled else enumerate(tasks):
        nouns.add(for_task(t.get("kind")).noun)
        if i < LIST_CAP:
            table.append(_table_row(t, gpu_columns, energy))
        shown = i + 1
        if t["status"] in _FAILED:
            if failed < LIST_CAP:
                failures += _failure(t)
            failed += 1
    if spooled:
        nouns = {for_task(kind).noun for kind in tasks.kinds}
        shown, failed = len(tasks), len(tasks.failed)

    lines = [f"# {summary.get('job', 'job')}: run report", "", _outcome(summary, nouns), ""]
    facts = [f"Run dir `{summary.get('run_dir')}`", f"scheduler `{summary.get('scheduler_id')}`"]
    if summary.get("started_at"):
        facts.append(f"started {summary['started_at']}")
    facts.append(f"report {summary.get('generated_at')}")
    lines += [" · ".join(facts), ""]
    if gpu_columns:
        lines += [_gpu_line(summary), ""]

    if shown:
        extra = f" GPU-hours |{' Energy |' if energy else ''} Peak GPU memory |" if gpu_columns else ""
        lines.append(f"| Task | Covers | Status | Attempts | Duration | Exit |{extra} Reason |")
        lines.append("|---|---|---|---|---|---|" + "---|" * extra.count("|") + "---|")
        lines += table
        lines.append("")
        lines += more_line(shown - len(table), "tasks")

    if failed:
        lines += ["## Failures", "", *failures, ""]
        lines += more_line(failed - LIST_CAP, "failed tasks")

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


def more_line(n: int, what: str) -> list[str]:
    """After a list or table cut at LIST_CAP: its own paragraph saying how many more there are ([] if none)."""
    return [f"… and {n:,} more {what} (summary.json lists every task).", ""] if n > 0 else []


def _table_row(t: dict, gpu_columns: bool, energy: bool = False) -> str:
    used = [energy_text(t.get("energy_j"), bool(t.get("energy_estimated")))] if energy else []
    cells = [
        t["id"],
        _label(t),
        t["status"],
        f"{t['attempts']}/{t['budget']}",
        _seconds(t.get("duration")),
        _exit(t.get("exit_code")),
        *([_hours(t.get("gpu_hours")), *used, _gib(t.get("peak_memory"))] if gpu_columns else []),
        _cut(t.get("reason") or ""),
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _failure(t: dict) -> list[str]:
    exit_text = f", exit {_exit(t['exit_code'])}" if t.get("exit_code") is not None else ""
    lines = [
        f"- **{t['id']}** `{_label(t)}` {t['status']} after {t['attempts']}/{t['budget']} "
        f"attempt(s){exit_text}: {one_line(t.get('reason') or 'no reason recorded')}"
    ]
    if t.get("last_log"):
        lines.append(f"  - last log: `{t['last_log']}`")
    return lines


def write_reports(folder: Path, summary: dict) -> tuple[Path, Path]:
    """summary.json and report.md. `summary["tasks"]` may be SpooledRows: summary.json is then written a row
    at a time, the same bytes as the whole dict would give."""
    folder = Path(folder)
    json_path, md_path = folder / "summary.json", folder / "report.md"
    if isinstance(summary.get("tasks"), SpooledRows):
        atomic_write_chunks(json_path, _json_chunks(summary))
    else:
        atomic_write_json(json_path, summary, indent=None)  # many tasks: the C encoder, not pretty-printing
    atomic_write_text(md_path, render_report(summary))
    return json_path, md_path


def _json_chunks(summary: dict) -> Iterator[bytes]:
    """summary.json as dumps_json(summary, indent=None) writes it, its "tasks" a row at a time."""
    keys = list(summary)
    at = keys.index("tasks")
    head = dumps_json({k: summary[k] for k in keys[:at]}, indent=None)
    tail = dumps_json({k: summary[k] for k in keys[at + 1 :]}, indent=None)
    yield (head[:-1] + (", " if at else "") + '"tasks": [').encode()
    batch: list[str] = []
    first = True
    for row in summary["tasks"].json_lines():
        batch.append(row if first else ", " + row)
        first = False
        if len(batch) >= 500:
            yield "".join(batch).encode()
            batch = []
    yield ("".join(batch) + "]" + (", " + tail[1:] if len(tail) > 2 else "}") + "\n").encode()


class SpooledRows:
    """summary.json's task rows kept in a temporary file, one JSON line each, read again at each pass: what a
    run of 100,000 tasks holds is one row. `add` them, then iterate (as dicts) or `json_lines`."""

    def __init__(self, folder: Path) -> None:
        import tempfile

        # Unnamed (O_TMPFILE): nothing is left in the run directory, whenever the process ends.
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder)  # noqa: SIM115  (see close())
        self.count = 0
        self.kinds: set[str | None] = set()  # of the tasks added: a kind's section reads them only if it has some
        self.failed = array("l")  # the positions of the rows report.md's Failures lists

    def add(self, row: dict) -> None:
        self._file.write(dumps_json(row, indent=None) + "\n")
        if row.get("status") in _FAILED:
            self.failed.append(self.count)
        self.count += 1
        self.kinds.add(row.get("kind"))

    def listed(self, cap: int) -> Iterator[tuple[int, dict]]:
        """(position, row) of the first `cap` rows and of the first `cap` failed ones, in order."""
        wanted = set(self.failed[:cap])
        last = max(cap - 1, *wanted) if wanted else cap - 1
        for i, line in enumerate(self.json_lines()):
            if i > last:
                return
            if i < cap or i in wanted:
                yield i, json.loads(line)

    def json_lines(self) -> Iterator[str]:
        self._file.flush()
        with open(f"/proc/self/fd/{self._file.fileno()}", encoding="utf-8") as f:  # its own reader: passes nest
            for line in f:
                yield line[:-1]

    def __iter__(self) -> Iterator[dict]:
        return (json.loads(line) for line in self.json_lines())

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpooledRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _outcome(summary: dict, nouns: set[str]) -> str:
    """E.g. "3/4 shards done in 12.3 s; 1 failed; 2 retries. Merged 1,200 rows into `out.csv`."."""
    counts = summary.get("counts", {})
    total = summary.get("total_tasks", 0)
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

    @property
    def cap(self) -> int:
        return LIST_CAP

    @staticmethod
    def more(n: int, what: str) -> list[str]:
        return more_line(n, what)


_MARKDOWN = _Markdown()


def _gpu_line(summary: dict) -> str:
    """E.g. "**GPU time:** 1.25 GPU-hours; largest peak memory of a task 12.0 GiB (simulated GPUs ...)"."""
    text = f"**GPU time:** {_hours(summary.get('gpu_hours'))} GPU-hours"
    joules = summary.get("energy_j")
    if joules is not None:
        text += f"; energy {energy_text(joules, bool(summary.get('energy_estimated')))}"
        if summary.get("energy_estimated"):
            text += " (~: estimated from power x time, a GPU without an energy counter)"
    if summary.get("peak_memory") is not None:
        text += f"; largest peak memory of a task {_gib(summary['peak_memory'])} (summed over its GPUs)"
    if summary.get("gpus_simulated"):
        what = "memory and energy are" if joules is not None else "memory is"
        text += f" — SIMULATED GPUs: time is real, {what} what the simulation attributes, not a measurement"
    return text + "."


def _hours(hours: Any) -> str:
    return "-" if hours is None else f"{float(hours):.2f}"


def _gib(nbytes: Any) -> str:
    return "-" if nbytes is None else f"{nbytes / GIB:.1f} GiB"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    whole = int(ts)
    if 0 <= ts - whole < 0.999999:  # no rounding of its microseconds reaches the next second: that second's text
        return _iso_second(whole)
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


@functools.lru_cache(maxsize=4096)
def _iso_second(ts: int) -> str:
    """A whole second's text, kept: a run's tasks start and end in far fewer seconds than there are tasks."""
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
