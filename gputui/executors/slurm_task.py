"""A Slurm attempt's local stand-in: waits for the job it was given, as the process its waiter watches,
and ends as the command on the node did.

    python -S -P .../slurm_task.py --run-dir D --task T --attempt N --scheduler ID (--job J | --error WHY)
        --grace S --

Its waiter records it as the attempt's worker, so ownership, kills, pauses, adoption after a crash and
the journal treat it as the attempt. Slurm takes seconds to start a job, so a process per attempt costs
nothing that shows (on Ray, where a task starts in milliseconds, the run's bridge holds the attempt itself:
ray_bridge.py). Its waiter forks it (the command line is what `ps` shows), having loaded this module
with the keeper, so a stand-in imports nothing.

Its exit is read from the attempt's `exit` file, which the runner writes into the run directory (a stat
every POLL_S); squeue is asked only every SQUEUE_S, give or take a fifth (hundreds of stand-ins must not
flood the controller, nor ask it all in the same second), and once a second after a stop or a cancel,
to say in the log when the job waits and why, and to notice a job that left the queue without an end
recorded (cancelled from outside, a time limit, a node lost). What squeue said last (and, for a job
that pends for a reason out of the ordinary, the partition's drained or down nodes; or that the
controller does not answer) goes to the attempt's `squeue` file, which `gputui status` and the app show.
Its output (these lines) goes straight to the attempt's log, not through its waiter: a line a full disk
refuses is lost, and the stand-in goes on; so does one whose waiter was killed.
Signals become Slurm's actions, only on a job squeue shows with this scheduler's comment: SIGTERM asks
the runner to end the tree (the signal file: a job that has not started yet then ends before its
command starts, whenever Slurm starts it) and cancels a pending job (tried again every SQUEUE_S while
the controller does not answer), or cancels a running one after the grace; SIGTSTP suspends a running
job (`scontrol suspend`; where that is refused, the runner stops the tree on its node) or holds a
pending one; SIGCONT undoes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time

if __name__ == "__main__":  # run as a script (python -S -P): gputui is beside it, not installed maybe
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gputui.executors import slurm  # noqa: E402 - found through the path set above

POLL_S = 0.2
SQUEUE_S = 10.0
NODES_S = 60.0  # how often a job pending for an odd reason asks sinfo for the partition's unwell nodes
LOST = 255  # a failure, retried as one


class Attendant:
    def __init__(self, run_dir: str, task: str, number: int, job: str, grace: float, scheduler_id: str):
        self.job, self.grace, self.scheduler_id = job, grace, scheduler_id
        self.exit = slurm.attempt_file(run_dir, task, number, "exit")
        self.started = slurm.attempt_file(run_dir, task, number, "started")
        self.signals = slurm.attempt_file(run_dir, task, number, "signals")
        self.squeue = slurm.attempt_file(run_dir, task, number, "squeue")
        self.heard: dict = {}  # what the squeue file says now
        self.nodes, self.nodes_at = "", 0.0  # the partition's unwell nodes, when last asked
        self.cancel_at: float | None = None  # a cancel the controller did not answer: tried again then
        self.next_ask = 0.0  # when squeue is asked next
        self.unanswered = ""  # why the controller did not answer the last question of _ours ("" if it did)
        self.asked: list[int] = []  # signals received, acted on by the loop (not in the handler)
        self.stopping_at: float | None = None
        self.paused_by = ""  # how a pause was done: "suspend", "hold" or "signal"
        self.said = ""

    def say(self, line: str) -> None:
        _write(f"gputui: {line}")

    def attend(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGCONT):
            signal.signal(sig, lambda signum, _frame: self.asked.append(signum))
        self.next_ask = time.monotonic() + 1.0
        last: slurm.JobState | None = None
        while True:
            code = self._read_exit()
            if code is not None:
                if code != 0:
                    self._echo_slurm()
                return code
            while self.asked:
                self._act(self.asked.pop(0))
            now = time.monotonic()
            if self.stopping_at is not None and now >= self.stopping_at:
                self._cancel()  # the runner did not end it in its grace (or never will): Slurm does
                self.stopping_at = float("inf")
            if self.cancel_at is not None and now >= self.cancel_at:
                self._cancel()
            if now >= self.next_ask:
                self.next_ask = now + _paced(SQUEUE_S)
                try:
                    state = slurm.job_state(self.job)
                except slurm.SlurmUnavailable as e:
                    self._hear({"trouble": str(e)})
                    self._tell(f"cannot ask Slurm about job {self.job}: {e}")
                    continue
                if state is None:
                    return self._gone(last)
                last = state
                nodes = self._unwell(state)
                self._hear({"state": state.state, "reason": state.reason, "nodes": nodes})
                where = f" on {state.node}" if state.state == "RUNNING" and state.node else ""
                why = f" ({state.reason})" if state.state == "PENDING" and state.reason not in ("", "None") else ""
                why += f"; {nodes}" if nodes else ""
                self._tell(f"Slurm job {self.job}: {state.state.lower()}{where}{why}")
            time.sleep(POLL_S)

    def _unwell(self, state: slurm.JobState) -> str:
        """The partition's drained or down nodes, for a job that pends for a reason out of the ordinary
        (ReqNodeNotAvail, launch_failed_requeued_held...); asked of sinfo at most every NODES_S."""
        if state.state != "PENDING" or state.reason in slurm.ORDINARY or not state.partition:
            return ""
        if state.reason.startswith(("Dependency", "JobHeldUser", "BeginTime")):
            return ""
        now = time.monotonic()
        if now >= self.nodes_at:
            self.nodes, self.nodes_at = slurm.unwell_nodes(state.partition), now + NODES_S
        return self.nodes

    def _hear(self, heard: dict) -> None:
        """Keep what Slurm said of the job (or that it did not answer) in the `squeue` file, if it changed."""
        if heard == self.heard:
            return
        self.heard = heard
        tmp = self.squeue.with_name(self.squeue.name + ".tmp")
        try:
            tmp.write_text(json.dumps(heard | {"job": self.job}))
            os.replace(tmp, self.squeue)
        except OSError:
            pass  # only shown: the run goes on without it

    def _echo_slurm(self) -> None:
        """Slurm's own word on a job that did not end well (`*** JOB 12 ON node CANCELLED AT ... DUE TO
        TIME LIMIT ***`), from its output file into the attempt's log, where the failure's reason is read."""
        out = slurm.folder(self.exit.parent.parent) / f"job-{self.job}.out"
        for _ in range(10):  # slurmstepd writes it as it signals the job: a moment after the exit file, at most
            try:
                said = [line for line in out.read_text(errors="replace").splitlines() if "slurmstepd" in line]
            except OSError:
                said = []
            if said:
                for line in said[-3:]:
                    _write(line)
                return
            time.sleep(POLL_S)

    def _read(self, path) -> dict | None:
        """The runner's `started` or `exit` file, if it exists and is this job's."""
        try:
            with open(path) as f:
                found = json.load(f)
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) and found.get("job") == self.job else None

    def _read_exit(self) -> int | None:
        found = self._read(self.exit)
        try:
            return None if found is None else int(found["exit"])
        except (KeyError, TypeError, ValueError):
            return None

    def _ran(self) -> bool:
        return self._read(self.started) is not None

    def _gone(self, last: slurm.JobState | None) -> int:
        """The job left the queue: its end, if the runner recorded it (a shared filesystem may show the
        file a moment late), else why none was recorded. One cancelled before it started has none to wait for."""
        for _ in range(5 if self.stopping_at is not None and not self._ran() else 25):
            code = self._read_exit()
            if code is not None:
                return code
            time.sleep(POLL_S)
        if self.stopping_at is not None:
            self.say(f"Slurm job {self.job} cancelled")
            return -signal.SIGTERM
        if not self._ran() and last is not None and last.reason.startswith("Dependency"):
            self.say(f"Slurm dropped job {self.job}: a step it waits for failed; it runs again after that step")
            return slurm.NOT_STARTED
        ran = "after it started" if self._ran() else "before it started"
        self.say(
            f"Slurm job {self.job} left the queue {ran} without an exit status (cancelled from outside, a time "
            f"limit or a lost node; Slurm's own messages are in {slurm.folder(self.exit.parent.parent)})"
        )
        return LOST

    def _act(self, signum: int) -> None:
        if signum == signal.SIGTSTP:
            self._pause()
        elif signum == signal.SIGCONT:
            self._resume()
        elif self.stopping_at is None:
            self.stopping_at = time.monotonic() + self.grace + 5.0
            self._soon()
            self._signal_tree("TERM")  # the runner ends the tree (TERM, then KILL after the grace), or never
            if not self._ran():  # starts it, should Slurm start the job before the cancel reaches it
                self._cancel()

    def _pause(self) -> None:
        if self.paused_by or self._ours() is None:
            return
        if not self._ran():
            refused = slurm.control("uhold", self.job)
            self.paused_by = "" if refused else "hold"
            self._tell(f"held pending Slurm job {self.job}" if not refused else f"cannot hold: {refused}")
            return
        refused = slurm.control("suspend", self.job)
        if refused is None:
            self.paused_by = "suspend"
            self._tell(f"suspended Slurm job {self.job}")
        else:
            self.paused_by = "signal"
            self._signal_tree("STOP")
            self._tell(f"scontrol suspend refused ({refused}); stopped the job's processes on its node instead")

    def _resume(self) -> None:
        how, self.paused_by = self.paused_by, ""
        if how == "signal":
            self._signal_tree("CONT")
        elif how and self._ours() is not None:
            refused = slurm.control("release" if how == "hold" else "resume", self.job)
            self._tell(f"{'released' if how == 'hold' else 'resumed'} Slurm job {self.job}" + (
                f": refused ({refused})" if refused else ""))  # fmt: skip

    def _cancel(self) -> None:
        """scancel the job if squeue shows it as ours; while the controller does not answer, again every
        SQUEUE_S (the signal file already keeps the command from starting)."""
        self.cancel_at = None
        ours = self._ours()
        if self.unanswered:
            why = self.unanswered
            self._tell(f"cannot cancel Slurm job {self.job} yet: {why}; trying again every {SQUEUE_S:g}s")
            self.cancel_at = time.monotonic() + _paced(SQUEUE_S)
        elif ours is not None:
            refused = slurm.control("cancel", self.job)
            if refused:
                self._tell(f"scancel {self.job}: {refused}; trying again every {SQUEUE_S:g}s")
                self.cancel_at = time.monotonic() + _paced(SQUEUE_S)
            else:
                self._soon()  # gone in a moment

    def _ours(self) -> slurm.JobState | None:
        """The job's state if squeue shows it with this scheduler's comment, else None: gone, not ours, or
        the controller does not answer (then `unanswered` says why, and so does the `squeue` file)."""
        try:
            found, self.unanswered = slurm.ours(self.job, self.scheduler_id), ""
        except slurm.SlurmUnavailable as e:
            found, self.unanswered = None, str(e)
            self._hear({"trouble": self.unanswered})
        return found

    def _soon(self) -> None:
        """Ask squeue once in a second (a job stopped or cancelled is gone by then), then at the usual pace."""
        self.next_ask = min(self.next_ask, time.monotonic() + 1.0)

    def _signal_tree(self, word: str) -> None:
        try:
            slurm.ask_runner(self.signals, word)
        except OSError as e:
            self._tell(f"cannot ask the runner of Slurm job {self.job} for {word} ({self.signals}): {e}")

    def _tell(self, line: str) -> None:
        if line != self.said:
            self.said = line
            self.say(line)


def _paced(seconds: float) -> float:
    """`seconds`, give or take a fifth: stand-ins started together do not ask Slurm together."""
    return seconds * random.uniform(0.8, 1.2)


def _write(line: str) -> None:
    """A line to the log (fd 1); one the disk refuses is lost, not raised."""
    with contextlib.suppress(OSError):
        os.write(1, (line + "\n").encode(errors="replace"))


def command(run_dir, task_id: str, number: int, grace: float, scheduler_id: str, job: str | None, error=""):
    """The stand-in's command line: for the submitted `job`, or saying why it could not be submitted."""
    where = ["--run-dir", str(run_dir), "--task", task_id, "--attempt", str(number)]
    where += ["--scheduler", scheduler_id, "--grace", f"{grace:g}"]
    where += ["--job", job] if job else ["--error", error]
    return [sys.executable, "-S", "-P", os.path.abspath(__file__), *where, "--"]


def is_standin(argv: list[str]) -> bool:
    """Whether `argv` is a stand-in's command line (which a waiter runs by forking itself)."""
    return argv[:4] == [sys.executable, "-S", "-P", os.path.abspath(__file__)]


def main(args: list[str]) -> int:
    """The stand-in's body (`--job` the Slurm job, or `--error` why there is none); `--key value` pairs
    up to `--` (argparse alone would double the start-up time)."""
    pairs = args[: args.index("--")]
    o = {pairs[i].removeprefix("--"): pairs[i + 1] for i in range(0, len(pairs), 2)}
    if o.get("error"):
        _write(f"gputui: {o['error']}")
        return 127
    a = Attendant(o["run-dir"], o["task"], int(o["attempt"]), o["job"], float(o["grace"]), o["scheduler"])
    a.say(f"submitted to Slurm as job {o['job']}")
    code = a.attend()
    if code < 0:  # ended by a signal on its node: end the same way, so the attempt is recorded as it was
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGCONT):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
