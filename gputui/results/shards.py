"""What a merge is given, without numpy: the shard outputs, and the input's ids each must cover, read from
the input only when some shard's done-manifest cannot vouch for them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Key = Callable[[Any], Any]


@dataclass
class ShardOutput:
    task_id: str
    low: int
    high: int
    path: Path
    error_rows: int | None = None  # rows its worker wrote as errors, as it reported them; None: not reported


def int_key(raw: Any) -> int:
    """The key for integer ids. Passing it (or int) lets canonically written ids skip a call per row."""
    return int(str(raw).strip())


class InputIds:
    """How an output's raw id maps to range units (the key) and the ids every merge must cover, read on first
    use. `stamp`: the input's identity now (manifests.settled_identity); a done-manifest that recorded the same
    one counted its range's ids in this very input, so a merge of such shards need not read it."""

    def __init__(self, read: Callable[[], tuple[Key | None, Iterable[Any] | None]], stamp: dict | None = None):
        self._read = read
        self._got: tuple[Key | None, Iterable[Any] | None] | None = None
        self.stamp = stamp

    @classmethod
    def given(cls, key: Key | None, expected_ids: Iterable[Any] | None) -> InputIds:
        return cls(lambda: (key, expected_ids))

    def get(self) -> tuple[Key | None, Iterable[Any] | None]:
        if self._got is None:
            self._got = self._read()
        return self._got
