"""The real scheduler under libfaketime, its wall clock stepped +2 h then back to -1 h mid-run (as an NTP
step, a VM resumed or `date -s` do; CLOCK_MONOTONIC and CLOCK_BOOTTIME run on): two healthy workers are not
stopped by the hang rule, and every duration it records and shows is the real one.

The workers run outside the fake (their command drops LD_PRELOAD), so their output comes as it really
does. Debian's libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 turns Python 3.11's time.sleep into
EINVAL (clock_nanosleep on CLOCK_MONOTONIC, libfaketime issue #426): a three-line shim preloaded before it
sends clock_nanosleep straight to the kernel. Skipped without libfaketime or a C compiler."""

from __future__ import annotations

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import gputui, wait_for

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
CC = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None or CC is None, reason="needs libfaketime (apt-get install faketime) and a C compiler"
)

SLEEP_FIX = """
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
    return syscall(SYS_clock_nanosleep, clock, flags, req, rem) == -1 ? errno : 0;
}
"""

WORKER = textwrap.dedent(
    """
    import os, time
    name = os.environ["GPUTUI_TASK_ID"]
    for step in range(1, 2000):
        while os.path.exists("hold"):  # quiet for a while, as between two lines of a slow step
            open(name + ".held", "w").close()
            time.sleep(0.05)
        print(f"step {step} loss={1.0 / step:.4f}", flush=True)
        with open(name + ".step", "w") as f:
            f.write(str(step))
        if os.path.exists("finish"):
            break
        time.sleep(0.5)
    """
)

NO_OUTPUT_S = 30


def _job(tmp_path: Path) -> Path:
    (tmp_path / "worker.py").write_text(WORKER)
    steps = "".join(
        f'[[pipeline.step]]\nname = "{name}"\ncommand = "env -u LD_PRELOAD {sys.executable} worker.py"\n'
        for name in ("a", "b")
    )
    path = tmp_path / "job.toml"
    path.write_text(
        f"""
[job]
name = "clock"
kind = "pipeline"
stop_grace_s = 1
{steps}
[health]
no_output_s = {NO_OUTPUT_S}
[resources]
gpus_per_worker = 1
max_parallel = 2
[retry]
max_attempts = 1
"""
    )
    return path


def _faked_env(tmp_path: Path, offset: Path) -> dict[str, str]:
    fix = tmp_path / "sleep_fix.so"
    source = tmp_path / "sleep_fix.c"
    source.write_text(SLEEP_FIX)
    subprocess.run([CC, "-shared", "-fPIC", "-O2", "-o", fix, source], check=True, capture_output=True)
    return {
        **os.environ,
        "LD_PRELOAD": f"{fix}:{LIBFAKETIME}",
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def _steps(tmp_path: Path) -> int:
    """The fewest steps either worker has printed."""
    try:
        return min(int((tmp_path / f"{name}.step").read_text() or 0) for name in ("a", "b"))
    except (OSError, ValueError):
        return 0


def _step_while_quiet(tmp_path: Path, offset: Path, to: str, sched: subprocess.Popen) -> None:
    """Step the wall clock while both workers are quiet: the scheduler's health check (every second) has
    read their last lines before, and looks again after, with no new line in between; then let them go on
    for a few more steps. Returns early if the run ended (its workers stopped by the hang rule, say)."""
    ended = lambda: sched.poll() is not None  # noqa: E731
    hold = tmp_path / "hold"
    hold.touch()
    held = [tmp_path / f"{n}.held" for n in ("a", "b")]
    wait_for(lambda: all(h.exists() for h in held) or ended(), timeout=60, what="quiet workers")
    time.sleep(2.0)  # a health check or two reads what they printed last
    offset.write_text(f"{to}\n")
    time.sleep(3.0)  # a few health checks see no new line since the step
    hold.unlink()
    mark = _steps(tmp_path)
    wait_for(lambda: _steps(tmp_path) >= mark + 3 or ended(), timeout=60, what=f"steps under {to}")
    for h in held:  # the workers are past their hold loop: nothing writes these again
        h.unlink(missing_ok=True)


def test_steps_of_the_wall_clock_stop_no_healthy_worker_and_shift_no_duration(tmp_path, reaper):
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = _faked_env(tmp_path, offset)
    probe = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.01)"], env=env, capture_output=True)
    assert probe.returncode == 0, probe.stderr  # the preload works here (time.sleep with it too)
    log = open(tmp_path / "scheduler.log", "w")  # noqa: SIM115 - closed below
    sched = subprocess.Popen(
        [sys.executable, "-m", "gputui", "run", "--jobs", _job(tmp_path), "--simulate", "2x24"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    reaper.append(sched)
    wait_for(lambda: _steps(tmp_path) >= 2, timeout=60, what="both workers' first steps")
    _step_while_quiet(tmp_path, offset, "+2h", sched)  # the wall clock jumps 2 h ahead
    _step_while_quiet(tmp_path, offset, "-1h", sched)  # and back, to an hour behind
    (tmp_path / "finish").touch()
    code = sched.wait(120)
    log.close()

    run_dir = tmp_path / "runs" / "clock"
    status = gputui("status", "--run-dir", run_dir, "--json", env=env)  # read under the same fake clock
    tasks = {t["id"]: t for t in json.loads(status.stdout)["tasks"]}
    db = sqlite3.connect(run_dir / "state.db")
    health = db.execute("SELECT message FROM events WHERE kind='health'").fetchall()
    assert health == [], health  # the hang rule saw no silence
    assert code == 0, (tmp_path / "scheduler.log").read_text()
    longest = 3600 - 1  # every worker ran for well under the hour the wall clock went back (or the 2 h ahead)
    for t in tasks.values():
        assert (t["status"], t["attempts"]) == ("done", 1), t
        assert 0 < t["duration"] < longest, t
        assert 0 < t["gpu_seconds"] < longest, t  # one simulated GPU, held as long as the worker ran
    ((a_start, a_end, a_boot),) = db.execute(
        "SELECT started_at, ended_at, boot_id FROM attempts WHERE task_id='a'"
    )
    assert a_end < a_start and a_boot  # the wall clock as recorded went back; the boot stamps measured it
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["wall_seconds"] < longest
    for row in summary["tasks"]:
        assert all(0 < d < longest for d in row["attempt_durations"]), row
