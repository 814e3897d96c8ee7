import csv
import json
import sys

import pytest

from gputui.engine.manifests import manifest_matches, manifest_path, read_manifest, write_manifest
from gputui.results.merge import ShardOutput, merge_shards


def write_csv(path, rows, header=("id", "text")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture
def three_csv_shards(tmp_path):
    """Shards of ids 0..8, given out of range order, one of them with a multi-line text cell."""
    out = tmp_path / "out"
    out.mkdir()
    s0 = ShardOutput("shard-0", 0, 3, write_csv(out / "s0.csv", [(0, "a"), (1, "b"), (2, "c")]))
    s1 = ShardOutput("shard-1", 3, 6, write_csv(out / "s1.csv", [(3, "d"), (4, "two\nlines"), (5, "f")]))
    s2 = ShardOutput("shard-2", 6, 9, write_csv(out / "s2.csv", [(6, "g"), (7, "h"), (8, "i")]))
    return out, [s2, s0, s1]


def test_csv_shards_merge_in_range_order_with_one_header(three_csv_shards):
    out, shards = three_csv_shards
    summary = merge_shards(shards, out / "merged.csv", out / "merge.json", id_column="id")
    assert summary["ok"] is True, summary["problems"]
    rows = read_csv(out / "merged.csv")
    assert rows[0] == ["id", "text"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(9)]
    assert rows[5] == ["4", "two\nlines"]
    assert summary["total_rows"] == 9
    assert [s["task_id"] for s in summary["shards"]] == ["shard-0", "shard-1", "shard-2"]
    assert [s["rows"] for s in summary["shards"]] == [3, 3, 3]
    assert summary["merged"] == str(out / "merged.csv")
    assert json.loads((out / "merge.json").read_text()) == summary
    assert sorted(p.name for p in out.iterdir()) == ["merge.json", "merged.csv", "s0.csv", "s1.csv", "s2.csv"]


def test_jsonl_merge_adds_missing_final_newline(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"id": 0, "y": 1}\n{"id": 1, "y": 2}', encoding="utf-8")  # no trailing newline
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": 2, "y": 3}])
    summary = merge_shards(
        [ShardOutput("t1", 2, 3, b), ShardOutput("t0", 0, 2, a)],
        tmp_path / "all.jsonl",
        tmp_path / "sum.json",
        id_column="id",
        expected_ids=[0, 1, 2],
    )
    assert summary["ok"] is True, summary["problems"]
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [0, 1, 2]
    assert summary["total_rows"] == 3


def test_missing_shard_fails_and_names_the_task(three_csv_shards):
    out, shards = three_csv_shards
    (out / "s1.csv").unlink()
    summary = merge_shards(shards, out / "merged.csv", out / "merge.json")
    assert summary["ok"] is False
    assert summary["merged"] is None
    assert any("shard-1" in p and "s1.csv" in p for p in summary["problems"])
    assert not (out / "merged.csv").exists()
    assert json.loads((out / "merge.json").read_text())["ok"] is False
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_problem_leaves_previous_merged_file_untouched(three_csv_shards):
    out, shards = three_csv_shards
    previous = out / "merged.csv"
    previous.write_text("id,text\nold,result\n", encoding="utf-8")
    write_csv(out / "s2.csv", [(6, "g"), (42, "stray")])
    summary = merge_shards(shards, previous, out / "merge.json", id_column="id")
    assert summary["ok"] is False
    assert previous.read_text(encoding="utf-8") == "id,text\nold,result\n"


def test_id_outside_its_shard_range_is_reported(three_csv_shards):
    out, shards = three_csv_shards
    write_csv(out / "s0.csv", [(0, "a"), (1, "b"), (7, "wrong shard")])
    write_csv(out / "s2.csv", [(6, "g"), (8, "i")])
    summary = merge_shards(shards, out / "merged.csv", out / "merge.json", id_column="id")
    assert summary["ok"] is False
    [problem] = [p for p in summary["problems"] if "outside" in p]
    assert "shard-0" in problem and "'7'" in problem


def test_id_in_two_shards_is_reported(tmp_path):
    a = write_csv(tmp_path / "a.csv", [(1, "x"), (2, "y")])
    b = write_csv(tmp_path / "b.csv", [(2, "again"), (3, "z")])
    shards = [ShardOutput("t0", 0, 3, a), ShardOutput("t1", 3, 10, b)]
    summary = merge_shards(shards, tmp_path / "m.csv", tmp_path / "s.json", id_column="id")
    assert summary["ok"] is False
    dup = [p for p in summary["problems"] if "more than one shard" in p]
    assert dup and "'2'" in dup[0] and "t0" in dup[0] and "t1" in dup[0]


def test_string_ids_checked_through_key(tmp_path):
    position = {"apple": 0, "kiwi": 1, "pear": 2}.__getitem__  # ranges of non-integer ids are positions
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "apple"}, {"id": "pear"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "kiwi"}])
    shards = [ShardOutput("t0", 0, 1, a), ShardOutput("t1", 1, 3, b)]
    summary = merge_shards(
        shards,
        tmp_path / "m.jsonl",
        tmp_path / "s.json",
        id_column="id",
        key=position,
        expected_ids=["apple", "kiwi", "pear"],
    )
    assert summary["problems"] == ["t0 [0, 1): 1 row(s) with ids outside its range, e.g. 'pear'"]


