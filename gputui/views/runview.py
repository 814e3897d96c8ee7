"""A read-only view of a run for screens (the app, status): everything from the run directory.

Blocking (SQLite, log tails, lock probe): call `snapshot` from a thread, never from a UI loop.
"""

from __future__ import annotations

import os
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

from gputui import clock
from gputui.engine.rules.failures import read_tail
from gputui.executors.journal import JournalReader
from gputui.executors.ownership import AttemptProcesses, ProcessRef
from gputui.executors.registry import recorded_executor, runs_on
from gputui.gpus.checkpoint import MEMORY_FREED
from gputui.gpus.probe import GpuSnapshot
from gputui.jobs.kinds.base import NewTask
from gputui.jobs.kinds.registry import kind_of, named
from gputui.jobs.loader import load_jobspec
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.alerts_file import AlertReader
from gputui.rundir.meta import RunMeta, read_meta
from gputui.rundir.opening import plan_refusal
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store
from gputui.views.executor_facts import Placements, node_label
from gputui.views.kinds import chart_offer
from gputui.views.metrics import MetricHistory, MetricSeries, file_stamp
from gputui.views.progress import Progress, ProgressTracker
from gputui.views.waiting import unsaid_reason


@dataclass(frozen=True)
class TaskView:
    task: TaskRecord
    attempt: AttemptRecord | None  # the latest
    progress: Progress | None = None
    history: tuple[AttemptRecord, ...] = ()  # every attempt, oldest first (the latest included)
    metrics: Mapping[str, float] = field(default_factory=dict)  # latest values its latest attempt reported
    # through gputui.hooks: read for running and paused tasks, and for the task the app has selected
    placed: str | None = None  # on a cluster, a live attempt's node and GPUs ("node:0,1"), "" while queued
    placed_node: str = ""  # on Ray, the id of that node (two nodes may share a host name)
    queued: str = ""  # on Slurm, its word on a queued attempt's job: "held (JobHeldAdmin)", "node n1 drained: ..."
    unsaid: str = ""  # a pending task with no reason of its own: what it waits for (views/waiting.py)

    @property
    def elapsed(self) -> float | None:
        a = self.attempt
        return None if a is None else a.elapsed()


