"""Opening state that is empty, damaged or written by another gputui: refused in two lines naming the file
and the next step, with nothing written to the file or beside it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from gputui.jobs.kinds.base import NewTask
from gputui.jobs.tasks import SHARD
from gputui.rundir.state_file import StateUnreadable
from gputui.rundir.store import Store


def _listing(folder):
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir())


def _healthy(tmp_path):
    path = tmp_path / "state.db"
    store = Store.open(path, create=True)
    store.add_tasks([NewTask(f"shard-{i}", i, SHARD, 10 * i, 10 * i + 10, 10) for i in range(200)], budget=3)
    store.close()
    return path


@pytest.mark.parametrize("readonly", [False, True])
def test_an_empty_file_is_refused_not_taken_for_a_new_database(tmp_path, readonly):
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    before = _listing(tmp_path)
    with pytest.raises(StateUnreadable) as e:
        Store.open(path, create=not readonly, readonly=readonly)
    assert "is empty (0 bytes)" in str(e.value) and "left untouched" in str(e.value)
    assert len(str(e.value).splitlines()) == 2
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("readonly", [False, True])
def test_a_damaged_page_is_found_on_open_and_nothing_is_written(tmp_path, readonly):
    path = _healthy(tmp_path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page + 8 : 3 * page + 72] = b"\xa5" * 64  # a table page's cell pointers
    path.write_bytes(bytes(data))
    before = _listing(tmp_path), path.read_bytes()
    with pytest.raises(StateUnreadable, match="is damaged") as e:
        Store.open(path, create=not readonly, readonly=readonly)
    assert "--rebuild-state" in str(e.value)
    assert (_listing(tmp_path), path.read_bytes()) == before


def test_the_next_step_names_the_runs_job_file_and_run_directory(tmp_path):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "config.json").write_text(json.dumps({"job_file": "/jobs/my job.toml"}))
    (tmp_path / "state.db").write_bytes(b"\0" * 8192)
    with pytest.raises(StateUnreadable) as e:
        Store.open(tmp_path / "state.db", readonly=True)
    assert f"gputui run --jobs '/jobs/my job.toml' --run-dir {tmp_path} --rebuild-state" in str(e.value)


def test_state_of_another_schema_version_is_refused_untouched(tmp_path):
    path = _healthy(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateUnreadable, match="older gputui"):
        Store.open(path, create=True)
    assert path.read_bytes() == before


def test_a_healthy_database_opens_read_only_and_read_write(tmp_path):
    path = _healthy(tmp_path)
    assert len(Store.open(path, readonly=True).tasks()) == 200
    assert len(Store.open(path).tasks()) == 200
