"""GPU panels and the process list, driven the way the app drives them: snapshots in, widgets updated."""

from __future__ import annotations

import html
import subprocess
import sys
import time

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static
from textual.widgets.data_table import RowKey

from gputui.engine.monitor import CpuSampler
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.gpus.simulated import SimulatedProbe
from gputui.tui.widgets.gpu_grid import GpuPanels, GridShape, grid_shape
from gputui.tui.widgets.gpu_meters import sparkline
from gputui.tui.widgets.gpu_panel import HISTORY_LENGTH, GpuLine, GpuPanel
from gputui.tui.widgets.process_list import OURS_MARK, ProcessList, ProcessRow


class PanelsApp(App):
    """The grid alone, given the lines the app would leave it (`budget`)."""

    def __init__(self, budget: int = 1000) -> None:
        super().__init__()
        self.budget = budget

    def compose(self) -> ComposeResult:
        yield GpuPanels()

    def on_mount(self) -> None:
        self.query_one(GpuPanels).fit(self.budget)


class ProcessApp(App):
    def compose(self) -> ComposeResult:
        yield ProcessList()


def probe(count: int, load: dict[int, list[tuple[int, int]]] | None = None) -> SimulatedProbe:
    """Simulated GPUs whose load the test can change between ticks; clock pinned for stable numbers."""
    current = load if load is not None else {}
    return SimulatedProbe(count, 24, load=lambda: current, clock=lambda: 0.0)


LINES = ("title", "mem", "util", "sensors", "util-history", "mem-history", "tasks", "ghost")


def line(panel: GpuPanel, name: str) -> str:
    """One line of a card as the user reads it."""
    text = panel.text()
    index = LINES.index(name)
    return text[index] if index < len(text) else ""


def screen_text(app: App) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_one_gpu_shows_name_badge_and_memory(size: tuple[int, int]) -> None:
    snaps = probe(1, {0: [(4242, 12 * GIB)]}).snapshot()  # 12 GiB + 300 MiB baseline
    app = PanelsApp()
    async with app.run_test(size=size) as pilot:
        app.query_one(GpuPanels).update_gpus(snaps)
        await pilot.pause()
        (panel,) = app.query(GpuPanel)
        assert line(panel, "title").startswith("GPU 0 · Simulated GPU 24GB")
        assert line(panel, "title").endswith("SIMULATED")
        assert "SIMULATED" in screen_text(app)
        assert "12.3 / 24.0 GiB" in line(panel, "mem")
        assert line(panel, "util").endswith("92%")  # busy simulated GPU 0 at the pinned clock


