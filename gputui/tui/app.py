"""The gputui app: GPU panels, the job table, log panes and keys that call core verbs.

A thin view. The run's scheduler lives in a background `gputui run` (started with `l`), so closing
the app or losing the terminal never stops a run; the app reads the run directory and sends verbs
through the same control channel as `gputui pause|kill|...`. All blocking work (NVML, psutil,
SQLite, log files) runs in thread workers; the screen is updated from their results.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Footer, Static, TabbedContent, TabPane

from gputui import control
from gputui.background import StartFailed, start_scheduler
from gputui.finalize import merge_run, write_summary
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot, NoGpuError
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.monitor import GpuProcessInfo, ghost_memory, gpu_processes, held_by_other_runs
from gputui.printer import progress_line
from gputui.records import Status
from gputui.runview import RunSnapshot, RunView
from gputui.session import open_existing
from gputui.tui.screens.dialogs import ConfirmScreen, QuitScreen
from gputui.tui.screens.menu import FileScreen, MenuScreen
from gputui.tui.themes import THEMES, theme_stylesheets
from gputui.tui.widgets.gpu_panel import GpuPanels
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.log_view import LogPane
from gputui.tui.widgets.process_list import ProcessList, ProcessRow


@dataclass
class Refreshed(Message):
    """One refresh's results, gathered in a thread."""

    run: RunSnapshot | None
    gpus: list[GpuSnapshot]
    gpu_error: str | None
    processes: list[GpuProcessInfo] = field(default_factory=list)
    run_error: str | None = None
    other_runs: dict[int, str] = field(default_factory=dict)  # GPU index -> which other gputui run holds it


class RunHeader(Static):
    """Host, job, run directory, short scheduler id, and the headless-style progress line."""


