"""The control verbs — pause, resume, kill, retry, merge — applied by whoever holds the run lock.

While a scheduler drives the run, other processes post verbs to it through the store and wait;
when none does, the caller takes the lock and applies them itself. Either way the same code runs,
and signals reach only processes that `ownership` proves are this run's. Attempts are signalled with
words (pause, resume, terminate, kill) through the run's recorded executor, which knows how each backend
takes them (a process tree here; on Ray, a word in the attempt's signal file for the runner on its node).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gputui.engine.rules.parallel import BadSetting, change_line, new_limit
from gputui.executors import ownership
from gputui.executors.base import RecordedExecutor
from gputui.executors.journal import JournalReader
from gputui.executors.ownership import ProcessRef
from gputui.executors.registry import recorded_executor
from gputui.files.atomic import atomic_write_text
from gputui.gpus import checkpoint
from gputui.gpus.reservations import Reservations
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.manifests import manifest_path
from gputui.rundir.meta import read_meta, write_meta
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store

KILL_WAIT_S = 2.0  # after SIGKILL, how long before a survivor is reported instead of waited on


class ControlError(RuntimeError):
    pass


@dataclass
class Stop:
    """Stopping process trees: SIGTERM (and SIGCONT, so a paused tree can act on it) now, SIGKILL to
    whatever is left after the grace period, then a report. `step` never blocks, so a scheduler can
    drive it between its other work; `finish` drives it to the end for a caller that can wait."""

    controller: Controller
    pairs: list[tuple[TaskRecord, AttemptRecord]]
    grace: float
    control_id: int | None = None
    intro: list[str] = field(default_factory=list)
    term: dict[str, list[ProcessRef]] = field(default_factory=dict)
    kill: dict[str, list[ProcessRef]] = field(default_factory=dict)
    deadline: float = 0.0
    phase: str = "term"  # term -> kill -> done

    def begin(self) -> Stop:
        # A task paused with its GPU memory freed gets it back first, so that it ends as any task does (its CUDA
        # calls would block while checkpointed: a worker saving its state on SIGTERM would hang until SIGKILL).
        self.intro += self.controller.restore_before_stop(self.pairs)
        self.term = self.controller.signal_trees(self.pairs, "terminate")
        self.controller.signal_trees(self.pairs, "resume")  # a paused tree must run to act on it
        self.deadline = time.monotonic() + self.grace
        return self

    def step(self) -> bool:
        """Advance if due; True once done."""
        if self.phase == "term":
            if time.monotonic() < self.deadline and self._running(self.term):
                return False
            # Survivors, and anything forked meanwhile.
            self.kill = self.controller.signal_trees(self.pairs, "kill")
            self.phase, self.deadline = "kill", time.monotonic() + KILL_WAIT_S
        if self.phase == "kill":
            if time.monotonic() < self.deadline and self._running(self.kill):
                return False
            self.phase = "done"
        return True

    def _running(self, signalled: dict[str, list[ProcessRef]]) -> bool:
        alive = any(ownership.alive(r) for r in _flat(signalled))
        return alive or bool(self.controller.running_elsewhere(self.pairs))

    def finish(self) -> list[str]:
        while not self.step():
            time.sleep(0.02)
        return self.report()

    def report(self) -> list[str]:
        lines = list(self.intro)
        running = self.controller.running_elsewhere(self.pairs)
        for task, _ in self.pairs:
            term, kill = self.term.get(task.id, []), self.kill.get(task.id, [])
            n = len({r.pid for r in term + kill})
            stuck = [ownership.describe_stuck(r) for r in kill if ownership.alive(r)]
            lines.append(f"{task.id}: " + self.controller.executor.killed(n, stuck, task.id in running))
        return lines


def _flat(refs: dict[str, list[ProcessRef]]) -> list[ProcessRef]:
    return [r for rs in refs.values() for r in rs]


@dataclass
class Controller:
    paths: RunPaths
    store: Store
    on_merge: Callable[[bool], str] | None = None  # set by the caller: runs the merge (verifying?), returns a line
    recorded: RecordedExecutor | None = None  # how attempts are reached (default: as the run recorded it)
    # Whether an attempt is over (its end and its leftovers' recorded): none of it is left, and its waiter may run
    # another attempt by now (a resident worker, another task), so nothing is signalled for it. Default: as the
    # journal says; the scheduler answers from its own state.
    over: Callable[[str, int], bool] | None = None
    _journal: JournalReader | None = field(default=None, init=False, repr=False)

    @property
    def scheduler_id(self) -> str:
        return read_meta(self.store).identity.scheduler_id

    @property
    def executor(self) -> RecordedExecutor:
        """The run's executor, as given, or as the run recorded it (read each time: a run being opened
        records it as its scheduler starts)."""
        return self.recorded or recorded_executor(self.paths.root, read_meta(self.store).executor.get)

    @property
    def journal(self) -> JournalReader:
        if self._journal is None:
            self._journal = JournalReader(self.paths.journal)
        return self._journal

    # -- verbs ---------------------------------------------------------------------------------
    def apply(
        self, verb: str, task_ids: Sequence[str] | None, force: bool = False, args: Mapping | None = None
    ) -> tuple[bool, str]:
        """Apply `verb` to the named tasks (None: every task it applies to), waiting for kills to end.
        `force`: `retry` also runs done tasks again; `merge` hashes every output again (`--verify`). `args`: a
        `set`'s (`to`, `by`)."""
        if verb == "set":
            return self.set_parallel(args or {})
        if verb in ("start", "stop"):
            return False, f"no scheduler is running this job, so there is nothing to {verb}"
        if verb == "merge":
            if self.on_merge is None:
                return False, "merge is not available here"
            line = self.on_merge(force)
            return not line.startswith("merge failed"), line
        try:
            tasks = self.select(verb, task_ids)
            if not tasks:
                return True, f"no task to {verb}"
            if verb == "kill":
                return True, "\n".join(self.begin_kill(tasks).finish())
        except ControlError as e:
            return False, str(e)
        lines, ok = [], True
        for task in tasks:
            try:
                if verb == "retry":
                    lines.append(self.retry(task, force))
                elif verb == "pause":
                    lines.append(self.pause(task, free_memory=bool((args or {}).get("free_memory"))))
                else:
                    lines.append(getattr(self, verb)(task))
            except ControlError as e:
                ok = False
                lines.append(f"{task.id}: {e}")
        return ok, "\n".join(lines)

    def set_parallel(self, args: Mapping) -> tuple[bool, str]:
        """`gputui set max_parallel=...` with no scheduler running: kept in the run's state for its next start."""
        meta = read_meta(self.store)
        try:
            n = parallel_setting(meta.max_parallel or meta.job.max_parallel, args, meta.job.max_parallel)
        except BadSetting as e:
            return False, str(e)
        old = meta.max_parallel or meta.job.max_parallel
        with self.store.transaction():
            write_meta(self.store, meta.parallel(n))
            line = change_line(old, n or meta.job.max_parallel, live=False)
            self.store.add_event("max_parallel", line)
        return True, line

    def pause(self, task: TaskRecord, free_memory: bool = False) -> str:
        """SIGSTOP the task's tree. `free_memory`: first its CUDA process's device state goes to host memory
        (`cuda-checkpoint`), where `checkpoint` says it can; else refused, saying why, and nothing is paused."""
        if task.status != Status.RUNNING:
            raise ControlError(f"is {task.status}; only a running task can be paused")
        attempt = self.live_attempt(task)
        # Parents first, then once more for children forked meanwhile (where it has processes here: on Slurm
        # the attempt's stand-in, which suspends or holds the job; on Ray the runner on the node stops the
        # tree, told through the signal file, applied as soon as the command starts).
        executor = self.executor
        freed = self._free_memory(attempt) if free_memory else None  # before SIGSTOP: the utility needs it running
        sent = self.reach(attempt, "pause")
        if sent is not None:
            sent += self.reach(attempt, "pause")
            if not sent:
                if freed is not None:
                    self._restore_memory(attempt)
                raise ControlError("has no process to pause yet (its worker is starting or has just ended)")
        with self.store.transaction():
            if freed is not None:  # said where the task is shown (`gputui status`, the app's table and GPU cards)
                self.store.update_task(task.id, status=Status.PAUSED, reason=checkpoint.MEMORY_FREED)
            else:
                self.store.update_task(task.id, status=Status.PAUSED)
            self.store.update_attempt(task.id, attempt.number, status=Status.PAUSED)
            said = "paused by user" + (", GPU memory freed (cuda-checkpoint)" if freed is not None else "")
            self.store.add_event("paused", said, task.id)  # (its time limit's clock holds meanwhile)
        if freed is not None:
            self._mark_reservations(task.id, checkpoint.MEMORY_FREED)  # for `gputui gpus` and other runs
            n = len({r.pid for r in sent or []})
            return (
                f"{task.id}: paused {n} process(es); its GPU memory was freed (cuda-checkpoint of pid {freed}); "
                "its GPUs stay reserved for it, and resume restores it there"
            )
        return f"{task.id}: {executor.paused(sent or [])}"

    def resume(self, task: TaskRecord) -> str:
        if task.status != Status.PAUSED:
            raise ControlError(f"is {task.status}; only a paused task can be resumed")
        attempt = self.live_attempt(task)
        executor = self.executor
        sent = self.reach(attempt, "resume")
        with self.store.transaction():
            self.store.update_task(task.id, status=Status.RUNNING, reason=None)
            self.store.update_attempt(task.id, attempt.number, status=Status.RUNNING)
            self.store.add_event("resumed", "resumed by user", task.id)
        restored = self._restore_memory(attempt)  # after SIGCONT: the utility needs it running
        line = f"{task.id}: {executor.resumed(sent or [])}"
        return line + (f"; its GPU memory was restored (cuda-checkpoint of pid {restored})" if restored else "")

    # -- GPU memory of a paused task (cuda-checkpoint) -----------------------------------------
    def checkpoint_record(self, attempt: AttemptRecord) -> Path:
        """Where a pause that freed the attempt's GPU memory keeps which process was checkpointed (by what)."""
        return self.paths.root / "checkpoints" / f"{attempt.task_id}.{attempt.number}.json"

    def free_memory_verdict(self, attempt: AttemptRecord) -> checkpoint.Verdict:
        """Whether pausing this attempt can free its GPU memory (only for processes on this machine)."""
        kind = getattr(self.executor, "kind", "local")
        if kind != "local":
            why = f"its processes are not on this machine (this run's executor is {kind})"
            return checkpoint.Verdict(False, why)
        return checkpoint.verdict(r.pid for r in attempt.processes().tree())

    def _free_memory(self, attempt: AttemptRecord) -> int:
        verdict = self.free_memory_verdict(attempt)
        if not verdict.ok:
            raise ControlError(f"cannot pause and free its GPU memory: {verdict.reason}")
        ref = ownership.ref_of(verdict.pid)
        if ref is None:
            raise ControlError(f"cannot pause and free its GPU memory: its CUDA process {verdict.pid} has ended")
        try:
            checkpoint.toggle(verdict.tool, ref.pid)
        except checkpoint.CheckpointError as e:
            raise ControlError(f"cannot pause and free its GPU memory: {e}") from e
        record = self.checkpoint_record(attempt)
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps({"pid": ref.pid, "start": ref.start, "tool": verdict.tool}))
        return ref.pid

    def _restore_memory(self, attempt: AttemptRecord) -> int | None:
        """Its CUDA process's device state back on its GPU, where a pause freed it: the pid, or None if none was
        freed. Raises ControlError where the utility fails (the record stays, for a retry of resume)."""
        record = self.checkpoint_record(attempt)
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        ref = ProcessRef(int(saved["pid"]), int(saved["start"]))
        if not ownership.alive(ref):  # ended meanwhile (killed): nothing to restore
            record.unlink(missing_ok=True)
            return None
        tool = saved.get("tool") if saved.get("tool") and os.access(saved["tool"], os.X_OK) else None
        tool = tool or checkpoint.find_tool()
        if tool is None:
            raise ControlError(f"resumed, but its GPU memory cannot be restored: {checkpoint.TOOL} is gone")
        try:
            checkpoint.toggle(tool, ref.pid)
        except checkpoint.CheckpointError as e:
            raise ControlError(f"resumed, but its GPU memory could not be restored: {e}") from e
        record.unlink(missing_ok=True)
        self._mark_reservations(attempt.task_id, None)
        return ref.pid

    def restore_before_stop(self, pairs: Sequence[tuple[TaskRecord, AttemptRecord]]) -> list[str]:
        """Before a kill (or the run's stop) signals them: the GPU memory of attempts a pause freed is restored
        (SIGCONT first: the utility needs the process running; its GPUs stayed reserved for it). Where it cannot
        be, the kill goes on all the same: a process killed while checkpointed just ends (its GPU memory is free
        already, its host copy goes with it). Either way the record is cleared. Lines for the kill's report."""
        lines = []
        for task, attempt in pairs:
            record = self.checkpoint_record(attempt)
            if not record.exists():
                continue
            self.reach(attempt, "resume")
            try:
                restored = self._restore_memory(attempt)
            except ControlError as e:
                record.unlink(missing_ok=True)
                why = str(e).removeprefix("resumed, but ")
                lines.append(f"{task.id}: {why}; killed while checkpointed")
                continue
            if restored is not None:
                lines.append(f"{task.id}: its GPU memory was restored first (cuda-checkpoint of pid {restored})")
        return lines

    def _mark_reservations(self, task_id: str, state: str | None) -> None:
        """What the task's GPU reservations say of it (None: nothing more), for `gputui gpus` and other runs."""
        try:
            Reservations().mark(self.paths.root, task_id, state)
        except OSError:
            pass  # (a note is only words: the claim is the flock, untouched)

    def begin_kill(self, tasks: Sequence[TaskRecord]) -> Stop:
        """Record the kills, send SIGTERM; the returned Stop sends SIGKILL after the grace period."""
        for task in tasks:
            if task.status in Status.FINAL:
                raise ControlError(f"{task.id} is already {task.status}")
        with self.store.transaction():
            # Recorded first: whoever settles the attempt sees a user kill, not a failure to retry, and
            # a worker whose start is reported later is stopped then.
            for task in tasks:
                self.store.update_task(task.id, status=Status.KILLED, reason="killed by user", next_try_at=None)
                self.store.add_event("killed", "killed by user", task.id)
        intro = [
            f"{t.id}: killed (it was {t.status}; nothing was running)"
            for t in tasks
            if t.status not in Status.LIVE
        ]
        pairs = [(t, self.live_attempt(t)) for t in tasks if t.status in Status.LIVE]
        stop = Stop(self, pairs, read_meta(self.store).job.stop_grace_s, intro=intro)
        return stop.begin()

    def retry(self, task: TaskRecord, force: bool = False) -> str:
        if task.status == Status.RETRYING:
            with self.store.transaction():
                self.store.update_task(task.id, next_try_at=time.time())
            return f"{task.id}: retrying now"
        if task.status == Status.DONE and force:
            output = self.store.output_of(task.id)
            if output:  # without its done-manifest, the task's output no longer counts as done
                manifest_path(Path(output)).unlink(missing_ok=True)
        elif task.status == Status.DONE:
            raise ControlError("is done; `retry --force` runs it again (its done-manifest is removed first)")
        elif task.status not in (Status.FAILED, Status.KILLED):
            raise ControlError(f"is {task.status}; only a failed, killed or (--force) done task can be retried")
        self._close_ended_attempt(task)
        budget = task.attempts + read_meta(self.store).job.max_attempts
        with self.store.transaction():
            self.store.update_task(task.id, status=Status.PENDING, budget=budget, reason=None, next_try_at=None)
            self.store.add_event("retry", "queued again by user", task.id)
        return f"{task.id}: queued again ({budget - task.attempts} more attempt(s))"

    # -- process trees -------------------------------------------------------------------------
    def signal_trees(
        self, pairs: Sequence[tuple[TaskRecord, AttemptRecord]], word: str
    ) -> dict[str, list[ProcessRef]]:
        """Ask each attempt to pause, resume, terminate or be killed (`word`), as the executor reaches it;
        returns the processes signalled here (none for an attempt told through its backend). A kill here
        also goes through the attempt's cgroup, which nothing of it can leave."""
        sent: dict[str, list[ProcessRef]] = {}
        for task, attempt in pairs:
            found = self.reach(attempt, word)
            if found is not None:
                sent[task.id] = found
        return sent

    def reach(self, attempt: AttemptRecord, word: str) -> list[ProcessRef] | None:
        """The executor's signal to an attempt (see `RecordedExecutor.signal`); none to one that is over."""
        if self._over(attempt.task_id, attempt.number):
            return []
        return self.executor.signal(attempt, word)

    def _over(self, task_id: str, number: int) -> bool:
        if self.over is not None:
            return self.over(task_id, number)
        ends = self.journal.get(task_id, number)
        return ends.ended and ends.cleared

    def running_elsewhere(self, pairs: Sequence[tuple[TaskRecord, AttemptRecord]]) -> set[str]:
        """The tasks of `pairs` whose attempt runs with no process here (on Ray) and has not ended, as the
        journal says; empty where every attempt has its processes here."""
        keys = [(task.id, attempt.number) for task, attempt in pairs]
        return {task_id for task_id, _ in self.executor.running_elsewhere(self.journal.update, keys)}

    def live_attempt(self, task: TaskRecord) -> AttemptRecord:
        """The task's current attempt, with what its waiter recorded of its start if the store lacks it."""
        attempt = self.store.attempt(task.id, task.attempts)
        if attempt is None:
            raise ControlError("has no recorded attempt")
        if attempt.worker is None:
            ends = JournalReader(self.paths.journal).get(task.id, attempt.number)
            if ends.started and ends.worker is not None:
                fields = {"worker_pid": ends.worker.pid, "worker_start": ends.worker.start, "cgroup": ends.cgroup}
                with self.store.transaction():
                    self.store.update_attempt(task.id, attempt.number, **fields)
                attempt = self.store.attempt(task.id, attempt.number)
        return attempt

    def _close_ended_attempt(self, task: TaskRecord) -> None:
        """Before a retry: nothing of the last attempt may still run; record its end if no scheduler did."""
        attempt = self.store.attempt(task.id, task.attempts)
        if attempt is None or attempt.cleared_at is not None:
            return
        ends = JournalReader(self.paths.journal).get(task.id, attempt.number)
        procs = ownership.AttemptProcesses(
            attempt.waiter or ends.waiter, attempt.worker or ends.worker, attempt.cgroup or ends.cgroup
        )
        left = [] if ends.ended and ends.cleared else procs.tree()  # (its waiter may serve another attempt)
        recording = procs.waiter is not None and ownership.alive(procs.waiter)  # its end is still to be recorded
        if left or (recording and not (ends.ended and ends.cleared)):
            pids = ", ".join(str(r.pid) for r in left) or "starting"
            what = "still running" if not ends.ended else "ended, but processes it left are still being ended"
            raise ControlError(f"attempt {attempt.number} is {what} ({pids}); kill it or wait for it to end")
        tagged = procs.sort_tagged(ownership.tagged_as(self.scheduler_id, task.id, attempt.number))[0]
        status = Status.KILLED if task.status == Status.KILLED else (Status.FAILED if ends.ended else Status.LOST)
        with self.store.transaction():
            fields = {"exit_code": ends.exit_code, "ended_at": ends.ended_at or time.time()}
            if attempt.ended_at is None:
                fields["status"] = status
            if not tagged:  # else the next scheduler waits for them before it runs the task again
                fields["cleared_at"] = time.time()
            self.store.update_attempt(task.id, attempt.number, **fields)

    def select(self, verb: str, task_ids: Sequence[str] | None) -> list[TaskRecord]:
        """The tasks named (each read by its id), or every task the verb applies to (found by status)."""
        if task_ids is None:
            applies = {
                "pause": {Status.RUNNING},
                "resume": {Status.PAUSED},
                "kill": set(Status.ALL) - Status.FINAL,
                "retry": {Status.FAILED, Status.KILLED, Status.RETRYING},
            }[verb]
            return list(self.store.iter_tasks(sorted(applies)))
        by_id = {i: self.store.task(i) for i in task_ids}
        unknown = [i for i, t in by_id.items() if t is None]
        if unknown:
            first = [t.id for t in self.store.tasks_page(limit=7)]
            known = ", ".join(first[:6]) + (" ..." if len(first) > 6 else "")
            raise ControlError(f"no such task in this run: {', '.join(unknown)} (tasks: {known})")
        return [by_id[i] for i in task_ids]


