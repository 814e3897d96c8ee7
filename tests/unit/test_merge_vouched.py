"""Coverage checked as each shard finishes, then trusted by the merge: check_shard's findings go into the
done-manifest, and a merge whose every shard is vouched for copies bytes instead of reading ids, giving the
same merged file and the same verdicts as reading every shard."""

from __future__ import annotations

import os
import random
import time

import numpy as np

from gputui.results.idcheck import ShardOutput, int_key
from gputui.results.merge import check_shard, merge_shards
from gputui.rundir.manifests import manifest_matches, write_manifest
from tests.unit.test_merge import write_csv, write_jsonl


def finished(shard: ShardOutput, expected, *, column="id", age_s=60.0) -> dict | None:
    """What the scheduler does when the shard exits 0: check it, write its manifest (the file made to look
    `age_s` old, as a shard finished a while before the merge)."""
    found, problems = check_shard(shard, id_column=column, key=int_key, expected_ids=expected)
    assert not problems, problems
    old = time.time() - age_s
    os.utime(shard.path, (old, old))
    write_manifest(shard.path, task_id=shard.task_id, low=shard.low, high=shard.high, scheduler_id="s",
                   attempt=1, ids=found)  # fmt: skip
    return found


def random_shards(tmp_path, n_shards=4, per=50, *, crlf=False, fmt="csv"):
    rnd = random.Random(3)
    shards = []
    for s in range(n_shards):
        lo, hi = s * per, (s + 1) * per
        rows = [(i, rnd.choice(["a", "b,c", 'say "hi"', "x\ny", ""])) for i in range(lo, hi)]
        path = tmp_path / f"s{s}.{fmt}"
        if fmt == "csv":
            write_csv(path, rows)
            if crlf:
                path.write_bytes(path.read_bytes())  # csv.writer writes \r\n already
            else:
                path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
        else:
            write_jsonl(path, [{"id": i, "text": t} for i, t in rows])
        shards.append(ShardOutput(f"shard-{s}", lo, hi, path))
    return shards


def test_a_shard_that_covers_its_range_is_vouched_for_with_its_row_count(tmp_path):
    shard = random_shards(tmp_path, 1)[0]
    found, problems = check_shard(shard, id_column="id", key=int_key, expected_ids=range(0, 200))
    assert problems == []
    assert found == {"column": "id", "expected": 50, "rows": 50, "verbatim": True}


def test_ids_outside_the_range_or_missing_from_it_are_problems_named_with_examples(tmp_path):
    path = write_csv(tmp_path / "s.csv", [(0, "a"), (2, "b"), (7, "c")])
    found, problems = check_shard(ShardOutput("shard-0", 0, 4, path), id_column="id", key=int_key,
                                  expected_ids=range(8))  # fmt: skip
    assert found is None
    assert problems[0] == "shard-0 [0, 4): 1 row(s) with ids outside its range, e.g. '7'"
    assert problems[1] == "2 expected id(s) have no output row, e.g. 1, 3"
    found, problems = check_shard(ShardOutput("shard-0", 0, 4, path), id_column="nope", key=int_key,
                                  expected_ids=range(8))  # fmt: skip
    assert found is None and "no 'nope' column in shard-0" in problems[0]


def test_the_vouched_merge_is_byte_for_byte_the_checked_merge(tmp_path):
    for fmt, crlf in (("csv", False), ("csv", True), ("jsonl", False)):
        folder = tmp_path / f"{fmt}{crlf}"
        folder.mkdir()
        shards = random_shards(folder, crlf=crlf, fmt=fmt)
        expected = list(range(200))
        slow = merge_shards(shards, folder / f"slow.{fmt}", folder / "slow.json", id_column="id", key=int_key,
                            expected_ids=expected)  # fmt: skip
        assert slow["ok"] and slow["coverage"] == "here"
        for s in shards:
            finished(s, expected)
        fast = merge_shards(shards, folder / f"fast.{fmt}", folder / "fast.json", id_column="id", key=int_key,
                            expected_ids=expected)  # fmt: skip
        assert fast["ok"] and fast["coverage"] == "as each shard finished", (fmt, crlf)
        assert (folder / f"fast.{fmt}").read_bytes() == (folder / f"slow.{fmt}").read_bytes(), (fmt, crlf)
        assert [e["rows"] for e in fast["shards"]] == [e["rows"] for e in slow["shards"]] == [50] * 4