@dataclass(frozen=True)
class Totals:
    """Every task counted by status, for a snapshot that holds only some (the app's: run_pages.py): the
    ids they cover (each task at least one) and the first few ids in plan order, by status."""

    counts: Mapping[str, int]
    sizes: Mapping[str, float] = field(default_factory=dict)
    first: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSnapshot:
    run_dir: Path
    job_name: str
    scheduler_id: str
    scheduler_live: bool
    tasks: list[TaskView] = field(default_factory=list)
    meta: RunMeta = field(default_factory=RunMeta)
    taken_at: float = 0.0
    alerts: list[dict] = field(default_factory=list)  # appended to alerts.jsonl since the last snapshot
    active_s: float = 0.0  # how long the run has been active, as of `taken_at` (`active_seconds`)
    series: MetricSeries | None = None  # the selected task's metrics over steps (see `RunView.select`)
    to_come: list[str] = field(default_factory=list)  # what the kind has not planned yet, one line each
    metric: str | None = None  # what the run ranks its tasks by, as its kind recorded it (a sweep's)
    totals: Totals | None = None  # every task's, where `tasks` holds only some (None: `tasks` is every task)
    plan_warning: str | None = None  # why the job file the app was given would not be run on this run (its plan
    # changed since the run started: what `gputui run` refuses with); None: it would be, or none was given

    @property
    def counts(self) -> Counter[str]:
        if self.totals is not None:
            return Counter({s: n for s, n in self.totals.counts.items() if n})
        return Counter(v.task.status for v in self.tasks)

    def first_ids(self, statuses: Sequence[str], limit: int) -> list[str]:
        """Up to `limit` ids of tasks in these statuses, in plan order (status by status, where only some
        tasks are held)."""
        if self.totals is None:
            return [v.task.id for v in self.tasks if v.task.status in statuses][:limit]
        return [i for s in statuses for i in self.totals.first.get(s, ())][:limit]

    @property
    def chart(self) -> tuple[bool, bool]:
        """Whether the app offers the metrics chart before any metric is reported, and shows it first: as the
        run's kind has it."""
        return chart_offer(v.task.kind for v in self.tasks)

    @property
    def finished(self) -> bool:
        counts = self.counts
        return bool(counts) and all(s in Status.FINAL for s in counts)

    def elapsed(self, now: float) -> float:
        """Running time at `now` (clock.now(): a step of the wall clock does not move it; see gputui.clock):
        it moves only while the run is active (scheduler live, work left)."""
        moving = self.scheduler_live and not self.finished
        return self.active_s + (clock.between(self.taken_at, now) if moving else 0.0)

    def gpu_holders(self, gpus: Sequence[GpuSnapshot] = (), *, states: bool = False) -> dict[int, list[str]]:
        """GPU index -> ids of our tasks running (or paused) on it; on a cluster, the index of the panel
        of the node's GPU the task was given (`gpus`: the cluster's, as the panels number them). `states`: a task
        paused with its GPU memory freed says so after its id ("shard-3 (paused, memory freed)")."""
        held: dict[int, list[str]] = {}
        panel = {g.where: g.index for g in gpus if g.where}
        for v in self.tasks:
            if v.task.status not in Status.LIVE:
                continue
            if v.placed:
                host, _, given = v.placed.rpartition(":")
                names = [node_label(host, v.placed_node), host] if v.placed_node else [host]
                at = []
                for i in given.split(","):  # the panel of the node's GPU i: by node id where hosts repeat
                    at += [panel[w] for n in names if (w := f"{n} GPU {i}") in panel][:1]
            else:
                at = list(v.task.gpus)
            paused_freed = states and v.task.status == Status.PAUSED and v.task.reason == MEMORY_FREED
            for g in at:
                held.setdefault(g, []).append(f"{v.task.id} ({MEMORY_FREED})" if paused_freed else v.task.id)
        return held

    def simulated_load(self, per_task: int) -> dict[int, list[tuple[int, int, bool]]]:
        """What simulated GPUs show of our tasks (gpus.simulated's load): `per_task` bytes on each GPU a live task
        holds, at work unless the task is paused."""
        status = {v.task.id: v.task.status for v in self.tasks}
        return {
            g: [(0, per_task, status[i] != Status.PAUSED) for i in ids] for g, ids in self.gpu_holders().items()
        }


def attempt_spans(views: list[TaskView], now: float, bridge_s: float) -> list[tuple[float, float]]:
    """When each task was being worked on: its attempts, and the back-off between an attempt that
    failed and the automatic retry that followed (within `bridge_s`; a later retry by hand is not). In
    seconds before `now` (negative), each measured with clock.between: never reversed or hours long
    because the wall clock stepped."""
    return history_spans([v.history for v in views], now, bridge_s)


def history_spans(histories: Iterable[Sequence], now: float, bridge_s: float) -> list[tuple[float, float]]:
    """`attempt_spans` from each task's attempts, oldest first (anything with a status, started_at and
    ended_at: AttemptRecords, or the times alone)."""
    spans = []
    for history in histories:
        previous, previous_end = None, 0.0
        for a in history:
            if a.ended_at is None:
                start, end = -clock.between(a.started_at, now), 0.0
            else:  # its length measured apart: a step of the wall clock since (or a reboot) moves it whole
                end = -clock.between(a.ended_at, now)
                start = end - clock.between(a.started_at, a.ended_at)
            retried = previous is not None and previous.status in (Status.FAILED, Status.LOST)
            if retried and previous.ended_at and 0 <= start - previous_end <= bridge_s:
                start = previous_end
            spans.append((start, end))
            previous, previous_end = a, end
    return spans


def active_seconds(
    histories: Iterable[Sequence], now: float, bridge_s: float, live_since: float | None = None
) -> float:
    """How long a run has been active at `now`, the ONE measure the app's header and `gputui status` give: the
    time its attempts ran (each task's, with the back-off before an automatic retry: `history_spans`), overlaps
    counted once, and, while a scheduler drives it with work left (`live_since`: when that scheduler took the
    run, None otherwise), the time since the last attempt ended, waiting for GPUs or a retry, but never before
    that scheduler started: the gap between a run stopped and launched again later is not counted."""
    spans = history_spans(histories, now, bridge_s)
    if live_since is not None:
        began = -clock.between(live_since, now)
        spans.append((max([began, *(e for _, e in spans)]), 0.0))
    return union_length(spans)