async def test_eight_gpus_at_80x24_take_one_line_each_with_bars_and_sensors() -> None:
    load = {i: [(1000 + i, int((1 + 2.5 * i) * GIB))] for i in range(8)}
    snaps = probe(8, load).snapshot()
    app = PanelsApp(budget=24 - 2 - 1 - 13)  # what the app leaves the GPUs at 80x24
    async with app.run_test(size=(80, 24)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus(snaps, {3: ["shard-3"]})
        await pilot.pause()
        lines = list(app.query(GpuLine))
        assert [line.index for line in lines] == list(range(8)) and not app.query(GpuPanel)
        assert grid.region.height == 8 and all(line.region.bottom <= 8 for line in lines)
        text = [line.render().plain for line in lines]
        for i, snap in enumerate(snaps):
            row = text[i]
            assert len(row) <= 80
            assert f"{snap.memory_used / GIB:4.1f}/24G" in row and f"{snap.utilization:3.0f}%" in row
            assert f"{snap.temperature:.0f}°C" in row and f"{snap.power:.0f}W" in row
            assert "━" in row
        assert "shard-3" in text[3]


async def test_eight_gpus_at_200x50_are_full_cards_with_history() -> None:
    snaps = probe(8).snapshot()
    app = PanelsApp(budget=50 - 2 - 1 - 13)
    async with app.run_test(size=(200, 50)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus(snaps)
        await pilot.pause()
        panels = list(app.query(GpuPanel))
        assert [p.index for p in panels] == list(range(8))
        assert grid.shape == GridShape("full", 4, 18)
        assert all(line(p, "util-history").startswith("util ") for p in panels)
        assert all(p.region.height == 9 and p.region.bottom <= 18 for p in panels), "all on screen"
        assert screen_text(app).count("SIMULATED") == 8


async def test_the_layout_key_cycles_auto_full_compact_and_history_survives() -> None:
    sim = probe(2)
    app = PanelsApp(budget=30)
    async with app.run_test(size=(120, 40)) as pilot:
        grid = app.query_one(GpuPanels)
        for _ in range(3):
            grid.update_gpus(sim.snapshot())
        await pilot.pause()
        assert grid.shape.kind == "full" and len(app.query(GpuPanel)) == 2
        grid.focus()
        await pilot.press("g")  # auto -> full
        await pilot.press("g")  # full -> compact
        await pilot.pause()
        assert grid.mode == "compact" and len(app.query(GpuLine)) == 2 and not app.query(GpuPanel)
        grid.update_gpus(sim.snapshot())
        await pilot.press("g")  # compact -> auto: cards again, with every sample taken meanwhile
        await pilot.pause()
        panel = app.query_one(GpuPanel)
        samples = grid.history(0)[0]
        assert len(samples) == 4 and line(panel, "util-history").endswith(sparkline(samples, 4))


async def test_second_tick_reuses_panels_and_grows_history() -> None:
    load: dict[int, list[tuple[int, int]]] = {}
    sim = probe(2, load)
    app = PanelsApp()
    async with app.run_test(size=(200, 50)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus(sim.snapshot())
        await pilot.pause()
        before = {p.index: p for p in app.query(GpuPanel)}
        assert "0.3 / 24.0 GiB" in line(before[1], "mem")
        assert len(grid.history(1)[1]) == 1

        load[1] = [(77, 20 * GIB)]
        grid.update_gpus(sim.snapshot())
        await pilot.pause()
        after = {p.index: p for p in app.query(GpuPanel)}
        assert all(after[i] is before[i] for i in (0, 1))
        _, memory = grid.history(1)
        assert len(memory) == 2 and memory[-1] > memory[0]
        assert "20.3 / 24.0 GiB" in line(after[1], "mem")
        assert not line(after[1], "util").endswith(" 0%")
        assert line(after[1], "mem-history").endswith(sparkline(memory, 2))


async def test_history_keeps_the_last_samples_only() -> None:
    sim = probe(1)
    app = PanelsApp()
    async with app.run_test(size=(80, 24)) as pilot:
        grid = app.query_one(GpuPanels)
        for _ in range(HISTORY_LENGTH + 15):
            grid.update_gpus(sim.snapshot())
        await pilot.pause()
        assert len(grid.history(0)[0]) == HISTORY_LENGTH


async def test_gpus_going_away_remove_panels_and_none_shows_why() -> None:
    sim8, sim4 = probe(8), probe(4)
    app = PanelsApp(budget=8)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus(sim8.snapshot())
        await pilot.pause()
        grid.update_gpus(sim4.snapshot())
        await pilot.pause()
        assert [p.index for p in app.query(GpuLine)] == [0, 1, 2, 3]

        grid.update_gpus([])
        await pilot.pause()
        assert not app.query(GpuLine)
        assert "No GPU visible" in screen_text(app)
        grid.update_gpus([], message="--simulate: expected N or NxGB (e.g. 4 or 8x24), got '8x'")
        await pilot.pause()
        assert "expected N or NxGB" in str(app.query_one("#no-gpu", Static).content)


async def test_more_gpus_than_lines_scroll_and_the_grid_takes_focus() -> None:
    app = PanelsApp(budget=4)
    async with app.run_test(size=(80, 24)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus(probe(8).snapshot())
        await pilot.pause()
        assert grid.region.height == 4 and grid.can_focus, "the keyboard can reach GPUs 4-7"
        grid.focus()
        await pilot.press("end")
        await pilot.wait_for_scheduled_animations()  # the scroll is animated
        assert grid.scroll_y == grid.max_scroll_y > 0


async def test_gpu_appearing_in_the_middle_keeps_index_order() -> None:
    snaps = probe(3).snapshot()
    app = PanelsApp()
    async with app.run_test(size=(200, 50)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus([snaps[0], snaps[2]])
        await pilot.pause()
        grid.update_gpus(snaps)
        await pilot.pause()
        assert [p.index for p in app.query(GpuPanel)] == [0, 1, 2]


async def test_tasks_and_ghost_memory_are_shown_when_given() -> None:
    sim = probe(2, {0: [(11, 4 * GIB), (12, 4 * GIB)]})
    app = PanelsApp()
    async with app.run_test(size=(200, 50)) as pilot:
        grid = app.query_one(GpuPanels)
        grid.update_gpus(
            sim.snapshot(),
            {0: ["shard-0", "shard-3"]},
            {1: "3.2 GiB held by ended task shard-2"},
        )
        await pilot.pause()
        gpu0, gpu1 = grid.panels[0], grid.panels[1]
        assert line(gpu0, "tasks") == "tasks: shard-0, shard-3"
        assert line(gpu0, "ghost") == "" and gpu0.region.height == 9
        assert gpu1.has_class("-ghost") and gpu1.region.height == 10
        assert line(gpu1, "ghost") == "⚠ 3.2 GiB held by ended task shard-2"
        assert "held by ended task shard-2" in screen_text(app)

        grid.update_gpus(sim.snapshot())  # the ghost memory was freed, the tasks ended
        await pilot.pause()
        assert line(gpu1, "ghost") == "" and not gpu1.has_class("-ghost") and gpu1.region.height == 9
        assert line(gpu0, "tasks") == "tasks: none"


async def test_real_gpu_with_unknown_sensors_has_no_badge_and_shows_dashes() -> None:
    snap = GpuSnapshot(index=3, name="NVIDIA A100 [80GB]", uuid="GPU-x", memory_total=80 * GIB, memory_used=GIB)
    app = PanelsApp()
    async with app.run_test(size=(200, 50)) as pilot:
        app.query_one(GpuPanels).update_gpus([snap])
        await pilot.pause()
        panel = app.query_one(GpuPanel)
        assert line(panel, "title") == "GPU 3 · NVIDIA A100 [80GB]"  # not eaten as markup, no badge
        assert "1.0 / 80.0 GiB" in line(panel, "mem")
        assert line(panel, "util").endswith("–")
        assert line(panel, "sensors") == "–°C  – W"
        assert "SIMULATED" not in screen_text(app)


def test_grid_shape_prefers_cards_and_falls_back_to_one_line_per_gpu() -> None:
    assert grid_shape("auto", 80, 8, 8) == GridShape("compact", 1, 8)
    assert grid_shape("auto", 200, 34, 8) == GridShape("full", 4, 18)
    assert grid_shape("auto", 200, 34, 16) == GridShape("compact", 2, 8)  # 4 rows of cards would need 36
    assert grid_shape("auto", 30, 50, 3) == GridShape("full", 1, 27)
    assert grid_shape("full", 80, 8, 8) == GridShape("full", 2, 36)  # asked for: it scrolls
    assert grid_shape("compact", 200, 34, 1) == GridShape("compact", 1, 1)
    assert grid_shape("auto", 80, 8, 0).columns == 1


def row(
    gpu: int, pid: int, mem_gib: float | None, *, ours: bool = False, command: str = "python x.py"
) -> ProcessRow:
    used = None if mem_gib is None else int(mem_gib * GIB)
    return ProcessRow(gpu=gpu, pid=pid, user="ana", used_memory=used, command=command, ours=ours)


def cells(table: ProcessList, key: str) -> list[str]:
    return [getattr(cell, "plain", str(cell)) for cell in table.get_row(key)]


async def test_process_list_applies_a_keyed_diff() -> None:
    app = ProcessApp()
    async with app.run_test(size=(120, 24)) as pilot:
        table = app.query_one(ProcessList)
        a, b = row(0, 100, 2.0, ours=True), row(1, 200, 1.0)
        table.update_processes([a, b])
        await pilot.pause()
        assert table.row_count == 2
        row_a = table.rows[RowKey(a.key)]

        a2, c = row(0, 100, 5.5, ours=True), row(2, 300, None, command="[bold]evil[/bold] " + "y" * 200)
        table.update_processes([a2, c])
        await pilot.pause()
        assert table.row_count == 2
        assert RowKey(b.key) not in table.rows
        assert table.rows[RowKey(a.key)] is row_a, "A was updated in place, not re-added"
        assert cells(table, a.key) == [OURS_MARK, "0", "100", "ana", "5.5 GiB", "–", "–", "", "python x.py"]
        c_cells = cells(table, c.key)
        assert c_cells[0] == "" and c_cells[4] == "–"
        assert c_cells[8].startswith("[bold]evil[/bold] y") and c_cells[8].endswith("…")
        assert len(c_cells[8]) == 60
        assert [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(2)] == ["0:100", "2:300"]


async def test_process_list_changes_only_cells_that_changed_and_keeps_the_cursor() -> None:
    app = ProcessApp()
    async with app.run_test(size=(120, 24)) as pilot:
        table = app.query_one(ProcessList)
        rows = [row(0, 10, 1.0), row(0, 20, 1.0), row(1, 30, 1.0)]
        table.update_processes(rows)
        await pilot.pause()
        table.move_cursor(row=2)
        assert table.highlighted_process == rows[2]

        updated: list[tuple[str, str]] = []
        original = table.update_cell

        def spy(row_key, column_key, value, **kwargs):
            updated.append((str(row_key), str(column_key)))
            return original(row_key, column_key, value, **kwargs)

        table.update_cell = spy  # type: ignore[method-assign]
        table.update_processes([rows[1], row(1, 30, 3.0), row(0, 5, 1.0)])
        await pilot.pause()
        assert updated == [("1:30", "mem")]
        assert [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)] == ["0:5", "0:20", "1:30"]
        assert table.highlighted_process is not None and table.highlighted_process.key == "1:30"


async def test_process_list_has_no_kill_binding() -> None:
    app = ProcessApp()
    async with app.run_test(size=(80, 24)):
        table = app.query_one(ProcessList)
        declared = [b for cls in type(table).__mro__ for b in cls.__dict__.get("BINDINGS", [])]
        actions = [getattr(b, "action", None) or b[1] for b in declared]
        assert actions, "DataTable's own cursor bindings are inherited"
        assert not [a for a in actions if "kill" in a]


async def test_process_list_shows_sm_cpu_and_task_and_sorts_by_memory_then_cpu() -> None:
    app = ProcessApp()
    async with app.run_test(size=(160, 24)) as pilot:
        table = app.query_one(ProcessList)
        rows = [
            ProcessRow(0, 10, "ana", 1 * GIB, "a", True, "shard-1", 87.0, 12.0),
            ProcessRow(0, 20, "bob", 9 * GIB, "b", False, None, None, 99.0),
            ProcessRow(1, 30, "ana", 4 * GIB, "c", True, "shard-2", 5.0, None),
        ]
        table.update_processes(rows)
        await pilot.pause()
        assert cells(table, "0:10")[5:8] == ["87", "12", "shard-1"]
        order = lambda: [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)]  # noqa: E731
        assert order() == ["0:10", "0:20", "1:30"]
        table.focus()
        await pilot.press("s")
        assert order() == ["0:20", "1:30", "0:10"]  # most GPU memory first
        await pilot.press("s")
        assert order() == ["0:20", "0:10", "1:30"]  # most CPU first, unknown last


def test_cpu_percent_is_measured_between_two_samples(reaper) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    reaper.append(busy)
    sampler = CpuSampler()
    assert sampler.percent(busy.pid) is None  # first sight: nothing to compare with yet
    time.sleep(0.5)
    assert sampler.percent(busy.pid) > 10


def test_a_clusters_gpus_are_grouped_by_node_numbered_in_order_and_unread_nodes_say_why():
    from gputui.views.executor_facts import cluster_gpus

    def gpu(i: int) -> dict:
        return {"index": i, "name": "A100", "uuid": f"u{i}", "memory_total": 80 * 2**30, "memory_used": 0}

    nodes = [
        {"node": "a", "id": "n1aaaaaa", "declared": 2, "gpus": [gpu(0), gpu(1)]},
        {"node": "b", "id": "n2bbbbbb", "declared": 4, "why": "NVML: library not found"},
        {"node": "c", "id": "n3cccccc", "declared": 1, "gpus": [gpu(0)]},
        {"node": "c", "id": "n4dddddd", "declared": 1, "gpus": [gpu(0)]},  # two nodes on one host
        {"node": "d", "id": "n5eeeeee", "declared": 0, "why": "probing…"},  # a CPU node: nothing to say
    ]
    gpus, missing = cluster_gpus(nodes)
    assert [(g.index, g.where) for g in gpus] == [
        (0, "a GPU 0"),
        (1, "a GPU 1"),
        (2, "c/n3cccc GPU 0"),
        (3, "c/n4dddd GPU 0"),
    ]
    assert missing == "b: 4 GPU(s) declared to Ray, not readable (NVML: library not found)"
