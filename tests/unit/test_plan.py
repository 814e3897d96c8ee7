from __future__ import annotations

import hashlib
import json

import pytest

from gputui.jobs.kinds.shards import Shard, describe_plan, plan_fingerprint, plan_shards


def _covered(shards, ids):
    return [i for i in ids if any(s.low <= i < s.high for s in shards)]


@pytest.mark.parametrize("n_ids,workers", [(1000, 4), (10, 3), (7, 7), (5, 1), (3, 8), (1, 4), (101, 10)])
def test_shards_cover_every_id_once_without_overlap(n_ids, workers):
    ids = list(range(n_ids))
    shards = plan_shards(ids, integer_ids=True, num_workers=workers)
    assert len(shards) == min(workers, n_ids)
    for i in ids:
        assert sum(s.low <= i < s.high for s in shards) == 1
    assert all(a.high == b.low for a, b in zip(shards, shards[1:], strict=False))  # contiguous
    sizes = [s.count for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n_ids


def test_seed_example_1000_ids_four_workers():
    shards = plan_shards(list(range(1000)), integer_ids=True, num_workers=4)
    assert [(s.low, s.high) for s in shards] == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert [s.task_id for s in shards] == ["shard-0", "shard-1", "shard-2", "shard-3"]


def test_sparse_integer_ids_give_value_ranges_that_include_each_id_once():
    ids = [3, 7, 8, 20, 21, 50, 99]
    shards = plan_shards(ids, integer_ids=True, num_workers=3)
    assert shards[0].low == 3 and shards[-1].high == 100
    assert _covered(shards, ids) == ids
    assert [s.count for s in shards] == [3, 2, 2]


def test_shard_size_instead_of_worker_count():
    shards = plan_shards(list(range(10)), integer_ids=True, shard_size=4)
    assert [(s.low, s.high, s.count) for s in shards] == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]


def test_string_ids_give_positional_ranges():
    ids = ["a", "b", "c", "d", "e"]
    shards = plan_shards(ids, integer_ids=False, num_workers=2)
    assert [(s.low, s.high) for s in shards] == [(0, 3), (3, 5)]


def test_one_id_and_no_ids():
    assert plan_shards([42], integer_ids=True, num_workers=4) == [Shard(0, 42, 43, 1)]
    assert plan_shards([], integer_ids=True, num_workers=4) == []


def test_exactly_one_of_num_workers_or_shard_size():
    with pytest.raises(ValueError):
        plan_shards([1, 2], integer_ids=True)
    with pytest.raises(ValueError):
        plan_shards([1, 2], integer_ids=True, num_workers=1, shard_size=1)


def test_fingerprint_changes_with_the_plan_only():
    a = plan_shards(list(range(100)), integer_ids=True, num_workers=4)
    b = plan_shards(list(range(100)), integer_ids=True, num_workers=4)
    c = plan_shards(list(range(100)), integer_ids=True, num_workers=5)
    assert plan_fingerprint(a, integer_ids=True) == plan_fingerprint(b, integer_ids=True)
    assert plan_fingerprint(a, integer_ids=True) != plan_fingerprint(c, integer_ids=True)
    assert describe_plan(c).startswith("5 shards: [0, 20), [20, 40)")


def test_fingerprints_recorded_by_earlier_gputui_still_match():
    """A run directory an earlier gputui started is still recognised as the same plan (values it recorded)."""
    cases = [
        (list(range(100)), True, {"num_workers": 4}, "c4e77b7ef93be4b9"),
        ([3, 7, 12, 40, 41], True, {"shard_size": 2}, "e5857c29a4f5035a"),
        (["a", "b", "c"], False, {"shard_size": 1}, "5af5b603c8ba640b"),
        (list(range(25_000)), True, {"shard_size": 1}, None),  # pieces of 10,000 hashed as one text
    ]
    for ids, integer_ids, split, recorded in cases:
        shards = plan_shards(ids, integer_ids=integer_ids, **split)
        whole = json.dumps([integer_ids, [(s.low, s.high) for s in shards]])
        assert plan_fingerprint(shards, integer_ids=integer_ids) == hashlib.sha256(whole.encode()).hexdigest()[:16]
        assert recorded is None or plan_fingerprint(shards, integer_ids=integer_ids) == recorded
