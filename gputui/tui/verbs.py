"""The keys that act on the run: launch, kill (after a confirmation naming the processes), the menu's
merge and summary, and quitting (detach or stop). Part of GpuTuiApp (app.py), whose state they use; every
verb goes through the run's scheduler (the control channel) or acts under the same ownership checks."""

from __future__ import annotations

import shlex
from pathlib import Path

from textual import work

from gputui.api.background import StartFailed, start_scheduler
from gputui.engine import control
from gputui.jobs.tasks import Status
from gputui.results.finalize import merge_run, write_summary
from gputui.rundir.opening import open_existing
from gputui.tui.screens.dialogs import ChoiceScreen, ConfirmScreen, QuitScreen
from gputui.tui.screens.menu import FileScreen, MenuScreen
from gputui.views.executor_facts import kill_lines


class RunVerbs:
    """Mixed into GpuTuiApp."""

    def action_kill_all(self) -> None:
        if self.monitor_only or self._refuse_readonly() or self.snapshot is None:
            return
        live = [v.task.id for v in self.snapshot.tasks if v.task.status not in Status.FINAL]
        if not live:
            self.say("no task to kill: every task has finished")
            return
        self._confirm_kill(live)

    @work(thread=True, group="control", exit_on_error=False)
    def _confirm_kill(self, task_ids: list[str]) -> None:
        """Name what will be signalled (a /proc scan, so in a thread), then ask."""
        found = self.view.processes(task_ids) if self.view is not None else {}
        lines = kill_lines(self.snapshot, found, task_ids)
        grace = self.snapshot.meta.get("stop_grace_s", 10) if self.snapshot else 10
        body = (
            f"SIGTERM, then SIGKILL after {grace:g}s, to this run's processes only:\n"
            + "\n".join(lines[:8])
            + (f"\n… and {len(lines) - 8} more" if len(lines) > 8 else "")
        )
        title = f"Kill {task_ids[0]}?" if len(task_ids) == 1 else f"Kill all {len(task_ids)} tasks of this run?"

        def done(yes: bool | None) -> None:
            if yes:
                self.send_verb("kill", task_ids)

        self.call_from_thread(self.push_screen, ConfirmScreen(title, body), done)

    def action_launch(self) -> None:
        if self.monitor_only or self._refuse_readonly():
            return
        if self._launching:
            self.say("the scheduler is starting…")
            return
        run = self.snapshot
        if run is not None and run.scheduler_live:
            view = self._selected()
            if view is not None and view.task.status in (Status.PENDING, Status.RETRYING):
                self.send_verb("start", [view.task.id])
            else:
                self.say("the run is already running; select a pending task to start it now")
            return
        if self.job_path is None and not (run and run.meta.get("job_file")):
            self.say("no job file is known for this run", severity="warning")
            return
        if run is None:
            if self.plan is not None and self.plan.no_fit:
                self.say(f"cannot launch: {self.plan.no_fit} (gputui plan shows the arithmetic)", severity="error")
            else:
                self._launch_scheduler(False)
            return
        failed = [v.task.id for v in run.tasks if v.task.status == Status.FAILED]
        waiting = [v.task.id for v in run.tasks if v.task.status in (Status.PENDING, Status.RETRYING)]
        if not failed and not waiting:
            killed = run.counts.get(Status.KILLED, 0)
            self.say(
                "the run is finished: every task is done"
                if not killed
                else f"the run is finished; {killed} killed task(s) stay killed until retried (r)"
            )
            return
        if not failed:
            self._launch_scheduler(True)
            return
        listed = ", ".join(failed[:8]) + (" …" if len(failed) > 8 else "")
        body = (
            f"{len(failed)} task(s) failed for good: {listed}.\n"
            f"{len(waiting)} task(s) are pending" + (f": {', '.join(waiting[:8])}" if waiting else "") + "."
        )
        choices = [("a", "all", "run them all again")]
        if waiting:
            choices.append(("o", "only", "only the pending (failed stay failed)"))

        def chosen(choice: str | None) -> None:
            if choice in ("all", "only"):
                self._launch_scheduler(choice == "only")

        self.push_screen(ChoiceScreen("Start the run again?", body, choices), chosen)

    @work(thread=True, group="control", exit_on_error=False)
    def _launch_scheduler(self, only_pending: bool) -> None:
        self._launching = True
        self.call_from_thread(self.say, "starting the scheduler in the background…")
        try:
            run = self.snapshot
            job = self.job_path or Path(run.meta["job_file"])  # re-attached: the run's own job file
            simulate = self.simulate or (run.meta.get("simulate") if run is not None else None)
            pid = start_scheduler(job, self.run_dir, simulate, only_pending=only_pending)
        except StartFailed as e:
            self.call_from_thread(self.say, f"could not start the run:\n{e}", "error", 20)
            return
        finally:
            self._launching = False
        self.call_from_thread(self.say, f"scheduler running in the background (pid {pid}); q then d detaches")
        self.call_from_thread(self.refresh_data)

    @work(thread=True, group="control", exit_on_error=False)
    def send_verb(self, verb: str, task_ids: list[str] | None) -> tuple[bool, str]:
        """A verb through the run's control channel, exactly as the CLI sends it."""
        try:
            paths, store = open_existing(self.run_dir)
            try:
                ok, report = control.request(
                    paths,
                    store,
                    verb,
                    task_ids,
                    lambda: control.Controller(paths, store, on_merge=lambda: merge_run(store, paths)),
                )
            finally:
                store.close()
        except Exception as e:  # state gone or unreadable: a toast, never a traceback
            ok, report = False, f"{verb} failed: {e}"
        if ok and verb == "pause":
            report += "\n(a paused task still holds its GPU memory)"
        self.call_from_thread(self.say, report or f"{verb}: done", "information" if ok else "error")
        self.call_from_thread(self.refresh_data)
        return ok, report

    def action_menu(self) -> None:
        if self.monitor_only:
            return

        def chosen(choice: str | None) -> None:
            if choice in ("merge", "summary") and self.snapshot is None:
                self.say(f"nothing to {'merge' if choice == 'merge' else 'summarise'} yet: launch the job (l)")
            elif choice == "merge" and not self._refuse_readonly():
                self.send_verb("merge", None)
            elif choice == "summary" and not self._refuse_readonly():
                self._write_summary()
            elif choice == "view-merge":
                self.push_screen(FileScreen(self.view.paths.merge_summary, "Menu -> Merge writes it."))
            elif choice == "view-report":
                self.push_screen(
                    FileScreen(self.view.paths.root / "report.md", "Menu -> Write summary writes it.")
                )

        self.push_screen(MenuScreen(readonly=self.readonly), chosen)

    @work(thread=True, group="control", exit_on_error=False)
    def _write_summary(self) -> None:
        try:
            paths, store = open_existing(self.run_dir, readonly=True)
            try:
                summary, report = write_summary(store, paths)
            finally:
                store.close()
        except Exception as e:
            self.call_from_thread(self.say, f"could not write the summary: {e}", "error")
            return
        self.call_from_thread(self.say, f"wrote {summary} and {report}")

    def action_quit_dialog(self) -> None:
        if isinstance(self.screen, QuitScreen):
            return
        running = 0
        if self.snapshot is not None:
            running = sum(1 for v in self.snapshot.tasks if v.task.status in Status.LIVE)
        live = bool(self.snapshot and self.snapshot.scheduler_live)
        if self.monitor_only or self.readonly or (running == 0 and not live):
            self.exit()
            return
        again = f"gputui --run-dir {shlex.quote(str(self.view.paths.root))}"

        def chosen(choice: str | None) -> None:
            if choice == "detach":
                self.exit(message=f"detached: the run goes on in the background. Re-attach with:\n  {again}")
            elif choice == "stop":
                self._stop_and_quit()

        self.push_screen(QuitScreen(running, can_stop=True, run_dir=str(self.view.paths.root)), chosen)

    @work(thread=True, group="control", exit_on_error=False)
    def _stop_and_quit(self) -> None:
        try:
            paths, store = open_existing(self.run_dir)
            try:
                ok, report = control.request(paths, store, "stop", None, lambda: control.Controller(paths, store))
            finally:
                store.close()
        except Exception as e:
            ok, report = False, f"stop failed: {e}"
        self.call_from_thread(self.exit, message="stopped our tasks" if ok else report)
