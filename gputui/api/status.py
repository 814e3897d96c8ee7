"""A run's status read once: how many tasks are in each state, the tasks worth listing with their latest attempts,
whether its scheduler is live, the GPU totals; what `gputui status` prints, and its `--json` form for tools.

Read in well under a second however many tasks the run has: counts and totals are summed by SQLite, a run of more
than `LISTED` tasks lists only those running or needing a look (`pages` gives every task, a page at a time), and
`write_json` writes each task as SQLite makes its JSON (rundir.task_json), never holding them all."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from gputui import clock
from gputui.engine.rules import packing as packing_rules
from gputui.engine.rules.parallel import origin
from gputui.jobs.tasks import Status, TaskRecord
from gputui.results.report import gpu_totals
from gputui.rundir import status_cache, task_json, task_order
from gputui.rundir.meta import RunMeta, read_meta
from gputui.rundir.opening import open_existing
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store
from gputui.views.waiting import pending_words

LISTED = 100  # a run of more tasks lists those running or needing a look, this many at most (`pages`: every one)


@dataclass(frozen=True)
class RunStatus:
    """The run as its state said at one moment (read-only: reading it never writes or locks anything)."""

    run_dir: Path
    meta: RunMeta
    scheduler_live: bool
    scheduler_pid: int | None
    taken_at: float  # when it was read (`clock.now()`: attempts' elapsed times are measured to it)
    counts: Counter[str] = field(default_factory=Counter)  # every task, by status
    listed: list[TaskRecord] = field(default_factory=list)  # every task of a short run; see LISTED
    latest: dict[str, AttemptRecord] = field(default_factory=dict)  # the listed tasks' latest attempts
    totals: dict = field(default_factory=dict)  # `gpu_totals()`
    spent_s: float = 0.0  # `spent()`
    memory: str = ""  # `memory_words()`: how the run plans GPU memory, where the job measures it or shares GPUs

    @property
    def job_name(self) -> str | None:
        return self.meta.job.name or None  # None: a state that never recorded it (null in --json)

    @property
    def scheduler_id(self) -> str | None:
        return self.meta.identity.scheduler_id or None

    @property
    def max_parallel(self) -> str:
        """`3 (set; job file says 8)` where `gputui set` changed it; "" where the job file's applies."""
        return origin(self.meta.max_parallel, self.meta.job.max_parallel)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unlisted(self) -> Counter[str]:
        """The tasks `listed` leaves out, by status."""
        return self.counts - Counter(t.status for t in self.listed)

    @property
    def all_done(self) -> bool:
        return self.counts[Status.DONE] == self.total

    @property
    def metric(self) -> str | None:
        """What the run ranks its tasks by, as its kind recorded it (a sweep's metric; None for other jobs)."""
        from gputui.views.kinds import ranked_by

        return ranked_by(self.meta)

    def gpu_totals(self) -> dict:
        """The run's GPU-seconds (summed) and peak memory (the largest of any task), and whether simulated."""
        return dict(self.totals)

    def spent(self) -> float:
        """Seconds the run has been active as of `taken_at`, as the app's header says it (`_spent`)."""
        return self.spent_s

    def placed(self) -> dict[str, str]:
        """Where each listed live task runs on its cluster (`node:GPUs`), or that it is queued and the backend's
        word on it; empty where tasks run on this machine (the GPUs column says which)."""
        from gputui.executors.registry import recorded_executor

        recorded = recorded_executor(self.run_dir, self.meta.executor.get)
        if recorded.places_gpus:
            return {}
        shown = {}
        for t in (t for t in self.listed if t.status in Status.LIVE and t.id in self.latest):
            a = self.latest[t.id]
            found = recorded.placement(t.id, a.number, a.log_path)
            word = "" if found is not None else recorded.standing(t.id, a.number)
            shown[t.id] = found.shown if found is not None else (f"queued: {word}" if word else "queued")
        return shown

    # -- every task: read when asked, a page at a time where it can be ------------------------------
    def pages(self) -> Iterator[tuple[list[TaskRecord], dict[str, AttemptRecord]]]:
        """Every task in plan order with its latest attempt, a page at a time (read now, not at `taken_at`)."""
        store = _open(self.run_dir)
        try:
            for page in store.pages():
                attempts = store.attempts_of([t.id for t in page])
                yield page, {task_id: found[-1] for task_id, found in attempts.items()}
        finally:
            store.close()

    @cached_property
    def tasks(self) -> list[TaskRecord]:
        """Every task (read when first asked: a run of many tasks is better read by `pages`)."""
        return self._read(Store.tasks)

    @cached_property
    def attempts(self) -> list[AttemptRecord]:
        """Every attempt (read when first asked, as `tasks`)."""
        return self._read(Store.attempts)

    def _read(self, read: Callable[[Store], Any]) -> Any:
        store = _open(self.run_dir)
        try:
            return read(store)
        finally:
            store.close()

    def write_json(self, out: TextIO) -> None:
        """What `gputui status --json` prints (see `write_json`; read now, not at `taken_at`)."""
        write_json(self.run_dir, out)

    def to_json(self) -> str:
        text = io.StringIO()
        self.write_json(text)
        return text.getvalue().rstrip("\n")

    def as_dict(self) -> dict:
        """What `gputui status --json` prints, as Python values (every task: read now)."""
        return json.loads(self.to_json())


