"""The attempts journal: checksummed records, read incrementally; damage is skipped, never believed."""

from __future__ import annotations

from gputui.executors.journal import JournalReader, exits_copy, line, parse


def test_a_record_altered_or_torn_is_ignored():
    found = {}
    good = line("exit", "shard-0", 1, 0, "12.5", 0).decode()
    assert parse(good, found) == ("shard-0", 1) and found[("shard-0", 1)].exit_code == 0
    altered = good.replace(" 1 0 ", " 1 3 ")
    found = {}
    assert parse(altered, found) is None and found == {}
    assert parse(good[:20], found) is None


def test_reader_folds_both_journals_and_rereads_one_that_shrank(tmp_path):
    journal = tmp_path / "attempts.journal"
    exits_copy(journal).parent.mkdir()
    journal.write_bytes(line("start", "shard-0", 1, 100, 7, 101, 8, "-") + line("exit", "shard-0", 1, 0, "5.0", 2))
    reader = JournalReader(journal)
    ends = reader.get("shard-0", 1)
    assert ends.worker.pid == 101 and ends.exit_code == 0 and ends.leftovers == 2 and not ends.cleared
    exits_copy(journal).write_bytes(line("clear", "shard-0", 1, "6.0", 2))
    assert reader.get("shard-0", 1).cleared
    journal.write_bytes(line("start", "shard-1", 1, 100, 7, 102, 9, "-"))  # truncated and rewritten
    assert reader.get("shard-1", 1).worker.pid == 102


def test_an_exit_only_in_the_copy_is_enough(tmp_path):
    journal = tmp_path / "attempts.journal"
    exits_copy(journal).parent.mkdir()
    exits_copy(journal).write_bytes(line("exit", "shard-2", 3, -9, "7.0", 0))
    ends = JournalReader(journal).get("shard-2", 3)
    assert ends.exit_code == -9 and ends.cleared and not ends.started
