"""Each task as `gputui status --json` and exports/tasks.json give it, one JSON object a line, made by SQLite a row
at a time: a run of 100,000 tasks is written in well under a second holding one row, where building each in
Python took seconds.

The reference is Python's: `task_json` (the task record and its latest attempt as the store reads them) and
`export_json` (the record, its output and every attempt). The rows SQLite makes hold the same values (a test
compares them on runs of every kind): strings by json_quote, numbers that read back as the same float (the
shortest of 15 or 17 digits; wall times at 17, as Python writes nearly every time.time()), every float that is
not finite as null; status rows are escaped to ASCII as json.dumps escapes them (a worker's C1 or bidi controls
never reach a terminal). A row SQLite cannot make alike (an `info` that is not strict JSON, a pipeline step's
`after` list), and every row where SQLite has no JSON functions (json_quote), is made by Python instead.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator

from gputui.files.atomic import dumps_json, finite_or_null, json_default
from gputui.jobs.kinds.registry import DEFAULT
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store

_MAX = "1.7976931348623157e308"  # the largest finite double: a REAL beyond it (or NaN, stored as NULL) is null
_NOT_ASCII = re.compile(r"[^\x00-\x7e]")  # DEL too: json.dumps leaves it as it is, a terminal does not


def task_json(t: TaskRecord, last: AttemptRecord | None, pending_reason: str | None = None) -> dict:
    """A task as `status --json` shows it: its record, its range, its latest attempt's log, its GPU figures.
    `pending_reason`: the reason of a pending task that has none of its own and waits for no step."""
    unsaid = pending_reason if t.status == Status.PENDING and not t.reason and not t.after else None
    return (
        t.__dict__
        | ({"reason": unsaid} if unsaid else {})
        | {
            "range": [t.low, t.high],
            "log_path": None if last is None else last.log_path,
            "duration": None
            if last is None or last.duration is None
            else round(last.duration, 3),  # latest attempt
            "gpu_hours": None if t.gpu_seconds is None else round(t.gpu_seconds / 3600, 2),
            "peak_memory_gib": None if t.peak_memory is None else round(t.peak_memory / 2**30, 2),
        }
    )


def ascii_json(obj: object, indent: int | None = None) -> str:
    """Strict JSON (a float that is not finite is null), all ASCII: C1 controls, bidi marks and DEL escaped."""
    separators = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(finite_or_null(obj), indent=indent, separators=separators, allow_nan=False, default=_default)
    return text.replace("\x7f", "\\u007f")


def _default(o: object) -> object:
    return finite_or_null(json_default(o))


def export_json(t: TaskRecord, output: str | None, attempts: list[AttemptRecord]) -> dict:
    """A task as exports/tasks.json keeps it: its record, its range and output, every attempt."""
    return vars(t) | {"range": [t.low, t.high], "output": output, "attempt_log": [_attempt(a) for a in attempts]}


def _attempt(a: AttemptRecord) -> dict:
    return vars(a) | {k: vars(getattr(a, k)) for k in ("waiter", "worker") if getattr(a, k) is not None}


def rows(store: Store, pending_reason: str | None = None) -> Iterator[str]:
    """Every task's `status --json` object (one line, no newline), in plan order, all ASCII. Inside
    `Store.snapshot` they and anything read beside them are of one moment. `pending_reason`: as task_json's."""

    def python_row(t: TaskRecord, output: str | None, attempts: list[AttemptRecord]) -> str:
        return ascii_json(task_json(t, attempts[-1] if attempts else None, pending_reason))

    for text in _rows(store, _Query(store).status(pending_reason), python_row):
        yield text if text.isascii() and "\x7f" not in text else _NOT_ASCII.sub(_escape, text)


def export_rows(store: Store) -> Iterator[str]:
    """Every task's exports/tasks.json object (one line, UTF-8 text), in plan order."""
    return _rows(store, _Query(store).export(), _export_row)


def _rows(store: Store, sql: str, python_row) -> Iterator[str]:
    if not _has_json(store):
        for page in store.pages():
            ids = [t.id for t in page]
            outputs, attempts = store.outputs_of(ids), store.attempts_of(ids)
            yield from (python_row(t, outputs.get(t.id), attempts.get(t.id, [])) for t in page)
        return
    for text, task_id in store.read(sql):
        if text is None:  # made by Python: see the module's docstring
            yield python_row(
                store.task(task_id), store.output_of(task_id), store.attempts_of([task_id]).get(task_id, [])
            )
        else:
            yield text