def scheduler_since(lock: RunLock) -> float | None:
    """When the scheduler that holds the run's lock took it (its note's wall time; None: none holds it, or
    its note says nothing of it)."""
    if not lock.is_live():
        return None
    since = (lock.holder() or {}).get("since")
    return float(since) if isinstance(since, int | float) else None


def union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by the spans, overlaps counted once: idle time between launches is not."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


@dataclass(frozen=True)
class Outlook:
    """The whole job's pace, in what its rows count (each worker's own progress: rows, batches, steps)."""

    rate: float | None  # per second, summed over the running tasks: the rows' rates added up
    eta: float | None  # seconds until the work planned now is done (see `outlook`)


WAITING = (Status.PENDING, Status.RETRYING)  # tasks that will run without anyone's word


def outlook(views: Sequence[TaskView], totals: Totals | None = None) -> Outlook:
    """The overall rate (the running rows' rates added up) and ETA, from the running tasks that have one: the
    work left (what the running and paused tasks have still to do, and the waiting tasks whole, each timed at the
    pace the running tasks go per id of their range) spread over as many slots as run now, and never sooner than
    the slowest running task's own ETA. Tasks failed or killed for good, and work a kind has not planned yet (a
    sweep's later stages), are not counted. `totals`: every task's sizes, where `views` are only some (the live
    ones among them)."""
    rate = 0.0
    slowest = task_s = measured_ids = 0.0
    running = [v for v in views if v.task.status == Status.RUNNING]
    for v in running:
        p = v.progress
        if p is not None and p.rate and p.total > 0 and p.eta is not None:
            rate += p.rate
            slowest = max(slowest, p.eta)
            task_s += p.total / p.rate  # the whole task's time at its pace
            measured_ids += max(1, v.task.count)
    if not measured_ids:
        return Outlook(None, None)
    per_id = task_s / measured_ids
    left = 0.0  # seconds of one slot's work
    for v in views:
        p = v.progress
        if v.task.status == Status.RUNNING and p is not None and p.eta is not None:
            left += p.eta
        elif v.task.status in (Status.RUNNING, Status.PAUSED):
            left += max(1, v.task.count) * (1.0 - (p.fraction if p is not None else 0.0)) * per_id
    if totals is not None:
        waiting = sum(totals.sizes.get(s, 0.0) for s in WAITING)
    else:
        waiting = sum(max(1, v.task.count) for v in views if v.task.status in WAITING)
    return Outlook(rate, max(slowest, (left + waiting * per_id) / len(running)))


class PlanTasks(Sequence[TaskView]):
    """A plan's tasks as the app shows them before launch, each TaskView made when asked for: a plan of 1,000,000
    shards holds its kind's NewTask records (a shard plan's: three lists of numbers), never a view per task.
    In plan order; `in_order` gives rows in launch order (by index), the order every view of the table shows
    before launch: each task pending, none started, so the filters show all or none and the sorts tie."""

    FOUND = 64  # tasks looked up by id, kept

    def __init__(self, new: Sequence[NewTask], budget: int) -> None:
        self.new, self.budget = new, budget
        self._found: dict[str, TaskView | None] = {}
        # A list is checked; a lazy plan (ShardTasks) makes its task i with index i: in order as it is.
        listed = isinstance(new, list | tuple) and not all(a.index < b.index for a, b in pairwise(new))
        self._order = array("q", sorted(range(len(new)), key=lambda i: new[i].index)) if listed else None

    def __len__(self) -> int:
        return len(self.new)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._view(t) for t in self.new[i]]
        return self._view(self.new[i])

    def __iter__(self) -> Iterator[TaskView]:
        return (self._view(t) for t in self.new)

    def _view(self, task: NewTask) -> TaskView:
        return TaskView(planned_record(task, self.budget), None)

    @property
    def records(self) -> Sequence[TaskRecord]:
        """The tasks as the store will hold them, in plan order (each made when read)."""
        return _Records(self)

    def in_order(self, start: int, stop: int) -> list[TaskView]:
        """Rows `start` to `stop` in launch order."""
        if self._order is None:
            return self[start:stop]
        return [self._view(self.new[i]) for i in self._order[start:stop]]

    def position(self, task_id: str) -> int | None:
        """The task's row in launch order (None: not planned): asked for only where the cursor's row does not
        hold it (a plan read again)."""
        at = self._locate(task_id)
        if at is None or self._order is None:
            return at
        return self._order.index(at)

    def find(self, task_id: str) -> TaskView | None:
        """The planned task with this id (None: none), the last few looked up kept: asked each refresh for
        the log pane's task, which the table may not hold."""
        if task_id not in self._found:
            at = self._locate(task_id)
            if len(self._found) >= self.FOUND:
                self._found.clear()
            self._found[task_id] = None if at is None else self[at]
        return self._found[task_id]

    def _locate(self, task_id: str) -> int | None:
        """Its place in plan order: asked of a lazy plan that knows (ShardTasks.index_of: no task made), else a
        scan of the list."""
        index_of = getattr(self.new, "index_of", None)
        if index_of is not None:
            return index_of(task_id)
        return next((i for i, t in enumerate(self.new) if t.id == task_id), None)


