"""LogPane on real files in a real Textual app: tailing, follow, search, late files, hidden panes, load."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from gputui.tui.widgets.log_view import LogPane, LogView

POLL = 0.05


class LogApp(App):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        yield LogPane(self.path, interval=POLL)


def write_lines(path: Path, start: int, stop: int, mode: str = "a") -> None:
    with open(path, mode) as f:
        f.writelines(f"line {i}\n" for i in range(start, stop))


async def wait_until(pilot: Pilot, predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.02)


def screen_lines(view: LogView) -> list[str]:
    """What the user sees in the view, row by row."""
    height = view.scrollable_content_region.height
    return [view.render_line(y).text.rstrip() for y in range(height)]


def at_bottom(view: LogView) -> bool:
    return view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y


async def test_lines_show_after_the_first_poll(tmp_path):
    path = tmp_path / "job.log"
    with open(path, "w") as f:
        f.write("step 1 [bold]not markup[/bold]\n\x1b[31mred text\x1b[0m\nprogress 10%\rprogress 80%")
    app = LogApp(path)
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_until(pilot, lambda: view.line_count == 3)
        rows = screen_lines(view)
        # Brackets are text, ANSI colours are decoded, a carriage return shows what a terminal would.
        assert rows[:3] == ["step 1 [bold]not markup[/bold]", "red text", "progress 80%"]
        red = [seg for seg in view.render_line(1) if seg.text == "red text"]
        assert red and red[0].style.color.number == 1  # ANSI red
        assert view.index is not None and view.index.line_count == 2  # the last line is still partial


async def test_only_colours_of_a_workers_escape_sequences_reach_the_terminal(tmp_path):
    path = tmp_path / "job.log"
    lines = [
        "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[HFAKE: all done\x1b[8m hidden",  # title, clear, home, conceal
        "a\x1bcb",  # ESC c: a full terminal reset, which Rich's decoder lets through
        "c\x1b#8d\x9b2Je",  # ESC # 8 fills the screen with E; 8-bit CSI 2 J clears it
        "\x1bPq#0;2\x1b\\f\x1b_Gf=1\x1b\\g\x07\x08h",  # DCS and APC payloads; BEL, BS
        "\x1b[1;32mgreen\x1b[0m",
    ]
    path.write_text("\n".join(lines) + "\n")
    app = LogApp(path)
    async with app.run_test(size=(80, 12)) as pilot:
        view = app.query_one(LogView)
        await wait_until(pilot, lambda: view.line_count == 5)
        segments = [seg for y in range(5) for seg in view.render_line(y)]
        assert not any(ch in seg.text for seg in segments for ch in "\x1b\x07\x08\x9b")
        assert screen_lines(view)[:5] == ["FAKE: all done hidden", "ab", "cde", "fg␇␈h", "green"]
        green = [seg for seg in view.render_line(4) if seg.text == "green"]
        assert green and green[0].style.color.number == 2 and green[0].style.bold  # colours stay


async def test_follow_tracks_growth_until_the_user_scrolls_up(tmp_path):
    path = tmp_path / "job.log"
    write_lines(path, 0, 200, "w")
    app = LogApp(path)
    async with app.run_test(size=(60, 15)) as pilot:
        view = app.query_one(LogView)
        view.focus()
        await wait_until(pilot, lambda: view.line_count == 200)
        await wait_until(pilot, lambda: at_bottom(view))
        assert view.follow
        assert screen_lines(view)[-1] == "line 199"

        write_lines(path, 200, 250)
        await wait_until(pilot, lambda: view.line_count == 250)
        await pilot.pause()
        assert at_bottom(view) and screen_lines(view)[-1] == "line 249"

        await pilot.press("up")
        assert not view.follow
        stay = view.scroll_y
        assert stay < view.max_scroll_y
        write_lines(path, 250, 300)
        await wait_until(pilot, lambda: view.line_count == 300)
        assert view.scroll_y == stay  # not following: new lines do not move the view

        await pilot.press("f")
        assert view.follow
        await pilot.pause()
        assert at_bottom(view) and screen_lines(view)[-1] == "line 299"

        view.post_message(events.MouseScrollUp(view, 5, 5, 0, 0, 0, False, False, False))  # the wheel
        await wait_until(pilot, lambda: not view.follow)
        await pilot.pause()
        assert view.scroll_y < view.max_scroll_y
        await pilot.press("f")

        await pilot.press("home")
        assert not view.follow and view.scroll_y == 0
        assert screen_lines(view)[0] == "line 0"
        await pilot.press("end")
        assert view.follow
        await pilot.pause()
        assert at_bottom(view)


async def test_search_box_finds_highlights_and_repeats(tmp_path):
    path = tmp_path / "job.log"
    rows = [f"line {i}" for i in range(400)]
    rows[120] = "line 120 Traceback (most recent call last)"
    rows[330] = "line 330 traceback again"
    path.write_text("\n".join(rows) + "\n")
    app = LogApp(path)
    async with app.run_test(size=(70, 20)) as pilot:
        pane = app.query_one(LogPane)
        view = pane.log_view
        view.focus()
        await wait_until(pilot, lambda: view.line_count == 400)
        await pilot.press("home")

        await pilot.press("slash")
        box = pane.search_input
        assert box.display and box.has_focus
        await pilot.press(*"TRACEBACK", "enter")
        assert not box.display and view.has_focus
        await wait_until(pilot, lambda: view.match_line == 120)  # the search runs off the event loop
        top = int(view.scroll_y)
        assert top <= 120 < top + view.scrollable_content_region.height
        row = view.render_line(120 - top)
        assert row.text.startswith("line 120 Traceback")
        assert any(seg.style is not None and seg.style.reverse for seg in row)  # highlighted

        await pilot.press("n")
        await wait_until(pilot, lambda: view.match_line == 330)
        top = int(view.scroll_y)
        assert top <= 330 < top + view.scrollable_content_region.height
        await pilot.press("n")  # wraps around
        await wait_until(pilot, lambda: view.match_line == 120)
        await pilot.press("N")
        await wait_until(pilot, lambda: view.match_line == 330)

        await pilot.press("slash", "escape")
        assert not box.display and view.has_focus and view.match_line == 330


async def test_file_that_appears_later(tmp_path):
    path = tmp_path / "not-yet.log"
    app = LogApp(path)
    async with app.run_test(size=(60, 10)) as pilot:
        view = app.query_one(LogView)
        await pilot.pause(3 * POLL)
        assert view.line_count == 0 and screen_lines(view)[0] == ""
        write_lines(path, 0, 3, "w")
        await wait_until(pilot, lambda: view.line_count == 3)
        assert screen_lines(view)[:3] == ["line 0", "line 1", "line 2"]

        # Truncated and rewritten (a restarted job): the pane shows the new content only.
        path.write_text("restarted\n")
        await wait_until(pilot, lambda: view.line_count == 1)
        assert screen_lines(view)[:2] == ["restarted", ""]


async def test_hidden_pane_does_not_poll(tmp_path):
    path = tmp_path / "job.log"
    app = LogApp(path)
    async with app.run_test(size=(60, 10)) as pilot:
        pane = app.query_one(LogPane)
        view = pane.log_view
        pane.display = False
        await pilot.pause()
        write_lines(path, 0, 5, "w")
        await pilot.pause(5 * POLL)
        assert view.line_count == 0
        pane.display = True
        await wait_until(pilot, lambda: view.line_count == 5)


async def test_memory_and_keys_stay_bounded_under_a_fast_writer(tmp_path):
    path = tmp_path / "job.log"
    path.write_text("")
    total = 200_000
    batches = 100

    def writer() -> None:
        with open(path, "a") as f:
            for b in range(batches):
                step = total // batches
                f.writelines(f"line {i}\n" for i in range(b * step, (b + 1) * step))
                f.flush()
                time.sleep(2.0 / batches)

    app = LogApp(path)
    async with app.run_test(size=(100, 120)) as pilot:  # a tall view renders many distinct lines
        view = app.query_one(LogView)
        view.focus()
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        presses = 0
        while thread.is_alive():
            before = view.follow
            # A key event through the app's queue, until the binding has acted. (pilot.press would also
            # wait for the whole process to go idle, which it never does during this test.) How fast keys
            # are answered is measured in bench/, not asserted here.
            app.simulate_key("f")
            while view.follow is before:
                await asyncio.sleep(0.005)
            presses += 1
            assert len(view._cache) <= view.CACHE_LINES
            await asyncio.sleep(0.05)
        thread.join()
        assert presses >= 10  # keys kept being answered while the writer ran
        if not view.follow:
            await pilot.press("f")
        await wait_until(pilot, lambda: view.line_count == total)
        await pilot.pause()
        assert screen_lines(view)[-1] == f"line {total - 1}"
        await pilot.press("home", "pagedown", "pagedown", "end")
        assert len(view._cache) <= view.CACHE_LINES
        assert len(view._cache) > 100  # the cache does work: recent lines are kept
