"""The two header lines: who and where (line 1), how far (line 2). Built as rich Text, never markup, so
a job name or path with brackets shows as written; each line is cut, never wrapped."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from gputui.clock import now as clock_now
from gputui.jobs.tasks import Status
from gputui.text_safety import visible
from gputui.tui import glyphs
from gputui.tui.widgets.job_rows import hms
from gputui.views.printer import counted
from gputui.views.runview import PlannedRun, RunSnapshot, outlook


def short_path(path: str) -> str:
    """Relative to the working directory when inside it, else with ~ for home: the header is narrow."""
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        pass
    try:
        return "~/" + str(p.relative_to(Path.home()))
    except ValueError:
        return path


def identity_line(
    *,
    host: str,
    gpus: str,
    run: RunSnapshot | None,
    run_dir: str | None,
    readonly: bool,
    job_name: str | None = None,
) -> Text:
    """`job_name`: before launch, the job file's (a run names its own)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append("gputui", "bold")
    name = run.job_name if run is not None else job_name
    if run_dir is None:
        text.append(" monitor")
    elif name:
        text.append(glyphs.now().sep)
        text.append(name, "bold")
    text.append(glyphs.now().sep + host)
    if run_dir is not None:
        text.append(glyphs.now().sep + short_path(run_dir))
    if run is not None:
        text.append(f"{glyphs.now().sep}scheduler {run.scheduler_id[:8]} ")
        text.append("live", "green") if run.scheduler_live else text.append("stopped", "dim")
    text.append(f"{glyphs.now().sep}GPUs: {gpus}")
    if readonly:
        text.append(glyphs.now().sep)
        text.append("READ-ONLY", "reverse")
    return text


def plan_text(plan: PlannedRun, *, readonly: bool) -> Text:
    """Before launch: 'not started: 3 trials of task1 planned, 2 stages to come · press l to launch · sweep of
    3 stage(s) ...' (the plan's own line last: a narrow header cuts it)."""
    if plan.error:
        return Text(f"not started: cannot plan the job: {plan.error}", "bold red", no_wrap=True, end="")
    n = len(plan.tasks)
    counted = f"{n} {plan.noun}{'' if n == 1 else 's'}"
    if plan.planned_from:
        counted += f" of {plan.planned_from}"
    counted += " planned" + (f" on {plan.runs_on}" if plan.runs_on else "")
    if plan.to_come:
        more = len(plan.to_come)
        counted += f", {more} stage{'' if more == 1 else 's'} to come"
    if plan.no_fit:
        text = Text(f"not started: {counted}{glyphs.now().sep}", no_wrap=True, overflow="ellipsis", end="")
        return text.append(f"cannot launch: {plan.no_fit}", "bold red")
    launch = [] if readonly else ["press l to launch"]
    parts = [f"not started: {counted}", *launch, plan.sizing, plan.description]
    return Text(glyphs.now().sep.join(p for p in parts if p), no_wrap=True, overflow="ellipsis", end="")


SHORT = {"running": "run", "pending": "pend", "retrying": "retry", "failed": "fail"}


def progress_text(run: RunSnapshot, now: float, width: int = 1000) -> Text:
    """'1/4 done, 2 running, 1 paused, 1 pending, 0 failed · 45/s · ETA 3:12 · elapsed 1:02:03'.

    Narrower than that: shorter words, then no rate; the counts and the elapsed time always fit 80 columns.
    Where the job file the app was given would not be run on this run (`plan_warning`), that comes first.
    """
    counts = run.counts
    numbers = counted(counts)
    queued = sum(v.placed == "" and v.task.status == Status.RUNNING for v in run.tasks)
    if queued:  # on Slurm: submitted, not started yet
        numbers[0] = (Status.RUNNING, counts.get(Status.RUNNING, 0) - queued)
        numbers.insert(1, ("queued", queued))
    look = outlook(run.tasks, run.totals)
    pace = []
    if look.rate:
        pace.append(f"{look.rate:.3g}/s")  # as the rows' rates: in what their progress counts
        if look.eta is not None:
            pace.append(f"ETA {hms(look.eta)}")
    elapsed = f"elapsed {hms(run.elapsed(now))}"
    done = f"{counts.get(Status.DONE, 0)}/{sum(counts.values())} done"
    for short, with_pace in ((False, True), (True, True), (True, False)):
        words = [f"{n} {SHORT.get(s, s) if short else s}" for s, n in numbers]
        line = glyphs.now().sep.join([", ".join([done, *words]), *(pace if with_pace else []), elapsed])
        if len(line) <= width:
            break
    text = Text(line, no_wrap=True, overflow="ellipsis", end="")
    if run.plan_warning:  # first: the user must not act on this run believing it runs the job file given
        warning = " ".join(run.plan_warning.split())
        text = (
            Text(no_wrap=True, overflow="ellipsis", end="")
            .append(f"{glyphs.now().warning} {warning}", "bold red")
            .append(glyphs.now().sep)
            + text
        )
    return text


def _shown(line: Text) -> Text:
    """A copy of `line` with any control character made visible: a job name, an error or a reason that
    holds an escape sequence must not retitle or clear the terminal (its styling is lost only then)."""
    shown = visible(line.plain)
    if shown == line.plain:
        return line.copy()
    return Text(shown, style=line.style, no_wrap=True, overflow="ellipsis", end="")


class RunHeader(Widget):
    """Two lines, each drawn only when its text changes: a refresh that changes nothing, or the clock
    ticking on line 2, costs at most one line's repaint."""

    DEFAULT_CSS = """
    RunHeader {
        height: 2;
        padding: 0 1;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._first = Text()
        self._run: RunSnapshot | None = None
        self._note: Text | None = None
        self._lines: list[Text] = [Text(), Text()]
        self._strips: list[Strip | None] = [None, None]

    def show(self, first: Text, run: RunSnapshot | None, note: Text | None) -> None:
        """`note` replaces the progress line (before launch, errors); else the run's progress shows."""
        self._first, self._run, self._note = first, run, note
        self.tick()

    def tick(self) -> None:
        if self._note is not None:
            second = self._note
        elif self._run is not None:
            second = progress_text(self._run, clock_now(), self.content_size.width or 1000)
        else:
            second = Text("")
        for y, line in enumerate((self._first, second)):
            if (line.plain, line.spans) != (self._lines[y].plain, self._lines[y].spans):
                self._lines[y], self._strips[y] = line, None
                self.refresh(Region(0, y, self.size.width, 1))

    def on_resize(self) -> None:
        self.tick()  # the progress line's wording fits the width: one shown before layout assumed 1000 columns

    def render(self) -> Text:
        """Both lines as text (what the header says)."""
        return Text("\n", end="").join(self._lines)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = [None, None]

    def render_line(self, y: int) -> Strip:
        width, base = self.content_size.width, self.rich_style
        if y >= 2:
            return Strip.blank(width, base)
        strip = self._strips[y]
        if strip is None or strip.cell_length != width:
            line = _shown(self._lines[y])
            line.truncate(width, overflow="ellipsis")
            strip = Strip(list(line.render(self.app.console)), line.cell_len).crop_extend(0, width, None)
            self._strips[y] = strip = strip.apply_style(base)
        return strip
