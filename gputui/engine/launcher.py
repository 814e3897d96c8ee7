"""Starting tasks: which waiting tasks start now and on which GPUs, the worker's command line and
environment, and the launch itself (committed first, so a task with a live attempt never starts twice)."""

from __future__ import annotations

import contextlib
import functools
import heapq
import os
import shlex
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from gputui import clock
from gputui.engine.accounting import Meter
from gputui.engine.attempt import WAITING, Live
from gputui.engine.gpu_sampler import GpuSampler
from gputui.engine.health_checks import HealthChecks
from gputui.engine.monitor import draining as draining_gpus
from gputui.engine.outbox import Outbox
from gputui.engine.resident import ResidentSlots, task_values
from gputui.engine.rules.packing import measured_words, pack, share_words
from gputui.engine.rules.placement import Policy, after_reason, parallel_reason, place, usable_gpus, why_waiting
from gputui.engine.rules.threads import thread_env
from gputui.engine.run_state import RunState
from gputui.engine.settler import Settler
from gputui.engine.setup import RunSetup
from gputui.engine.voice import Voice
from gputui.engine.waiting import EVERY, HEAD, WaitReasons
from gputui.executors import ownership
from gputui.executors.base import LaunchFailed, LaunchSpec, WaiterHandle
from gputui.executors.journal import AttemptEnds
from gputui.files.tail import LogTail
from gputui.gpus.probe import GpuSnapshot, cuda_visible_devices
from gputui.gpus.reservations import Reservations, claim_note, gpu_key
from gputui.jobs import oom
from gputui.jobs.box_policy import PolicyFile
from gputui.jobs.kinds.base import TaskValues
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.oom import batch_for, gpus_for
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status, TaskRecord
from gputui.jobs.templates import render_command
from gputui.rundir.paths import RunPaths
from gputui.rundir.store import Store

MIN_FREE_DISK = 64 * 1024 * 1024  # below this much free space in the run directory no new task starts


def release(fds) -> None:
    """Close GPU claims (reservation descriptors) nobody holds any more."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, else all of them)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=8)
def _paths_of(run_dir: Path) -> RunPaths:
    return RunPaths(run_dir)


def worker_request(
    job: JobSpec,
    task: TaskRecord,
    number: int,
    gpus: tuple[int, ...],
    scheduler_id: str,
    run_dir: Path,
    output: str | None = None,
    sized: Mapping[str, object] | None = None,
    num_gpus: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The worker's command line and its own variables (ownership tags, range, GPUs, events file). Pure.
    `output`: a shard's output file ({output}); `sized`: what a [model] table fills ({model}, ...);
    `num_gpus`: GPUs a cluster gives the task (none placed here, so `gpus` is empty)."""
    values, own = worker_values(job, task, number, gpus, run_dir, output, sized, num_gpus)
    env = {
        ownership.TAG_SCHEDULER: scheduler_id,
        ownership.TAG_TASK: task.id,
        ownership.TAG_ATTEMPT: str(number),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        "GPUTUI_EVENTS": _paths_of(run_dir).events_file(task.id, number),
    }
    env |= own.env
    return render_command(job, values, own.command), env


def worker_values(
    job: JobSpec,
    task: TaskRecord,
    number: int,
    gpus: tuple[int, ...],
    run_dir: Path,
    output: str | None = None,
    sized: Mapping[str, object] | None = None,
    num_gpus: int | None = None,
) -> tuple[dict[str, object], TaskValues]:
    """What fills the worker's command line (worker_request's arguments): the placeholders' values, the
    kind's own among them, and the kind's own (its variables, its command). Pure."""
    num_gpus = len(gpus) if num_gpus is None else num_gpus
    values: dict[str, object] = {
        "run_dir": run_dir,
        "output_dir": job.outputs.dir,
        "task_id": task.id,
        "attempt": number,
        "gpus": ",".join(map(str, gpus)),
        "num_gpus": num_gpus,
        **(sized or {}),
    }
    on_oom = job.retry.on_oom
    if on_oom == "smaller_batch":
        values["batch_size"] = batch_for(on_oom, int(job.params["batch_size"]), task.info)
    elif on_oom == "more_gpus" and oom.changes(task.info):
        values["tensor_parallel_size"] = num_gpus
    own = kind_of(job).values(job, task, output)  # the kind's: a shard's range, a trial's params, a step's
    values |= own.values
    return values, own


