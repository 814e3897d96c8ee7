"""`gputui status --json` is read by tools and printed to terminals: strict JSON in pure ASCII, so a worker's
control characters (C1, DEL, bidi), whether made visible by the engine or raw in a state.db older than the
sanitiser, are escaped, never sent to the terminal."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from gputui.rundir.store import Store
from tests.conftest import gputui

LAST_LINE = "bad \x1b]0;T\x07 \x9b2J \u202eevil\x7f end"


def _strict(data: bytes):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(data.decode("ascii"), parse_constant=refuse)


def _status_json(run_dir: Path) -> bytes:
    cmd = [sys.executable, "-m", "gputui", "status", "--json", "--run-dir", str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, timeout=60, cwd=run_dir)
    assert out.returncode == 1, out.stderr
    assert max(out.stdout) < 0x7F, out.stdout  # ASCII, and no DEL either
    return out.stdout


def test_status_json_is_ascii_and_strict_whatever_a_worker_printed(tmp_path):
    (tmp_path / "w.py").write_text(f"import sys\nprint({LAST_LINE!r})\nsys.exit(1)\n")
    with open(tmp_path / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["data_id"], [0], [1]])
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "controls"
command = "{sys.executable} w.py"
[shards]
input = "data.csv"
num_workers = 1
[resources]
gpus_per_worker = 0
[retry]
max_attempts = 1
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
""")
    run_dir = tmp_path / "runs" / "controls"
    assert gputui("run", "--jobs", job, "--run-dir", run_dir, "--quiet", cwd=tmp_path).returncode == 1

    task = _strict(_status_json(run_dir))["tasks"][0]  # the engine's reason: its controls made visible
    assert task["reason"] == "exit code 1: bad ␛]0;T␇ \\x9b2J \\u202eevil␡ end"

    store = Store.open(run_dir / "state.db")  # a state.db older than the sanitiser holds the raw text
    store.update_task(task["id"], reason=LAST_LINE)
    store.close()
    assert _strict(_status_json(run_dir))["tasks"][0]["reason"] == LAST_LINE  # escaped on the way, not lost
