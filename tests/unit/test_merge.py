import csv
import json
import sys

import pytest

from gputui.results.idcheck import ShardOutput, int_key
from gputui.results.merge import merge_shards
from gputui.rundir.manifests import manifest_matches, manifest_path, read_manifest, write_manifest


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


# -- the block-copying, vectorised CSV path -----------------------------------------------------------------


def merge_ok(tmp_path, shards, **kw):
    summary = merge_shards(shards, tmp_path / "m.csv", tmp_path / "s.json", id_column="id", **kw)
    return summary, (tmp_path / "m.csv")


def test_merged_csv_is_header_once_then_each_shard_body_byte_for_byte(tmp_path):
    a = tmp_path / "a.csv"
    a.write_bytes(b'id,text\n0,"has, comma"\n1,"say ""hi"""\n')
    b = tmp_path / "b.csv"
    b.write_bytes(b"\xef\xbb\xbfid,text\n2,plain\n3,\n")  # an Excel BOM is dropped
    summary, merged = merge_ok(
        tmp_path, [ShardOutput("t1", 2, 4, b), ShardOutput("t0", 0, 2, a)], expected_ids=range(4)
    )
    assert summary["ok"] is True, summary["problems"]
    assert merged.read_bytes() == b'id,text\n0,"has, comma"\n1,"say ""hi"""\n2,plain\n3,\n'
    assert [s["rows"] for s in summary["shards"]] == [2, 2]


def test_quoted_newlines_and_commas_in_any_column_merge_like_the_csv_module(tmp_path):
    a = write_csv(tmp_path / "a.csv", [("x,\ny", 0), ('q"\n"', 1)], header=("text", "id"))
    b = write_csv(tmp_path / "b.csv", [("multi\r\nline, with comma", 2)], header=("text", "id"))
    summary, merged = merge_ok(
        tmp_path, [ShardOutput("t0", 0, 2, a), ShardOutput("t1", 2, 3, b)], expected_ids=[0, 1, 2]
    )
    assert summary["ok"] is True, summary["problems"]
    assert read_csv(merged) == [["text", "id"], ["x,\ny", "0"], ['q"\n"', "1"], ["multi\r\nline, with comma", "2"]]
    assert summary["total_rows"] == 3


def test_stray_quote_falls_back_to_the_csv_module_with_the_same_result(tmp_path):
    a = tmp_path / "a.csv"
    a.write_bytes(b'id,text\n0,5 inch" screen\n1,ok\n')  # a quote inside an unquoted field
    b = write_csv(tmp_path / "b.csv", [(2, "fine")])
    summary, merged = merge_ok(
        tmp_path, [ShardOutput("t0", 0, 2, a), ShardOutput("t1", 2, 3, b)], expected_ids=[0, 1, 2]
    )
    assert summary["ok"] is True, summary["problems"]
    assert read_csv(merged) == [["id", "text"], ["0", '5 inch" screen'], ["1", "ok"], ["2", "fine"]]


def test_quoted_ids_are_read_unquoted(tmp_path):
    a = tmp_path / "a.csv"
    a.write_bytes(b'id,text\n"0",a\n"1",b\n')
    summary, _ = merge_ok(tmp_path, [ShardOutput("t0", 0, 2, a)], expected_ids=[0, 1])
    assert summary["ok"] is True, summary["problems"]


def test_crlf_endings_and_missing_final_newline(tmp_path):
    a = tmp_path / "a.csv"
    a.write_bytes(b"id,text\r\n0,a\r\n1,b")  # CRLF, no final newline
    b = tmp_path / "b.csv"
    b.write_bytes(b"id,text\n2,c")
    summary, merged = merge_ok(
        tmp_path, [ShardOutput("t0", 0, 2, a), ShardOutput("t1", 2, 3, b)], expected_ids=[0, 1, 2]
    )
    assert summary["ok"] is True, summary["problems"]
    assert merged.read_bytes() == b"id,text\r\n0,a\r\n1,b\r\n2,c\n"
    assert read_csv(merged) == [["id", "text"], ["0", "a"], ["1", "b"], ["2", "c"]]


def test_empty_shard_and_header_only_shard(tmp_path):
    a = write_csv(tmp_path / "a.csv", [(0, "a")])
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    header_only = tmp_path / "h.csv"
    header_only.write_bytes(b"id,text")
    shards = [ShardOutput("t0", 0, 1, a), ShardOutput("t1", 1, 2, empty), ShardOutput("t2", 2, 3, header_only)]
    summary, merged = merge_ok(tmp_path, shards)
    assert summary["ok"] is True, summary["problems"]
    assert [s["rows"] for s in summary["shards"]] == [1, 0, 0]
    assert read_csv(merged) == [["id", "text"], ["0", "a"]]


def test_blank_lines_are_not_rows(tmp_path):
    a = tmp_path / "a.csv"
    a.write_bytes(b"id,text\n0,a\n\n1,b\n\r\n")
    summary, _ = merge_ok(tmp_path, [ShardOutput("t0", 0, 2, a)], expected_ids=[0, 1])
    assert summary["ok"] is True, summary["problems"]
    assert summary["total_rows"] == 2