def _export_row(t: TaskRecord, output: str | None, attempts: list[AttemptRecord]) -> str:
    return dumps_json(export_json(t, output, attempts), indent=None)


def _escape(m: re.Match) -> str:
    c = m.group()
    return "\\u007f" if c == "\x7f" else json.dumps(c)[1:-1]  # \uXXXX, a surrogate pair past U+FFFF


def _has_json(store: Store) -> bool:
    try:
        store.read("SELECT json_object('a', json('[1]'))").fetchone()
        return True
    except sqlite3.OperationalError:  # no such function: an SQLite built without JSON1
        return False


class _Query:
    """The queries, over the columns this database has (an older one, read as it is, lacks some: they read as the
    store's `_task` and `_attempt` read them). Each object is put together as text from its values' JSON (strings
    by json_quote, numbers as `_real` writes them): cheaper by far than json_object's parsing of nested JSON."""

    def __init__(self, store: Store):
        self.tasks = {r[1] for r in store.read("PRAGMA table_info(tasks)")}
        self.attempts = {r[1] for r in store.read("PRAGMA table_info(attempts)")}

    def t(self, name: str, default: str = "NULL") -> str:
        return f"t.{name}" if name in self.tasks else default

    def a(self, table: str, name: str) -> str:
        return f"{table}.{name}" if name in self.attempts else "NULL"

    def status(self, pending_reason: str | None = None) -> str:
        start, end = self.a("la", "started_boot"), self.a("la", "ended_boot")
        boots = f"{self.a('la', 'boot_id')} IS NOT NULL AND {start} IS NOT NULL AND {end} IS NOT NULL"
        duration = (
            f"CASE WHEN la.ended_at IS NULL THEN NULL WHEN {boots} THEN max(0.0, {end} - {start}) "
            "ELSE max(0.0, la.ended_at - la.started_at) END"
        )
        fields = self._task_fields()
        if pending_reason:  # (a pending task with `after` is made by Python)
            said = "'" + json.dumps(pending_reason).replace("'", "''") + "'"
            unsaid = f"CASE WHEN t.status = '{Status.PENDING}' AND coalesce(t.reason, '') = '' THEN {said} ELSE "
            fields = [(k, f"{unsaid}{v} END" if k == "reason" else v) for k, v in fields]
        fields = [
            *fields,
            ("range", "'[' || t.low || ',' || t.high || ']'"),
            ("log_path", "json_quote(la.log_path)"),
            ("duration", _real(f"round({duration}, 3)", rounded=True)),
            ("gpu_hours", _real("round(g.gpu_seconds / 3600, 2)", rounded=True)),
            ("peak_memory_gib", _real("round(g.peak_memory / 1073741824.0, 2)", rounded=True)),
        ]
        return self._select(fields, "LEFT JOIN attempts la ON la.task_id = t.id AND la.number = g.last")

    def export(self) -> str:
        def ref(name: str) -> str:
            pid, start = f"a.{name}_pid", f"a.{name}_start"
            return (
                f"CASE WHEN {pid} IS NOT NULL AND {start} IS NOT NULL "
                f"""THEN '{{"pid":' || {pid} || ',"start":' || {start} || '}}' ELSE 'null' END"""
            )

        attempt = [
            ("task_id", "json_quote(a.task_id)"),
            ("number", "a.number"),
            ("status", "json_quote(a.status)"),
            ("gpus", "'[' || a.gpus || ']'"),
            ("command", "a.command"),  # JSON text, as the store wrote it
            ("log_path", "json_quote(a.log_path)"),
            ("started_at", _time("a.started_at")),
            ("ended_at", _time("a.ended_at")),
            ("exit_code", _int("a.exit_code")),
            ("reason", "json_quote(a.reason)"),
            ("waiter", ref("waiter")),
            ("worker", ref("worker")),
            ("cgroup", "json_quote(a.cgroup)"),
            ("cleared_at", _time("a.cleared_at")),
            ("gpu_seconds", _real(self.a("a", "gpu_seconds"))),
            ("peak_memory", _int(self.a("a", "peak_memory"))),
            ("gpus_simulated", _bool(self.a("a", "gpus_simulated"))),
            ("energy_j", _real(self.a("a", "energy_j"))),
            ("energy_estimated", _bool(self.a("a", "energy_estimated"))),
        ]
        log = (
            f"coalesce('[' || (SELECT group_concat({_object(attempt)}, ',') FROM "
            "(SELECT * FROM attempts WHERE task_id = t.id ORDER BY number) a) || ']', '[]')"
        )
        fields = [*self._task_fields(), ("range", "'[' || t.low || ',' || t.high || ']'")]
        return self._select([*fields, ("output", "json_quote(t.output)"), ("attempt_log", log)])

    def _task_fields(self) -> list[tuple[str, str]]:
        """The task record's fields, as `vars(TaskRecord)` orders them."""
        return [
            ("id", "json_quote(t.id)"),
            ("index", "t.idx"),
            ("low", "t.low"),
            ("high", "t.high"),
            ("count", "t.count"),
            ("status", "json_quote(t.status)"),
            ("attempts", "t.attempts"),
            ("budget", "t.budget"),
            ("gpus", "'[' || t.gpus || ']'"),
            ("reason", "json_quote(t.reason)"),
            ("exit_code", _int("t.exit_code")),
            ("started_at", _time("t.started_at")),
            ("ended_at", _time("t.ended_at")),
            ("next_try_at", _time("t.next_try_at")),
            ("gpu_seconds", _real("g.gpu_seconds")),
            ("peak_memory", _int("g.peak_memory")),
            ("gpus_simulated", _bool("g.simulated")),
            ("energy_j", _real("g.energy_j")),
            ("energy_estimated", _bool("g.energy_estimated")),
            ("kind", f"json_quote(coalesce({self.t('kind')}, '{DEFAULT.task_kind}'))"),
            ("info", self.t("info", QUOTED_EMPTY)),  # JSON text, as the store wrote it (checked in `_select`)
            ("after", "'[]'"),  # a row with any is made by Python
            ("metric", _real(self.t("metric"))),
            ("rank", _int(self.t("rank"))),
            ("promoted", _bool(self.t("promoted", "0"))),
            ("note", f"json_quote({self.t('note')})"),
        ]

    def _select(self, fields: list[tuple[str, str]], join: str = "") -> str:
        info, after = self.t("info", QUOTED_EMPTY), self.t("after_ids", "''")
        python = (
            f"{after} != '' OR ({info} != '{{}}' AND (NOT json_valid({info}) OR {info} LIKE '%NaN%' "
            f"OR {info} LIKE '%Infinity%'))"
        )
        # Each task's attempts' GPU accounting, summed or maxed over them (as the store's `_tasks_query`).
        used = (
            f"LEFT JOIN (SELECT task_id, SUM({self.a('a', 'gpu_seconds')}) AS gpu_seconds, "
            f"MAX({self.a('a', 'peak_memory')}) AS peak_memory, "
            f"MAX({self.a('a', 'gpus_simulated')}) AS simulated, "
            f"SUM({self.a('a', 'energy_j')}) AS energy_j, "
            f"MAX({self.a('a', 'energy_estimated')}) AS energy_estimated, "
            "MAX(number) AS last FROM attempts a GROUP BY task_id) g ON g.task_id = t.id"
        )
        obj = _object(fields)
        return (
            f"SELECT CASE WHEN {python} THEN NULL ELSE {obj} END, t.id FROM tasks t {used} {join} ORDER BY t.idx"
        )


