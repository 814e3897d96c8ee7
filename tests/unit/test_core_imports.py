"""The engine knows nothing of the screen: no core module may import textual."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import gputui

# The app, the reference workers and the Lightning callback may import what the core must not.
NOT_CORE = ("gputui.tui", "gputui.workers", "gputui.hooks.lightning", "gputui.__main__")
CORE = sorted(m.name for m in pkgutil.walk_packages(gputui.__path__, "gputui.") if not m.name.startswith(NOT_CORE))


def test_every_core_module_imports_without_textual():
    assert "gputui.engine.scheduler" in CORE and "gputui.gpus.nvml" in CORE
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "assert not bad, bad\n"
        "heavy = sorted(m for m in ('torch', 'vllm', 'ray') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


LAYERS = {  # imports run one way, down the flow: a module imports only from its own folder or lower layers
    "cli": 8,
    "tui": 7,
    "api": 6,  # the front door the CLI, the app and scripts share
    "views": 5,
    "results": 4,
    "engine": 3,
    "rundir": 2,  # the run directory: what outlives a process
    "jobs": 1,
    "executors": 1,
    "gpus": 0,  # a leaf: probed by the engine here, and by the executors' runner on a cluster's nodes
    "hooks": 0,
    "files": -1,  # atomic writes, the one reader of growing files
    "text_safety": -1,  # pure: what any layer may show of a worker's text
    "clock": -1,  # step-free stamps: intervals any layer measures
}


def test_imports_run_down_the_flow():
    import re
    from pathlib import Path

    root = Path(gputui.__file__).parent
    upward = []
    for path in root.rglob("*.py"):
        me = path.relative_to(root).with_suffix("").parts[0]
        for target in re.findall(r"^\s*(?:from|import) gputui\.(\w+)", path.read_text(), re.M):
            if me in LAYERS and target in LAYERS and target != me and LAYERS[target] >= LAYERS[me]:
                upward.append(f"{path.relative_to(root)} imports gputui.{target}")
    assert not upward, upward


# One door, as nvitop bans `nvitop.api` inside `nvitop/tui/**` (ruff TID251), turned around: the app and the
# command line import of gputui only the front door (`gputui.api`), the views, and plain value types.
FRONT_DOOR = ("gputui.api", "gputui.views")
# and the leaves every layer may use (what a terminal may show, step-free stamps, the reader of growing files)
VALUE_TYPES = ("gputui.gpus.probe", "gputui.jobs.tasks", "gputui.text_safety", "gputui.clock", "gputui.files")
ALLOWED = {
    "tui": (*FRONT_DOOR, *VALUE_TYPES, "gputui.tui"),
    "cli.py": (*FRONT_DOOR, "gputui.tui", "gputui.__version__"),  # the app and `serve`: started from the CLI
}


def _gputui_imports(path):
    """Every `gputui...` name a module imports, wherever the import is (in a function, under TYPE_CHECKING)."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "gputui")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gputui" and not node.level:
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_the_app_and_the_cli_import_only_the_front_door_views_and_value_types():
    from pathlib import Path

    root = Path(gputui.__file__).parent
    past = []
    for area, allowed in ALLOWED.items():
        for path in [root / area] if area.endswith(".py") else sorted((root / area).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            for name in _gputui_imports(path):
                if any(name == a or name.startswith(f"{a}.") for a in allowed):
                    continue
                past.append(f"{where} imports {name}")
    assert not past, f"past the front door (add what is needed to gputui.api): {past}"
