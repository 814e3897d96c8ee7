"""What a waiting task shows when its scheduler gave it no reason of its own: engine/waiting.py words only the
head of the line (the first 100 waiting tasks, those that start next), so a run of 100,000 writes little. The
others wait their turn behind them, or, with no scheduler running, for one."""

from __future__ import annotations

from gputui.jobs.tasks import Status, TaskRecord

BEHIND = "waits its turn (earlier tasks first)"
NO_SCHEDULER = "waits for a scheduler (gputui run, or l in the app)"


def pending_words(scheduler_live: bool) -> str:
    """What a pending task with no reason of its own waits for."""
    return BEHIND if scheduler_live else NO_SCHEDULER


def unsaid_reason(t: TaskRecord, scheduler_live: bool) -> str:
    """A pending task's reason where its record has none (a pipeline step's: what it waits for, said apart)."""
    if t.status != Status.PENDING or t.reason or t.after:
        return ""
    return pending_words(scheduler_live)
