"""The keys that act on the run: launch, kill (after a confirmation naming the processes), the menu's
merge and summary, and quitting (detach or stop). `RunControls` is owned by GpuTuiApp (app.py) and reads
what it last showed; every verb goes through `gputui.api` (the run's control channel, as the CLI's do), in a
thread worker, and ends in a toast."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from textual.app import App

from gputui.api import (
    Kill,
    Pause,
    Retry,
    RunMeta,
    SetParallel,
    Start,
    StartFailed,
    Stop,
    Verb,
    open_run,
    send,
    start_in_background,
    verb_named,
)
from gputui.api.machine import PauseVerdict, pause_verdict
from gputui.jobs.tasks import Status
from gputui.tui import glyphs, modes
from gputui.tui.batch import NAMED, Batch, batch_of, summary
from gputui.tui.screens.dialogs import ChoiceScreen, ConfirmScreen, QuitScreen
from gputui.tui.screens.menu import FileScreen, MenuScreen
from gputui.views.executor_facts import kill_lines
from gputui.views.runview import RunSnapshot, TaskView

WAITING = (Status.PENDING, Status.RETRYING)


@dataclass(frozen=True)
class Say:
    text: str
    severity: str = "information"


@dataclass(frozen=True)
class StartRun:
    only_pending: bool


@dataclass(frozen=True)
class AskHowToStart:
    """`choices`: (key, answer, what it does); answers: `failed` (the run started again: tasks that failed for
    good get a fresh set of attempts), `only` (only the pending), `over` (every done task too: a new attempt for
    each, its output replaced as `retry --force` does)."""

    body: str
    choices: list[tuple[str, str, str]]
    title: str = "Start the run again?"


OVER = ("a", "over", "run all again (done tasks too: new attempts, outputs replaced)")


def all_done(run: RunSnapshot) -> bool:
    """A run with nothing failed, killed or waiting: `l` offers to start it over."""
    counts = run.counts
    return not any(counts.get(s, 0) for s in (Status.FAILED, Status.KILLED, *WAITING))


def launch_step(
    run: RunSnapshot | None, selected: TaskView | None, *, job_known: bool, no_fit: str | None
) -> Say | Start | StartRun | AskHowToStart:
    """What `l` does now: start the selected waiting task of a live run, start the run (again), ask whether
    tasks that failed for good run again too, or say why there is nothing to start."""
    if run is not None and run.scheduler_live:
        if selected is not None and selected.task.status in WAITING:
            return Start((selected.task.id,))
        return Say("the run is already running; select a pending task to start it now")
    if not job_known:
        return Say("no job file is known for this run", "warning")
    if run is None:
        if no_fit:
            return Say(f"cannot launch: {no_fit} (gputui plan says more)", "error")
        return StartRun(False)
    counts = run.counts
    failed, waiting = counts.get(Status.FAILED, 0), sum(counts.get(s, 0) for s in WAITING)
    if not failed and not waiting:
        if all_done(run):
            done = counts.get(Status.DONE, 0)
            body = f"Every task is done ({done}). Running them all again replaces their outputs, each atomically."
            return AskHowToStart(body, [OVER], "Start the finished run over?")
        killed = counts.get(Status.KILLED, 0)
        return Say(f"the run is finished; {killed} killed task(s) stay killed until retried (r)")
    if not failed:
        return StartRun(True)
    listed = ", ".join(run.first_ids([Status.FAILED], 8)) + (f" {glyphs.now().ellipsis}" if failed > 8 else "")
    named = run.first_ids(WAITING, 8)
    body = (
        f"{failed} task(s) failed for good: {listed}.\n"
        f"{waiting} task(s) are pending" + (f": {', '.join(named)}" if waiting else "") + "."
    )
    choices = [("f", "failed", "run the failed tasks again" + (" and the pending" if waiting else ""))]
    if waiting:
        choices.append(("o", "only", "only the pending (failed stay failed)"))
    if counts.get(Status.DONE, 0):
        choices.append(OVER)
    return AskHowToStart(body, choices)


KEEP, FREE = "keep", "free"


def pause_choices(verdict: PauseVerdict) -> AskHowToStart | None:
    """What `p` asks of a running task: nothing where none of its processes uses CUDA (paused at once);
    else pause keeping its GPU memory, or pause and free it (cuda-checkpoint), or the reason it cannot be."""
    if not verdict.pids:
        return None
    keep = ("p", KEEP, "pause (SIGSTOP; it keeps its GPU memory)")
    if verdict.ok:
        free = ("f", FREE, "pause and free its GPU memory (cuda-checkpoint; its GPU stays reserved for it)")
        body = f"Its CUDA process {verdict.pid} can be checkpointed first: its GPU memory is freed until resume."
        return AskHowToStart(body, [keep, free], "Pause?")
    return AskHowToStart(f"Pause and free its GPU memory is not possible: {verdict.reason}.", [keep], "Pause?")


class RunControls:
    """What the app's run keys do. Blocking work (a /proc scan, a verb waiting for its answer, starting a
    scheduler) runs in a thread worker of the app's "control" group; results come back as toasts."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.launching = False

    def _in_thread(self, work: Callable, *args) -> None:
        self.app.run_worker(lambda: work(*args), thread=True, group="control", exit_on_error=False)

    def acts(self, action: str, mode: str) -> bool:
        """Whether `l` (launch) or `K` (kill_all) would do something now, in a job mode."""
        app = self.app
        if action == "launch" and mode == modes.LIVE:
            selected = app.selected_task()
            return selected is not None and selected.task.status in WAITING
        if action == "launch" and mode == modes.FINISHED:
            return True  # a finished run: started again (tasks that failed), or over (every task done)
        if action == "kill_all":
            return app.snapshot is not None and any(s not in Status.FINAL for s in app.snapshot.counts)
        return True

    def refuse_readonly(self) -> bool:
        if self.app.readonly:
            self.app.say("read-only view: nothing can be signalled from here", severity="warning")
        return self.app.readonly

    def request(self, verb: str, task_id: str) -> None:
        """A verb the job table asks for on its selected task (kill asks first)."""
        if self.refuse_readonly():
            return
        if verb == "kill":
            self.confirm_kill([task_id])
        elif verb == "pause":
            self._in_thread(self._ask_pause, task_id)
        else:
            self.send(verb_named(verb, [task_id]))

    def _ask_pause(self, task_id: str) -> None:
        """Whether its GPU memory can be freed too (a /proc scan and NVML: in a thread), then ask, or pause."""
        app = self.app
        try:
            refs = app.view.processes([task_id]).get(task_id, []) if app.view is not None else []
            step = pause_choices(pause_verdict(r.pid for r in refs))
        except Exception:  # never a traceback for a question: a plain pause
            step = None
        if step is None:
            self._send(Pause((task_id,)))
            return

        def chosen(choice: str | None) -> None:
            if choice in (KEEP, FREE):
                self.send(Pause((task_id,), free_memory=choice == FREE))

        app.call_from_thread(app.push_screen, ChoiceScreen(f"Pause {task_id}?", step.body, step.choices), chosen)

    def request_many(self, verb: str, task_ids: Sequence[str]) -> None:
        """A verb on the tagged tasks: after one confirmation naming them, on those it applies to."""
        if self.refuse_readonly() or self.app.view is None:
            return
        self._in_thread(self._confirm_many, verb, tuple(task_ids), self.app.mode)

    def _confirm_many(self, verb: str, task_ids: tuple[str, ...], mode: str) -> None:
        """The tagged tasks' statuses now (read in this thread), then one question naming those it acts on."""
        app = self.app
        batch = batch_of(verb, app.view.statuses(list(task_ids)), task_ids, mode)
        if not batch.ids:
            said = ", ".join(f"{i} is {s}" for i, s in list(batch.refused.items())[:NAMED])
            more = len(batch.refused) - NAMED
            said += f" and {more} more" if more > 0 else ""
            app.call_from_thread(app.say, f"no tagged task to {batch.verb}: {said}", "warning")
            return
        if batch.verb == "kill":
            body = self._kill_body(list(batch.ids), list(batch.ids))
        else:
            body = {
                "pause": "SIGSTOP to their process trees (each keeps its GPU memory).",
                "resume": "SIGCONT to their process trees.",
                "retry": "Each is queued again with a fresh set of attempts.",
            }[batch.verb]
        if refused := batch.refused_line():
            body += f"\n{refused}"

        def done(yes: bool | None) -> None:
            if yes:
                self.send(verb_named(batch.verb, batch.ids), batch)

        app.call_from_thread(app.push_screen, ConfirmScreen(batch.title, body), done)

    def kill_all(self) -> None:
        app = self.app
        if app.monitor_only or self.refuse_readonly() or app.snapshot is None:
            return
        if all(s in Status.FINAL for s in app.snapshot.counts):
            app.say("no task to kill: every task has finished")
            return
        self.confirm_kill(None)

    def confirm_kill(self, task_ids: list[str] | None) -> None:
        """Ask before killing these tasks (None: every task not finished, as the store has them then)."""
        self._in_thread(self._confirm_kill, task_ids)

    def _confirm_kill(self, task_ids: list[str] | None) -> None:
        """Name what will be signalled (a /proc scan, so in a thread), then ask."""
        app = self.app
        tried = task_ids
        if task_ids is None:  # every task not finished; only those ever tried can have processes
            task_ids, tried = app.view.unfinished()
            if not task_ids:
                return
        body = self._kill_body(task_ids, tried)
        title = f"Kill {task_ids[0]}?" if len(task_ids) == 1 else f"Kill all {len(task_ids)} tasks of this run?"
        # Every task of the run: one toast sums it up (their statuses now say what each kill was).
        batch = Batch("kill", tuple(task_ids), before=app.view.statuses(task_ids)) if len(task_ids) > 1 else None

        def done(yes: bool | None) -> None:
            if yes:
                self.send(Kill(task_ids), batch)

        app.call_from_thread(app.push_screen, ConfirmScreen(title, body), done)

    def _kill_body(self, task_ids: list[str], tried: list[str]) -> str:
        """What a kill signals: the processes of each task (a /proc scan: in a thread)."""
        app = self.app
        found = app.view.processes(tried) if app.view is not None else {}
        lines = kill_lines(app.snapshot, found, task_ids)
        grace = (app.snapshot.meta if app.snapshot else RunMeta()).job.stop_grace_s
        return (
            f"SIGTERM, then SIGKILL after {grace:g}s, to this run's processes only:\n"
            + "\n".join(lines[:8])
            + (f"\n{glyphs.now().ellipsis} and {len(lines) - 8} more" if len(lines) > 8 else "")
        )

    def launch(self) -> None:
        app = self.app
        if app.monitor_only or self.refuse_readonly():
            return
        if self.launching:
            app.say(f"the scheduler is starting{glyphs.now().ellipsis}")
            return
        run = app.snapshot
        job_known = app.job_path is not None or bool(run and run.meta.job.file)
        no_fit = app.plan.no_fit if run is None and app.plan is not None else None
        step = launch_step(run, app.selected_task(), job_known=job_known, no_fit=no_fit)
        if isinstance(step, Say):
            app.say(step.text, severity=step.severity)
        elif isinstance(step, Start):
            self.send(step)
        elif isinstance(step, StartRun):
            self._in_thread(self._start_scheduler, step.only_pending)
        else:

            def chosen(choice: str | None) -> None:
                if choice in ("failed", "only"):
                    self._in_thread(self._start_scheduler, choice == "only")
                elif choice == "over":
                    self._in_thread(self._start_over)

            app.push_screen(ChoiceScreen(step.title, step.body, step.choices), chosen)

    def _start_over(self) -> None:
        """Every done task queued again as `gputui retry --force` does (its done-manifest removed, so its output
        is replaced whole when the new attempt finishes), then the run started again (failed tasks with it)."""
        app = self.app
        done = app.view.ids([Status.DONE])
        if done:
            self.launching = True
            try:
                outcome = send(app.run_dir, Retry(tuple(done), force=True))
                ok, report = outcome.ok, outcome.report
            except Exception as e:
                ok, report = False, f"retry failed: {e}"
            finally:
                self.launching = False
            if not ok:
                batch = Batch("retry", tuple(done), before=dict.fromkeys(done, Status.DONE))
                text, _ = summary(batch, ok, report)
                app.call_from_thread(app.say, f"could not start the run over:\n{text}", "error", 20)
                app.call_from_thread(app.refresh_data)
                return
        self._start_scheduler(False)

    def _start_scheduler(self, only_pending: bool) -> None:
        app = self.app
        self.launching = True
        app.call_from_thread(app.say, f"starting the scheduler in the background{glyphs.now().ellipsis}")
        try:
            run = app.snapshot
            job = app.job_path or Path(run.meta.job.file)  # re-attached: the run's own job file
            simulate = app.simulate or (run.meta.simulate if run is not None else None)
            pid = start_in_background(job, app.run_dir, simulate=simulate, only_pending=only_pending)
        except StartFailed as e:
            app.call_from_thread(app.say, f"could not start the run:\n{e}", "error", 20)
            return
        finally:
            self.launching = False
        # Said as what is known now: it started. Whether it still runs is the header's to say (live / stopped):
        # a run whose tasks all fail at once has a stopped scheduler before this toast goes.
        app.call_from_thread(
            app.say, f"scheduler started in the background (pid {pid}); quitting leaves it running"
        )
        app.call_from_thread(app.refresh_data)

    def send(self, verb: Verb, batch: Batch | None = None) -> None:
        """A verb through the run's control channel, exactly as the CLI sends it. `batch`: a verb on many tasks,
        said in one toast that sums it up (each task's line goes to the app's log)."""
        self._in_thread(self._send, verb, batch)

    def _send(self, verb: Verb, batch: Batch | None = None) -> None:
        app = self.app
        try:
            outcome = send(app.run_dir, verb)
            ok, report = outcome.ok, outcome.report
        except Exception as e:  # state gone or unreadable: a toast, never a traceback
            ok, report = False, f"{verb.name} failed: {e}"
        if batch is not None:
            app.call_from_thread(app.log.info, f"{verb.name} of {len(batch.ids)} task(s):\n{report}")  # devtools
            text, severity = summary(batch, ok, report)
        else:
            text, severity = report or f"{verb.name}: done", "information" if ok else "error"
        if ok and verb.name == "pause" and not getattr(verb, "free_memory", False):
            text += "\n(a paused task still holds its GPU memory)"
        app.call_from_thread(app.say, text, severity)
        app.call_from_thread(app.refresh_data)

    def parallel(self, step: int) -> None:
        """+ / -: one more or one fewer task at once (the run's max_parallel), as `gputui set max_parallel=+1`."""
        if self.app.monitor_only or self.refuse_readonly():
            return
        self.send(SetParallel(by=step))

    def menu(self) -> None:
        app = self.app
        if app.monitor_only:
            return

        def chosen(choice: str | None) -> None:
            if choice in ("merge", "summary") and app.snapshot is None:
                app.say(f"nothing to {'merge' if choice == 'merge' else 'summarise'} yet: launch the job (l)")
            elif choice == "merge" and not self.refuse_readonly():
                self.send(verb_named("merge"))
            elif choice == "summary" and not self.refuse_readonly():
                self._in_thread(self._write_summary)
            elif choice == "view-merge":
                app.push_screen(FileScreen(app.view.paths.merge_summary, "Menu -> Merge writes it."))
            elif choice == "view-report":
                app.push_screen(FileScreen(app.view.paths.root / "report.md", "Menu -> Write summary writes it."))

        app.push_screen(MenuScreen(readonly=app.readonly), chosen)

    def _write_summary(self) -> None:
        app = self.app
        try:
            summary, report = open_run(app.run_dir).summary()
        except Exception as e:
            app.call_from_thread(app.say, f"could not write the summary: {e}", "error")
            return
        app.call_from_thread(app.say, f"wrote {summary} and {report}")

    def quit_dialog(self) -> None:
        app = self.app
        if isinstance(app.screen, QuitScreen):
            return
        running = 0
        if app.snapshot is not None:
            running = sum(app.snapshot.counts.get(s, 0) for s in Status.LIVE)
        live = bool(app.snapshot and app.snapshot.scheduler_live)
        if app.monitor_only or app.readonly or (running == 0 and not live):
            app.exit()
            return
        again = f"gputui --run-dir {shlex.quote(str(app.view.paths.root))}"

        def chosen(choice: str | None) -> None:
            if choice == "detach":
                # Printed by the CLI once the screen is given back, as plain lines: a console folds a run
                # directory longer than it is wide, and the command would no longer paste whole.
                app.exit(result=f"detached: the run goes on in the background. Re-attach with:\n  {again}")
            elif choice == "stop":
                self._in_thread(self._stop_and_quit)

        app.push_screen(QuitScreen(running, can_stop=True, run_dir=str(app.view.paths.root)), chosen)

    def _stop_and_quit(self) -> None:
        try:
            outcome = send(self.app.run_dir, Stop())
            ok, report = outcome.ok, outcome.report
        except Exception as e:
            ok, report = False, f"stop failed: {e}"
        self.app.call_from_thread(self.app.exit, message="stopped our tasks" if ok else report)