class GpuTuiApp(App):
    CSS_PATH = ["app.tcss", *theme_stylesheets()]
    TITLE = "gputui"
    BINDINGS = [
        Binding("q", "quit_dialog", "Quit"),
        Binding("question_mark", "toggle_help", "Help"),
        Binding("l", "launch", "Launch"),
        Binding("K", "kill_all", "Kill all"),
        Binding("m", "menu", "Menu"),
        Binding("t", "next_theme", "Theme"),
        Binding("f", "follow", "Follow", show=False),
        Binding("slash", "search_log", "Search log", show=False),
    ]

    theme_name: reactive[str] = reactive("dark")

    def __init__(
        self,
        *,
        job_path: Path | None = None,
        run_dir: Path | None = None,
        simulate: str | None = None,
        theme: str = "dark",
        interval: float = 1.0,
        readonly: bool = False,
        probe: GpuProbe | None = None,
    ) -> None:
        super().__init__()
        self.job_path = job_path
        self.run_dir = run_dir
        self.simulate = simulate
        self.interval = max(0.25, interval)
        self.readonly = readonly
        self.view = RunView(run_dir) if run_dir is not None else None
        self.probe: GpuProbe | None = probe  # opened in the first refresh (a thread) when not given
        self.snapshot: RunSnapshot | None = None
        self.gpus: list[GpuSnapshot] = []
        self._log_task: str | None = None
        self._refresh_timer = None
        self._run_error: str | None = None
        self._header_text = ""
        self._host = socket.gethostname()  # once: no syscall on the UI loop per refresh
        self._log_shown: Path | None = None
        for t in THEMES.values():
            self.register_theme(t)
        self.set_reactive(GpuTuiApp.theme_name, theme if theme in THEMES else "dark")

    @property
    def monitor_only(self) -> bool:
        return self.view is None

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield GpuPanels(id="gpus")
        with Vertical(id="main"):
            if self.monitor_only:
                yield ProcessList(id="processes")
            else:
                yield JobTable(id="jobs")
                with TabbedContent(id="logs"), TabPane("log: (select a task)", id="log-selected"):
                    yield LogPane(id="log-selected-pane")
        yield Footer()

    def on_mount(self) -> None:
        # Keys act on the table (or the process list) from the start, not on the scrollable GPU grid.
        (self.query_one(ProcessList) if self.monitor_only else self.query_one(JobTable)).focus()
        self.watch_theme_name(self.theme_name)
        self._render_header()
        self.refresh_data()

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        if self.monitor_only:
            return
        for key, action, text in (
            ("l", "launch", "Launch the job, or start the selected task now"),
            ("K", "kill_all", "Kill every task of this run"),
            ("m", "menu", "Menu: merge, summaries"),
            ("t", "next_theme", "Next theme"),
        ):
            yield SystemCommand(f"{text} ({key})", text, getattr(self, f"action_{action}"))
        table = self.query_one(JobTable)
        for key, verb, text in (("p", "pause", "Pause or resume"), ("k", "kill", "Kill"), ("r", "retry", "Retry")):
            yield SystemCommand(
                f"{text} the selected task ({key})", text, lambda verb=verb: table.action_request(verb)
            )

    # -- data ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="refresh")
    def refresh_data(self) -> None:
        """Gather everything off the event loop; the next refresh is scheduled after this one lands."""
        run, run_error = None, None
        try:
            run = self.view.snapshot() if self.view is not None else None
        except Exception as e:  # e.g. the state is being created right now: try again next tick
            run, run_error = self.snapshot, str(e)
            self.view.close()
        gpus, error = [], None
        try:
            if self.probe is None:
                self.probe = open_probe(self.simulate, load=self._simulated_load)
            gpus = self.probe.snapshot()
        except NoGpuError as e:
            error = str(e).splitlines()[0] + "  (try --simulate 4x24)"
        except Exception as e:  # a flaky driver must not take the app down
            error = f"GPU probe failed: {e}"
        processes = gpu_processes(gpus, run.scheduler_id if run else None) if gpus else []
        other_runs = held_by_other_runs(gpus, run.scheduler_id if run else None)
        self.post_message(Refreshed(run, gpus, error, processes, run_error, other_runs))

    def _simulated_load(self):
        """Simulated GPUs show our running tasks' declared memory, as the scheduler's do."""
        run = self.snapshot
        if run is None:
            return {}
        per_task = int((run.meta.get("memory_per_worker_gb") or TASK_MEMORY_GB) * GIB)
        return {g: [(0, per_task)] * len(ids) for g, ids in run.gpu_holders().items()}

    @on(Refreshed)
    def _apply(self, msg: Refreshed) -> None:
        if not self.query(GpuPanels):  # shutting down
            return
        try:
            self._show(msg)
        finally:
            # One timer, set after each refresh lands (self-pacing, never overlapping); slower behind a modal.
            if self._refresh_timer is not None:
                self._refresh_timer.stop()
            delay = self.interval * (2 if self.screen.is_modal else 1)
            self._refresh_timer = self.set_timer(delay, self.refresh_data)

    def _show(self, msg: Refreshed) -> None:
        self.snapshot, self.gpus, self._run_error = msg.run, msg.gpus, msg.run_error
        holders = msg.run.gpu_holders() if msg.run else {}
        for index, who in msg.other_runs.items():
            holders.setdefault(index, []).append(who)
        statuses = {v.task.id: v.task.status for v in msg.run.tasks} if msg.run else {}
        panels = self.query_one(GpuPanels)
        if msg.gpu_error and not msg.gpus:
            panels.update_gpus([], {}, {})
            panels.border_subtitle = msg.gpu_error
        else:
            panels.update_gpus(msg.gpus, holders, ghost_memory(msg.processes, statuses))
        if self.monitor_only:
            self.query_one(ProcessList).update_processes(
                [ProcessRow(p.gpu, p.pid, p.user, p.used_memory, p.command, p.ours) for p in msg.processes]
            )
        elif msg.run is not None:
            self.query_one(JobTable).update_tasks(msg.run.tasks)
            if msg.run.tasks:  # the first task at start; a retried task's new attempt log later
                self._show_log(self._log_task or msg.run.tasks[0].task.id)
        self._render_header()

    def _render_header(self) -> None:
        host = self._host
        gpu = describe(self.probe) if self.probe is not None else "probing GPUs…"
        if self.monitor_only:
            text = f"[b]gputui[/b] monitor  {host}  GPUs: {gpu}"
        elif self.snapshot is None:
            text = f"[b]gputui[/b]  {host}  {self.run_dir}  (not started: press [b]l[/b] to launch)  GPUs: {gpu}"
        else:
            s = self.snapshot
            sched = f"scheduler {s.scheduler_id[:8]} " + (
                "[green]live[/]" if s.scheduler_live else "[dim]stopped[/]"
            )
            started = [v.task.started_at for v in s.tasks if v.task.started_at]
            ends = [v.task.ended_at for v in s.tasks if v.task.ended_at]
            active = any(v.task.status in Status.LIVE for v in s.tasks)
            end = time.time() if active or not ends else max(ends)
            elapsed = (end - min(started)) if started else 0.0
            text = (
                f"[b]{s.job_name}[/b]  {host}  {s.run_dir}  {sched}  GPUs: {gpu}"
                f"{'  [b]READ-ONLY[/b]' if self.readonly else ''}\n{progress_line(s.counts, elapsed)}"
            )
        if self._run_error:
            text += f"\n[red]cannot read the run: {self._run_error}[/]"
        if text != self._header_text:  # its height is fixed: no layout pass needed
            self._header_text = text
            self.query_one(RunHeader).update(text, layout=False)

    # -- logs ----------------------------------------------------------------------------------
    @on(JobTable.TaskSelected)
    def _on_selected(self, msg: JobTable.TaskSelected) -> None:
        self._show_log(msg.task_id)

    def _show_log(self, task_id: str) -> None:
        panes, tabs = self.query("#log-selected-pane"), self.query("#logs")
        if not panes or not tabs:  # the screen is being torn down
            return
        path = self._log_path(task_id)
        if task_id != self._log_task:
            self._log_task = task_id
            tabs.first(TabbedContent).get_tab("log-selected").label = f"log: {task_id}"
        if path is not None and path != self._log_shown:  # the same log stays as scrolled
            self._log_shown = path
            panes.first(LogPane).open(path)

    def _log_path(self, task_id: str) -> Path | None:
        if self.snapshot is None:
            return None
        for v in self.snapshot.tasks:
            if v.task.id == task_id and v.attempt is not None:
                return Path(v.attempt.log_path)
        return None

    def _pin_log(self, task_id: str) -> None:
        """`enter`: the task's log in a tab of its own, kept while others are browsed."""
        tabs = self.query_one("#logs", TabbedContent)
        pane_id = f"log-{task_id}"
        path = self._log_path(task_id)
        if path is None:
            self.notify(f"{task_id} has no log yet", severity="warning")
            return
        if not tabs.query(f"#{pane_id}"):
            tabs.add_pane(TabPane(task_id, LogPane(path), id=pane_id))
        tabs.active = pane_id

    def _visible_log(self) -> LogPane | None:
        if self.monitor_only:
            return None
        tabs = self.query_one("#logs", TabbedContent)
        active = tabs.active_pane
        return active.query_one(LogPane) if active is not None and active.query(LogPane) else None

    def action_follow(self) -> None:
        pane = self._visible_log()
        if pane is not None:
            pane.log_view.action_toggle_follow()

    def action_search_log(self) -> None:
        pane = self._visible_log()
        if pane is not None:
            pane.log_view.focus()
            pane.log_view.action_search()

    # -- keys ----------------------------------------------------------------------------------
    @on(JobTable.ActionRequested)
    def _on_action(self, msg: JobTable.ActionRequested) -> None:
        if msg.verb == "open":
            self._pin_log(msg.task_id)
            return
        if self._refuse_readonly():
            return
        if msg.verb == "kill":
            self._confirm_kill([msg.task_id])
            return
        self.send_verb(msg.verb, [msg.task_id])

    def action_kill_all(self) -> None:
        if self.monitor_only or self._refuse_readonly() or self.snapshot is None:
            return
        live = [v.task.id for v in self.snapshot.tasks if v.task.status not in Status.FINAL]
        if not live:
            self.notify("no task to kill")
            return
        self._confirm_kill(live)

    @work(thread=True, group="control")
    def _confirm_kill(self, task_ids: list[str]) -> None:
        """Name what will be signalled (a /proc scan, so in a thread), then ask."""
        found = self.view.processes(task_ids) if self.view is not None else {}
        lines = []
        for task_id in task_ids:
            refs = found.get(task_id, [])
            pids = ", ".join(str(r.pid) for r in refs[:6]) + (" …" if len(refs) > 6 else "")
            lines.append(
                f"{task_id}: " + (f"{len(refs)} process(es): {pids}" if refs else "not running (marked killed)")
            )
        grace = self.snapshot.meta.get("stop_grace_s", 10) if self.snapshot else 10
        body = (
            "SIGTERM, then SIGKILL after "
            f"{grace:g}s, to this run's processes only:\n"
            + "\n".join(lines[:12])
            + (f"\n… and {len(lines) - 12} more" if len(lines) > 12 else "")
        )
        title = f"Kill {task_ids[0]}?" if len(task_ids) == 1 else f"Kill all {len(task_ids)} tasks of this run?"

        def done(yes: bool | None) -> None:
            if yes:
                self.send_verb("kill", task_ids)

        self.call_from_thread(self.push_screen, ConfirmScreen(title, body), done)

    def action_launch(self) -> None:
        if self.monitor_only or self._refuse_readonly():
            return
        if self.snapshot is not None and self.snapshot.scheduler_live:
            task_id = self.query_one(JobTable).selected_id
            if task_id:
                self.send_verb("start", [task_id])
            return
        if self.job_path is None and not (self.snapshot and self.snapshot.meta.get("job_file")):
            self.notify("no job file is known for this run", severity="warning")
            return
        self._launch_scheduler()

    @work(thread=True, group="control")
    def _launch_scheduler(self) -> None:
        self.call_from_thread(self.notify, "starting the scheduler in the background…")
        try:
            job = self.job_path or Path(self.snapshot.meta["job_file"])  # re-attached: the run's own job file
            pid = start_scheduler(job, self.run_dir, self.simulate)
        except StartFailed as e:
            self.call_from_thread(self.notify, f"could not start: {e}", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, f"scheduler running in the background (pid {pid}); q then d detaches")

    @work(thread=True, group="control")
    def send_verb(self, verb: str, task_ids: list[str] | None) -> tuple[bool, str]:
        """A verb through the run's control channel, exactly as the CLI sends it."""
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
        if ok and verb == "pause":
            report += "\n(a paused task still holds its GPU memory)"
        self.call_from_thread(self.notify, report or f"{verb}: done", severity="information" if ok else "error")
        self.call_from_thread(self.refresh_data)
        return ok, report

    def action_menu(self) -> None:
        if self.monitor_only:
            return

        def chosen(choice: str | None) -> None:
            if choice == "merge" and not self._refuse_readonly():
                self.send_verb("merge", None)
            elif choice == "summary":
                self._write_summary()
            elif choice == "view-merge":
                self.push_screen(FileScreen(self.view.paths.merge_summary))
            elif choice == "view-report":
                self.push_screen(FileScreen(self.view.paths.root / "report.md"))

        self.push_screen(MenuScreen(), chosen)

    @work(thread=True, group="control")
    def _write_summary(self) -> None:
        paths, store = open_existing(self.run_dir, readonly=True)
        try:
            summary, report = write_summary(store, paths)
        finally:
            store.close()
        self.call_from_thread(self.notify, f"wrote {summary.name} and {report.name}")

    def action_quit_dialog(self) -> None:
        running = 0
        if self.snapshot is not None:
            running = sum(1 for v in self.snapshot.tasks if v.task.status in Status.LIVE)
        if self.monitor_only or (running == 0 and not (self.snapshot and self.snapshot.scheduler_live)):
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "detach":
                self.exit(message="detached: the run goes on in the background")
            elif choice == "stop":
                self._stop_and_quit()

        self.push_screen(QuitScreen(running, can_stop=not self.readonly), chosen)

    @work(thread=True, group="control")
    def _stop_and_quit(self) -> None:
        paths, store = open_existing(self.run_dir)
        try:
            ok, report = control.request(paths, store, "stop", None, lambda: control.Controller(paths, store))
        finally:
            store.close()
        self.call_from_thread(self.exit, message="stopped our tasks" if ok else report)

    def action_toggle_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def action_next_theme(self) -> None:
        names = list(THEMES)
        self.theme_name = names[(names.index(self.theme_name) + 1) % len(names)]
        self.notify(f"theme: {self.theme_name}")

    def watch_theme_name(self, name: str) -> None:
        for other in THEMES:
            self.set_class(other == name, f"theme-{other}")
        self.theme = THEMES[name].name

    def _refuse_readonly(self) -> bool:
        if self.readonly:
            self.notify("read-only view: nothing can be signalled from here", severity="warning")
        return self.readonly