QUOTED_EMPTY = "'{}'"


def _object(fields: list[tuple[str, str]]) -> str:
    """A JSON object as SQL: each field's value is an expression giving its JSON text, put in place by one printf
    (a chain of `||` would copy the growing text once per field)."""
    template = "{" + ",".join(f'"{name}":%s' for name, _ in fields) + "}"
    return f"printf('{template}', {', '.join(expr for _, expr in fields)})"


def _real(x: str, rounded: bool = False) -> str:
    """A REAL as Python writes it: the shortest of 15 or 17 significant digits that reads back as the same float
    (`rounded`: a value rounded to a few decimals, whose 15 digits are exact); null where not finite."""
    finite = f"{x} BETWEEN -{_MAX} AND {_MAX}"
    if rounded:
        return f"CASE WHEN {finite} THEN printf('%!.15g', {x}) ELSE 'null' END"
    short, full = f"printf('%!.15g', {x})", f"printf('%!.17g', {x})"
    shortest = f"CASE WHEN CAST({short} AS REAL) = {x} THEN {short} ELSE {full} END"
    return f"CASE WHEN {finite} THEN ({shortest}) ELSE 'null' END"


def _time(x: str) -> str:
    """A wall time (epoch seconds): 17 significant digits, as Python writes nearly every time.time()."""
    return f"CASE WHEN {x} BETWEEN -{_MAX} AND {_MAX} THEN printf('%!.17g', {x}) ELSE 'null' END"


def _int(x: str) -> str:
    return f"coalesce({x}, 'null')"


def _bool(x: str) -> str:
    return f"CASE WHEN {x} THEN 'true' ELSE 'false' END"
