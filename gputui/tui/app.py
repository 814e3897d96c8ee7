"""The gputui app: GPU panels, the job table, log panes and keys that call core verbs.

A thin view. The run's scheduler lives in a background `gputui run` (started with `l`), so closing
the app or losing the terminal never stops a run; the app reads the run directory and sends verbs
through the same control channel as `gputui pause|kill|...`. All blocking work (NVML, psutil,
SQLite, log files) runs in thread workers; the screen is updated from their results.
"""

from __future__ import annotations

import gc
import socket
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import Footer, Static, TabbedContent, TabPane

from gputui.api.machine import describe, driver_of, ghost_memory
from gputui.gpus.probe import GpuProbe, GpuSnapshot
from gputui.jobs.tasks import Status
from gputui.tui import glyphs, modes
from gputui.tui.palette import palette_commands
from gputui.tui.refresh import Gatherer, PageRead, Refreshed, SeriesRead
from gputui.tui.screens.help import HelpScreen
from gputui.tui.screens.processes import ProcessTreeScreen, gpu_memory_by_pid
from gputui.tui.table_feed import TableFeed
from gputui.tui.themes import THEMES, theme_stylesheets
from gputui.tui.verbs import RunControls
from gputui.tui.widgets.gpu_grid import GpuPanels
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.log_tabs import SELECTED, LogTabs
from gputui.tui.widgets.log_view import LogPane
from gputui.tui.widgets.metrics_chart import MetricsChart
from gputui.tui.widgets.process_list import ProcessList, ProcessRow
from gputui.tui.widgets.process_panel import ProcessPanel
from gputui.tui.widgets.run_area import RunArea
from gputui.tui.widgets.run_header import RunHeader, identity_line, plan_text
from gputui.tui.widgets.task_bar import TaskBar, task_bar_text
from gputui.views.executor_facts import gpus_label
from gputui.views.processes import ProcessFilter
from gputui.views.run_pages import PagedRunView
from gputui.views.runview import MetricSeries, PlannedRun, RunSnapshot, TaskView

HEADER_LINES, FOOTER_LINES = 2, 1
MAIN_MIN_LINES = {True: 13, False: 8}  # job modes keep table, task bar and log pane; monitor its process list