class _Records(Sequence[TaskRecord]):
    def __init__(self, tasks: PlanTasks) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [v.task for v in self.tasks[i]]
        return self.tasks[i].task

    def __iter__(self) -> Iterator[TaskRecord]:
        return (v.task for v in self.tasks)


@dataclass(frozen=True)
class PlannedRun:
    """A job's plan before it is launched, as the app shows it: nothing is written to read it, and its tasks
    are made a page at a time (PlanTasks)."""

    job_name: str
    kind: str  # [job].kind
    description: str  # the plan's one line
    tasks: PlanTasks
    to_come: list[str]  # what the kind plans later (a sweep's later stages), one line each
    metric: str | None = None  # what the kind ranks its tasks by (a sweep's metric)
    error: str | None = None  # why the plan could not be read (then there are no tasks)
    sizing: str | None = None  # the run mode's decision on the GPUs seen now ('auto: 2 GPU(s) per worker, ...')
    no_fit: str | None = None  # why it cannot launch here (no room for the model; a command that cannot start):
    # said in the header, and `l` is refused
    runs_on: str | None = None  # a cluster the job runs on ('the Ray cluster at head:6379'); None: this machine

    @property
    def noun(self) -> str:
        """One of its tasks in words ('trial')."""
        return named(self.kind).noun if self.kind else "task"

    @property
    def planned_from(self) -> str | None:
        """What the tasks planned at the start belong to (a sweep's first stage), if anything."""
        return named(self.kind).planned_from(self.tasks.records) if self.kind else None

    def view_of(self, task_id: str) -> TaskView | None:
        return self.tasks.find(task_id)


def planned_record(task: NewTask, budget: int) -> TaskRecord:
    """A task of a plan as the store will hold it once added: pending, never tried."""
    return TaskRecord(
        task.id, task.index, task.low, task.high, task.count, Status.PENDING, 0, budget, (), None, None, None,
        None, None, kind=task.kind, info=task.info, after=tuple(task.after),
    )  # fmt: skip


def planned_run(job, plan) -> PlannedRun:
    """`job` (a JobSpec) and its `plan_job` plan as a PlannedRun (pure; no TaskView made)."""
    tasks = PlanTasks(plan.tasks, job.retry.max_attempts)
    kind = kind_of(job)
    to_come = kind.to_come(plan.definition, tasks.records, stopped=False)  # read as a launched run's is
    metric = (kind.ranking(job.kind_spec) or (None, None))[0]
    return PlannedRun(job.name, job.kind, plan.description, tasks, to_come, metric, runs_on=runs_on(job.executor))


def no_plan(error: str) -> PlannedRun:
    """A job file that cannot be planned, and why."""
    return PlannedRun("", "", "", PlanTasks([], 1), [], error=error)


