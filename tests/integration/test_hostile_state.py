"""State that is damaged, foreign, read-only or changed under gputui: refused in a line or two that name
the file and the next step, exit status 2, and nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import gputui, gputui_bg, proc_state, wait_for


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished_run(make_job, **kw):
    job = make_job(**kw)
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    return job, make_job.run_dir / "state.db"


def _refused(r, *words):
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "Traceback" not in text
    for word in words:
        assert word in r.stderr, r.stderr


def test_damaged_pages_are_refused_and_left_byte_for_byte(make_job):
    job, db = _finished_run(make_job, ids=200, num_workers=20)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    for n in range(1, len(data) // page):  # every table page's header and cell pointers scribbled over
        data[n * page : n * page + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    before = _sha(db)
    for args in (("run", "--jobs", job), ("status", "--run-dir", make_job.run_dir)):
        _refused(gputui(*args), "state.db", "damaged", "left untouched", "--rebuild-state")
    assert _sha(db) == before
    assert not (db.parent / "state.db-wal").exists()


def test_damaged_state_is_refused_by_the_app_before_any_screen(make_job):
    job, db = _finished_run(make_job, ids=200, num_workers=20)
    data = bytearray(db.read_bytes())
    data[2 * 4096 : 2 * 4096 + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    before = _sha(db)
    r = gputui("--run-dir", make_job.run_dir, timeout=60, stdin=subprocess.DEVNULL)
    _refused(r, "state.db", "damaged", "left untouched", "--rebuild-state")
    assert _sha(db) == before


def test_empty_state_beside_a_live_worker_is_refused_and_nothing_is_launched(make_job, reaper, tmp_path):
    job = make_job(ids=20, num_workers=2, max_parallel=1, sleep=60.0)
    first = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(first)
    running = wait_for(lambda: make_job.running(), what="a worker")
    first.send_signal(signal.SIGKILL)  # the scheduler only: its worker goes on under its waiter
    first.wait(10)
    db = make_job.run_dir / "state.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"")  # e.g. truncated by a full disk
    for args in (("run", "--jobs", job), ("status", "--run-dir", make_job.run_dir)):
        r = gputui(*args)
        _refused(r, str(db), "empty", "left untouched")
        assert f"gputui run --jobs {job} --run-dir {make_job.run_dir} --rebuild-state" in r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert db.read_bytes() == b""
    assert len([e for e in make_job.events() if e["event"] == "start"]) == 1  # nothing launched beside it
    (pid,) = running.values()
    assert proc_state(pid) not in ("gone", "zombie")  # and it was left alone


def test_damage_found_while_reading_is_named_like_damage_found_on_open(make_job):
    job, db = _finished_run(make_job, num_workers=2)
    conn = sqlite3.connect(db)
    # a flipped byte in a text cell: the file's structure is sound (the integrity check passes), its text is not
    conn.execute("UPDATE tasks SET reason = CAST(x'c328ff' AS TEXT) WHERE id = 'shard-1'")
    conn.commit()
    conn.close()
    before = _sha(db)
    for args in (("status", "--run-dir", make_job.run_dir), ("summary", "--run-dir", make_job.run_dir)):
        _refused(gputui(*args), str(db), "cannot be read", "left untouched", "--rebuild-state")
    assert _sha(db) == before


def test_state_that_lost_a_table_is_refused_untouched(make_job):
    job, db = _finished_run(make_job, num_workers=2)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE attempts")
    conn.close()
    before = _sha(db)
    for args in (("run", "--jobs", job), ("summary", "--run-dir", make_job.run_dir)):
        _refused(gputui(*args), str(db), "damaged", "attempts", "left untouched", "--rebuild-state")
    assert _sha(db) == before


def test_state_of_a_newer_gputui_is_refused_untouched(make_job):
    job, db = _finished_run(make_job, num_workers=2)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    before = _sha(db)
    _refused(gputui("run", "--jobs", job), str(db), "newer gputui", "left untouched")
    _refused(gputui("status", "--run-dir", make_job.run_dir), "newer gputui")
    assert _sha(db) == before


def test_foreign_database_is_refused_untouched(make_job):
    job = make_job(num_workers=2)
    db = make_job.run_dir / "state.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.execute("INSERT INTO recipes VALUES ('bread')")
    conn.commit()
    conn.close()
    before = _sha(db)
    _refused(gputui("run", "--jobs", job), "not gputui state", "left untouched")
    assert _sha(db) == before


def test_another_runs_state_copied_in_is_refused_by_every_reader_saying_whose_it_is(make_job, tmp_path):
    """Attack N13: a gputui state.db of another run, copied into this run's directory, would pass for this
    run's (status showed its tasks, rc 0). Both runs are real; the copy is refused by its identity, before
    any plan check, by status, run and the app alike, and --rebuild-state gives this run its own back."""
    from tests.conftest import JobFactory

    job, db = _finished_run(make_job, ids=40, num_workers=2)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = JobFactory(other_root)
    other_job = other(ids=30, num_workers=3)  # another plan too: what made `run` refuse, by accident
    other_job.write_text(other_job.read_text().replace('name = "test"', 'name = "dblock"'))
    assert gputui("run", "--jobs", other_job).returncode == 0
    other_db = other_root / "runs" / "dblock" / "state.db"
    ours = json.loads((db.parent / "run.json").read_text())["scheduler_id"]
    theirs = json.loads((other_db.parent / "run.json").read_text())["scheduler_id"]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
        if Path(f"{other_db}{suffix}").exists():
            Path(f"{db}{suffix}").write_bytes(Path(f"{other_db}{suffix}").read_bytes())
    before = _sha(db)
    whose = (
        f'{db} belongs to another run (job "dblock", scheduler {theirs[:8]}), not this one '
        f'(run.json: job "test", scheduler {ours[:8]}); it was left untouched.'
    )
    app = ("--run-dir", make_job.run_dir)
    for args in (("status", "--run-dir", make_job.run_dir), ("run", "--jobs", job), app):
        r = gputui(*args, stdin=subprocess.DEVNULL, timeout=60)
        _refused(r, whose, "Move it away", "--rebuild-state")
        assert "started with" not in r.stderr and len(r.stderr.strip().splitlines()) == 2, r.stderr
    assert _sha(db) == before

    r = gputui("run", "--jobs", job, "--rebuild-state")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "moved the state aside" in r.stdout and "launch" not in r.stdout  # this run's own, rebuilt
    status = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert [(t["id"], t["status"]) for t in status["tasks"]] == [("shard-0", "done"), ("shard-1", "done")]
    assert [p for p in db.parent.glob("state.db.set-aside-*") if _sha(p) == before]  # set aside as it was


def test_rebuild_state_sets_damaged_state_aside_and_finishes_nothing_twice(make_job):
    job, db = _finished_run(make_job, ids=40, num_workers=4)
    db.write_bytes(b"\0" * 8192)
    r = gputui("run", "--jobs", job, "--rebuild-state")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "moved the state aside" in r.stdout and "launch" not in r.stdout
    assert [p.name for p in db.parent.glob("state.db.set-aside-*")]
    starts = [e for e in make_job.events() if e["event"] == "start"]
    assert len(starts) == 4  # the first run's only


def test_state_set_aside_twice_in_one_second_keeps_both(tmp_path):
    """Each database moved aside keeps its own name (with its WAL files), never renamed over an earlier one."""
    from gputui.rundir.paths import RunPaths
    from gputui.rundir.rebuild import set_aside

    paths = RunPaths(tmp_path)
    moved = []
    for text in (b"first", b"second"):
        paths.db.write_bytes(text)
        Path(f"{paths.db}-wal").write_bytes(text + b" wal")
        moved.append(set_aside(paths))
    assert moved[0] != moved[1] and all(p.name.startswith("state.db.set-aside-") for p in moved)
    assert [p.read_bytes() for p in moved] == [b"first", b"second"]
    assert [Path(f"{p}-wal").read_bytes() for p in moved] == [b"first wal", b"second wal"]
    assert not paths.db.exists() and set_aside(paths) is None


# -- 4. plan changes that strand outputs -------------------------------------------------------------
def test_changed_output_pattern_is_refused_naming_the_key(make_job):
    job = make_job(ids=40, num_workers=4, worker_args="--fail-attempts 1,2,3", max_attempts=1)
    gputui("run", "--jobs", job)  # every shard fails: all of them still to do
    job.write_text(job.read_text().replace('pattern = "out_{low}_{high}.csv"', 'pattern = "part_{low}.csv"'))
    r = gputui("run", "--jobs", job)
    _refused(r, "[outputs].pattern", "out_0_10.csv", "part_0.csv")
    assert "may change" in r.stderr


def test_changed_output_dir_is_refused_naming_the_key_and_writes_nothing(make_job):
    job = make_job(ids=40, num_workers=4, worker_args="--fail-attempts 1,2,3", max_attempts=1)
    gputui("run", "--jobs", job)
    db = make_job.run_dir / "state.db"
    before = _sha(db)
    job.write_text(job.read_text().replace("[outputs]\n", '[outputs]\ndir = "elsewhere"\n'))
    r = gputui("run", "--jobs", job)
    _refused(r, "[outputs].dir", "outputs/out_0_10.csv", "elsewhere/out_0_10.csv", "--run-dir")
    assert _sha(db) == before
    assert not (make_job.root / "elsewhere").exists()


def test_changed_param_in_the_output_pattern_is_refused_naming_it(make_job):
    job = make_job(ids=40, num_workers=4, worker_args="--fail-attempts 1,2,3", max_attempts=1)
    text = job.read_text().replace('pattern = "out_{low}_{high}.csv"', 'pattern = "{tag}_{low}_{high}.csv"')
    job.write_text(text + '[params]\ntag = "a"\n')
    gputui("run", "--jobs", job)
    job.write_text(text + '[params]\ntag = "b"\n')
    _refused(gputui("run", "--jobs", job), "[params]", "a_0_10.csv", "b_0_10.csv")


def test_changing_the_merged_file_is_allowed_and_merges_there(make_job):
    job, _ = _finished_run(make_job, ids=40, num_workers=4)
    job.write_text(job.read_text().replace('merged = "merged.csv"', 'merged = "all.csv"'))
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    merged = make_job.run_dir / "outputs" / "all.csv"
    assert merged.read_text() == (make_job.run_dir / "outputs" / "merged.csv").read_text()
    assert len([e for e in make_job.events() if e["event"] == "start"]) == 4  # nothing ran again


def test_changing_the_command_of_pending_work_is_allowed(make_job):
    job = make_job(ids=40, num_workers=4, worker_args="--fail-attempts 1", max_attempts=1)
    assert gputui("run", "--jobs", job).returncode == 1
    job.write_text(job.read_text().replace("--fail-attempts 1", "--fail-attempts 9"))
    assert gputui("run", "--jobs", job).returncode == 0


# -- 5. the lock -------------------------------------------------------------------------------------
def test_unlinking_the_lock_file_does_not_let_a_second_scheduler_in(make_job, reaper, tmp_path):
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=3.0)
    first = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(first)
    wait_for(lambda: len(make_job.running()) == 2, what="two workers")
    (make_job.run_dir / "scheduler.lock").unlink()
    second = gputui("run", "--jobs", job)
    _refused(second, "already driven by gputui", f"pid {first.pid}")
    status = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert status["scheduler_live"] is True
    assert first.wait(60) == 0
    assert len([e for e in make_job.events() if e["event"] == "start"]) == 2


# -- 6. read-only run directories --------------------------------------------------------------------
@pytest.fixture
def read_only_view(tmp_path):
    """A read-only bind mount of a folder (root ignores permission bits, so a real read-only mount)."""
    views = []

    def make(src):
        dst = tmp_path / f"ro-{len(views)}"
        dst.mkdir()
        for cmd in (["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,ro,bind", str(dst)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", str(dst)], capture_output=True)
                pytest.skip(f"cannot make a read-only mount here: {r.stderr.strip()}")
        views.append(dst)
        return dst

    yield make
    for dst in views:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True)


def test_status_of_a_healthy_run_needs_no_write_access(make_job, read_only_view):
    _finished_run(make_job, num_workers=2)
    ro = read_only_view(make_job.run_dir)
    r = gputui("status", "--run-dir", ro)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "shard-0" in r.stdout and "done" in r.stdout and "damaged" not in r.stdout + r.stderr
    assert gputui("status", "--run-dir", ro, "--json").returncode == 0


def test_status_of_a_live_run_through_a_read_only_view_shows_it_as_it_is(
    make_job, read_only_view, reaper, tmp_path
):
    job = make_job(ids=40, num_workers=4, max_parallel=2, sleep=60.0)
    first = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(first)
    wait_for(lambda: len(make_job.running()) == 2, what="two workers")
    ro = read_only_view(make_job.run_dir)
    r = gputui("status", "--run-dir", ro, "--json")
    assert r.returncode == 1, r.stdout + r.stderr  # read fine; not every task is done
    status = json.loads(r.stdout)
    assert status["scheduler_live"] is True
    assert [t["status"] for t in status["tasks"]].count("running") >= 1, status["tasks"]
    r = gputui("kill", "--run-dir", ro, "--all")
    _refused(r, "cannot write to", "read-only file system")
    assert all(proc_state(pid) not in ("gone", "zombie") for pid in make_job.running().values())
    first.send_signal(signal.SIGINT)  # Ctrl-C: stops its workers
    first.wait(60)


def test_commits_left_in_the_wal_by_a_killed_writer_are_read_through_a_read_only_view(make_job, read_only_view):
    _finished_run(make_job, num_workers=2)
    db = make_job.run_dir / "state.db"
    pid = os.fork()
    if pid == 0:  # a writer that dies without checkpointing: its last commit lives only in state.db-wal
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("UPDATE tasks SET reason='only in the WAL' WHERE id='shard-1'")
        conn.commit()
        os._exit(0)
    os.waitpid(pid, 0)
    ro = read_only_view(make_job.run_dir)
    for shm_left in (True, False):  # its WAL index left beside it, or gone too
        if not shm_left:
            Path(f"{db}-shm").unlink()
        r = gputui("status", "--run-dir", ro, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["tasks"][1]["reason"] == "only in the WAL", shm_left


def test_writing_verbs_on_a_read_only_run_say_so_plainly(make_job, read_only_view):
    _finished_run(make_job, num_workers=2)
    ro = read_only_view(make_job.run_dir)
    verbs = (
        ("summary",),
        ("merge",),
        ("retry", "shard-0", "--force"),
        ("kill", "--all"),
        ("pause", "--all"),
        ("resume", "shard-1"),
    )
    for verb, *rest in verbs:
        args = (verb, "--run-dir", ro, *rest)
        r = gputui(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        assert "read-only" in (r.stdout + r.stderr).lower(), (args, r.stdout, r.stderr)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)], ids=["umask-022", "umask-002"])
def test_files_written_for_people_get_the_users_normal_file_mode(make_job, umask, mode):
    """0666 & ~umask, like any program's files: never mkstemp's 0600, never a fixed 0644."""
    old = os.umask(umask)
    try:  # one attempt of each task runs out of memory (an alert), the retry is done
        _finished_run(make_job, num_workers=2, worker_args="--fail-attempts 1 --fail-mode oom")
    finally:
        os.umask(old)
    run = make_job.run_dir
    written = ["summary.json", "report.md", "merge_summary.json", "outputs/merged.csv", "exports/config.json"]
    written += ["exports/tasks.json", "job.toml", "run.json", "alerts.jsonl", "attempts.journal", "keeper.log"]
    written += ["logs/exits.journal", *[str(p.relative_to(run)) for p in (run / "logs").glob("*.attempt*.log")]]
    written += [str(p.relative_to(run)) for p in (run / "outputs").glob("*.done.json")]
    assert len(written) == 11 + 1 + 4 + 2, written  # 4 attempt logs, 2 done-manifests
    for name in written:
        assert (run / name).stat().st_mode & 0o777 == mode, (name, oct((run / name).stat().st_mode))


# -- 7. a reader that stops early --------------------------------------------------------------------
def test_status_piped_into_head_ends_quietly(make_job):
    _finished_run(make_job, ids=400, num_workers=40)
    for flag in ("--json", ""):
        cmd = f"{sys.executable} -m gputui status --run-dir {make_job.run_dir} {flag} | head -1"
        r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
        assert r.stdout.strip() and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def _into_a_closed_pipe(*args) -> subprocess.CompletedProcess:
    """Run gputui with its stdout a pipe whose reader is already gone: every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "gputui", *map(str, args)], stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)


def test_a_reader_gone_before_the_first_line_ends_nothing_in_a_traceback(make_job):
    _finished_run(make_job, num_workers=2)
    for args in (("status", "--json"), ("status",), ("summary",), ("merge",)):
        r = _into_a_closed_pipe(args[0], "--run-dir", make_job.run_dir, *args[1:])
        assert r.returncode in (0, 141), (args, r.returncode, r.stderr)
        assert not any(word in r.stderr for word in ("Traceback", "BrokenPipe", "Exception ignored")), r.stderr