class GpuTuiApp(App):
    CSS_PATH = ["app.tcss", *theme_stylesheets()]
    TITLE = "gputui"
    BINDINGS = modes.APP_BINDINGS

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
        ascii: bool = False,
        only: frozenset[int] = frozenset(),
        process_filter: ProcessFilter | None = None,
    ) -> None:
        """`ascii` (or GPUTUI_ASCII=1): ASCII glyphs only. The monitor's `only` (GPU indices shown) and
        `process_filter` (the process list's filter at start; `esc` clears it)."""
        glyphs.use_ascii(glyphs.wanted(ascii))
        super().__init__()
        self.only, self.process_filter = only, process_filter
        self.job_path = job_path
        self.run_dir = run_dir
        self.simulate = simulate
        self.interval = max(0.25, interval)
        self.readonly = readonly
        self.view = PagedRunView(run_dir, job_path) if run_dir is not None else None  # the job file checked too
        # probe: opened in the first refresh if None; the job file: read for its plan before launch
        self._gatherer = Gatherer(self.view, simulate, probe, job_path)
        self.snapshot: RunSnapshot | None = None
        self.plan: PlannedRun | None = None  # before launch: the job's plan (nothing written to read it)
        self.series: MetricSeries | None = None  # the selected task's metrics over steps, as last read
        self.gpus: list[GpuSnapshot] = []
        self._gpu_error: str | None = None
        self._cpu_tasks = False  # the job needs no GPU and none was found
        self._run_error: str | None = None
        self._host_stats = ""
        self._refresh_timer = None
        self.controls = RunControls(self)  # the keys that act on the run
        self._feed = TableFeed(self, self._gatherer, self.view)  # the job table's rows, a page at a time
        self._mode = self.mode
        self._host = socket.gethostname()  # once: no syscall on the UI loop per refresh
        for t in THEMES.values():
            self.register_theme(t)
        self.set_reactive(GpuTuiApp.theme_name, theme if theme in THEMES else "dark")

    @property
    def monitor_only(self) -> bool:
        return self.view is None

    @property
    def mode(self) -> str:
        s = self.snapshot
        return modes.mode_of(
            has_job=self.view is not None,
            has_state=s is not None,
            scheduler_live=bool(s and s.scheduler_live),
            readonly=self.readonly,
        )

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield GpuPanels(id="gpus", only=self.only)
        if self.monitor_only:
            with Vertical(id="main"):
                yield ProcessPanel(only=self.only, filter=self.process_filter)
                yield Static("no GPU processes", id="no-processes")
        else:
            with RunArea(id="main"):
                yield JobTable(id="jobs")
                yield TaskBar(id="taskbar")
                with Horizontal(id="lower"):
                    with LogTabs(id="logs"), TabPane("log", id=SELECTED):
                        yield LogPane(id="log-selected-pane")
                    yield MetricsChart(id="chart")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        # Widgets looked up once: a refresh then touches them without walking the DOM.
        self._header = self.query_one(RunHeader)
        self._panels = self.query_one(GpuPanels)
        if self.monitor_only:
            self._processes = self.query_one(ProcessList)
            self._no_processes = self.query_one("#no-processes", Static)
        else:
            self._table = self.query_one(JobTable)
            self._taskbar = self.query_one(TaskBar)
            self._tabs = self.query_one(LogTabs)
            self._area = self.query_one(RunArea)
            self._chart = self.query_one(MetricsChart)
            self.watch(self._table, "filter_by", self._render_taskbar, init=False)
            self.watch(self._table, "sort_by", self._render_taskbar, init=False)
            self.watch(self._table, "tag_count", self._render_taskbar, init=False)
        self.action_back()  # keys act on the table (or the process list) from the start, not on the GPU grid
        self.watch_theme_name(self.theme_name)
        self._fit()
        self._render_header()
        if self.interval > 1.0:  # else each refresh moves the elapsed clock: one repaint a second, not two
            self.set_interval(1.0, self._header.tick)  # repaints the header's clock only
        self.refresh_data()
        # What start-up built (the DOM, styles, caches) lives as long as the app: out of the collector's way,
        # a full collection walks a third of the objects (measured: GC time per minute halves).
        self.set_timer(3.0, gc.freeze)

    def on_resize(self, event: Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """Give the GPUs what the table, task bar and log pane leave (chosen from the terminal's size)."""
        if "_panels" in self.__dict__:  # a resize can come before mount
            budget = self.size.height - HEADER_LINES - FOOTER_LINES - MAIN_MIN_LINES[not self.monitor_only]
            self._panels.fit(budget)

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that would do nothing now are hidden (footer) and inert; `?` lists the same set."""
        if "_panels" not in self.__dict__:  # asked before the widgets exist
            return True
        mode = self.mode
        if not modes.acts(action, mode):
            return False
        if self.monitor_only:
            return True
        selected = self.selected_task()
        if action in ("launch", "kill_all"):
            return self.controls.acts(action, mode)
        if action == "inspect":
            return selected is not None and selected.task.status in Status.LIVE
        if action == "older_attempt":
            return selected is not None and len(selected.history) > 1
        if action in ("tab", "close_tab"):
            return self._tabs.tab_count > 1 and (action == "tab" or self._tabs.pinned_active)
        if action in ("follow", "search_log"):
            pane = self._visible_log()
            return pane is not None and pane.log_view.path is not None
        if action == "back":
            return self.focused is not None and not isinstance(self.focused, JobTable)
        return True

    # -- data ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="refresh")
    def refresh_data(self) -> None:
        """Gather everything off the event loop; the next refresh is scheduled after this one lands."""
        self.post_message(self._gatherer.gather())

    @property
    def probe(self) -> GpuProbe | None:
        return self._gatherer.probe

    @on(Refreshed)
    def _apply(self, msg: Refreshed) -> None:
        if not self._panels.is_attached:  # shutting down
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
        self._gpu_error, self._host_stats = msg.gpu_error, msg.host
        self._cpu_tasks = msg.cpu_tasks and not msg.gpus
        self._panels.set_class(self._cpu_tasks, "-not-needed")  # a CPU job on a machine without GPUs: no warning
        holders = msg.run.gpu_holders(msg.gpus, states=True) if msg.run else {}
        for index, who in msg.other_runs.items():
            holders.setdefault(index, []).append(who)
        ghosts = ghost_memory(msg.processes, msg.task_status)
        self._panels.update_gpus(msg.gpus, holders, ghosts, message=msg.gpu_error)
        if self.monitor_only:
            self._processes.update_processes([ProcessRow(**vars(p)) for p in msg.processes])
            self._no_processes.display = not msg.processes
        elif msg.run is not None:
            run, table = msg.run, self._table
            self.plan = None
            if msg.page is not None:
                self._feed.show(msg.page)
            table.set_class(msg.run_error is not None, "-stale")
            if run.tasks:  # the first task at start; a retried task's new attempt log later
                self._show_log(self._tabs.task_id or table.selected_id or run.tasks[0].task.id)
            if run.series is not None and run.series.task_id == table.selected_id:
                self.series = run.series
            elif self.view is not None and table.selected_id not in (None, self.view.selected):
                self._read_series(table.selected_id)  # selected before the run existed (its plan): read it now
            offered, first = run.chart  # as the run's kind has it: a sweep's comes first
            has_metrics = any(v.metrics for v in run.tasks) or (self.series is not None and not self.series.empty)
            self._area.offer(offered or has_metrics, by_default=first)
            self._show_chart()
        elif msg.plan is not None:
            plan = self.plan = msg.plan
            self._feed.show_plan()  # the rows on screen, a page made from the plan's tasks
            if plan.tasks:
                self._show_log(self._tabs.task_id or plan.tasks[0].task.id)
        if msg.run is not None and msg.run.alerts:
            for alert in msg.run.alerts:
                who = f"{alert.get('task_id')}: " if alert.get("task_id") else ""
                self.say(f"{alert.get('kind', 'alert')}: {who}{alert.get('message', '')}", "warning", 15)
            if msg.run.meta.job.alert_bell:
                self.bell()
        if self.mode != self._mode:
            self._mode = self.mode
            self.refresh_bindings()
        self._render_header()
        self._render_taskbar()

    def _render_header(self) -> None:
        if self.probe is not None:
            gpu = describe(self.probe)
            driver = driver_of(self.probe)
            if not driver.simulated:  # (simulated GPUs are said so loudly already)
                gpu = f"{gpu} ({driver.text()})"
        elif self._cpu_tasks:
            gpu = "none (CPU tasks)"  # as the headless run says it
        else:
            gpu = "none found" if self._gpu_error else f"probing{glyphs.now().ellipsis}"
        gpu = gpus_label(self.snapshot) or gpu  # a cluster's: its panels, or its word
        first = identity_line(
            host=self._host,
            gpus=gpu,
            run=self.snapshot,
            run_dir=None if self.run_dir is None else str(self.run_dir),
            readonly=self.readonly,
            job_name=self.plan.job_name if self.plan is not None else None,
        )
        note = None
        if self._run_error:
            note = Text(f"cannot read the run: {self._run_error} (showing the last state read)", "bold red")
        elif self.monitor_only:
            note = Text(self._host_stats)
        elif self.snapshot is None and self.plan is not None:
            note = plan_text(self.plan, readonly=self.readonly)
        elif self.snapshot is None:
            note = Text("not started: press l to launch" if not self.readonly else "not started")
        self._header.show(first, self.snapshot, note)

    def _render_taskbar(self) -> None:
        if self.monitor_only:
            return
        table, pane, series = self._table, self._visible_log(), self.series
        view = table.selected
        follow = pane.log_view.follow if pane is not None and pane.log_view.path is not None else None
        read = series.last if series is not None and view is not None and series.task_id == view.task.id else None
        metrics = dict(read) if read else (dict(view.metrics) if view is not None else None)
        shown = {"filter_by": table.filter_by, "sort_by": table.sort_by, "follow": follow}
        shown["tagged"] = table.tag_count
        self._taskbar.show(task_bar_text(view, **shown, metrics=metrics, metric=self._metric_name()))

    def _metric_name(self) -> str | None:
        """What a sweep ranks its trials by (None for other jobs)."""
        if self.snapshot is not None:
            return self.snapshot.metric
        return self.plan.metric if self.plan is not None else None

    def selected_task(self) -> TaskView | None:
        return None if self.monitor_only else self._table.selected

    def _task_view(self, task_id: str) -> TaskView | None:
        found = self._table.view_of(task_id)
        if found is None and self.snapshot is not None:
            found = next((v for v in self.snapshot.tasks if v.task.id == task_id), None)
        elif found is None and self.plan is not None:
            found = self.plan.view_of(task_id)
        return found

    @on(JobTable.RowsWanted)
    def _on_rows_wanted(self, msg: JobTable.RowsWanted) -> None:
        self._feed.want(msg.window)

    @on(PageRead)
    def _on_page(self, msg: PageRead) -> None:
        self._feed.show(msg.page)

    # -- logs and metrics ----------------------------------------------------------------------
    @on(JobTable.TaskSelected)
    def _on_selected(self, msg: JobTable.TaskSelected) -> None:
        self._feed.keep(self._table.window)
        self._show_log(msg.task_id, msg.view)
        self._show_chart()
        self._render_taskbar()
        if self.snapshot is not None:
            self._read_series(msg.task_id)

    @work(thread=True, exclusive=True, group="series", exit_on_error=False)
    def _read_series(self, task_id: str) -> None:
        """The newly selected task's metrics over steps now (the refreshes after it carry them on)."""
        self.post_message(SeriesRead(task_id, self._gatherer.series(task_id)))

    @on(SeriesRead)
    def _on_series(self, msg: SeriesRead) -> None:
        if msg.series is not None and msg.task_id == self._table.selected_id:
            self.series = msg.series
            self._area.offer(not msg.series.empty, by_default=False)
        self._show_chart()
        self._render_taskbar()

    def _show_chart(self) -> None:
        """The chart follows the selected task: its series when read (the chart drops another task's)."""
        view = self._table.selected
        task_id, started = (None, False) if view is None else (view.task.id, view.attempt is not None)
        self._chart.show(task_id, self.series, started=started, first=self._metric_name())

    @on(RunArea.ChartToggled)
    def _on_chart_toggled(self, msg: RunArea.ChartToggled) -> None:
        if not self._area.log_shown and self.focused is not None and self._tabs in self.focused.ancestors:
            self._table.focus()  # the log gave way to the chart: keys go back to the table
        self._show_chart()
        self._render_taskbar()
        self.refresh_bindings()

    def _show_log(self, task_id: str, view: TaskView | None = None) -> None:
        view = view or self._task_view(task_id)
        if view is not None:
            self._tabs.show(view)

    def _pin_log(self, task_id: str) -> None:
        """`enter`: the shown attempt's log in a tab of its own, kept while others are browsed."""
        view = self._task_view(task_id)
        if view is None or not self._tabs.pin(view):
            self.say(f"{task_id} has no log yet", "warning")
        self.refresh_bindings()

    def _visible_log(self) -> LogPane | None:
        return None if self.monitor_only or not self._area.log_shown else self._tabs.visible

    def action_follow(self) -> None:
        pane = self._visible_log()
        if pane is not None:
            pane.log_view.action_toggle_follow()
            self._render_taskbar()

    def action_search_log(self) -> None:
        pane = self._visible_log()
        if pane is not None:
            pane.log_view.focus()
            pane.log_view.action_search()

    def action_inspect(self) -> None:
        view = self.selected_task()
        if view is not None and self.view is not None:
            self.push_screen(ProcessTreeScreen(self.view, view.task.id, lambda: gpu_memory_by_pid(self.gpus)))

    def action_older_attempt(self) -> None:
        view = self.selected_task()
        if view is not None and len(view.history) > 1:
            self._tabs.older(view)

    def action_tab(self, step: int) -> None:
        self._tabs.step(step)
        self._render_taskbar()
        self.refresh_bindings()

    def action_close_tab(self) -> None:
        if self._tabs.pinned_active:
            self._tabs.close_active()
            self._table.focus()
        self.refresh_bindings()

    def action_back(self) -> None:
        (self._processes if self.monitor_only else self._table).focus()

    @on(TabbedContent.TabActivated)
    def _on_tab(self) -> None:
        self._render_taskbar()
        self.refresh_bindings()

    # -- keys ----------------------------------------------------------------------------------
    def say(self, text: str, severity: str = "information", timeout: float | None = None) -> None:
        """A toast whose text shows as written (`[outputs].merged` is not markup)."""
        self.notify(text, severity=severity, markup=False, **({"timeout": timeout} if timeout else {}))

    def notify(self, message: str, *, timeout: float | None = None, **kw) -> None:
        """Every toast (the widgets' too), and once it has gone, the whole screen painted again.

        Textual repaints only the regions its layout finds changed, comparing the layout before and after a
        toast's removal. Once a scroll has invalidated the "before" (`Compositor.full_map`), it is rebuilt
        lazily, from the widgets mounted then: rebuilt after the toast left, it no longer holds it, and the
        update after the removal repaints nothing (Textual 8.2.8: a toast over a scrolled VerticalScroll). Lines
        that change anyway paint over the stale toast; a stopped run's header and idle GPU lines never do."""
        timeout = self.NOTIFICATION_TIMEOUT if timeout is None else timeout
        super().notify(message, timeout=timeout, **kw)
        self.set_timer(timeout + 0.5, self._repaint_under_toasts)

    def _repaint_under_toasts(self) -> None:
        self.screen.refresh()  # the screen itself dirty: every cell rendered again, as a theme switch does

    @on(JobTable.ActionRequested)
    def _on_action(self, msg: JobTable.ActionRequested) -> None:
        if msg.verb == "open":
            self._pin_log(msg.task_id)
        else:
            self.controls.request(msg.verb, msg.task_id)

    @on(JobTable.BatchRequested)
    def _on_batch(self, msg: JobTable.BatchRequested) -> None:
        self.controls.request_many(msg.verb, msg.task_ids)

    def action_launch(self) -> None:
        self.controls.launch()

    def action_kill_all(self) -> None:
        self.controls.kill_all()

    def action_menu(self) -> None:
        self.controls.menu()

    def action_parallel(self, step: int) -> None:
        self.controls.parallel(step)

    def action_quit_dialog(self) -> None:
        self.controls.quit_dialog()

    async def action_quit(self) -> None:
        """ctrl+q (Textual's quit key) asks like q: quitting must never stop a run by surprise."""
        self.action_quit_dialog()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(HelpScreen(self.mode))

    def action_cycle_gpu_layout(self) -> None:
        self._panels.action_cycle_mode()

    def action_next_theme(self) -> None:
        names = list(THEMES)
        self.theme_name = names[(names.index(self.theme_name) + 1) % len(names)]
        self.say(f"theme: {self.theme_name}")

    def watch_theme_name(self, name: str) -> None:
        for other in THEMES:
            self.set_class(other == name, f"theme-{other}")
        self.theme = THEMES[name].name