def parallel_setting(now: int | None, args: Mapping, job_value: int | None) -> int | None:
    """The max_parallel a `set` (its control args: `to`, `by`) keeps in the run's state; None: the job file's.
    Raises BadSetting."""
    to, by = args.get("to"), int(args.get("by") or 0)
    if to is None and not by:
        return None
    return new_limit(now, None if to is None else int(to), by, job_value)


def request(
    paths: RunPaths,
    store: Store,
    verb: str,
    task_ids: Sequence[str] | None,
    make_controller: Callable[[], Controller],
    timeout: float = 120.0,
    force: bool = False,
    extra: Mapping | None = None,
) -> tuple[bool, str]:
    """Apply a verb: through the live scheduler if there is one, else directly under the run lock. `extra`: the
    verb's own arguments (a `set`'s), carried with it."""
    lock = RunLock(paths)
    if lock.try_acquire(f"gputui {verb}"):
        try:
            return make_controller().apply(verb, task_ids, force, extra)
        finally:
            lock.release()
    args = {"tasks": None if task_ids is None else list(task_ids), "force": force, **(extra or {})}
    control_id = store.post_control(verb, args)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            c = store.control(control_id)
            if c is not None and c.done_at is not None:
                return bool(c.ok), c.result or ""
            if lock.try_acquire(f"gputui {verb}"):  # the scheduler died meanwhile: act ourselves
                try:
                    c = store.control(control_id)
                    if c is not None and c.done_at is not None:
                        return bool(c.ok), c.result or ""
                    ok, result = make_controller().apply(verb, task_ids, force, extra)
                    with store.transaction():
                        store.finish_control(control_id, ok, result)
                    return ok, result
                finally:
                    lock.release()
            time.sleep(0.05)
    except BaseException:
        _cancel(store, control_id, "cancelled: its sender was interrupted")
        raise
    _cancel(store, control_id, f"cancelled: no answer within {timeout:.0f}s")
    return False, f"the scheduler did not answer within {timeout:.0f}s; the request was withdrawn"


def _cancel(store: Store, control_id: int, why: str) -> None:
    """Withdraw a request nobody took, so it can never act much later by surprise."""
    with store.transaction():
        c = store.control(control_id)
        if c is not None and c.done_at is None:
            store.finish_control(control_id, False, why)
