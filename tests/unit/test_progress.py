from __future__ import annotations

from gputui.views.progress import ProgressTracker, parse_fraction


def test_fraction_from_worker_and_tqdm_lines():
    assert parse_fraction("loading\nprocessed 16/125 rows (96 rows/s)\n") == (16, 125)
    assert parse_fraction(" 45%|████▌     | 45/100 [00:01<00:02, 30.1it/s]") == (45, 100)
    # The last line with a fraction wins; dates, versions and impossible fractions do not count.
    assert parse_fraction("step 3/10\nsaved to run_2026/11/24\n") == (3, 10)
    assert parse_fraction("ratio 1.5/2.5 and 9/3") is None
    assert parse_fraction("no numbers here") is None


def test_rate_and_eta_span_the_attempt():
    tracker = ProgressTracker()
    key = ("shard-0", 1)
    first = tracker.update(key, "processed 10/110", now=100.0)
    assert first.rate is None and first.eta is None
    later = tracker.update(key, "processed 60/110", now=110.0)
    assert later.rate == 5.0 and later.eta == 10.0 and later.fraction == 60 / 110
    tracker.forget(set())
    again = tracker.update(key, "processed 70/110", now=120.0)
    assert again.rate is None  # forgotten: a new attempt starts a new measurement


def test_a_paused_task_has_no_rate_and_its_pause_is_not_counted_after_resume():
    tracker = ProgressTracker()
    key = ("shard-0", 1)
    tracker.update(key, "processed 0/100", now=0.0)
    assert tracker.update(key, "processed 10/100", now=10.0).rate == 1.0
    paused = tracker.update(key, "processed 10/100", now=20.0, paused=True)
    assert paused.rate is None and paused.eta is None and paused.done == 10
    tracker.update(key, "processed 10/100", now=500.0)  # resumed after a long pause
    resumed = tracker.update(key, "processed 20/100", now=510.0)
    assert resumed.rate == 1.0 and resumed.eta == 80.0  # not (20-0)/510


def test_the_rate_follows_the_last_minute():
    tracker = ProgressTracker()
    key = ("shard-0", 1)
    for t in range(0, 121, 10):  # 1/s for the first minute, then 3/s
        done = t if t <= 60 else 60 + 3 * (t - 60)
        p = tracker.update(key, f"processed {done}/1000", now=float(t))
    assert p.rate > 2.5
