"""The control verbs — pause, resume, kill, retry, merge — applied by whoever holds the run lock.

While a scheduler drives the run, other processes post verbs to it through the store and wait;
when none does, the caller takes the lock and applies them itself. Either way the same code runs,
and signals reach only processes that `ownership` proves are this run's.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gputui import ownership
from gputui.executors.journal import JournalReader
from gputui.ownership import ProcessRef
from gputui.records import AttemptRecord, Status, TaskRecord
from gputui.rundir import RunLock, RunPaths
from gputui.store import Store

VERBS = ("pause", "resume", "kill", "retry", "merge")


class ControlError(RuntimeError):
    pass


@dataclass
class Controller:
    paths: RunPaths
    store: Store
    on_merge: Callable[[], str] | None = None  # set by the caller: runs the merge, returns a line

    @property
    def scheduler_id(self) -> str:
        return self.store.meta("scheduler_id")

    # -- verbs ---------------------------------------------------------------------------------
    def apply(self, verb: str, task_ids: Sequence[str] | None) -> tuple[bool, str]:
        """Apply `verb` to the named tasks (None: every task it applies to). Returns (ok, report)."""
        if verb == "merge":
            if self.on_merge is None:
                return False, "merge is not available here"
            return _ok(self.on_merge())
        tasks = self._select(verb, task_ids)
        if not tasks:
            return True, f"no task to {verb}"
        if verb == "kill":
            try:
                return True, "\n".join(self.kill_many(tasks))
            except ControlError as e:
                return False, str(e)
        lines, ok = [], True
        for task in tasks:
            try:
                lines.append(getattr(self, verb)(task))
            except ControlError as e:
                ok = False
                lines.append(f"{task.id}: {e}")
        return ok, "\n".join(lines)

    def pause(self, task: TaskRecord) -> str:
        if task.status != Status.RUNNING:
            raise ControlError(f"is {task.status}; only a running task can be paused")
        attempt = self._live_attempt(task)
        with self.store.transaction():
            self.store.update_task(task.id, status=Status.PAUSED)
            self.store.update_attempt(task.id, attempt.number, status=Status.PAUSED)
        # Parents first, then once more for children forked meanwhile.
        sent = self._signal(task, attempt, signal.SIGSTOP) + self._signal(task, attempt, signal.SIGSTOP)
        return f"{task.id}: paused {len({r.pid for r in sent})} process(es); its GPU memory stays allocated"

    def resume(self, task: TaskRecord) -> str:
        if task.status != Status.PAUSED:
            raise ControlError(f"is {task.status}; only a paused task can be resumed")
        attempt = self._live_attempt(task)
        sent = self._signal(task, attempt, signal.SIGCONT)
        with self.store.transaction():
            self.store.update_task(task.id, status=Status.RUNNING)
            self.store.update_attempt(task.id, attempt.number, status=Status.RUNNING)
        return f"{task.id}: resumed {len(sent)} process(es)"

    def kill(self, task: TaskRecord) -> str:
        return self.kill_many([task])[0]

    def kill_many(self, tasks: Sequence[TaskRecord]) -> list[str]:
        """Kill tasks together: one grace period for all of them, not one each."""
        for task in tasks:
            if task.status in Status.FINAL:
                raise ControlError(f"{task.id} is already {task.status}")
        with self.store.transaction():
            # Recorded first: whoever settles the attempt sees a user kill, not a failure to retry.
            for task in tasks:
                self.store.update_task(task.id, status=Status.KILLED, reason="killed by user", next_try_at=None)
                self.store.add_event("killed", "killed by user", task.id)
        live = [(t, self._live_attempt(t)) for t in tasks if t.status in Status.LIVE]
        results = self.stop_trees(live, float(self.store.meta("stop_grace_s", 10.0)))
        lines = [
            f"{t.id}: killed (it was {t.status}; nothing was running)"
            for t in tasks
            if t.status not in Status.LIVE
        ]
        for (task, _), result in zip(live, results, strict=True):
            msg = f"{task.id}: killed {len({r.pid for r in result.signalled})} process(es)"
            lines.append(msg + ("; still alive: " + "; ".join(result.stuck) if result.stuck else ""))
        return lines

    def retry(self, task: TaskRecord) -> str:
        if task.status == Status.RETRYING:
            with self.store.transaction():
                self.store.update_task(task.id, next_try_at=time.time())
            return f"{task.id}: retrying now"
        if task.status not in (Status.FAILED, Status.KILLED):
            raise ControlError(f"is {task.status}; only a failed or killed task can be retried")
        budget = task.attempts + int(self.store.meta("max_attempts", 3))
        with self.store.transaction():
            self.store.update_task(task.id, status=Status.PENDING, budget=budget, reason=None, next_try_at=None)
            self.store.add_event("retry", "queued again by user", task.id)
        return f"{task.id}: queued again ({budget - task.attempts} more attempt(s))"

    # -- process trees -------------------------------------------------------------------------
    def stop_trees(
        self, pairs: Sequence[tuple[TaskRecord, AttemptRecord]], grace: float
    ) -> list[ownership.StopResult]:
        """SIGTERM (and SIGCONT, so a paused tree can act on it), wait `grace`, then SIGKILL."""
        terms = [self._signal(t, a, signal.SIGTERM) for t, a in pairs]
        for t, a in pairs:
            self._signal(t, a, signal.SIGCONT)
        ownership.wait_gone([r for refs in terms for r in refs], grace)
        # Survivors, and anything forked meanwhile.
        kills = [self._signal(t, a, signal.SIGKILL) for t, a in pairs]
        stuck = set(ownership.wait_gone([r for refs in kills for r in refs], 2.0))
        return [
            ownership.StopResult(
                signalled=term + [r for r in kill if r not in term],
                stuck=[ownership.describe_stuck(r) for r in kill if r in stuck],
            )
            for term, kill in zip(terms, kills, strict=True)
        ]

    def _signal(self, task: TaskRecord, attempt: AttemptRecord, sig: int) -> list[ProcessRef]:
        root = None
        if attempt.worker_pid is not None and attempt.worker_ctime is not None:
            root = ProcessRef(attempt.worker_pid, attempt.worker_ctime)
        refs = ownership.task_tree(self.scheduler_id, task.id, root)
        if not refs:
            return []
        with self.store.transaction():
            self.store.record_processes(task.id, attempt.number, [(r.pid, r.ctime) for r in refs])
        recorded = self.store.recorded_processes(task.id, attempt.number)
        return [r for r in refs if ownership.send(r, sig, recorded)]

    def _live_attempt(self, task: TaskRecord) -> AttemptRecord:
        attempt = self.store.attempt(task.id, task.attempts)
        if attempt is None:
            raise ControlError("has no recorded attempt")
        if attempt.worker_pid is None:
            pid = JournalReader(self.paths.journal).get(task.id, attempt.number).pid
            ref = ownership.tagged_ref(pid, self.scheduler_id) if pid else None
            if ref is not None:
                with self.store.transaction():
                    self.store.update_attempt(task.id, attempt.number, worker_pid=ref.pid, worker_ctime=ref.ctime)
                attempt = self.store.attempt(task.id, attempt.number)
        return attempt

    def _select(self, verb: str, task_ids: Sequence[str] | None) -> list[TaskRecord]:
        tasks = self.store.tasks()
        if task_ids is None:
            applies = {
                "pause": {Status.RUNNING},
                "resume": {Status.PAUSED},
                "kill": set(Status.ALL) - Status.FINAL,
                "retry": {Status.FAILED, Status.KILLED, Status.RETRYING},
            }[verb]
            return [t for t in tasks if t.status in applies]
        by_id = {t.id: t for t in tasks}
        unknown = [i for i in task_ids if i not in by_id]
        if unknown:
            known = ", ".join(list(by_id)[:6]) + (" ..." if len(by_id) > 6 else "")
            raise ControlError(f"no such task in this run: {', '.join(unknown)} (tasks: {known})")
        return [by_id[i] for i in task_ids]


def _ok(line: str) -> tuple[bool, str]:
    return (not line.startswith("merge failed")), line


def request(
    paths: RunPaths,
    store: Store,
    verb: str,
    task_ids: Sequence[str] | None,
    make_controller: Callable[[], Controller],
    timeout: float = 120.0,
) -> tuple[bool, str]:
    """Apply a verb: through the live scheduler if there is one, else directly under the run lock."""
    lock = RunLock(paths)
    if lock.try_acquire(f"gputui {verb}"):
        try:
            return make_controller().apply(verb, task_ids)
        finally:
            lock.release()
    control_id = store.post_control(verb, {"tasks": None if task_ids is None else list(task_ids)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = store.control(control_id)
        if c is not None and c.done_at is not None:
            return bool(c.ok), c.result or ""
        if lock.try_acquire(f"gputui {verb}"):  # the scheduler died meanwhile: act ourselves
            try:
                c = store.control(control_id)
                if c is not None and c.done_at is not None:
                    return bool(c.ok), c.result or ""
                ok, result = make_controller().apply(verb, task_ids)
                with store.transaction():
                    store.finish_control(control_id, ok, result)
                return ok, result
            finally:
                lock.release()
        time.sleep(0.05)
    return False, f"the scheduler did not answer within {timeout:.0f}s; the request stays queued for it"
