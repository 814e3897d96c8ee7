"""A run directory opened to read and steer: what `gputui status|pause|kill|...` and the app do to a run,
as methods. Reading never locks or writes anything; every verb goes through `verbs.send`, so it reaches the
run's live scheduler when there is one and is applied here under the run lock when there is none."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gputui.api.verbs import Kill, Merge, Outcome, Pause, Resume, Retry, Verb, send
from gputui.jobs.tasks import TaskRecord
from gputui.rundir.opening import open_existing
from gputui.rundir.paths import RunPaths

if TYPE_CHECKING:  # imported where used: a verb from the command line needs neither
    from gputui.api.follow import LogEvent, WaitOutcome
    from gputui.api.status import RunStatus
    from gputui.views.runview import RunSnapshot, RunView

Ids = Sequence[str] | None  # the tasks a verb names; None: every task of the run it applies to


class Run:
    """One run directory. Not the scheduler's own handle (`rundir.opening.Run`): this one holds nothing
    open between calls but the snapshot reader, which `close` (or `with`) lets go."""

    def __init__(self, run_dir: str | Path) -> None:
        self.paths = RunPaths(Path(run_dir).resolve())
        if not self.paths.db.exists():
            raise FileNotFoundError(f"{self.paths.root} is not a gputui run directory (no state.db)")
        self._view: RunView | None = None

    @property
    def run_dir(self) -> Path:
        return self.paths.root

    # -- reading -------------------------------------------------------------------------------
    def snapshot(self) -> RunSnapshot | None:
        """Everything the app shows of the run: tasks with their attempts, progress, metrics, alerts. Read
        incrementally: call it again for what changed."""
        if self._view is None:
            from gputui.views.runview import RunView

            self._view = RunView(self.paths.root)
        return self._view.snapshot()

    def tasks(self) -> list[TaskRecord]:
        _, store = open_existing(self.paths.root, readonly=True)
        try:
            return store.tasks()
        finally:
            store.close()

    def status(self) -> RunStatus:
        """The tasks, their attempts, whether the scheduler is live, the GPU totals; `.as_dict()` is what
        `gputui status --json` prints."""
        from gputui.api.status import read_status

        return read_status(self.paths.root)

    def logs(self, task_id: str) -> list[Path]:
        """Every attempt's log of the task, oldest first (a retried task has one per attempt)."""
        _, store = open_existing(self.paths.root, readonly=True)
        try:
            attempts = store.attempts(task_id)  # oldest first
        finally:
            store.close()
        return [Path(a.log_path) for a in attempts]

    def log_path(self, task_id: str, attempt: int | None = None) -> Path | None:
        """The task's latest attempt's log, or attempt number `attempt`'s (None: no such attempt, or it has not
        started yet)."""
        if attempt is None:
            logs = self.logs(task_id)
            return logs[-1] if logs else None
        _, store = open_existing(self.paths.root, readonly=True)
        try:
            found = store.attempt(task_id, attempt)
        finally:
            store.close()
        return None if found is None else Path(found.log_path)

    def follow_log(self, task_id: str, *, attempt: int | None = None, follow: bool = False) -> Iterator[LogEvent]:
        """The task's log line by line (`gputui log`); `follow`: as it grows, onto a retry's log, until the task
        ends for good (`gputui log -f`). See `api.follow_log`."""
        from gputui.api.follow import follow_log

        return follow_log(self.paths.root, task_id, attempt=attempt, follow=follow)

    def wait(self, task_ids: Ids = None, *, timeout: float | None = None, on_end=None) -> WaitOutcome:
        """Until these tasks (None: every task) are final, or cannot end, or `timeout` (`gputui wait`). See
        `api.wait`."""
        from gputui.api.follow import wait

        return wait(self.paths.root, task_ids, timeout=timeout, on_end=on_end)

    # -- steering ------------------------------------------------------------------------------
    def send(self, verb: Verb) -> Outcome:
        return send(self.paths.root, verb)

    def pause(self, ids: Ids) -> Outcome:
        return self.send(Pause(ids))

    def resume(self, ids: Ids) -> Outcome:
        return self.send(Resume(ids))

    def kill(self, ids: Ids) -> Outcome:
        """SIGTERM, SIGKILL after the run's stop grace, to this run's processes only; waits until they end."""
        return self.send(Kill(ids))

    def retry(self, ids: Ids, *, force: bool = False) -> Outcome:
        return self.send(Retry(ids, force=force))

    def merge(self, verify: bool = False) -> Outcome:
        """Merge the shard outputs (coverage-checked) into the job's `[outputs].merged` file; `verify`: hash
        every output again instead of trusting an unchanged size, modification time and inode."""
        return self.send(Merge(verify=verify))

    def summary(self) -> tuple[Path, Path]:
        """Write summary.json and report.md from the run's state; returns their paths."""
        from gputui.results.finalize import write_summary

        paths, store = open_existing(self.paths.root)
        try:
            return write_summary(store, paths)
        finally:
            store.close()

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.paths.root)!r})"


def open_run(run_dir: str | Path) -> Run:
    """The run in `run_dir` (raises FileNotFoundError when it holds none)."""
    return Run(run_dir)
