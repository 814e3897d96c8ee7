"""Settling ended attempts: the done-manifest, the settle decision (rules/settle.py: done, retried,
requeued, failed), the alerts it raises, the signal files, and the job kind's rule (a sweep's next stage,
a pipeline's skipped steps), all in the transaction of the turn that learnt of the end."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from gputui import clock
from gputui.engine.accounting import Meter
from gputui.engine.attempt import Live
from gputui.engine.gpu_sampler import GpuSampler
from gputui.engine.leftovers import Leftovers
from gputui.engine.outbox import Outbox
from gputui.engine.packing import Packing
from gputui.engine.rules.failures import read_tail
from gputui.engine.rules.health import may_retry
from gputui.engine.rules.packing import unpack_line, unpacks
from gputui.engine.rules.settle import Ended, decide
from gputui.engine.run_state import RunState
from gputui.engine.setup import RunSetup
from gputui.engine.voice import Progress, Voice
from gputui.executors.journal import AttemptEnds
from gputui.jobs.kinds.base import AttemptOutput, JobKind
from gputui.jobs.kinds.registry import kind_of, on_settle
from gputui.jobs.oom import OomPolicy
from gputui.jobs.tasks import Status
from gputui.rundir import alerts_file
from gputui.rundir.manifests import write_manifest
from gputui.rundir.meta import read_meta, write_meta
from gputui.rundir.signal_files import write_signal
from gputui.rundir.store import Store


class Settler:
    def __init__(
        self,
        setup: RunSetup,
        state: RunState,
        store: Store,
        meter: Meter,
        sampler: GpuSampler,
        leftovers: Leftovers,
        outbox: Outbox,
        voice: Voice,
        progress: Progress,
    ):
        self.job = setup.job
        self.paths = setup.paths
        self.scheduler_id = setup.scheduler_id
        self.setup = setup  # the executor, the cluster, the policy
        self.executor = setup.executor
        self.check_output = setup.opts.check_output
        self.state = state
        self.store = store
        self.meter = meter
        self.sampler = sampler
        self.leftovers = leftovers
        self.outbox = outbox
        self.voice = voice
        self.progress = progress
        self.said_ends: set[tuple[str, int]] = set()  # settles said in turns not committed yet
        self.packing = Packing(self.job, store, meter, state)  # measured memory, shared GPUs (the launcher's)

    def committed(self) -> None:
        """The turn is committed: none of its settles is done again."""
        self.said_ends.clear()

    # -- watching ------------------------------------------------------------------------------
    def apply(self, news: dict[tuple[str, int], AttemptEnds], manifests: dict[str, str | None]) -> None:
        """The journal's news: starts noted, ends settled, leftovers found gone."""
        for key, ends in news.items():
            live = self.state.live.get(key[0])
            if live is not None and live.number == key[1]:
                started = {}
                if ends.started and not live.start_noted:  # started and ended: one write records both
                    started = self.leftovers.note_start(live, ends, write=not ends.ended)
                if ends.ended:
                    self.settle(live, ends, manifests.get(key[0]), started)
            lingering = self.state.lingering.get(key)
            if lingering is not None and ends.cleared_at is not None:
                self.leftovers.clear(lingering, ends.cleared_at)

    # -- settling an ended attempt -------------------------------------------------------------
    def write_manifests(self, news: dict[tuple[str, int], AttemptEnds]) -> dict[str, str | None]:
        """Done-manifests for attempts that exited 0 with their output present; values are errors."""
        results: dict[str, str | None] = {}
        for (task_id, number), ends in news.items():
            live = self.state.live.get(task_id)
            if live is not None and live.number == number and ends.ended:
                results[task_id] = self.manifest_for(live, ends)
        return results

    def manifest_for(self, live: Live, ends: AttemptEnds) -> str | None:
        task, output = self.state.tasks[live.task_id], self.state.outputs.get(live.task_id)
        if ends.exit_code != 0 or not output or not Path(output).exists() or task.status == Status.KILLED:
            return None
        try:
            ids = None
            if self.check_output is not None:
                ids, wrong = self.check_output(task, Path(output))
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

    def settle(
        self, live: Live, ends: AttemptEnds, manifest_error: str | None, started: dict | None = None
    ) -> None:
        """Record how an attempt ended; its GPUs stay reserved while any process of it is left. Said once:
        a turn that cannot be committed (a full disk) is done again, as often as it takes, in silence.
        `started`: the attempt's start record, not written yet (written with its end)."""
        said = live.key in self.said_ends
        self.said_ends.add(live.key)
        with self.voice.hushed(said):
            self._record_end(live, ends, manifest_error, started or {})

    def _record_end(self, live: Live, ends: AttemptEnds, manifest_error: str | None, started: dict) -> None:
        self.state.live.pop(live.task_id, None)
        cleared = ends.ended and ends.cleared
        # Its start, its end, and its clearing (nothing of it left): one write, in the same transaction.
        extra = started | ({"cleared_at": ends.ended_at or time.time()} if cleared else {})
        self._settle_task(live, ends, manifest_error, extra)
        said = self.executor.after_end(live.task_id, live.number, ends.exit_code)  # (Slurm: a job left unwatched)
        if said:
            self.voice.info(said)
        if cleared:
            self.executor.done(live.key)
            if live.cgroup and not live.ours:  # its waiter died before it could remove the attempt's cgroup
                self.leftovers.orphans.add(live.cgroup)
            self.sampler.look_again()  # its GPUs are free now: look again before placing
            return
        self.state.lingering[live.key] = live
        if ends.ended:
            message = (
                f"attempt {live.number} ended with {ends.leftovers} process(es) of it still running; they are "
                f"ended (SIGTERM, then SIGKILL after {self.job.stop_grace_s:g}s) before its GPUs are reused"
            )
            self.store.add_event("leftovers", message, live.task_id)
            self.voice.info(f"{live.task_id}: {message}")
        else:  # its waiter is gone: see for ourselves what is left
            live.ours = False
            self.leftovers.watch(live)

    def _settle_task(self, live: Live, ends: AttemptEnds, manifest_error: str | None, extra: dict) -> None:
        if live.log is not None:
            self.voice.worker_lines(live.label, live.log.read_lines(flush=True))
        self._last_look(live)
        task, output = self.state.tasks[live.task_id], self.state.outputs.get(live.task_id)
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
            time_limit=live.time_limit,
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
        if self.setup.cluster is not None:
            self.meter.ran_from(live.key, self._ran_since(live))
        fields = extra | d.attempt | self.meter.finish(live.key, ended.ended_at, live.gpus)
        self.store.update_attempt(task.id, live.number, **fields)
        self.packing.ended(d.outcome, fields.get("peak_memory"), live.gpus)
        if d.outcome in ("retrying", "failed"):
            others = {a.task_id for a in self.state.attempts() if set(a.gpus) & set(live.gpus)} - {task.id}
            if unpacks(d.failure, self.packing.share, live.key in self.packing.shared or bool(others)):
                self._unpack(live, len(others))
        if d.task:
            self.state.set(task.id, **d.task)
        kind = kind_of(self.job)
        if d.outcome == "done" and type(kind).settled is not JobKind.settled:  # what the kind reads of a task
            left = AttemptOutput(self.paths.events(task.id, live.number), partial(read_tail, live.log_path))
            if found := kind.settled(self.job.kind_spec, task, left):  # that ended well (a trial's metric)
                self.state.set(task.id, **found)
        if d.event:
            self.store.add_event(*d.event, task.id)
        if d.outcome == "done":
            took = clock.between(live.started_at, ended.ended_at)
            self.voice.info(f"done {task.id} {live.label} in {took:.1f}s")
        elif d.say:
            self.voice.info(d.say)
        self._alert_failure(live, d.outcome, d.failure, d.attempt.get("reason") or "")
        if d.outcome in ("done", "failed"):
            values = live.watch.latest if live.watch is not None else {}
            self.outbox.unsynced.append(
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
                    stopped_by=self._stopped_by(live),
                )
            )
        if d.outcome not in ("closed", "requeued"):
            self.outbox.settled.append(task.id)
            self.expand()
            self.progress.changed()

    def _unpack(self, live: Live, others: int) -> None:
        """A task of a job sharing GPUs ran out of GPU memory: one task per GPU for the rest of the run, kept in
        its state (in this turn's transaction: a turn rolled back and done again says it again), said once."""
        if read_meta(self.store).packing_off:
            return self.packing.unpack(self.packing.off or "")
        line = unpack_line(live.task_id, live.gpus, others)
        write_meta(self.store, read_meta(self.store).unpacked(line))
        self.packing.unpack(line)
        self.store.add_event("packing", line, live.task_id)
        self.voice.info(line)

    @staticmethod
    def _stopped_by(live: Live) -> str | None:
        if live.time_limit is not None:
            return "time_limit"
        return None if live.health_break is None else f"health: {live.health_break.rule}"

    def _last_look(self, live: Live) -> None:
        """The [health] rules over what a running attempt wrote between the last check and its end (checks
        come once a second): its last values count as much as the others."""
        if live.watch is None or live.health_break is not None:
            return
        if self.state.tasks[live.task_id].status != Status.RUNNING:  # paused or killed: not the rules' business
            return
        broken = live.watch.last_words(time.monotonic())
        if broken is not None:
            live.health_break = broken
            self.store.add_event("health", broken.reason, live.task_id)
            self.voice.info(f"{live.task_id} {live.label}: {broken.reason}")

    def _ran_since(self, live: Live) -> float | None:
        """When a cluster attempt started on its node, as its runner there wrote it; None if it never did."""
        started = self.executor.recorded.placement(live.task_id, live.number, live.log_path)
        return None if started is None else started.since

    def _oom_policy(self, task) -> OomPolicy | None:
        on_oom = self.job.retry.on_oom
        if on_oom is None:
            return None
        gpus_here = len(self.sampler.snapshot()) if self.sampler.probe is not None else 0
        if self.setup.cluster is not None:
            gpus_here = int(self.setup.cluster.gpus)
        gpus = self.setup.gpus_of(task.id)
        return OomPolicy(on_oom, gpus, self.job.params.get("batch_size"), gpus_here)

    def _alert_failure(self, live: Live, outcome: str, failure: str | None, reason: str) -> None:
        """An attempt that ran out of GPU memory, and a task that failed for good, raise alerts (sent once
        the settle is committed)."""
        if outcome not in ("failed", "retrying"):
            return
        about = {"task_id": live.task_id, "log_path": live.log_path, "gpus": live.gpus}
        if failure == "cuda_oom":
            message = f"{live.task_id} {live.label} attempt {live.number} ran out of GPU memory: {reason}"
            self.outbox.alerts.append(alerts_file.alert("out_of_memory", message, **about))
        if outcome == "failed":
            task = self.state.tasks[live.task_id]
            tries = f"{task.attempts}/{task.budget}"
            message = f"{live.task_id} {live.label} failed for good after {tries} attempt(s): {reason}"
            self.outbox.alerts.append(alerts_file.alert("task_failed", message, **about))

    # -- the job kind's rule -------------------------------------------------------------------
    def expand(self) -> None:
        """The job kind's rule, in the transaction that settled a task: a sweep's next stage, a pipeline's
        skipped steps. Taken once: the tasks it adds or marks are committed with the settle."""
        if type(kind_of(self.job)).on_settle is JobKind.on_settle:  # a kind with no such rule (shards)
            return
        e = on_settle(self.job, self.state.tasks.values())
        if not e:
            return
        if not e.failed and (meta := read_meta(self.store)).run_failed:
            # A stage ranked after all (its trials retried), the last one too: the run can succeed again.
            write_meta(self.store, meta.failed(None))
        if e.new:
            self.store.add_tasks(e.new, budget=self.job.retry.max_attempts)
            for t in e.new:
                self.state.added(self.store.task(t.id))
        for task_id, fields in e.updates.items():
            self.state.set(task_id, **fields)
            if fields.get("status") in Status.FINAL:
                self.outbox.settled.append(task_id)
        for task_id, kind, message in e.events:
            self.store.add_event(kind, message, task_id)
            self.voice.info(f"{task_id}: {message}" if task_id else message)
        if e.failed:
            write_meta(self.store, read_meta(self.store).failed(e.failed))
            self.store.add_event("run_failed", e.failed)
            self.voice.info(f"the run cannot succeed: {e.failed}")