def read_status(run_dir: str | Path) -> RunStatus:
    """Raises FileNotFoundError when `run_dir` holds no run."""
    paths, store = open_existing(run_dir, readonly=True)
    try:
        lock = RunLock(paths)
        live = lock.is_live()
        holder = (lock.holder() if live else None) or {}
        with store.snapshot():
            meta, counts, now = read_meta(store), store.status_counts(), clock.now()
            listed = _listed(store, sum(counts.values()))
            attempts = store.attempts_of([t.id for t in listed]) if listed else {}
            latest = {task_id: found[-1] for task_id, found in attempts.items()}
            totals = gpu_totals([store.gpu_use()])
            moving = live and any(n for s, n in counts.items() if s not in Status.FINAL)
            kept = None if live else status_cache.spent(paths)  # a finished large run's, measured as it ended
            spent = kept if kept is not None else _spent(store, now, holder.get("since") if moving else None)
            memory = memory_words(meta, store)
        return RunStatus(
            paths.root, meta, live, holder.get("pid"), now, counts, listed, latest, totals, spent, memory
        )
    finally:
        store.close()


def write_json(run_dir: str | Path, out: TextIO) -> bool:
    """What `gputui status --json` prints: the run, its GPU totals, every task with its latest log, one task a
    line, written as read (never all held); returns whether every task is done. Strict JSON (a NaN metric is
    null), all ASCII: a reason from old state may hold C1 or bidi controls, which reach the terminal unless
    escaped (DEL too). Everything in it is of one moment of the run (one read of its state). A large finished
    run's task list comes from its status cache while that still describes the state (rundir.status_cache)."""
    paths = RunPaths(Path(run_dir))
    lock = RunLock(paths)
    if not lock.is_live() and (cached := status_cache.open_valid(paths)) is not None:
        header, body = cached
        _write_document({"run_dir": str(paths.root), **header["head"]}, status_cache.chunks(body), out, live=False)
        return header["head"]["all_done"]
    paths, store = open_existing(run_dir, readonly=True)
    try:
        live = lock.is_live()
        holder = (lock.holder() if live else None) or {}
        with store.snapshot():
            head = _json_head(store)
            _write_document(
                {"run_dir": str(paths.root), **head},
                _task_lines(task_json.rows(store, pending_words(live))),
                out,
                live=live,
                pid=holder.get("pid"),
            )
        return head["all_done"]
    finally:
        store.close()


def keep_json(run_dir: str | Path) -> bool:
    """Keep a finished run's `status --json` task list in its status cache (runs of status_cache.MIN_TASKS or
    more; a run whose scheduler is live, or whose state changes while it is read, keeps none). Called as a
    run's scheduler ends; returns whether a cache was written."""
    paths = RunPaths(Path(run_dir))
    made_from = status_cache.settled_key(paths)
    if made_from is None or RunLock(paths).is_live():
        return False
    paths, store = open_existing(run_dir, readonly=True)
    try:
        with store.snapshot():
            if sum(store.status_counts().values()) < status_cache.MIN_TASKS:
                return False
            rows = task_json.rows(store, pending_words(False))
            ended = not store.read("SELECT 1 FROM attempts WHERE ended_at IS NULL LIMIT 1").fetchone()
            spent = _spent(store, clock.now(), None) if ended else None  # (an open attempt's grows)
            status_cache.write(paths, made_from, _json_head(store), _task_lines(rows), spent)
    finally:
        store.close()
    if status_cache.key(paths) != made_from:  # changed while read: it would never be read
        status_cache.drop(paths)
        return False
    return True