def test_fast_path_problems_match_the_messages(tmp_path):
    """Messages, examples and their order as the row-by-row check gave them (compared with the old code)."""
    a = tmp_path / "a.csv"
    a.write_bytes(b"id,text\n0,a\n1,b\n1,again\n9,stray\n-3,neg\n")
    b = tmp_path / "b.csv"
    b.write_bytes(b"id,text\n1,dup\n3,c\nx,bad\n007,odd\n")  # 007 is 7: inside, read through the key
    c = tmp_path / "c.csv"
    c.write_bytes(b"id,text\n4,a\n5\n")
    d = tmp_path / "d.csv"
    d.write_bytes(b'id,text\n\n10,"q"\n')
    shards = [
        ShardOutput("t0", 0, 3, a),
        ShardOutput("t1", 3, 8, b),
        ShardOutput("t2", 8, 10, c),
        ShardOutput("t3", 10, 12, d),
    ]
    for key in (None, int_key, lambda raw: int(str(raw).strip())):  # fast paths, and any key called per row
        summary = merge_shards(
            shards, tmp_path / "m.csv", tmp_path / "s.json", id_column="id", key=key, expected_ids=list(range(12))
        )
        assert summary["problems"] == [
            "t0 [0, 3): 2 row(s) with ids outside its range, e.g. '9', '-3'",
            "t1 [3, 8): 1 row(s) with ids outside its range, e.g. '1'",
            "t1 [3, 8): 1 row(s) with ids that can't be placed in a range, e.g. 'x' (ValueError: invalid literal "
            "for int() with base 10: 'x')",
            "t2 [8, 10): 2 row(s) with ids outside its range, e.g. '4', '5'",
            "1 id(s) appear in more than one shard, e.g. '1' (t0, t1)",
            "4 expected id(s) have no output row, e.g. 2, 6, 8, 11",
        ]
        assert [s["rows"] for s in summary["shards"]] == [5, 4, 2, 1]
        assert not (tmp_path / "m.csv").exists()


def test_row_without_the_id_field(tmp_path):
    e = tmp_path / "e.csv"
    e.write_bytes(b"text,id\nshort\nlong,1\n")
    summary = merge_shards(
        [ShardOutput("t4", 0, 3, e)], tmp_path / "m.csv", tmp_path / "s.json", id_column="id", expected_ids=[1, 2]
    )
    assert summary["problems"] == [
        "t4 [0, 3): 1 row(s) with no 'id' value",
        "1 expected id(s) have no output row, e.g. 2",
    ]


def test_duplicates_across_shards_in_the_order_found(tmp_path):
    a = write_csv(tmp_path / "a.csv", [(i, "x") for i in range(10)])
    b = write_csv(tmp_path / "b.csv", [(7, "y"), (2, "y"), (10, "y")])
    c = write_csv(tmp_path / "c.csv", [(2, "z"), (11, "z")])
    shards = [ShardOutput("t0", 0, 10, a), ShardOutput("t1", 10, 11, b), ShardOutput("t2", 11, 12, c)]
    summary, _ = merge_ok(tmp_path, shards)
    [dup] = [p for p in summary["problems"] if "more than one shard" in p]
    assert dup == "2 id(s) appear in more than one shard, e.g. '7' (t0, t1); '2' (t0, t1, t2)"


def test_string_ids_through_a_key_in_csv(tmp_path):
    position = {"apple": 0, "kiwi": 1, "pear": 2}.__getitem__
    a = write_csv(tmp_path / "a.csv", [("apple", "x"), ("pear", "y")])
    b = write_csv(tmp_path / "b.csv", [("kiwi", "z")])
    summary, _ = merge_ok(
        tmp_path,
        [ShardOutput("t0", 0, 1, a), ShardOutput("t1", 1, 3, b)],
        key=position,
        expected_ids=["apple", "kiwi", "pear"],
    )
    assert summary["problems"] == ["t0 [0, 1): 1 row(s) with ids outside its range, e.g. 'pear'"]


def test_many_blocks_give_the_same_result(tmp_path, monkeypatch):
    import gputui.results.merge_io as merge_io

    monkeypatch.setattr(merge_io, "BLOCK", 64)  # records and CRLFs cut across block ends
    a = write_csv(tmp_path / "a.csv", [(i, f"text {i},\nmore") for i in range(0, 50)])
    b = tmp_path / "b.csv"
    b.write_bytes(b"id,text\r\n" + b"".join(b"%d,plain text %d\r\n" % (i, i) for i in range(50, 100)))
    summary, merged = merge_ok(
        tmp_path, [ShardOutput("t0", 0, 50, a), ShardOutput("t1", 50, 100, b)], expected_ids=range(100)
    )
    assert summary["ok"] is True, summary["problems"]
    assert merged.read_bytes() == a.read_bytes() + b.read_bytes()[len(b"id,text\r\n") :]
    assert [s["rows"] for s in summary["shards"]] == [50, 50]


def test_invalid_utf8_is_a_problem(tmp_path):
    a = tmp_path / "a.csv"
    a.write_bytes(b"id,text\n0,\xff\n")
    summary, _ = merge_ok(tmp_path, [ShardOutput("t0", 0, 1, a)])
    assert summary["ok"] is False
    assert "could not merge" in summary["problems"][0]


def test_a_shard_read_twice_reports_its_problems_once(tmp_path):
    """A shard the byte scan gives up on midway is read again with the csv module: what the first reading
    had found (here, its differing header) is not reported twice."""
    a = write_csv(tmp_path / "a.csv", [(0, "a")])
    b = tmp_path / "b.csv"
    b.write_bytes(b'id,answer\n1,fine\n2,"bare\rreturn"\n')
    summary, _ = merge_ok(tmp_path, [ShardOutput("t0", 0, 1, a), ShardOutput("t1", 1, 3, b)])
    assert summary["problems"] == [
        f"t1: CSV header ['id', 'answer'] differs from ['id', 'text'] of t0: {b}",
    ]
