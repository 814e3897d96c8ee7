"""A worker's output is untrusted: what it prints reaches `gputui run`, `gputui status` and report.md with its
control characters made visible, never raw (an escape sequence once retitled and cleared the terminal).
`gputui status` into a file prints whole lines, never wrapped at 80 columns."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from gputui.rundir.store import Store
from tests.conftest import gputui

ATTACK = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[HFAKE: all 4 tasks done\x1b[8m hidden"
SHOWN = "␛]0;PWNED-TITLE␇␛[2J␛[HFAKE: all 4 tasks done hidden"  # its colour (SGR 8) dropped, the rest shown
TAIL = " while loading the checkpoint shard from a directory whose name is rather long, then giving up"
RAW = set("\x1b\x07\x9b")


def hostile_job(root: Path) -> tuple[Path, Path]:
    """4 shards whose worker prints `working`, then the attack (and a long tail of words), and exits 1."""
    (root / "w.py").write_text(f"import sys\nprint('working')\nprint({ATTACK + TAIL!r})\nsys.exit(1)\n")
    with open(root / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data_id", "value"])
        w.writerows([i, f"row{i}"] for i in range(8))
    job = root / "job.toml"
    job.write_text(f"""
[job]
name = "hostile"
command = "{sys.executable} w.py"
[shards]
input = "data.csv"
num_workers = 4
[resources]
gpus_per_worker = 0
max_parallel = 4
[retry]
max_attempts = 1
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
""")
    return job, root / "runs" / "hostile"


def test_a_workers_escape_sequences_reach_no_output_raw(tmp_path):
    job, run_dir = hostile_job(tmp_path)
    run = gputui("run", "--jobs", job, "--run-dir", run_dir, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert not RAW & set(run.stdout + run.stderr), run.stdout
    assert f"exit code 1: {SHOWN}" in run.stdout  # the FAILED lines and the closing list say what it printed
    assert "[0, 2) FAKE: all 4 tasks done hidden" in run.stdout  # its output, piped: no colour, no title

    status = gputui("status", "--run-dir", run_dir)
    assert status.returncode == 1 and not RAW & set(status.stdout), status.stdout
    assert SHOWN in status.stdout
    report = (run_dir / "report.md").read_text()
    assert not RAW & set(report) and SHOWN in report

    # A state.db written before the sanitiser holds the raw text: every display still shows it made visible.
    store = Store.open(run_dir / "state.db")
    store.update_task("shard-0", reason=f"[/red] {ATTACK}")  # markup too: rich must not read it
    store.close()
    status = gputui("status", "--run-dir", run_dir)
    assert status.returncode == 1 and not RAW & set(status.stdout), status.stdout
    assert f"[/red] {visible_attack()}" in status.stdout
    again = gputui("run", "--run-dir", run_dir, "--only-pending", cwd=tmp_path)  # rewrites report.md
    assert not RAW & set(again.stdout) and not RAW & set((run_dir / "report.md").read_text()), again.stdout


def visible_attack() -> str:
    return ATTACK.replace("\x1b", "␛").replace("\x07", "␇")


def test_status_into_a_file_prints_whole_lines(tmp_path):
    job, run_dir = hostile_job(tmp_path)
    assert gputui("run", "--jobs", job, "--run-dir", run_dir, "--quiet", cwd=tmp_path).returncode == 1
    out = tmp_path / "status.txt"
    with open(out, "w") as f:  # a file, not a terminal; COLUMNS as a terminal of 80 would say
        cmd = [sys.executable, "-m", "gputui", "status", "--run-dir", str(run_dir)]
        assert subprocess.run(cmd, stdout=f, env=os.environ | {"COLUMNS": "80"}, timeout=60).returncode == 1
    lines = out.read_text().splitlines()
    reason = f"exit code 1: {SHOWN}{TAIL}"
    rows = [line for line in lines if line.startswith("shard-") and " failed " in line]
    assert len(rows) == 4 and all(line.rstrip().endswith(reason) for line in rows), "\n".join(lines)
    assert len(rows[0]) > 150
