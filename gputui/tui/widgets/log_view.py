"""A log pane that opens any log, however large, and tails it (the toolong model, see STYLE.md).

`LogView` is a line-API `ScrollView`: the file is indexed by line offsets (`LineIndex`), and only the lines
on screen are read back (`os.pread`) and drawn (`log_render`), with an LRU of rendered strips. Indexing runs
off the event loop and only while the pane is on screen. `LogPane` adds the search box.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollTo, ScrollUp
from textual.strip import Strip
from textual.widgets import Input

from gputui.tui.widgets.log_index import LineIndex
from gputui.tui.widgets.log_render import RENDER_BYTES, render_log_line

__all__ = ["LogPane", "LogView"]

IDLE_INTERVAL = 1.5
"""Seconds between looks at a log that has not grown for a while (`poll` looks at once)."""


class LogView(ScrollView, can_focus=True):
    """Tail of a log file that may not exist yet, may grow to gigabytes, or be truncated or rotated.

    ``follow`` keeps the end in view as lines arrive; any upward scroll by the user turns it off, ``f`` or
    ``end`` turns it back on. ``/`` asks for a search (`SearchRequested`, handled by `LogPane`); ``n`` /
    ``N`` repeat the last one. Lines are shown as plain text (ANSI colours decoded, no markup).
    """

    COMPONENT_CLASSES = {"log-view--match", "log-view--more"}
    DEFAULT_CSS = """
    LogView {
        background: $surface;
        scrollbar-gutter: stable;
    }
    LogView > .log-view--match {
        text-style: reverse;
    }
    LogView > .log-view--more {
        color: $accent;
        text-style: bold;
    }
    LogView:focus {
        background-tint: $foreground 4%;
    }
    """
    BINDINGS = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("slash", "search", "Search"),
        Binding("n", "search_next", "Next"),
        Binding("N", "search_prev", "Prev"),
    ]
    CACHE_LINES = 1000
    """Rendered lines kept; a screen shows far fewer, so scrolling back and forth stays cheap."""

    follow: reactive[bool] = reactive(True, init=False)
    """Keep the last line in view as the file grows."""
    match_rank: reactive[tuple[int, int] | None] = reactive(None)
    placeholder: reactive[str] = reactive("")
    """Shown on the first line when there is no file to show (e.g. a task that has not started); repainted
    when it changes, as from one task without a log to another."""
    """(k, n) of the last search hit: the k-th of n matching lines."""

    class SearchRequested(Message):
        """The user pressed ``/``: whoever owns a search box should open it for ``log_view``."""

        def __init__(self, log_view: LogView) -> None:
            super().__init__()
            self.log_view = log_view

        @property
        def control(self) -> LogView:
            return self.log_view

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        interval: float = 0.5,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.interval = interval
        self.index: LineIndex | None = LineIndex(path) if path is not None else None
        self.match_line: int | None = None
        """Line of the last search hit, drawn highlighted; ``n`` / ``N`` continue from it."""
        self.last_search = ""
        self._cache: LRUCache[int, Strip] = LRUCache(self.CACHE_LINES)
        self._lines = 0  # lines shown, as of the last scan (the virtual height)
        self._complete = 0  # of which newline-terminated, hence safe to cache
        self._generation = -1
        self._width = 0
        self._wake: asyncio.Event | None = None
        self._style_memo: tuple[Style, Style] | None = None
        self._cache_key: tuple[int, int, Style] | None = None

    # -- file --------------------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        return self.index.path if self.index is not None else None

    @property
    def line_count(self) -> int:
        """Lines currently shown (the partial last line included)."""
        return self._lines

    def open(self, path: str | Path | None) -> None:
        """Show another file (or none); the old file's index is dropped."""
        if self.index is not None:
            self.index.close()
        self.index = LineIndex(path) if path is not None else None
        self._reset_view()
        self.poll()

    def _reset_view(self) -> None:
        self._cache.clear()
        self._lines = self._complete = self._width = 0
        self._generation = -1
        self.match_line = None
        if self.is_mounted:
            self.virtual_size = Size(0, 0)
            self.scroll_to(0, 0, animate=False, immediate=True)
            self.refresh()

    def on_mount(self) -> None:
        super().on_mount()
        self._wake = asyncio.Event()
        self._watch()
        self.call_after_refresh(self.poll)

    def on_show(self) -> None:
        self.poll()  # shown again (a tab switched back): catch up now, not at the next tick

    def on_unmount(self) -> None:
        if self.index is not None:
            self.index.close()

    # -- polling -----------------------------------------------------------------------------------

    def poll(self) -> None:
        """Check the file now rather than at the next tick."""
        if self._wake is not None:
            self._wake.set()

    @work(group="log-view-watch", exclusive=True, exit_on_error=False)
    async def _watch(self) -> None:
        # One long-lived watcher per view, not a worker per tick: an idle pane costs a timer wake-up.
        # A quiet file is looked at less and less often (up to IDLE_INTERVAL), a growing one at `interval`.
        assert self._wake is not None
        quiet = 0
        while True:
            index = self.index
            if index is not None and self.display and self.is_on_screen:  # hidden panes cost nothing
                before = (index.generation, index.indexed_bytes)
                await self._catch_up(index)
                quiet = quiet + 1 if (index.generation, index.indexed_bytes) == before else 0
            try:
                await asyncio.wait_for(self._wake.wait(), min(IDLE_INTERVAL, self.interval * (1 + quiet)))
            except TimeoutError:
                pass
            self._wake.clear()

    async def _catch_up(self, index: LineIndex) -> None:
        # Each bounded scan runs in a thread; applying its result here, before the next scan, is the
        # back-pressure: a busy UI delays scanning instead of piling up updates. (A thread worker that
        # blocks in call_from_thread can hang at shutdown; an awaited to_thread cannot.)
        while index is self.index:
            before = (index.generation, index.indexed_bytes)
            try:
                await asyncio.to_thread(index.scan)
            except OSError:
                return  # unreadable for now (permissions, a vanished mount): try again next tick
            if index is not self.index:
                return
            if (index.generation, index.indexed_bytes) != before or index.generation != self._generation:
                self._apply_scan(index)
            if not index.behind:
                return

    def _apply_scan(self, index: LineIndex) -> None:
        if index.generation != self._generation:
            self._generation = index.generation
            self._cache.clear()
            self.match_line = None
            self._width = 0
        self._complete = index.line_count
        self._lines = index.total_lines
        self._width = max(self._width, min(index.longest_line, RENDER_BYTES))
        self.virtual_size = Size(self._width, self._lines)
        self.refresh()
        if self.follow:
            self._to_end()

    # -- rendering ---------------------------------------------------------------------------------

    def _styles(self) -> tuple[Style, Style]:
        """Base and search-hit styles, computed once per style change (``rich_style`` walks the DOM)."""
        if self._style_memo is None:
            base = self.rich_style
            self._style_memo = (base, base + self.get_component_rich_style("log-view--match"))
        return self._style_memo

    def _render(self, line: int, scroll_x: int, width: int, style: Style) -> Strip:
        assert self.index is not None
        raw, more = self.index.read_line(line, RENDER_BYTES), self.get_component_rich_style("log-view--more")
        return render_log_line(raw, self.app.console, scroll_x, width, style, more).apply_offsets(scroll_x, line)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.scrollable_content_region.width
        base, hit = self._styles()
        if (scroll_x, width, base) != self._cache_key:
            # Strips are cached finished (cropped and styled): re-reading a screenful after a sideways
            # scroll is cheaper than re-cropping on every frame of a vertical one.
            self._cache.clear()
            self._cache_key = (scroll_x, width, base)
        if self.index is None and line == 0 and self.placeholder:
            return Strip([Segment(self.placeholder[:width].ljust(width), base + Style(dim=True))])
        if self.index is None or line >= self._lines:
            return Strip.blank(width, base)
        if line == self.match_line:
            return self._render(line, scroll_x, width, hit)
        strip = self._cache.get(line)
        if strip is None:
            strip = self._render(line, scroll_x, width, base)
            if line < self._complete:  # the partial last line still grows: render it afresh each time
                self._cache.set(line, strip)
        return strip

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style_memo = None
        self.refresh()

    @work(group="log-view-rank", exclusive=True, exit_on_error=False)
    async def _say_rank(self, text: str, line: int) -> None:
        index = self.index
        if index is None:
            return
        k, n = await asyncio.to_thread(index.rank, text, line)
        if index is self.index and n:
            self.match_rank = (k, n)
            self.notify(f"match {k}/{n}: {text!r} (line {line + 1})", markup=False, timeout=3)

    # -- follow ------------------------------------------------------------------------------------

    def _to_end(self) -> None:
        """Scroll to the last line now, and again once layout has settled (a scrollbar may appear)."""
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.call_after_refresh(self._settle_end)

    def _settle_end(self) -> None:
        if self.follow and self.scroll_y != self.max_scroll_y:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._to_end()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    # Jumps are immediate, as in less: an animated page of a tall pane re-renders it on every frame.

    def action_page_up(self) -> None:
        self.follow = False
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)

    def action_scroll_home(self) -> None:
        self.follow = False
        self.scroll_home(animate=False, x_axis=self.scroll_y == 0)

    def action_scroll_end(self) -> None:
        self.follow = True
        self._to_end()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if not (event.ctrl or event.shift):  # those scroll sideways
            self.follow = False

    def on_scroll_up(self, message: ScrollUp) -> None:
        self.follow = False  # a click on the scrollbar above the thumb

    def on_scroll_to(self, message: ScrollTo) -> None:
        if message.y is not None and message.y < self.max_scroll_y:
            self.follow = False  # the scrollbar thumb dragged up

    # -- search ------------------------------------------------------------------------------------

    def action_search(self) -> None:
        self.post_message(self.SearchRequested(self))

    def action_search_next(self) -> None:
        if not self.last_search:
            self.action_search()
        else:
            self.start_search(self.last_search)

    def action_search_prev(self) -> None:
        if not self.last_search:
            self.action_search()
        else:
            self.start_search(self.last_search, backwards=True)

    def _search_start(self, backwards: bool) -> int:
        """Continue from the highlighted hit if it is on screen, else from the screen's edge (like less)."""
        top = round(self.scroll_y)
        bottom = top + max(1, self.scrollable_content_region.height) - 1
        total = max(1, self._lines)
        if self.match_line is not None and top <= self.match_line <= bottom:
            return (self.match_line + (-1 if backwards else 1)) % total
        return min(bottom, total - 1) if backwards else min(top, total - 1)

    def search(self, text: str, backwards: bool = False) -> bool:
        """Jump to the next line containing ``text`` (ASCII case-insensitive), wrapping; False if none.

        Blocks while it reads the file; `start_search` does the same off the event loop.
        """
        self.last_search = text
        if self.index is None or not text:
            return False
        return self._show_match(text, self.index.find(text, self._search_start(backwards), backwards))

    @work(group="log-view-search", exclusive=True, exit_on_error=False)
    async def start_search(self, text: str, backwards: bool = False) -> bool:
        """`search` for key presses: a multi-GB log is read in a thread, the UI stays live meanwhile."""
        self.last_search = text
        index = self.index
        if index is None or not text:
            return False
        line = await asyncio.to_thread(index.find, text, self._search_start(backwards), backwards)
        if index is not self.index:
            return False
        return self._show_match(text, line)

    def _show_match(self, text: str, line: int | None) -> bool:
        if line is None:
            self.notify(f"No line contains {text!r}", severity="warning", markup=False)
            return False
        self._say_rank(text, line)
        self.follow = False
        self.match_line = line
        height = max(1, self.scrollable_content_region.height)
        if not round(self.scroll_y) <= line < round(self.scroll_y) + height:
            self.scroll_to(y=max(0, line - height // 3), animate=False, immediate=True)
        self.refresh()
        return True


class LogPane(Vertical):
    """A `LogView` with its search box: ``/`` opens it, Enter searches, Escape closes it."""

    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
    }
    LogPane > LogView {
        height: 1fr;
    }
    LogPane > Input.log-search {
        display: none;
        height: 3;
    }
    LogPane > Input.log-search.-open {
        display: block;
    }
    """
    BINDINGS = [Binding("escape", "close_search", "Close search", show=False)]

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        interval: float = 0.5,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._path = path
        self._interval = interval

    def compose(self) -> ComposeResult:
        yield LogView(self._path, interval=self._interval)
        yield Input(placeholder="Search (Enter: find, Esc: close)", classes="log-search")

    @property
    def log_view(self) -> LogView:
        return self.query_one(LogView)

    @property
    def search_input(self) -> Input:
        return self.query_one("Input.log-search", Input)

    def open(self, path: str | Path | None) -> None:
        self.log_view.open(path)

    def on_log_view_search_requested(self, message: LogView.SearchRequested) -> None:
        message.stop()
        box = self.search_input
        box.value = self.log_view.last_search
        box.add_class("-open")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input is not self.search_input:
            return
        event.stop()
        self._close_box()
        if event.value:
            self.log_view.start_search(event.value)

    def action_close_search(self) -> None:
        if not self.search_input.has_class("-open"):
            raise SkipAction()
        self._close_box()

    def _close_box(self) -> None:
        self.search_input.remove_class("-open")
        self.log_view.focus()
