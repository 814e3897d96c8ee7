from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gputui.atomic import atomic_write_json, atomic_write_text


def test_numpy_and_pandas_values_become_plain_json(tmp_path):
    import pandas as pd

    obj = {
        "rows": np.int64(7),
        "mean": np.float32(0.5),
        "ids": np.arange(3),
        "when": pd.Timestamp("2026-01-02"),
        "path": Path("/x"),
        "tags": {"b", "a"},
    }
    atomic_write_json(tmp_path / "s.json", obj)
    assert json.loads((tmp_path / "s.json").read_text()) == {
        "rows": 7,
        "mean": 0.5,
        "ids": [0, 1, 2],
        "when": "2026-01-02T00:00:00",
        "path": "/x",
        "tags": ["a", "b"],
    }


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")
    try:
        atomic_write_json(target, {"bad": object()})
    except TypeError:
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_new_files_get_the_users_normal_mode_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o640
        (tmp_path / "report.md").chmod(0o604)
        atomic_write_text(tmp_path / "report.md", "y")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)
