"""Which keys act when: the app's modes and its key table, pure so the footer, `?` and tests agree.

A key is shown (footer, help) only in the modes where it does something; `check_action` hides it
elsewhere, so a key that is not listed never silently does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

MONITOR = "monitor"  # no job: GPUs and every GPU process
BEFORE = "before launch"  # a job file, no state yet
LIVE = "live"  # the run's scheduler is running
FINISHED = "finished"  # state, no scheduler
READONLY = "read-only"  # someone else's run: nothing is written or signalled

JOB_MODES = frozenset({BEFORE, LIVE, FINISHED, READONLY})
RUN_MODES = frozenset({LIVE, FINISHED, READONLY})  # there are tasks to look at
ALL = frozenset({MONITOR, *JOB_MODES})
RUNS_OURS = frozenset({LIVE, FINISHED})  # tasks of ours may run: quitting asks whether to leave them going


def mode_of(*, has_job: bool, has_state: bool, scheduler_live: bool, readonly: bool) -> str:
    if not has_job:
        return MONITOR
    if readonly:
        return READONLY
    if not has_state:
        return BEFORE
    return LIVE if scheduler_live else FINISHED


@dataclass(frozen=True)
class Key:
    key: str  # as shown
    action: str  # the action it runs (without `action_`)
    does: str  # one line for `?`: what it does in these modes (a key that differs by mode has a line per mode)
    modes: frozenset[str]


KEYS: tuple[Key, ...] = (
    Key(
        "l",
        "launch",
        "launch the job; while it runs, start the selected pending task now; finished: start it again "
        "(the failed tasks, or all over)",
        frozenset({BEFORE, LIVE, FINISHED}),
    ),
    Key(
        "p",
        "request('pause')",
        "pause the selected running task (SIGSTOP: keeps its GPU memory; f: frees it), or resume it",
        frozenset({LIVE}),
    ),
    Key(
        "k",
        "request('kill')",
        "kill the selected task: asks first, naming the processes that get SIGTERM then SIGKILL",
        frozenset({LIVE, FINISHED}),
    ),
    Key(
        "K",
        "kill_all",
        "kill every task of this run that is not finished: asks first (y / n)",
        frozenset({LIVE, FINISHED}),
    ),
    Key(
        "r",
        "request('retry')",
        "retry the selected failed or killed task (a retrying one: now)",
        frozenset({LIVE, FINISHED}),
    ),
    Key(
        "space",
        "toggle_tag",
        "tag / untag the selected task; with tags, k p r act on every tagged task after one confirmation; "
        "esc clears the tags",
        frozenset({LIVE, FINISHED}),
    ),
    Key(
        "+ -",
        "parallel",
        "run one more / one fewer task at once (max_parallel; fewer stops none, new ones wait); kept for the run",
        frozenset({LIVE, FINISHED}),
    ),
    Key("enter", "request('open')", "pin the selected task's log in a tab of its own", RUN_MODES),
    Key("a", "older_attempt", "show the selected task's previous attempt's log (again: older; wraps)", RUN_MODES),
    Key("s", "cycle_sort", "sort the table: id, status, elapsed", RUN_MODES),
    Key("s", "cycle_sort", "sort the process list: GPU, GPU memory, CPU", frozenset({MONITOR})),
    Key(
        "/",
        "edit_filter",
        "filter the process list: user:NAME gpu:N pid:N, or words of the command or user (Enter keeps it)",
        frozenset({MONITOR}),
    ),
    Key("esc", "clear_filter", "clear the process filter", frozenset({MONITOR})),
    Key(
        "k",
        "end_process",
        "end the selected process, if it is yours: asks first, naming pid, user and command (i SIGINT, "
        "t SIGTERM, K SIGKILL); other users' processes are refused",
        frozenset({MONITOR}),
    ),
    Key("v", "cycle_filter", "show all tasks, or only active, failed, done or pending ones", RUN_MODES),
    Key("f", "follow", "log: follow the end on / off", RUN_MODES),
    Key("/", "search_log", "log: search (Enter); n / N next / previous match", RUN_MODES),
    Key("[ ]", "tab", "log tabs: previous / next", RUN_MODES),
    Key("x", "close_tab", "log tabs: close the pinned tab", RUN_MODES),
    Key(
        "c",
        "toggle_chart",
        "metrics chart of the selected task (reported through gputui.hooks), on / off: beside the log "
        "from 120 columns, instead of it when narrower",
        RUN_MODES,
    ),
    Key("esc", "back", "back to the table", JOB_MODES),
    Key("esc", "back", "back to the process list", frozenset({MONITOR})),
    Key("m", "menu", "menu: merge shard outputs, write summaries, view them", frozenset({BEFORE, LIVE, FINISHED})),
    Key("m", "menu", "menu: view the merge summary and report.md", frozenset({READONLY})),
    Key("g", "cycle_gpu_layout", "GPU layout: auto, full (cards with history), compact (one line each)", ALL),
    Key("t", "next_theme", "next theme: dark, light, high-contrast", ALL),
    Key("q", "quit_dialog", "quit; while tasks run: d detach (they go on), s stop them, esc cancel", RUNS_OURS),
    Key("q", "quit_dialog", "quit", ALL - RUNS_OURS),
    Key("?", "help", "this help", ALL),
)


def keys_for(mode: str) -> list[Key]:
    return [k for k in KEYS if mode in k.modes]


def acts(action: str, mode: str) -> bool:
    """Whether the key bound to `action` does anything in `mode` (unlisted actions: yes). A key may have
    several lines, each for the modes where it does that."""
    listed = [k for k in KEYS if k.action == action]
    return not listed or any(mode in k.modes for k in listed)


# The app's own keys (the job table and the run area declare theirs): what the footer shows, in this order.
APP_BINDINGS = [
    Binding("l", "launch", "Launch"),
    Binding("K", "kill_all", "Kill all"),
    Binding("m", "menu", "Menu"),
    Binding("q", "quit_dialog", "Quit"),
    Binding("question_mark", "help", "Help"),
    Binding("a", "older_attempt", "Older attempt", show=False),
    Binding("i", "inspect", "Processes", show=False),
    Binding("f", "follow", "Follow", show=False),
    Binding("slash", "search_log", "Search log", show=False),
    Binding("left_square_bracket", "tab(-1)", "Previous tab", show=False),
    Binding("right_square_bracket", "tab(1)", "Next tab", show=False),
    Binding("x", "close_tab", "Close tab", show=False),
    Binding("plus", "parallel(1)", "More at once", show=False),
    Binding("minus", "parallel(-1)", "Fewer at once", show=False),
    Binding("escape", "back", "Back to table", show=False),
    Binding("g", "cycle_gpu_layout", "GPU layout", show=False),
    Binding("t", "next_theme", "Theme", show=False),
]
