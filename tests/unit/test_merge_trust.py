"""A merge trusts a vouched output by its stat (size, modification time, inode, as git's index does) instead
of hashing it again; `verify` hashes it. What reads no ids imports no numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

from gputui.results.merge import merge_shards
from gputui.rundir.manifests import RACY_S, unchanged_by_stat
from tests.unit.test_merge import write_csv
from tests.unit.test_merge_vouched import finished, random_shards


def rewrite_in_place(path, old: bytes, new: bytes) -> None:
    """The same bytes count, the same inode, the old modification time put back: what only a hash sees."""
    st = path.stat()
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    with open(path, "r+b") as f:
        f.write(data.replace(old, new, 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_output_trusted_by_its_stat_is_not_hashed_again_unless_verified(tmp_path):
    shards = random_shards(tmp_path, 2)
    expected = list(range(100))
    for s in shards:  # finished a second ago: too recent for a manifest without the file system's clock
        finished(s, expected, age_s=1.0)
    rewrite_in_place(shards[1].path, b'"b,c"', b'"b;c"')
    trusted = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id", expected_ids=expected)
    assert trusted["ok"], trusted["problems"]
    assert b'"b;c"' in (tmp_path / "m.csv").read_bytes()  # copied as it is now: its hash was not compared
    verified = merge_shards(shards, tmp_path / "v.csv", tmp_path / "v.json", id_column="id",
                            expected_ids=expected, verify=True)  # fmt: skip
    assert not verified["ok"] and not (tmp_path / "v.csv").exists()
    assert verified["problems"] == [
        f"shard-1: output changed since it was marked done (content changed (sha256 differs)): {shards[1].path}"
    ]


def test_a_file_put_back_under_another_inode_is_hashed_though_its_size_and_time_match(tmp_path):
    shards = random_shards(tmp_path, 2)
    for s in shards:
        finished(s, None)
    copy = tmp_path / "copy.csv"
    copy.write_bytes(shards[0].path.read_bytes().replace(b'"b,c"', b'"b;c"', 1))
    st = shards[0].path.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(copy, shards[0].path)  # e.g. restored from a backup that kept times
    summary = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id")
    assert not summary["ok"] and "shard-0: output changed since it was marked done" in summary["problems"][0]


def test_what_a_stat_vouches_for():
    now_ns = time.time_ns()
    new = {"mtime_ns": now_ns - 10**6, "ino": 7, "fs_clock_ns": now_ns, "finished_at": now_ns / 1e9}
    same = SimpleNamespace(st_mtime_ns=now_ns - 10**6, st_ino=7)
    assert unchanged_by_stat(same, new)
    assert not unchanged_by_stat(SimpleNamespace(st_mtime_ns=now_ns - 10**6, st_ino=8), new)  # another file
    assert not unchanged_by_stat(SimpleNamespace(st_mtime_ns=now_ns - 2 * 10**6, st_ino=7), new)  # written since
    # Modified in the clock tick the manifest read it in: a later write could share that time; hash it.
    assert not unchanged_by_stat(same, new | {"fs_clock_ns": now_ns - 10**6})
    # Manifests from before inodes and the clock were recorded: the time must be well before the manifest.
    old = {"mtime_ns": now_ns - 10**6, "finished_at": now_ns / 1e9}
    assert not unchanged_by_stat(same, old)
    assert unchanged_by_stat(same, old | {"finished_at": now_ns / 1e9 + RACY_S + 1})


def test_a_merge_that_reads_no_ids_does_not_import_numpy(tmp_path):
    csv_path = write_csv(tmp_path / "s0.csv", [(0, "a"), (1, "b c")])  # (a quoted field: numpy finds the rows)
    jsonl_path = tmp_path / "s0.jsonl"
    jsonl_path.write_text('{"id": 0}\n{"id": 1}\n')
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gputui.results.merge import merge_shards\n"
        "from gputui.results.shards import ShardOutput\n"
        "for p in sys.argv[1:]:\n"
        "    s = merge_shards([ShardOutput('shard-0', 0, 2, Path(p))], Path(p + '.m' + Path(p).suffix),\n"
        "                     Path(p + '.json'))\n"
        "    assert s['ok'] and s['total_rows'] == 2, s\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow') if m in sys.modules))\n"
    )
    args = [sys.executable, "-c", code, str(csv_path), str(jsonl_path)]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
