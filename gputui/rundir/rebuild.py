"""Rebuilding a run's state that is gone or was set aside, from what outlives it.

The run's identity (`run.json`: the scheduler id every worker is tagged with) and the attempts
journal are kept outside `state.db`, so a lost, damaged or moved-aside database never turns into a
fresh run that launches shards beside workers still running: the rebuilt state keeps the scheduler
id, lists every attempt the journal knows, and leaves the unfinished ones running, so the scheduler
re-adopts those still alive (and settles the others from their exit status) exactly as after a
crash. Finished shards are recognised by their done-manifests.
"""

from __future__ import annotations

import time
from pathlib import Path

from gputui.executors import cgroup as cgroups
from gputui.executors import ownership
from gputui.executors.journal import JournalReader
from gputui.files.atomic import atomic_write_json
from gputui.jobs.tasks import Status
from gputui.rundir.paths import RunPaths
from gputui.rundir.state_file import RUN_JSON, run_identity
from gputui.rundir.store import Store


def identity_path(paths: RunPaths) -> Path:
    return paths.root / RUN_JSON


def write_identity(paths: RunPaths, scheduler_id: str, job_name: str) -> None:
    """Record the run's identity outside its state database (read back by state_file.run_identity)."""
    identity = {"scheduler_id": scheduler_id, "job": job_name, "created_at": time.time()}
    atomic_write_json(identity_path(paths), identity)


def previous_scheduler_id(paths: RunPaths) -> str | None:
    """The scheduler id of the run this directory held, if it held one."""
    found = run_identity(paths.root)
    return None if found is None else found[1]


def set_aside(paths: RunPaths) -> Path | None:
    """Move the state database (with its WAL files) aside, untouched, before its state is rebuilt: one that
    is damaged, another run's copied in, or any the user asked to rebuild. Returns where it went
    (`state.db.set-aside-<time>`, never over an earlier one)."""
    if not paths.db.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = paths.db.with_name(f"state.db.set-aside-{stamp}")
    n = 1
    while any(Path(f"{target}{suffix}").exists() for suffix in ("", "-wal", "-shm")):  # two in one second
        n += 1
        target = paths.db.with_name(f"state.db.set-aside-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{paths.db}{suffix}")
        if src.exists():
            src.rename(Path(f"{target}{suffix}"))
    return target


def from_journal(store: Store, paths: RunPaths, scheduler_id: str) -> str:
    """Record every attempt the journal knows (and any tagged worker it missed) in freshly planned
    state; returns one line saying what was found. Call inside the state's creating transaction."""
    reader = JournalReader(paths.journal)
    journal = dict(reader.update())
    tasks = {t.id: t for t in store.tasks()}
    latest: dict[str, int] = {}
    unfinished = 0
    last = {}
    for task_id, number in journal:
        last[task_id] = max(last.get(task_id, 0), number)
    for (task_id, number), ends in sorted(journal.items()):
        if task_id not in tasks:
            continue
        log = paths.log(task_id, number)
        store.start_attempt(task_id, number, tasks[task_id].gpus, (), str(log), _started_at(log))
        fields: dict = {"cgroup": ends.cgroup}
        for name, ref in (("waiter", ends.waiter), ("worker", ends.worker)):
            if ref is not None:
                fields |= {f"{name}_pid": ref.pid, f"{name}_start": ref.start}
        if ends.ended and number != last[task_id]:  # a task's last attempt is settled on resume (manifest)
            status = Status.DONE if ends.exit_code == 0 else Status.FAILED
            fields |= {"status": status, "exit_code": ends.exit_code, "ended_at": ends.ended_at}
            if ends.cleared:
                fields["cleared_at"] = ends.cleared_at or ends.ended_at
        elif not ends.ended:
            unfinished += 1
        store.update_attempt(task_id, number, **fields)
        latest[task_id] = max(latest.get(task_id, 0), number)
    # A worker whose start record never reached the journal still carries its task's tag: record it as
    # running, so it is watched until it ends and its shard is never launched beside it. Where this run
    # gave its attempts cgroups, a tagged process outside the attempt's own cgroup carries copied tags.
    had_cgroups = any(ends.cgroup for ends in journal.values())
    copied = 0
    for task_id, attempt, ref in ownership.scan_tagged(scheduler_id, list(tasks)):
        if not (attempt and attempt.isdigit()) or (task_id, int(attempt)) in journal:
            continue
        number, inside = int(attempt), cgroups.of(ref.pid)
        # Its attempt's cgroup, where it is in it or in a cgroup its worker made below it.
        cgroup = None if inside is None else cgroups.attempt_folder(inside, scheduler_id, task_id, number)
        if cgroup is None and had_cgroups:
            copied += 1
            continue
        recorded = store.attempt(task_id, number)  # another of its processes may have recorded it already
        if recorded is None:
            store.start_attempt(task_id, number, (), (), str(paths.log(task_id, number)), time.time())
            unfinished += 1
        if recorded is None or (cgroup and not recorded.cgroup):
            store.update_attempt(task_id, number, cgroup=cgroup)
        latest[task_id] = max(latest.get(task_id, 0), number)
    foreign = f"; {copied} process(es) outside this run's cgroups carry copied tags: not its own" if copied else ""
    for task_id, number in latest.items():
        attempt = store.attempt(task_id, number)
        running = attempt is not None and attempt.ended_at is None
        budget = tasks[task_id].budget + number
        status = Status.RUNNING if running else Status.PENDING
        store.update_task(task_id, attempts=number, budget=budget, status=status)
    return (
        f"rebuilt the run's state from {paths.journal.name}: {len(journal)} attempt(s) of {len(latest)} task(s), "
        f"{unfinished} not known to have ended (re-adopted if still running); done shards are recognised by "
        f"their done-manifests{foreign}"
    )


def _started_at(log: Path) -> float:
    try:
        return log.stat().st_ctime
    except OSError:
        return time.time()