def test_a_vouched_merge_still_finds_ids_no_range_covers_and_differing_headers(tmp_path):
    shards = random_shards(tmp_path)
    for s in shards:
        finished(s, range(200))
    gap = merge_shards(shards[:1] + shards[2:], tmp_path / "m.csv", tmp_path / "m.json", id_column="id",
                       key=int_key, expected_ids=range(200))  # fmt: skip
    assert not gap["ok"] and gap["problems"] == ["50 expected id(s) have no output row, e.g. 50, 51, 52, 53, 54"]
    assert not (tmp_path / "m.csv").exists()
    other = tmp_path / "other.csv"
    write_csv(other, [(i, "z") for i in range(50, 100)], header=("id", "words"))
    shards[1] = ShardOutput("shard-1", 50, 100, other)
    finished(shards[1], range(200))
    bad = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id", key=int_key,
                       expected_ids=range(200))  # fmt: skip
    assert (
        not bad["ok"]
        and "shard-1: CSV header ['id', 'words'] differs from ['id', 'text'] of shard-0" in (bad["problems"][0])
    )
    assert not (tmp_path / "m.csv").exists()


def test_what_the_manifests_cannot_vouch_for_is_read_and_checked_here(tmp_path):
    shards = random_shards(tmp_path)
    for s in shards:
        finished(s, range(200))
    # The input grew past every range: the vouched merge finds the id no shard was asked for.
    grown = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id", key=int_key,
                         expected_ids=np.arange(201))  # fmt: skip
    assert grown["coverage"] == "as each shard finished" and not grown["ok"]
    assert grown["problems"] == ["1 expected id(s) have no output row, e.g. 200"]
    # The input lost an id: shard-3's manifest counted 50 expected ids, its range holds 49 now: read it again.
    shrunk = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id", key=int_key,
                          expected_ids=range(199))  # fmt: skip
    assert shrunk["coverage"] == "here" and shrunk["ok"]
    # A shard changed after its manifest: refused, as before.
    with open(shards[2].path, "a") as f:
        f.write("120,late\n")
    changed = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id", key=int_key,
                           expected_ids=range(200))  # fmt: skip
    assert not changed["ok"] and "shard-2: output changed since it was marked done" in changed["problems"][0]


def test_a_file_without_a_final_newline_or_with_a_bom_is_not_copied_verbatim(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"id,text\n0,a\n1,b")
    found, _ = check_shard(ShardOutput("shard-0", 0, 2, path), id_column="id", key=int_key, expected_ids=[0, 1])
    assert found["verbatim"] is False and found["rows"] == 2
    path.write_bytes(b"\xef\xbb\xbfid,text\n0,a\n1,b\n")
    found, _ = check_shard(ShardOutput("shard-0", 0, 2, path), id_column="id", key=int_key, expected_ids=[0, 1])
    assert found["verbatim"] is False
    merged = merge_shards([ShardOutput("shard-0", 0, 2, path)], tmp_path / "m.csv", tmp_path / "m.json",
                          id_column="id", key=int_key, expected_ids=[0, 1])  # fmt: skip
    assert merged["ok"] and merged["coverage"] == "here"
    assert (tmp_path / "m.csv").read_bytes() == b"id,text\n0,a\n1,b\n"


def test_an_old_unchanged_output_is_trusted_by_its_stat_and_a_touched_one_is_hashed(tmp_path):
    out = write_csv(tmp_path / "s0.csv", [(0, "a"), (1, "b")])
    old = time.time() - 60
    os.utime(out, (old, old))
    write_manifest(out, task_id="shard-0", low=0, high=2, scheduler_id="s", attempt=1)
    assert manifest_matches(out, low=0, high=2)
    os.utime(out)  # touched: now its content is compared, and it is the same
    assert manifest_matches(out, low=0, high=2)
    out.write_text(out.read_text().replace("a", "z"))
    assert not manifest_matches(out, low=0, high=2)