class RunView:
    def __init__(self, run_dir: str | Path, job_path: str | Path | None = None):
        """`job_path`: the job file the app was given for this run, checked against the plan the run started
        with (`plan_warning`)."""
        self.paths = RunPaths(Path(run_dir).resolve())
        self.job_path = None if job_path is None else Path(job_path)
        self._checked: tuple[tuple, str | None] | None = None  # (job file, its stamp, the run's plan) -> warning
        self._db_files = (str(self.paths.db), f"{self.paths.db}-wal")  # stat'ed every refresh
        self._store: Store | None = None
        self._progress = ProgressTracker()
        self._alerts = AlertReader(self.paths.alerts, from_end=True)  # what happened before we looked is old
        self._tails: dict[str, tuple[tuple[int, int], str]] = {}
        self._state: tuple[RunMeta, list[TaskRecord], dict[str, list[AttemptRecord]]] | None = None
        self._state_stamp: tuple = ()
        self._state_at = 0.0
        self._metrics: dict[tuple[str, int], MetricHistory] = {}
        self._placed = Placements()  # cluster attempts seen started: where they run
        self.selected: str | None = None  # the task whose metrics over steps the snapshot carries
        self._since: tuple[tuple, float | None] | None = None  # (the lock note's stamp, its scheduler's start)

    def select(self, task_id: str | None) -> None:
        """Which task's series the next snapshots carry (any thread: the next snapshot reads it)."""
        self.selected = task_id

    @property
    def exists(self) -> bool:
        """Whether the run's state is there to read: an empty file is a scheduler creating it (a moment)."""
        try:
            return self.paths.db.stat().st_size > 0
        except OSError:
            return False

    def snapshot(self) -> RunSnapshot | None:
        if self._store is None:
            if not self.exists:
                return None
            self._store = Store.open(self.paths.db, readonly=True)
        meta, tasks, history = self._read_state()
        live = RunLock(self.paths).is_live()
        selected = self.selected
        views, keys, read = [], set(), {}
        series = None
        executor = recorded_executor(self.paths.root, meta.executor.get)
        for t in tasks:
            attempts = tuple(sorted(history.get(t.id, ()), key=lambda a: a.number))
            a = attempts[-1] if attempts else None
            progress, reported = None, None
            metrics: Mapping[str, float] = {}
            if a is not None and (t.status in Status.LIVE or t.id == selected):
                found = read[(t.id, a.number)] = self._metric_history(t.id, a.number)
                metrics, reported = dict(found.metrics), found.progress
                if t.id == selected:
                    series = found.frozen()
            if a is not None and t.status in Status.LIVE:
                key = (t.id, a.number)
                keys.add(key)
                tail = "" if reported else self._tail(a.log_path)
                paused = t.status == Status.PAUSED
                progress = self._progress.update(key, tail, paused=paused, reported=reported)
            queued_or_on = not executor.places_gpus and a is not None and t.status in Status.LIVE
            placed, node = self._placed.at(executor, a) if queued_or_on else (None, "")
            said = executor.standing(t.id, a.number) if placed == "" else ""  # (Slurm's word on its queued job)
            views.append(TaskView(t, a, progress, attempts, metrics, placed, node, said, unsaid_reason(t, live)))
        self._progress.forget(keys)
        self._placed.keep(keys)
        if self._placed.hosts_shared:
            views = [replace(v, placed=self._placed.named_apart(v.placed, v.placed_node)) for v in views]
        self._metrics = read  # a task that ended and is not selected is read no more
        kind = named(meta.job.kind)  # what is still to come, from the kind's own record of its plan
        to_come = kind.to_come(meta.identity.plan_definition, tasks, stopped=bool(meta.run_failed))
        live_logs = {v.attempt.log_path for v in views if v.attempt is not None}
        self._tails = {path: tail for path, tail in self._tails.items() if path in live_logs}
        now = clock.now()
        moving = live and not all(v.task.status in Status.FINAL for v in views)
        since = self._scheduler_since() if moving else None
        active = active_seconds([v.history for v in views], now, meta.job.backoff_max_s + 5.0, since)
        return RunSnapshot(
            run_dir=self.paths.root,
            job_name=meta.job.name,
            scheduler_id=meta.identity.scheduler_id,
            scheduler_live=live,
            tasks=views,
            meta=meta,
            taken_at=now,
            alerts=self._alerts.new(),
            active_s=active,
            series=series,
            to_come=to_come,
            metric=kind.ranked_by(meta.job.kind_facts),
            plan_warning=self._plan_warning(meta),
        )

    def _plan_warning(self, meta: RunMeta) -> str | None:
        """What `gputui run` would refuse of the app's job file on this run (rundir.opening.plan_refusal, the
        same check): asked again only when the job file or the run's plan changes."""
        if self.job_path is None:
            return None
        key = (self.job_path, file_stamp(self.job_path), meta.identity.plan_fingerprint)
        if self._checked is None or self._checked[0] != key:
            try:
                warning = plan_refusal(load_jobspec(self.job_path, run_dir=self.paths.root))
            except Exception as e:  # a job file being edited, or gone: what `gputui run` would say of it
                warning = f"the job file cannot be run: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            self._checked = key, warning
        return self._checked[1]

    def _scheduler_since(self) -> float | None:
        """When the scheduler driving the run took it, read again only when its lock note changed."""
        stamp = file_stamp(self.paths.lock)
        if self._since is None or self._since[0] != stamp:
            self._since = stamp, scheduler_since(RunLock(self.paths))
        return self._since[1]

    def read_series(self, task_id: str) -> MetricSeries | None:
        """The task's latest attempt's metrics over steps now, from the state last read (None: it has not
        started, or no snapshot was taken yet). Blocking (a stat, a read): call it from a thread, never
        while a snapshot is being taken."""
        if self._state is None:
            return None
        attempts = self._state[2].get(task_id)
        if not attempts:
            return None
        number = max(a.number for a in attempts)
        found = self._metrics[(task_id, number)] = self._metric_history(task_id, number)
        return found.frozen()

    def _metric_history(self, task_id: str, attempt: int) -> MetricHistory:
        found = self._metrics.get((task_id, attempt))
        if found is None:
            found = MetricHistory(task_id, attempt, self.paths.events(task_id, attempt))
        found.poll()
        return found

    def _read_state(self) -> tuple[RunMeta, list[TaskRecord], dict[str, list[AttemptRecord]]]:
        """Meta, tasks and attempts by task; read again only when the database or its WAL changed (two
        stats instead of three queries, for a run that is idle or between commits), or every 10 s."""
        stamp = tuple(file_stamp(p) for p in self._db_files)
        now = time.monotonic()
        if self._state is None or stamp != self._state_stamp or now - self._state_at >= 10.0:
            store = self._store
            history: dict[str, list[AttemptRecord]] = {}
            for a in store.attempts():
                history.setdefault(a.task_id, []).append(a)
            self._state = (read_meta(store), store.tasks(), history)
            self._state_stamp, self._state_at = stamp, now
        return self._state

    def _tail(self, log_path: str) -> str:
        """The end of a log, read again only when the log changed (a stat, not a read, per quiet log)."""
        try:
            st = os.stat(log_path)
        except OSError:
            return ""
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._tails.get(log_path)
        if cached is None or cached[0] != stamp:
            cached = self._tails[log_path] = (stamp, read_tail(log_path, 4096))
        return cached[1]

    def processes(self, task_ids: list[str]) -> dict[str, list[ProcessRef]]:
        """What a kill of these tasks would signal now, by ownership's rule (a /proc scan: call it from a
        thread). The journal fills in a start the scheduler has not stored yet."""
        if self._store is None:
            self.snapshot()
        journal = JournalReader(self.paths.journal)
        found: dict[str, list[ProcessRef]] = {}
        for task_id in task_ids:
            task = self._store.task(task_id) if self._store else None
            a = self._store.attempt(task_id, task.attempts) if task else None
            if a is None or a.cleared_at is not None:
                found[task_id] = []
                continue
            ends = journal.get(task_id, a.number)
            found[task_id] = AttemptProcesses(
                a.waiter or ends.waiter, a.worker or ends.worker, a.cgroup or ends.cgroup
            ).tree()
        return found

    def close(self) -> None:
        self._state = None
        if self._store is not None:
            self._store.close()
            self._store = None
