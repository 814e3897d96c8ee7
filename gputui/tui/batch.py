"""A verb on many tasks at once (the tagged rows, or `K`'s every unfinished task): which of them it applies to,
what its one confirmation says, and the one toast that sums up what it did. Pure (ids, statuses and the verb's
report in, words out), so the controls and the tests share it.

The verb's report has a line per task (`shard-3: killed 2 process(es)`); the engine records each kill and retry
in the run's event log and the task's reason (`gputui status` lists them), so the toast counts them instead."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gputui.jobs.tasks import Status
from gputui.tui.widgets.job_rows import verb_acts

NAMED = 10  # names a title or a toast lists before "and N more"
DONE_WORD = {"kill": "killed", "pause": "paused", "resume": "resumed", "retry": "retried"}
REFUSALS = ("is ", "has no ", "attempt ", "no such ")  # how the engine's refusal of one task begins
_WAS = re.compile(r"^killed \(it was (\w+);")
_STUCK = "still alive"


def names(ids: Sequence[str], limit: int = NAMED) -> str:
    """'shard-1, shard-4 and shard-7'; past `limit`: 'shard-1, ... shard-10 and 5 more'."""
    ids = list(ids)
    if len(ids) <= 1:
        return "".join(ids)
    if len(ids) <= limit:
        return f"{', '.join(ids[:-1])} and {ids[-1]}"
    return f"{', '.join(ids[:limit])} and {len(ids) - limit} more"


def tasks_word(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


@dataclass(frozen=True)
class Batch:
    """A verb on several tasks: `ids` those it applies to (as their statuses were read), `refused` the others
    (id -> status), `before` every task's status when asked."""

    verb: str
    ids: tuple[str, ...]
    refused: Mapping[str, str] = field(default_factory=dict)
    before: Mapping[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """`Kill 3 tasks: shard-1, shard-4 and shard-7?`"""
        return f"{self.verb.capitalize()} {tasks_word(len(self.ids))}: {names(self.ids)}?"

    def refused_line(self) -> str:
        """'not retried: shard-2 (running), shard-3 (done)' (empty when every task takes the verb)."""
        if not self.refused:
            return ""
        shown = [f"{i} ({s})" for i, s in list(self.refused.items())[:NAMED]]
        more = len(self.refused) - len(shown)
        return f"not {DONE_WORD[self.verb]}: {', '.join(shown)}" + (f" and {more} more" if more else "")


def applies(verb: str, status: str, mode: str) -> bool:
    """Whether `verb` acts on a task in `status` in the app's `mode` (pause: a running one; resume: paused)."""
    if verb in ("pause", "resume"):
        wanted = Status.RUNNING if verb == "pause" else Status.PAUSED
        return verb_acts("pause", status, mode) and status == wanted
    return verb_acts(verb, status, mode)


def batch_of(verb: str, statuses: Mapping[str, str], tagged: Sequence[str], mode: str) -> Batch:
    """The tagged tasks split into those `verb` applies to now and the others (a task no longer in the run:
    'gone'). `p` on tags where none runs and some are paused resumes them."""
    before = {i: statuses.get(i, "gone") for i in tagged}
    statuses_now = before.values()
    if verb == "pause" and not any(applies("pause", s, mode) for s in statuses_now):
        verb = "resume" if any(applies("resume", s, mode) for s in statuses_now) else verb
    ids = tuple(i for i in tagged if applies(verb, before[i], mode))
    chosen = set(ids)
    return Batch(verb, ids, {i: s for i, s in before.items() if i not in chosen}, before)


def summary(batch: Batch, ok: bool, report: str) -> tuple[str, str]:
    """One toast for the whole batch, and its severity: `killed 8 running, 32 pending`, then the tasks it did
    not act on and any line that needs a look (a process still alive after SIGKILL)."""
    done: Counter[str] = Counter()
    failed: list[str] = []
    stuck: list[str] = []
    known = {*batch.before, *batch.ids}
    for line in report.splitlines():
        task_id, sep, text = line.partition(": ")
        if not sep or task_id not in known:
            continue
        if not ok and text.startswith(REFUSALS):
            failed.append(f"{task_id} {text.split(';')[0]}")
            continue
        was = _WAS.match(text)
        done[was.group(1) if was else batch.before.get(task_id) or Status.RUNNING] += 1
        if _STUCK in text:
            stuck.append(line)
    word = DONE_WORD.get(batch.verb, batch.verb)
    if not done and not failed:  # nothing per task: what the verb said is the whole story
        return (report or f"{batch.verb}: done"), ("information" if ok else "error")
    counted = ", ".join(f"{n} {status}".rstrip() for status, n in sorted(done.items(), key=lambda x: -x[1]))
    lines = [f"{word} {counted}" if done else f"nothing {word}"]
    if refused := batch.refused_line():
        lines.append(refused)
    if failed:
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        lines.append(f"refused: {'; '.join(failed[:3])}{more}")
    lines += stuck[:3]
    severity = "information" if not (failed or stuck or batch.refused) else ("warning" if done else "error")
    return "\n".join(lines), severity
