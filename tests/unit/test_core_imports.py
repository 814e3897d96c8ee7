"""The engine knows nothing of the screen: no core module may import textual."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import gputui

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(gputui.__path__, "gputui.")
    if not m.name.startswith("gputui.tui") and m.name != "gputui.__main__"
)


def test_every_core_module_imports_without_textual():
    assert "gputui.scheduler" in CORE and "gputui.gpus.nvml" in CORE
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
