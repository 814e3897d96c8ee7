"""The command palette offers what the footer offers: each key that acts now, as a command."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.app import App, SystemCommand

from gputui.tui import modes
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.run_area import RunArea

KEYS_ONLY = (
    *("tab", "back", "help", "cycle_sort", "cycle_filter", "toggle_tag"),
    *("edit_filter", "clear_filter", "end_process"),  # the process list's, acting on its selected row
)  # keys, not commands


def palette_commands(app: App) -> Iterator[SystemCommand]:
    """The table's verbs through the table, `c` through the run area, the app's own keys through the app;
    each only where its key would act (the same checks as the footer's)."""
    main = app.screen_stack[0]  # the table's screen, whichever screen the palette was opened on
    for key in modes.keys_for(app.mode):
        title = f"{key.does} ({key.key})"
        if key.action.startswith("request("):
            verb, table = key.action[len("request('") : -2], main.query_one(JobTable)
            if table.check_action("request", (verb,)):
                yield SystemCommand(title, key.does, partial(table.action_request, verb))
        elif key.action == "toggle_chart":
            area = main.query_one(RunArea)
            if area.check_action(key.action, ()):
                yield SystemCommand(title, key.does, area.action_toggle_chart)
        elif key.action not in KEYS_ONLY and app.check_action(key.action, ()):
            yield SystemCommand(title, key.does, getattr(app, f"action_{key.action}"))
