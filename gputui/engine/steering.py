"""What reaches the scheduler from outside its loop: control verbs posted by other processes (the app,
`gputui kill`), GPU samples (accounting, idle and ghost alerts), and the alerts it sends."""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping

from gputui import clock
from gputui.engine.attempt import WAITING, Live
from gputui.engine.control import ControlError
from gputui.engine.gpuwatch import Finding
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir import alerts_file


class Steering:
    """Part of Scheduler (see scheduler.py): its state lives there."""

    # -- controls ------------------------------------------------------------------------------
    def _apply_controls(self, controls) -> None:
        for c in controls:
            if any(stop.control_id == c.id for stop in self.stops):
                continue  # taken already: its kill is under way, and answered when it is over
            tasks = c.args.get("tasks")
            try:
                targets = self.controller.select(c.verb, tasks) if c.verb == "kill" else []
                if c.verb == "stop":
                    self.stop_requested = True
                    ok, result = True, "stopping: our running tasks get SIGTERM and stay pending for next time"
                elif c.verb == "start":
                    ok, result = self._start_now(tasks or [])
                elif targets:  # SIGKILL comes later, from the loop: answer when it is over
                    self.stops.append(self.controller.begin_kill(targets))
                    self.stops[-1].control_id = c.id
                    ok, result = None, ""
                else:
                    ok, result = self.controller.apply(c.verb, tasks, bool(c.args.get("force")))
            except ControlError as e:
                ok, result = False, str(e)
            except Exception as e:  # a bad request must never take the scheduler down
                ok, result = False, f"{c.verb} failed: {e}"
            if c.verb not in ("start", "stop"):
                self._load_tasks()  # the controller wrote to the store
                with self.store.transaction():
                    self._expand()  # a retried step's skipped followers wait again; a retried trial re-ranks
            if ok is not None:
                with self.store.transaction():
                    self.store.finish_control(c.id, ok, result)
                for line in result.splitlines():
                    self.out.info(line)

    def _retry_wait(self, t: TaskRecord) -> float:
        """Seconds until a retrying task is due, on the monotonic clock. Its next_try_at is a wall time (the
        app shows it), read once as the delay it leaves, so a step of the wall clock neither starts the retry
        early nor holds it back; a delay read after a restart is at most [retry].backoff_max_s."""
        if t.status != Status.RETRYING or t.next_try_at is None:
            return 0.0
        seen = self._retry_due.get(t.id)
        if seen is None or seen[0] != t.next_try_at:
            delay = min(max(0.0, t.next_try_at - time.time()), self.job.retry.backoff_max_s)
            seen = self._retry_due[t.id] = (t.next_try_at, time.monotonic() + delay)
        return max(0.0, seen[1] - time.monotonic())

    def _start_now(self, task_ids: list[str]) -> tuple[bool, str]:
        """Put waiting tasks first in line; they start as soon as resources allow."""
        lines, ok = [], True
        for task_id in task_ids:
            t = self.tasks.get(task_id)
            if t is None or t.status not in WAITING:
                ok = False
                lines.append(f"{task_id}: is {t.status if t else 'unknown'}; only a waiting task can be started")
                continue
            if t.status == Status.RETRYING:
                self._set(task_id, next_try_at=None)
            heapq.heappush(self.waiting, (-1, task_id))
            lines.append(f"{task_id}: starts as soon as resources allow")
        return ok, "\n".join(lines)

    def _advance_stops(self) -> None:
        for stop in [s for s in self.stops if s.step()]:
            self.stops.remove(stop)
            result = "\n".join(stop.report())
            if stop.control_id is not None:
                with self.store.transaction():
                    self.store.finish_control(stop.control_id, True, result)
            for line in result.splitlines():
                self.out.info(line)

    def _expire_old_controls(self) -> None:
        """Requests posted before this scheduler started found no one to answer them: never act late."""
        with self.store.transaction():
            for c in self.store.pending_controls():
                if c.ts < self._started_wall:
                    self.store.finish_control(c.id, False, "expired: no scheduler took it in time")

    def _pairs(self, tasks: list[TaskRecord]) -> list:
        return [(t, a) for t in tasks if (a := self.store.attempt(t.id, t.attempts)) is not None]

    # -- GPUs ----------------------------------------------------------------------------------
    def _snapshot(self, force: bool = False) -> list[GpuSnapshot]:
        now = time.monotonic()
        if force or now - self._gpus_at >= self.opts.probe_every:
            self._gpus = self.probe.snapshot()
            self._gpus_at = now
            self._observe(self._gpus)
        return self._gpus

    def _observe(self, gpus: list[GpuSnapshot]) -> None:
        """Each GPU sample: the running attempts' GPU time and memory, idle GPUs, ghost memory."""
        now = time.monotonic()  # the watches' intervals; GPU time is measured by clock stamps
        running = [live for live in self.live.values() if live.handle is None]  # launched, not just recorded
        self.meter.sample(gpus, [(live.key, live.gpus, live.processes()) for live in running], clock.now())
        findings: list[Finding] = []
        if self.idle is not None:
            busy = [(live.key, live.gpus) for live in running if self.tasks[live.task_id].status == Status.RUNNING]
            findings += self.idle.sample(gpus, busy, now)
        if self.ghosts is not None:
            findings += self.ghosts.sample(gpus, {t.id: t.status for t in self.tasks.values()}, now)
        for f in findings:  # not tied to this turn's commit: sent at once
            live = self.live.get(f.task_id or "") if f.kind == "gpu_idle" else None
            self.out.info(f"alert: {f.message}")
            log_path = None if live is None else live.log_path
            self.alerter.emit(
                alerts_file.alert(f.kind, f.message, task_id=f.task_id, gpu=f.gpu, log_path=log_path)
            )

    def _alert_failure(self, live: Live, outcome: str, failure: str | None, reason: str) -> None:
        """An attempt that ran out of GPU memory, and a task that failed for good, raise alerts (sent once
        the settle is committed)."""
        if outcome not in ("failed", "retrying"):
            return
        about = {"task_id": live.task_id, "log_path": live.log_path, "gpus": live.gpus}
        if failure == "cuda_oom":
            message = f"{live.task_id} {live.label} attempt {live.number} ran out of GPU memory: {reason}"
            self._alerts_due.append(alerts_file.alert("out_of_memory", message, **about))
        if outcome == "failed":
            task = self.tasks[live.task_id]
            tries = f"{task.attempts}/{task.budget}"
            message = f"{live.task_id} {live.label} failed for good after {tries} attempt(s): {reason}"
            self._alerts_due.append(alerts_file.alert("task_failed", message, **about))

    def _hand_over_settled(self) -> None:
        settled, self._settled = self._settled, []
        if settled and self.opts.on_settled is not None:
            try:
                self.opts.on_settled(settled)
            except Exception as e:  # a product that cannot be written must never stop the run
                self.out.info(f"cannot write the products of {', '.join(settled)}: {e}")

    def _send_alerts(self) -> None:
        for event in self._alerts_due:
            self.alerter.emit(event)
        self._alerts_due.clear()

    def _simulated_load(self) -> Mapping[int, list[tuple[int, int]]]:
        per_task = int((self.policy.memory_per_worker_gb or TASK_MEMORY_GB) * GIB)
        load: dict[int, list[tuple[int, int]]] = {}
        for live in [*self.live.values(), *self.lingering.values()]:
            for g in live.gpus:
                load.setdefault(g, []).append((live.worker.pid if live.worker else 0, per_task))
        return load