def test_several_rows_for_one_id_within_a_shard_are_fine(tmp_path):
    a = write_csv(tmp_path / "a.csv", [(1, "first"), (1, "second"), (2, "x")])
    b = write_csv(tmp_path / "b.csv", [(3, "y"), (3, "z")])
    shards = [ShardOutput("t0", 0, 3, a), ShardOutput("t1", 3, 5, b)]
    summary = merge_shards(
        shards, tmp_path / "m.csv", tmp_path / "s.json", id_column="id", expected_ids=["1", "2", "3"]
    )
    assert summary["ok"] is True, summary["problems"]
    assert summary["total_rows"] == 5


def test_header_mismatch_names_the_shard(three_csv_shards):
    out, shards = three_csv_shards
    write_csv(out / "s2.csv", [(6, "g")], header=("id", "answer"))
    summary = merge_shards(shards, out / "merged.csv", out / "merge.json")
    assert summary["ok"] is False
    [problem] = summary["problems"]
    assert "shard-2" in problem and "header" in problem and "answer" in problem
    assert not (out / "merged.csv").exists()


def test_format_mismatch_is_a_problem(tmp_path):
    a = write_csv(tmp_path / "a.csv", [(1, "x")])
    summary = merge_shards([ShardOutput("t0", 0, 3, a)], tmp_path / "m.jsonl", tmp_path / "s.json")
    assert summary["ok"] is False
    assert "t0" in summary["problems"][0] and "csv" in summary["problems"][0]


def test_manifest_written_read_and_matched(tmp_path):
    out = write_csv(tmp_path / "s0.csv", [(0, "a"), (1, "b")])
    m = write_manifest(out, task_id="shard-0", low=0, high=2, scheduler_id="sched-1", attempt=2)
    assert manifest_path(out) == tmp_path / "s0.csv.done.json"
    assert read_manifest(out) == m
    assert m["rows"] == 2 and m["bytes"] == out.stat().st_size and len(m["sha256"]) == 64
    assert m["task_id"] == "shard-0" and m["attempt"] == 2 and m["scheduler_id"] == "sched-1"
    assert manifest_matches(out, low=0, high=2)
    assert not manifest_matches(out, low=0, high=3)


def test_manifest_detects_a_modified_file_even_at_same_size(tmp_path):
    out = write_csv(tmp_path / "s0.csv", [(0, "a"), (1, "b")])
    write_manifest(out, task_id="shard-0", low=0, high=2, scheduler_id="s", attempt=1)
    out.write_text(out.read_text().replace("a", "z"), encoding="utf-8")
    assert not manifest_matches(out, low=0, high=2)
    summary = merge_shards([ShardOutput("shard-0", 0, 2, out)], tmp_path / "m.csv", tmp_path / "s.json")
    assert summary["ok"] is False
    assert "shard-0" in summary["problems"][0] and "changed since" in summary["problems"][0]


def test_read_manifest_missing_or_corrupt_is_none(tmp_path):
    out = write_csv(tmp_path / "s0.csv", [(0, "a")])
    assert read_manifest(out) is None
    assert not manifest_matches(out, low=0, high=1)
    manifest_path(out).write_text("{not json", encoding="utf-8")
    assert read_manifest(out) is None


def test_manifest_for_unknown_format_has_no_row_count(tmp_path):
    out = tmp_path / "result.bin"
    out.write_bytes(b"\x00\x01")
    m = write_manifest(out, task_id="t", low=0, high=1, scheduler_id="s", attempt=1)
    assert m["rows"] is None and m["bytes"] == 2
    assert manifest_matches(out, low=0, high=1)


def test_expected_ids_without_output_are_reported(three_csv_shards):
    out, shards = three_csv_shards
    write_csv(out / "s1.csv", [(3, "d")])  # ids 4 and 5 produced nothing
    summary = merge_shards(
        shards, out / "merged.csv", out / "merge.json", id_column="id", expected_ids=[str(i) for i in range(9)]
    )
    assert summary["ok"] is False
    [problem] = summary["problems"]
    assert problem.startswith("2 expected id(s) have no output row") and "'4'" in problem and "'5'" in problem


def test_summary_json_with_numpy_ints(tmp_path):
    np = pytest.importorskip("numpy")
    a = write_csv(tmp_path / "a.csv", [(1, "x"), (2, "y")])
    shard = ShardOutput("t0", np.int64(0), np.int64(3), a)
    summary = merge_shards(
        [shard], tmp_path / "m.csv", tmp_path / "s.json", id_column="id", expected_ids=np.array([1, 2])
    )
    assert summary["ok"] is True, summary["problems"]
    on_disk = json.loads((tmp_path / "s.json").read_text())
    assert on_disk["shards"][0]["range"] == [0, 3]
    assert on_disk["total_rows"] == 2


def test_manifest_with_numpy_range(tmp_path):
    np = pytest.importorskip("numpy")
    out = write_csv(tmp_path / "s0.csv", [(0, "a")])
    write_manifest(out, task_id="t", low=np.int64(0), high=np.int64(1), scheduler_id="s", attempt=1)
    assert manifest_matches(out, low=0, high=1)


def test_parquet_without_pyarrow_gives_clear_problem(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    part = tmp_path / "s0.parquet"
    part.write_bytes(b"PAR1")
    summary = merge_shards([ShardOutput("t0", 0, 1, part)], tmp_path / "m.parquet", tmp_path / "s.json")
    assert summary["ok"] is False
    assert "reading Parquet needs pyarrow: pip install 'gputui[parquet]'" in summary["problems"]
    assert not (tmp_path / "m.parquet").exists()