def _json_head(store: Store) -> dict:
    """`status --json`'s fields before its tasks, but for where the run is and whether its scheduler is live."""
    meta, counts = read_meta(store), store.status_counts()
    return {
        "job": meta.job.name or None,  # None: a state that never recorded it
        "scheduler_id": meta.identity.scheduler_id or None,
        "all_done": counts[Status.DONE] == sum(counts.values()),
        **parallel_json(meta),
        "memory": memory_words(meta, store) or None,
        **gpu_totals([store.gpu_use()]),
    }


def _write_document(head: dict, tasks: Iterator[str], out: TextIO, *, live: bool, pid: int | None = None) -> None:
    """The document: `head` with the scheduler's liveness after its first three fields, then the tasks' text."""
    first = {name: head[name] for name in ("run_dir", "job", "scheduler_id")}
    text = task_json.ascii_json(first | {"scheduler_live": live, "scheduler_pid": pid} | head, indent=2)
    out.write(text[: text.rindex("}")].rstrip() + ',\n  "tasks": [')
    for piece in tasks:
        out.write(piece)


def _task_lines(rows: Iterator[str]) -> Iterator[str]:
    """The text after `"tasks": [`: one task a line, a thousand at a time."""
    batch, first = [], True
    for row in rows:
        batch.append(row)
        if len(batch) == 1000:
            yield ("\n    " if first else ",\n    ") + ",\n    ".join(batch)
            batch, first = [], False
    if batch:
        yield ("\n    " if first else ",\n    ") + ",\n    ".join(batch)
    yield "]\n}\n" if first and not batch else "\n  ]\n}\n"


def memory_words(meta: RunMeta, store: Store) -> str:
    """How the run plans each task's GPU memory, for a job that declares it or shares GPUs (engine/packing.py):
    by the measured peak of its done attempts once there are enough, and whether its tasks still share GPUs
    (`sharing off: <task> ran out of GPU memory ...`); "" for a job that said nothing of memory (its attempts
    not read: 100,000 of them take a while)."""
    job = meta.job
    if not job.share_gpu and job.memory_per_worker_gb is None:
        return ""
    done, peak = store.done_peaks()
    m = packing_rules.measured(peak, done)
    words = [packing_rules.placing_line(m, job.memory_per_worker_gb) if m else "not measured yet"]
    if job.share_gpu:
        words.append(f"sharing off: {meta.packing_off}" if meta.packing_off else "tasks share GPUs")
    return "; ".join(words)


def parallel_json(meta: RunMeta) -> dict:
    """The run's max_parallel as `status --json` gives it: the number set (`gputui set`) or else the job file's
    (null: neither, gputui works it out), whether it was set, and the job file's."""
    return {
        "max_parallel": meta.max_parallel or meta.job.max_parallel,
        "max_parallel_set": meta.max_parallel is not None,
        "max_parallel_job": meta.job.max_parallel,
    }


def _listed(store: Store, total: int) -> list[TaskRecord]:
    """Every task of a run of up to LISTED; of a longer one, those running (first) and those that need a look,
    LISTED at most, in plan order."""
    from gputui.views.status_view import NEEDS_A_LOOK  # rich's tables: not imported by `status --json`

    if total <= LISTED:
        return store.tasks_page(limit=LISTED)
    live = store.tasks_page(Status.LIVE, limit=LISTED)
    look = store.tasks_page(NEEDS_A_LOOK, limit=LISTED - len(live)) if len(live) < LISTED else []
    return sorted(live + look, key=lambda t: t.index)


def _spent(store: Store, now: clock.Stamp, live_since: float | None) -> float:
    """How long the run has been active (views.runview.active_seconds, as the app's header measures it): the
    time its attempts ran, each interval measured as clock.between measures it (a step of the wall clock
    meanwhile changes nothing), and the time waiting since the last one while `live_since` (when the scheduler
    that drives it now took it) says a scheduler waits with work left; the gap between two launches is not
    counted."""
    from gputui.views.runview import active_seconds

    bridge = read_meta(store).job.backoff_max_s + 5.0
    return active_seconds(task_order.attempt_times(store), now, bridge, live_since)


def _open(run_dir: Path) -> Store:
    return open_existing(run_dir, readonly=True)[1]
