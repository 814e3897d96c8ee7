"""Every edge that shows a worker's text shows it made visible, even where the store, an alerts file or an
events file holds it raw (written before the sanitiser, or by a hook): defence in depth."""

from __future__ import annotations

import io
import json

from rich.console import Console

from gputui.hooks.reader import parse_line
from gputui.jobs.tasks import Status, TaskRecord
from gputui.results.report import build_summary, render_report
from gputui.results.task_summary import write_metrics_csv
from gputui.rundir.alerts_file import AlertReader, alert
from gputui.text_safety import one_line, visible
from gputui.tui.widgets.job_rows import row_cells
from gputui.tui.widgets.task_bar import task_bar_text
from gputui.views.printer import Printer
from gputui.views.runview import TaskView
from gputui.views.status_view import status_table

ATTACK = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[HFAKE: all 4 tasks done\x1b[8m hidden\x9b2J"
SHOWN = visible(ATTACK)
ONE_LINE = one_line(ATTACK)  # a reason, a note, a cell: its colour dropped, every other sequence shown
RAW = set("\x1b\x07\x9b")


def failed(reason: str = ATTACK) -> TaskRecord:
    return TaskRecord("shard-0", 0, 0, 4, 4, Status.FAILED, 1, 1, (), reason, 1, 1.0, 2.0, None)


def test_status_table_and_report_show_a_raw_reason_made_visible():
    console = Console(file=io.StringIO(), width=400)
    console.print(status_table([failed(f"[/red] {ATTACK}")], [], now=3.0))  # markup too: rich must not read it
    out = console.file.getvalue()
    assert not RAW & set(out) and f"[/red] {SHOWN}" in out
    summary = build_summary(job_name="j", run_dir="/r", scheduler_id="s", tasks=[failed()], attempts=[], now=3.0)
    assert summary["tasks"][0]["reason"] == ONE_LINE
    report = render_report(summary)
    assert not RAW & set(report) and ONE_LINE in report


def test_app_rows_and_task_bar_show_raw_reasons_and_metric_names_made_visible():
    view = TaskView(failed(), None, metrics={"loss\x1b]0;T\x07": 0.5})
    cells = row_cells(view, 3.0)
    assert not any(RAW & set(cell) for cell in cells.values()) and cells["reason"] == ONE_LINE
    bar = task_bar_text(view, filter_by="all", sort_by="id", follow=None, metrics=dict(view.metrics)).plain
    assert not RAW & set(bar) and "loss␛]0;T␇ 0.5" in bar and ONE_LINE in bar


def test_alerts_events_metrics_and_the_printer(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(json.dumps({"kind": "task_failed", "message": ATTACK}) + "\n")  # an older file
    assert AlertReader(alerts).new()[0]["message"] == SHOWN
    assert alert("task_failed", ATTACK)["message"] == SHOWN

    event = parse_line(json.dumps({"event": "failed", "t": 1, "reason": ATTACK, "values": {"a\x1b[2J": 1}}))
    assert event is not None and event.reason == SHOWN and list(event.values) == ["a␛[2J"]
    metrics = parse_line(json.dumps({"event": "metrics", "t": 1, "values": {"a\x1b[2J": 1}}))
    write_metrics_csv([metrics], tmp_path / "metrics.csv")
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,a␛[2J"

    out = io.StringIO()
    printer = Printer(out)  # not a terminal: no colour either
    printer.info(f"FAILED shard-0: {ATTACK}")
    printer.worker_lines("[0, 4)", [ATTACK, "\x1b[31mred\x1b[0m", "10%\r\x1b[2K80%", "a\x0bb\tc"])
    assert out.getvalue() == (
        f"gputui: FAILED shard-0: {SHOWN}\n[0, 4) FAKE: all 4 tasks done hidden\n[0, 4) red\n[0, 4) 80%\n"
        "[0, 4) a b\tc\n"  # a vertical tab is a space, as in the log pane: the line stays one line
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_workers_colours_reset_at_the_end_of_its_line_and_nothing_else():
    out = Terminal()
    Printer(out).worker_lines("[0, 4)", [ATTACK, "\x1b[31mred"])
    assert out.getvalue() == "[0, 4) FAKE: all 4 tasks done\x1b[8m hidden\x1b[0m\n[0, 4) \x1b[31mred\x1b[0m\n"
