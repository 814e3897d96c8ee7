"""The control verbs are small typed values; a key or a command names one by its word."""

from __future__ import annotations

import dataclasses

import pytest

from gputui import api


def test_a_verb_names_its_tasks_as_a_tuple_or_none_for_every_task_it_applies_to():
    assert api.Pause(["shard-0", "shard-1"]).ids == ("shard-0", "shard-1")
    assert api.Kill("shard-3").ids == ("shard-3",)  # one id, not its characters
    assert api.Resume().ids is None and api.Merge().ids is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        api.Kill(["shard-0"]).ids = None


def test_only_retry_carries_force():
    assert api.Retry(["shard-0"], force=True).force and not api.Retry(None).force
    assert not api.Kill(None).force


@pytest.mark.parametrize("word", ["pause", "resume", "kill", "retry", "start", "stop", "merge"])
def test_every_word_the_cli_and_the_table_send_names_its_verb(word):
    verb = api.verb_named(word, ["shard-0"] if word not in ("stop", "merge") else None)
    assert verb.name == word and type(verb) is api.VERBS[word]


def test_retry_by_word_keeps_force():
    assert api.verb_named("retry", ["shard-0"], force=True) == api.Retry(("shard-0",), force=True)
    assert api.verb_named("kill", ["shard-0"], force=True) == api.Kill(("shard-0",))  # force is retry's alone