class RetryClock:
    """When retrying tasks are due. Their next_try_at is a wall time (the app shows it), read once as the delay it
    leaves and then measured on the monotonic clock, so a step of the wall clock neither starts a retry early nor
    holds it back; a delay read after a restart is at most [retry].backoff_max_s."""

    def __init__(self, backoff_max_s: float):
        self.backoff_max_s = backoff_max_s
        self._due: dict[
            str, tuple[float, float]
        ] = {}  # task id: (next_try_at as read, when due on the monotonic clock)

    def wait(self, t: TaskRecord) -> float:
        """Seconds until `t` is due (0 for a task that is not retrying, or whose retry was asked for now)."""
        if t.status != Status.RETRYING or t.next_try_at is None:
            return 0.0
        seen = self._due.get(t.id)
        if seen is None or seen[0] != t.next_try_at:
            delay = min(max(0.0, t.next_try_at - time.time()), self.backoff_max_s)
            seen = self._due[t.id] = (t.next_try_at, time.monotonic() + delay)
        return max(0.0, seen[1] - time.monotonic())


class Launcher:
    def __init__(
        self,
        setup: RunSetup,
        state: RunState,
        store: Store,
        sampler: GpuSampler,
        reservations: Reservations,
        meter: Meter,
        retries: RetryClock,
        health: HealthChecks,
        settler: Settler,
        outbox: Outbox,
        voice: Voice,
    ):
        self.job = setup.job
        self.paths = setup.paths
        self.scheduler_id = setup.scheduler_id
        self.setup = setup  # the executor, the cluster, the policy, the run mode's values
        self.executor = setup.executor
        self.cluster = setup.cluster
        self.state = state
        self.store = store
        self.sampler = sampler
        self.reservations = reservations  # the machine's map, or the run's own for private simulated GPUs
        self.box = PolicyFile(warn=voice.info)  # the box's policy: GPUs per user, GPUs kept for interactive use
        if self.cluster is None:  # (a cluster's nodes are not this box)
            self.box.current()  # a broken policy file refuses the run at once
        if reservations.warning:
            voice.info(reservations.warning)
        self.meter = meter
        self.health = health
        self.settler = settler  # an attempt that cannot be launched is settled at once
        self.outbox = outbox
        self.voice = voice
        self.retries = retries
        self.packing = settler.packing  # measured memory, shared GPUs
        self._disk_full = False
        self._waiting_said = ""
        self.reasons = WaitReasons(state)  # why the first waiting tasks wait
        self._told_at = float("-inf")  # when they were last looked at (monotonic)
        self._threads: dict[str, str] = {}
        self._note: dict | None = None  # what every claim says of the run (_claim_note)
        self.parallel_changed()
        varied = self.job.retry.on_oom == "more_gpus"  # tasks may come to ask for more GPUs than the others
        self.resident = (
            ResidentSlots(self.executor, state, self._gpus_needed, varied) if self.job.resident else None
        )

    @property
    def policy(self) -> Policy:
        """The run's GPU policy, as it is now (`gputui set max_parallel` changes it while the run goes)."""
        return self.setup.policy

    def parallel_changed(self) -> None:
        """max_parallel is what it is now: the thread count workers launched from now on get follows it, and the
        waiting tasks' reasons are told again at once."""
        # Local workers share this machine's cores; a cluster's node is its own (Ray sets them itself).
        present = os.environ.keys() | self.job.env.keys()
        local = self.cluster is None
        self._threads = thread_env(present, usable_cpus(), self.policy.max_parallel) if local else {}
        self._told_at = float("-inf")

    # -- launching -----------------------------------------------------------------------------
    def plan(self, launches: list[tuple[LaunchSpec, Live]]) -> None:
        """Record the attempts that start now (their launches are sent once the turn is committed), and why the
        first of those left waiting wait (waiting.py)."""
        state = self.state
        packing = self.packing
        packing.prune()  # the run's claims on GPUs none of its tasks holds any more
        if self.resident is not None:
            self.resident.let_go()  # idle resident workers no waiting task will take
        busy = len(state.live) + len(state.lingering)
        slots = None if self.policy.max_parallel is None else self.policy.max_parallel - busy
        if not state.waiting:
            return self._tell_why("")
        if slots is not None and slots <= 0:
            return self._tell_why(self._parallel_reason())
        if not self._room_on_disk():
            return self._tell_why("the run directory's disk is full")
        now = clock.now()  # the launches' time: wall, and CLOCK_BOOTTIME to measure them by
        lingering = {task_id for task_id, _ in state.lingering}
        ready, later, seen = [], [], set()
        while state.waiting and (slots is None or len(ready) < slots):
            index, task_id = heapq.heappop(state.waiting)
            t = state.tasks[task_id]
            if t.status not in WAITING or task_id in seen:
                continue  # stale heap entry
            seen.add(task_id)
            if self._held_back(t, lingering) != "":
                later.append((index, task_id))  # a process of its last attempt lives, it is not due, or it waits
            else:
                ready.append(t)
        full = slots is not None and len(ready) >= slots  # those behind wait for a slot, at least
        blocker = self._parallel_reason() if full else ""
        if ready and not self.executor.ready(time.monotonic(), self.voice.info):  # (the Ray bridge is not up)
            later.extend((t.index, t.id) for t in ready)  # tried again next turn
            ready, blocker = [], f"waiting for the {self.executor.kind} executor to be ready"
        if self.cluster is not None:  # the cluster places them: as many start as there are slots
            new = [self._record_launch(t, (), now, []) for t in ready]
            launches.extend(self.executor.submit(new, self.voice.info))  # (Slurm: sbatch, arrays, afterok)
            for entry in later:
                state.wait(*entry)
            return self._tell_why(blocker, lingering)
        if self.resident is not None:  # first to resident workers between tasks, which hold their GPUs
            given, ready = self.resident.take(ready)
            launches.extend(self._record_launch(t, waiter.slot, now, [], waiter) for t, waiter in given)
            busy += len(given) + len(self.resident.idle())
        gpus = self.sampler.snapshot() if self.sampler.probe is not None and ready else []
        policy = packing.policy(self.policy, gpus)  # measured memory in place of the declared one, once measured
        if gpus and (news := packing.news()):
            self.voice.info(news)
            self.store.add_event("placing", news)
        reserved = {g for live in state.attempts() for g in live.gpus}
        if self.resident is not None:
            reserved |= self.resident.held()
        # A killed task's GPU memory not released yet:
        draining = draining_gpus(gpus, self.scheduler_id, state.live)
        reserved |= draining
        box = self.box.current()
        usable = box.claimable(usable_gpus(gpus, reserved, policy))
        needs = {t.id: self._gpus_needed(t) for t in ready}
        measured = packing.measured()
        sharing = packing.sharing and measured is not None and all(n == 1 for n in needs.values())
        shares = packing.shares(measured.planned, draining) if sharing else {}
        want, mine, allowed = sum(needs.values()), 0, None
        limited = box.max_gpus_per_user is not None
        with self.reservations.user_turn() if limited else contextlib.nullcontext():
            if limited:  # this user's claims, all runs together, counted while no other run of theirs claims
                mine = self.reservations.held_by_user([gpu_key(g) for g in gpus])
                allowed = box.room(mine)
                want = min(want, allowed)
            note = self._claim_note(None)  # who claims them, written at once: counted by the user's other runs
            claims, foreign = self.reservations.claim_some([g for g in gpus if g.index in usable], want, note)
        if sharing:  # onto GPUs none of ours holds first, then beside ours where their memory leaves room
            spots = pack([t.id for t in ready], gpus, set(claims), shares, policy.min_free_bytes,
                         measured.planned, packing.cap)  # fmt: skip
            placed = {task_id: (g,) for task_id, g in spots}
        else:
            unclaimed = {g.index for g in gpus} - set(claims)
            placed = dict(place([t.id for t in ready], gpus, reserved | unclaimed, busy, policy, needs))
        placed_on = {g for on in placed.values() for g in on}
        unplaced = None
        for t in ready:
            if t.id in placed:
                key, held, beside = (t.id, t.attempts + 1), [], 0
                for g in placed[t.id]:
                    if g in claims:  # a GPU none of ours holds: the run keeps its claim where tasks may join
                        fd = claims.pop(g)
                        held.append(packing.keep(g, fd) if packing.keeping else fd)
                    else:  # beside tasks of ours (rules/packing.py)
                        beside = sum(1 for live in state.attempts() if g in live.gpus)
                        held.append(packing.join(g, key))
                for fd in held:
                    Reservations.annotate(fd, self._claim_note(t.id))
                launches.append(self._record_launch(t, placed[t.id], now, held, beside=beside))
            else:
                later.append((t.index, t.id))
                unplaced = unplaced or t
        release(claims.values())
        for entry in later:
            state.wait(*entry)
        if unplaced is not None:
            room = None if policy.max_parallel is None else policy.max_parallel - busy
            if self.sampler.probe is None or room is not None and ready.index(unplaced) >= room:
                blocker = self._parallel_reason()  # (idle resident workers count as running)
            else:
                users = self._users(gpus, reserved, policy)
                given = sum(len(p) for p in placed.values())
                capped = allowed is not None and allowed - given < needs[unplaced.id]
                limit = box.limit_reason(mine + given) if capped else ""
                if capped:  # GPUs not even tried: who holds them, all the same
                    untried = {gpu_key(g): g.index for g in gpus if g.index in usable and g.index not in placed_on}
                    found = self.reservations.holders(list(untried))
                    foreign = {untried[key]: note for key, note in found.items()} | foreign
                kept = box.reserved_gpus
                ours = {}
                if sharing:  # why each GPU our tasks share takes no more of them
                    shared_now = packing.shares(measured.planned, draining).items()
                    ours = {i: share_words(s, packing.cap, measured) for i, s in shared_now}
                memory = measured_words(measured) if measured is not None else ""
                taken = reserved | placed_on if sharing else reserved
                need = needs[unplaced.id]
                blocker = why_waiting(gpus, taken, policy, need, foreign, users, kept, limit, ours, memory)
            if not placed and not state.live and self.sampler.probe is not None and blocker != self._waiting_said:
                self.voice.info(f"waiting for GPUs: {blocker}")
                self._waiting_said = blocker
        self._tell_why(blocker, lingering)

    def _tell_why(self, blocker: str, lingering: set[str] | None = None) -> None:
        """Give the head of the line its reasons (waiting.py): a task's own (its last attempt still ends, the
        steps it waits for, its back-off), else `blocker`, why the next task free to go did not."""
        if time.monotonic() < self._told_at + EVERY:
            return
        self._told_at = time.monotonic()
        state = self.state
        if lingering is None:
            lingering = {task_id for task_id, _ in state.lingering}
        line, taken, seen = state.waiting, [], set()
        reasons: dict[str, str | None] = {}  # (a task missing from it says nothing: it was free to go)
        while line and len(seen) < HEAD:
            entry = heapq.heappop(line)
            t = state.tasks[entry[1]]
            if t.status not in WAITING or t.id in seen:
                continue  # stale heap entry
            seen.add(t.id)
            taken.append(entry)
            own = self._held_back(t, lingering)
            if own is None or own or blocker:
                reasons[t.id] = own if own != "" else blocker
        for entry in taken:
            heapq.heappush(line, entry)
        self.reasons.tell(reasons)

    def _held_back(self, t: TaskRecord, lingering: set[str]) -> str | None:
        """Why `t` may not start whatever the GPUs, "" where nothing of its own holds it back; None: a retry not
        due yet, whose reason (when it is due, why it failed) was written as its attempt settled."""
        if t.id in self.state.live or t.id in lingering:
            return "its last attempt is still ending"
        if self.retries.wait(t) > 0:
            return None
        tasks = self.state.tasks
        waits = [d for d in t.after if d in tasks and not self._may_follow(d)]
        return after_reason(waits) if waits else ""

    def _parallel_reason(self) -> str:
        return parallel_reason(self.policy.max_parallel or 0, self.setup.max_parallel_named)

    def _users(self, gpus: list[GpuSnapshot], reserved: set[int], policy: Policy) -> dict[int, str]:
        """Who uses each GPU below the free-memory bar (`policy`'s) that none of our tasks holds: another gputui
        run (its workers' tags), another user, or a process of ours outside gputui."""
        low = [g for g in gpus if g.index not in reserved and g.memory_free < policy.min_free_bytes]
        found: dict[int, str] = {}
        for g in low:
            said = []
            for proc in g.processes:
                sched, _, _ = ownership.tags(proc.pid)
                if sched is not None:
                    who = "this run" if sched == self.scheduler_id else "another gputui run"
                else:
                    try:
                        p = psutil.Process(proc.pid)
                        mine = p.uids().real == os.getuid()
                        who = "a process outside gputui" if mine else f"user {p.username()}"
                    except (psutil.Error, OSError, KeyError):  # (gone, or a uid with no name)
                        who = "a process outside gputui"
                if who not in said:
                    said.append(who)
            if said:
                found[g.index] = ", ".join(said)
        return found

    def _may_follow(self, dep: str) -> bool:
        """Whether a task waiting for `dep` may be launched: once `dep` is done, or while `dep` runs where its
        executor holds the follower back until `dep` ends well (Slurm: afterok on `dep`'s job)."""
        status = self.state.tasks[dep].status
        return status == Status.DONE or (status == Status.RUNNING and self.executor.queues_after(dep))

    def _gpus_needed(self, task: TaskRecord) -> int:
        """The policy's GPUs per worker, a pipeline step's own, or twice as many per out-of-memory retry."""
        return gpus_for(self.job.retry.on_oom, self.setup.gpus_of(task.id), task.info)

    def _claim_note(self, task_id: str | None) -> dict:
        """Who holds a claim: the run's part (its user's name looked up) made once, the task's added."""
        if self._note is None:
            self._note = claim_note(self.paths.root, self.job.name, self.scheduler_id)
        return self._note | {"task": task_id}

    def _room_on_disk(self) -> bool:
        try:
            usage = shutil.disk_usage(self.paths.root)
        except OSError:
            return True
        free = usage.free
        full = free < min(MIN_FREE_DISK, usage.total // 20)  # 5 % of a small disk is room enough
        if full and not self._disk_full:
            self.voice.info(
                f"the disk of {self.paths.root} is full ({free // (1024 * 1024)} MB free); no new task starts "
                f"until there is room (running tasks go on)"
            )
        elif self._disk_full and not full:
            self.voice.info(f"there is room again on the disk of {self.paths.root}; tasks start again")
        self._disk_full = full
        return not full

    def _record_launch(
        self,
        task: TaskRecord,
        gpus: tuple[int, ...],
        now: float,
        held: list[int],
        waiter: WaiterHandle | None = None,
        beside: int = 0,
    ) -> tuple[LaunchSpec, Live]:
        """`waiter`: a resident worker's, between tasks (else an idle waiter is taken); `beside`: tasks of ours
        already on its GPU, which it shares with them."""
        number = task.attempts + 1
        argv, env = worker_request(
            self.job,
            task,
            number,
            gpus,
            self.scheduler_id,
            self.paths.root,
            self.state.outputs.get(task.id),
            self.setup.sized,
            num_gpus=None if self.cluster is None else self._gpus_needed(task),
        )
        if self.sampler.probe is None:
            env.pop("CUDA_VISIBLE_DEVICES")
        else:  # each GPU as CUDA names it: a MIG instance by its UUID
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(gpus, self.sampler.gpus)
        env = self._threads | env
        shown = shlex.join(argv)
        if "CUDA_VISIBLE_DEVICES" in env:
            shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {shown}"
        log_path = self.paths.log(task.id, number)
        if task.info.get("output_dir"):  # a trial's or a step's own folder
            Path(task.info["output_dir"]).mkdir(parents=True, exist_ok=True)
        # Recorded before the launch: while it lives, the end will be known.
        waiter = waiter or self.executor.waiter()
        self.store.start_attempt(
            task.id, number, gpus, argv, str(log_path), now, (waiter.ref.pid, waiter.ref.start)
        )
        fields = {
            "status": Status.RUNNING,
            "attempts": number,
            "gpus": gpus,
            "reason": None,
            "next_try_at": None,
            "exit_code": None,
            "ended_at": None,
        }
        if task.started_at is None:
            fields["started_at"] = now
        self.state.set(task.id, **fields)
        self.reasons.started(task.id)
        self.store.add_event("launch", f"attempt {number}: {shown}", task.id)
        where = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
        if beside:
            where += f" (sharing it with {beside} other{'s' if beside != 1 else ''})"
        if self.cluster is not None:
            where = f" on the {self.executor.kind} cluster ({self._gpus_needed(task)} GPU)"
        self.voice.info(f"launch {task.id} {task.range_label} attempt {number}/{task.budget}{where}: {shown}")
        live = Live(task.id, number, gpus, task.range_label, str(log_path), now, waiter.ref)
        self.state.live[task.id] = live
        live.handle = waiter
        self.health.watch(live)
        asked = len(gpus) if self.cluster is None else self._gpus_needed(task)
        self.meter.start(live.key, asked, now)  # GPU-hours: the GPUs given, here or by the cluster
        tasks = self.state.tasks
        after = tuple(d for d in task.after if d in tasks and tasks[d].status != Status.DONE)
        resident = None
        if self.resident is not None:  # what its task is, told to the resident worker
            output = self.state.outputs.get(task.id)
            filled, _ = worker_values(self.job, task, number, gpus, self.paths.root, output, self.setup.sized)
            resident = task_values(self.job, filled)
        spec = LaunchSpec(task.id, number, argv, env, log_path, self.job.stop_grace_s, held, asked, after,
                          batch=kind_of(self.job).alike_tasks, resident=resident)  # fmt: skip
        return spec, live

    def give_back(self, launches: list[tuple[LaunchSpec, Live]]) -> None:
        """The turn was rolled back: these were never launched; their GPUs and waiters are free again."""
        for spec, live in launches:
            release(spec.held)
            self.executor.give_back(live.handle)

    def launch(self, spec: LaunchSpec, live: Live) -> None:
        """Send a committed attempt to its waiter (or the cluster); one that cannot be sent fails at once."""
        if self.voice.show_output:
            live.log = LogTail(spec.log_path)
        if spec.resident is not None:
            live.handle.slot = live.gpus  # its waiter keeps the worker, and these GPUs, between tasks
        try:
            try:
                self.executor.launch(live.handle, spec)
            except LaunchFailed as e:  # that waiter died while idle: another one, recorded first
                if not e.retry:
                    raise  # the bridge (or a resident worker's waiter, holding its GPUs) died just now: it fails
                waiter = self.executor.waiter()
                waiter.slot = live.handle.slot
                with self.store.transaction():
                    self.store.update_attempt(
                        spec.task_id, spec.number, waiter_pid=waiter.ref.pid, waiter_start=waiter.ref.start
                    )
                live.waiter = waiter.ref
                self.executor.launch(waiter, spec)
            live.ours = True
        except OSError as e:
            try:
                with open(spec.log_path, "a") as log:
                    log.write(f"gputui: cannot launch: {e}\n")
            except OSError:
                pass
            live.waiter = None
            with self.store.transaction():
                self.settler.settle(live, AttemptEnds(exit_code=127, ended_at=clock.now()), None)
            self.outbox.send_alerts()
        finally:
            live.handle = None
            release(spec.held)  # the waiter holds its own copies now
