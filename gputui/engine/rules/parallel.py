"""Pure: a run's max_parallel changed while it runs (`gputui set max_parallel=...`, the app's + and -), and the
words for it. No I/O, tested directly.

A change holds back or lets through new launches only: lowering it never stops a running task, it waits for
fewer to run. The value set is kept in the run's state over the job file's until set back (`job`)."""

from __future__ import annotations

JOB = "job"  # `max_parallel=job`: back to the job file's own


class BadSetting(ValueError):
    """A `set` that cannot be applied; str() says what was expected."""


def new_limit(now: int | None, to: int | None, by: int, job_value: int | None) -> int | None:
    """What max_parallel becomes: `to` (a number), `now` moved `by` (+1, -1...), or, with neither, the job
    file's (`job_value`; None: as many as resources allow). `now`: what the run works with now (None: not
    limited). Never below 1."""
    if by:
        if now is None:
            raise BadSetting(
                "max_parallel is not a set number now (gputui works it out from the GPUs, the cores or the "
                "cluster's slots), so it cannot be moved by one; give a number: max_parallel=N"
            )
        return max(1, now + by)
    if to is None:
        return job_value
    if to < 1:
        raise BadSetting(f"max_parallel={to}: expected a whole number of tasks, 1 or more")
    return to


def parse_value(text: str) -> tuple[int | None, int]:
    """The value of `max_parallel=VALUE` as (to, by): N, +N / -N (relative to what the run works with now),
    or `job`. Raises BadSetting saying what was expected."""
    text = text.strip()
    expected = "expected a whole number 1 or more, +N / -N (relative to now), or 'job' (the job file's value)"
    if text == JOB:
        return None, 0
    try:
        n = int(text)
    except ValueError:
        raise BadSetting(f"max_parallel={text}: {expected}") from None
    if text[0] in "+-":
        if n == 0:
            raise BadSetting(f"max_parallel={text}: {expected}")
        return None, n
    if n < 1:
        raise BadSetting(f"max_parallel={text}: {expected}")
    return n, 0


def shown(n: int | None) -> str:
    """None: gputui works it out (the GPUs, the cores, a cluster's slots)."""
    return "auto" if n is None else str(n)


def change_line(old: int | None, new: int | None, live: bool) -> str:
    """What a change answers: `max_parallel 4 → 5`, and when it applies."""
    head = f"max_parallel {shown(old)} → {shown(new)}"
    if not live:
        return head + " (no scheduler is running this run: its next start uses it)"
    if old is not None and (new is None or new > old):
        return head + " (more tasks start at once from now)"
    if new is not None and old is not None and new < old:
        return head + " (running tasks go on; no new one starts until fewer than it run)"
    return head


def origin(set_value: int | None, job_value: int | None) -> str:
    """Where the run's max_parallel comes from, as `gputui status` says it: `3 (set; job file says 8)`; ""
    where nothing was set (the job file's applies, as it always did)."""
    if set_value is None:
        return ""
    job = f"job file says {job_value}" if job_value is not None else "the job file sets none"
    return f"{set_value} (set; {job})"
