"""Settling ended attempts: the done-manifest, the settle decision, the job kind's rule (in the same
transaction), the [health] watch that may end an attempt early, and the signal files."""

from __future__ import annotations

import heapq
import time
from functools import partial
from pathlib import Path

from gputui import clock
from gputui.engine.attempt import Live
from gputui.engine.control import Stop
from gputui.engine.rules.failures import read_tail
from gputui.engine.rules.health import may_retry
from gputui.engine.rules.settle import Ended, decide
from gputui.engine.watching import AttemptWatch
from gputui.executors import cgroup as cgroups
from gputui.executors.journal import AttemptEnds
from gputui.jobs.kinds.base import AttemptOutput
from gputui.jobs.kinds.registry import kind_of, on_settle
from gputui.jobs.oom import OomPolicy
from gputui.jobs.tasks import Status
from gputui.rundir.manifests import write_manifest
from gputui.rundir.signal_files import write_signal


class _Silent:
    """The Output of a settle done again: what it says was said the first time."""

    def __init__(self, show_output: bool):
        self.show_output = show_output

    def info(self, text: str) -> None:
        pass

    def worker_lines(self, label: str, lines) -> None:
        pass

    def progress(self, counts, elapsed: float) -> None:
        pass


class Settling:
    """Part of Scheduler (see scheduler.py): its state lives there."""

    # -- watching ------------------------------------------------------------------------------
    def _apply_events(self, news: dict[tuple[str, int], AttemptEnds], manifests: dict[str, str | None]) -> None:
        for key, ends in news.items():
            live = self.live.get(key[0])
            if live is not None and live.number == key[1]:
                if ends.started and not live.start_noted:
                    self._note_start(live, ends)
                if ends.ended:
                    self._settle(live, ends, manifests.get(key[0]))
            lingering = self.lingering.get(key)
            if lingering is not None and ends.cleared_at is not None:
                self._clear(lingering, ends.cleared_at)

    # -- settling an ended attempt -------------------------------------------------------------
    def _write_manifests(self, news: dict[tuple[str, int], AttemptEnds]) -> dict[str, str | None]:
        """Done-manifests for attempts that exited 0 with their output present; values are errors."""
        results: dict[str, str | None] = {}
        for (task_id, number), ends in news.items():
            live = self.live.get(task_id)
            if live is not None and live.number == number and ends.ended:
                results[task_id] = self._manifest_for(live, ends)
        return results

    def _manifest_for(self, live: Live, ends: AttemptEnds) -> str | None:
        task, output = self.tasks[live.task_id], self.outputs.get(live.task_id)
        if ends.exit_code != 0 or not output or not Path(output).exists() or task.status == Status.KILLED:
            return None
        try:
            ids = None
            if self.opts.check_output is not None:
                ids, wrong = self.opts.check_output(task, Path(output))
                if wrong:
                    return f"its output fails the coverage check: {wrong}"
            write_manifest(
                Path(output),
                task_id=task.id,
                low=task.low,
                high=task.high,
                scheduler_id=self.scheduler_id,
                attempt=live.number,
                ids=ids,
            )
        except Exception as e:  # an odd output fails its task, never the scheduler
            return f"cannot record its output {output}: {e}"
        return None

    def _settle(self, live: Live, ends: AttemptEnds, manifest_error: str | None) -> None:
        """Record how an attempt ended; its GPUs stay reserved while any process of it is left. Said once:
        a turn that cannot be committed (a full disk) is done again, as often as it takes, in silence."""
        out = self.out
        if live.key in self._said_ends:
            self.out = _Silent(out.show_output)
        self._said_ends.add(live.key)
        try:
            self._record_end(live, ends, manifest_error)
        finally:
            self.out = out

    def _record_end(self, live: Live, ends: AttemptEnds, manifest_error: str | None) -> None:
        self.live.pop(live.task_id, None)
        self._settle_task(live, ends, manifest_error)
        said = self.executor.after_end(live.task_id, live.number, ends.exit_code)  # (Slurm: a job left unwatched)
        if said:
            self.out.info(said)
        if ends.ended and ends.cleared:
            self.store.update_attempt(live.task_id, live.number, cleared_at=ends.ended_at or time.time())
            self.executor.done(live.key)
            if live.cgroup and not live.ours:  # its waiter died before it could remove the attempt's cgroup
                cgroups.remove(live.cgroup, wait=0.0)
            self._gpus_at = 0.0  # its GPUs are free now: look again before placing
            return
        self.lingering[live.key] = live
        if ends.ended:
            message = (
                f"attempt {live.number} ended with {ends.leftovers} process(es) of it still running; they are "
                f"ended (SIGTERM, then SIGKILL after {self.job.stop_grace_s:g}s) before its GPUs are reused"
            )
            self.store.add_event("leftovers", message, live.task_id)
            self.out.info(f"{live.task_id}: {message}")
        else:  # its waiter is gone: see for ourselves what is left
            live.ours = False
            self._watch_lingering(live)

    def _settle_task(self, live: Live, ends: AttemptEnds, manifest_error: str | None) -> None:
        if live.log is not None:
            self.out.worker_lines(live.label, live.log.read_lines(flush=True))
        task, output = self.tasks[live.task_id], self.outputs.get(live.task_id)
        code = ends.exit_code
        ended = Ended(
            number=live.number,
            exit_code=code,
            ended_at=ends.ended_at or clock.now(),
            output=output,
            output_exists=bool(output) and Path(output).exists(),
            manifest_error=manifest_error,
            log_tail="" if code == 0 else read_tail(live.log_path),
            interrupted=live.interrupted,
            requeue=self.executor.requeue_reason(code),
            health=None if (b := live.health_break) is None else (b.rule, b.reason, may_retry(self.job.health, b)),
            lost=self.executor.lost_wording,
        )
        retry = self.job.retry
        d = decide(
            task,
            ended,
            backoff_s=retry.backoff_s,
            backoff_max_s=retry.backoff_max_s,
            now=time.time(),
            on_oom=self._oom_policy(task),
        )
        if self.cluster is not None:
            self.meter.ran_from(live.key, self._ran_since(live))
        self.store.update_attempt(task.id, live.number, **d.attempt, **self.meter.finish(live.key, ended.ended_at))
        if d.task:
            self._set(task.id, **d.task)
        if d.outcome == "done":  # what the kind reads of a task that ended well (a trial's metric)
            left = AttemptOutput(self.paths.events(task.id, live.number), partial(read_tail, live.log_path))
            if found := kind_of(self.job).settled(self.job.kind_spec, task, left):
                self._set(task.id, **found)
        if d.event:
            self.store.add_event(*d.event, task.id)
        if d.outcome == "done":
            self.out.info(f"done {task.id} {live.label} in {clock.between(live.started_at, ended.ended_at):.1f}s")
        elif d.say:
            self.out.info(d.say)
        self._alert_failure(live, d.outcome, d.failure, d.attempt.get("reason") or "")
        if d.outcome in ("done", "failed"):
            values = live.watch.latest if live.watch is not None else {}
            self._unsynced.append(
                write_signal(
                    self.paths,
                    task.id,
                    d.outcome,
                    durable=False,
                    step=live.watch.watch.last_step if live.watch is not None else None,
                    loss=values.get(self.job.health.metric if self.job.health else "loss"),
                    exit_code=code,
                    duration=clock.between(live.started_at, ended.ended_at),
                    reason=d.attempt.get("reason"),
                    stopped_by=None if live.health_break is None else f"health: {live.health_break.rule}",
                )
            )
        if d.outcome not in ("closed", "requeued"):
            self._settled.append(task.id)
            self._expand()
            self._progress()

    def _ran_since(self, live: Live) -> float | None:
        """When a cluster attempt started on its node, as its runner there wrote it; None if it never did."""
        started = self.executor.recorded.placement(live.task_id, live.number, live.log_path)
        return None if started is None else started.since

    def _oom_policy(self, task) -> OomPolicy | None:
        on_oom = self.job.retry.on_oom
        if on_oom is None:
            return None
        gpus_here = len(self._snapshot()) if self.probe is not None else 0
        if self.cluster is not None:
            gpus_here = int(self.cluster.gpus)
        gpus = self.needs.get(task.id, self.policy.gpus_per_worker)
        return OomPolicy(on_oom, gpus, self.job.params.get("batch_size"), gpus_here)

    def _expand(self) -> None:
        """The job kind's rule, in the transaction that settled a task: a sweep's next stage, a pipeline's
        skipped steps. Taken once: the tasks it adds or marks are committed with the settle."""
        e = on_settle(self.job, self.tasks.values())
        if not e:
            return
        if e.new:
            self.store.set_meta("run_failed", None)  # a stage ranked after all (its failed trials retried)
            self.store.add_tasks(e.new, budget=self.job.retry.max_attempts)
            for t in e.new:
                self.tasks[t.id] = self.store.task(t.id)
                self.outputs[t.id] = t.output
                self.counts[Status.PENDING] += 1
                heapq.heappush(self.waiting, (t.index, t.id))
        for task_id, fields in e.updates.items():
            self._set(task_id, **fields)
            if fields.get("status") in Status.FINAL:
                self._settled.append(task_id)
        for task_id, kind, message in e.events:
            self.store.add_event(kind, message, task_id)
            self.out.info(f"{task_id}: {message}" if task_id else message)
        if e.failed:
            self.store.set_meta("run_failed", e.failed)
            self.store.add_event("run_failed", e.failed)
            self.out.info(f"the run cannot succeed: {e.failed}")

    def _watch(self, live: Live) -> None:
        if self.job.health is not None:
            events = self.paths.events(live.task_id, live.number)
            started = time.monotonic() - clock.since(live.started_at)  # the health rules' clock: monotonic
            live.watch = AttemptWatch(self.job.health, events, live.log_path, started)

    def _check_health(self) -> None:
        """The [health] rules over every running attempt's new events and log lines; a break stops the
        attempt's whole tree, and its settle records the rule and the evidence. Timed on the monotonic
        clock: a step of the wall clock is not silence."""
        now = time.monotonic()
        for live in list(self.live.values()):
            if live.watch is None or live.health_break is not None or live.handle is not None:
                continue
            if self.tasks[live.task_id].status != Status.RUNNING:  # paused: its silence is ours
                live.watch.watch.activity(now)
                continue
            verdict = live.watch.poll(now)
            loss = (verdict.values or {}).get(self.job.health.metric)
            if verdict.healthy:
                self._unsynced.append(
                    write_signal(self.paths, live.task_id, "healthy", durable=False, step=verdict.step, loss=loss)
                )
                self.store.add_event("healthy", "passed its health window", live.task_id)
            if verdict.broken is not None:
                live.health_break = verdict.broken
                self.store.add_event("health", verdict.broken.reason, live.task_id)
                self.out.info(f"{live.task_id} {live.label}: {verdict.broken.reason}; stopping it")
                pairs = self._pairs([self.tasks[live.task_id]])
                self.stops.append(Stop(self.controller, pairs, self.job.stop_grace_s).begin())
