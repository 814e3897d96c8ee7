"""Each task as `gputui status --json` gives it, one JSON object a line, made by SQLite a row at a time: a run of
100,000 tasks is written in a fraction of a second holding one row, where building each in Python took seconds.

The reference is `task_json` (the task record and its latest attempt as the store reads them, turned into JSON by
Python); the rows SQLite makes with json_object hold the same values (a test compares them on runs of every
kind): numbers as Python writes them (the shortest text that reads back as the same float), every float that is
not finite as null, the text escaped to ASCII as json.dumps escapes it (a worker's C1 or bidi controls never
reach a terminal). A row SQLite cannot make alike (an `info` that is not strict JSON, a pipeline step's `after`
list), and every row where SQLite has no JSON functions, is made by Python instead.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator

from gputui.files.atomic import finite_or_null, json_default
from gputui.jobs.kinds.registry import DEFAULT
from gputui.jobs.tasks import TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store

_MAX = "1.7976931348623157e308"  # the largest finite double: a REAL beyond it (or NaN, stored as NULL) is null
_NOT_ASCII = re.compile(r"[^\x00-\x7e]")  # DEL too: json.dumps leaves it as it is, a terminal does not


def task_json(t: TaskRecord, last: AttemptRecord | None) -> dict:
    """A task as `status --json` shows it: its record, its range, its latest attempt's log, its GPU figures."""
    return t.__dict__ | {
        "range": [t.low, t.high],
        "log_path": None if last is None else last.log_path,
        "duration": None if last is None or last.duration is None else round(last.duration, 3),  # latest attempt
        "gpu_hours": None if t.gpu_seconds is None else round(t.gpu_seconds / 3600, 2),
        "peak_memory_gib": None if t.peak_memory is None else round(t.peak_memory / 2**30, 2),
    }


def ascii_json(obj: object, indent: int | None = None) -> str:
    """Strict JSON (a float that is not finite is null), all ASCII: C1 controls, bidi marks and DEL escaped."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(finite_or_null(obj), indent=indent, separators=separators, allow_nan=False, default=_default)
    return text.replace("\x7f", "\\u007f")


def _default(o: object) -> object:
    return finite_or_null(json_default(o))


def rows(store: Store) -> Iterator[str]:
    """Every task's JSON object (one line, no newline), in plan order. Inside `Store.snapshot` they and anything
    read beside them are of one moment."""
    if not _has_json(store):
        for page in store.pages():
            attempts = store.attempts_of([t.id for t in page])
            yield from (ascii_json(task_json(t, (attempts.get(t.id) or [None])[-1])) for t in page)
        return
    for text, task_id in store.read(_select(store)):
        if text is None:  # made by Python: see the module's docstring
            t = store.task(task_id)
            yield ascii_json(task_json(t, (store.attempts_of([task_id]).get(task_id) or [None])[-1]))
        elif text.isascii() and "\x7f" not in text:
            yield text
        else:
            yield _NOT_ASCII.sub(_escape, text)


def _escape(m: re.Match) -> str:
    c = m.group()
    return "\\u007f" if c == "\x7f" else json.dumps(c)[1:-1]  # \uXXXX, a surrogate pair past U+FFFF


def _has_json(store: Store) -> bool:
    try:
        store.read("SELECT json_object('a', json('[1]'))").fetchone()
        return True
    except sqlite3.OperationalError:  # no such function: an SQLite built without JSON1
        return False


def _select(store: Store) -> str:
    """The query, over the columns this database has (an older one, read as it is, lacks some: they read as the
    store's `_task` reads them)."""
    task_cols = {r[1] for r in store.read("PRAGMA table_info(tasks)")}
    attempt_cols = {r[1] for r in store.read("PRAGMA table_info(attempts)")}

    def col(name: str, default: str = "NULL", table: str = "t", have: set = task_cols) -> str:
        return f"{table}.{name}" if name in have else default

    def attempt(name: str) -> str:
        return col(name, table="a", have=attempt_cols)

    def last(name: str) -> str:
        return col(name, table="la", have=attempt_cols)

    start, end = last("started_boot"), last("ended_boot")
    boots = f"{last('boot_id')} IS NOT NULL AND {start} IS NOT NULL AND {end} IS NOT NULL"
    duration = (
        f"CASE WHEN la.ended_at IS NULL THEN NULL WHEN {boots} THEN max(0.0, {end} - {start}) "
        "ELSE max(0.0, la.ended_at - la.started_at) END"
    )
    info, after = col("info", "'{}'"), col("after_ids", "''")
    fields = [
        ("id", "t.id"),
        ("index", "t.idx"),
        ("low", "t.low"),
        ("high", "t.high"),
        ("count", "t.count"),
        ("status", "t.status"),
        ("attempts", "t.attempts"),
        ("budget", "t.budget"),
        ("gpus", "json('[' || t.gpus || ']')"),
        ("reason", "t.reason"),
        ("exit_code", "t.exit_code"),
        ("started_at", _real("t.started_at")),
        ("ended_at", _real("t.ended_at")),
        ("next_try_at", _real("t.next_try_at")),
        ("gpu_seconds", _real("g.gpu_seconds")),
        ("peak_memory", "g.peak_memory"),
        ("gpus_simulated", _bool("g.simulated")),
        ("kind", f"coalesce({col('kind')}, '{DEFAULT.task_kind}')"),
        ("info", f"json({info})"),
        ("after", "json('[]')"),
        ("metric", _real(col("metric"))),
        ("rank", col("rank")),
        ("promoted", _bool(col("promoted", "0"))),
        ("note", col("note")),
        ("range", "json_array(t.low, t.high)"),
        ("log_path", "la.log_path"),
        ("duration", _real(f"round({duration}, 3)", rounded=True)),
        ("gpu_hours", _real("round(g.gpu_seconds / 3600, 2)", rounded=True)),
        ("peak_memory_gib", _real("round(g.peak_memory / 1073741824.0, 2)", rounded=True)),
    ]
    obj = ", ".join(f"'{name}', {expr}" for name, expr in fields)
    python = f"{after} != '' OR NOT json_valid({info}) OR {info} LIKE '%NaN%' OR {info} LIKE '%Infinity%'"
    return (
        f"SELECT CASE WHEN {python} THEN NULL ELSE json_object({obj}) END, t.id FROM tasks t "
        f"LEFT JOIN (SELECT task_id, SUM({attempt('gpu_seconds')}) AS gpu_seconds, "
        f"MAX({attempt('peak_memory')}) AS peak_memory, MAX({attempt('gpus_simulated')}) AS simulated, "
        "MAX(number) AS last FROM attempts a GROUP BY task_id) g ON g.task_id = t.id "
        "LEFT JOIN attempts la ON la.task_id = t.id AND la.number = g.last ORDER BY t.idx"
    )


def _real(x: str, rounded: bool = False) -> str:
    """A REAL as Python writes it: the shortest of 15 or 17 significant digits that reads back as the same float
    (`rounded`: a value rounded to a few decimals, which json_object's own 15 give exactly); null where not
    finite."""
    if rounded:
        return f"CASE WHEN {x} BETWEEN -{_MAX} AND {_MAX} THEN {x} END"
    short, full = f"printf('%!.15g', {x})", f"printf('%!.17g', {x})"
    return (
        f"CASE WHEN {x} BETWEEN -{_MAX} AND {_MAX} THEN "
        f"json(CASE WHEN CAST({short} AS REAL) = {x} THEN {short} ELSE {full} END) END"
    )


def _bool(x: str) -> str:
    return f"json(CASE WHEN {x} THEN 'true' ELSE 'false' END)"
