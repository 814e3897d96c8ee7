"""Which shard each id came from: the coverage check behind the merge. Ids are compared in range units (the
key maps a raw id to them), so "7" and 7 are one id; integer keys live in numpy arrays."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gputui.results.shards import ShardOutput, int_key  # here too, where callers have long found them

EXAMPLES = 5  # ids quoted per problem; enough to look one up, short enough to read


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _is_int_key(key: Callable[[Any], Any]) -> bool:
    """int and int_key map a canonical decimal id ("-12", not "012" or " 12") to the integer it spells: those
    ids need no call per row."""
    return key is int or key is int_key


def _as_int(k: Any) -> Any:
    """Keys equal to an integer become that int, as a dict would treat them as one."""
    if type(k) is int:
        return k
    if isinstance(k, numbers.Integral):
        return int(k)
    if isinstance(k, float) and k.is_integer():
        return int(k)
    return k


class IdCheck:
    """Tracks which shard each id came from; ids are compared in range units, so "7" and 7 are one id.

    Integer keys (all of them in practice) live in numpy arrays: per shard until end(), then as one sorted
    array of every key seen with the shard that had it first. Keys of other types use a dict. Nothing is
    global until end(), so a shard begun and abandoned leaves no trace.
    """

    def __init__(self, column: str, key: Callable[[Any], Any]) -> None:
        self.column = column
        self.key = key
        self.vector = _is_int_key(key)  # see_ints() may be fed canonical decimal ids
        self.names: list[str] = []
        self.lacking: list[str] = []  # shards whose output has no id column
        self.checked_any = False
        self.dups: dict[Any, tuple[Any, set[int]]] = {}  # id -> (a raw id, shards it appeared in)
        self._seen = np.zeros(0, np.int64)  # sorted int keys of the finished shards
        self._owner = np.zeros(0, np.int32)  # for each, the index of the first shard that had it
        self._xowner: dict[Any, int] = {}  # the same for keys that aren't int64s
        self._problems: list[str] = []
        self._open = False

    def begin(self, shard: ShardOutput) -> None:
        self.cur = len(self.names)
        self.names.append(shard.task_id)
        self.shard = shard
        self._open, self._lacked = True, False
        self._keys: list[np.ndarray] = []  # canonical ids, parsed without the key, and their rows
        self._rows: list[np.ndarray] = []
        self._pyk: list[int] = []  # int keys from calls to the key, their rows and raw ids
        self._pyr: list[int] = []
        self._pyraw: list[Any] = []
        self._extra: list[tuple[int, Any, Any]] = []  # (row, key, raw) for other keys
        self.outside: list[tuple[int, Any]] = []  # (row, raw), the first few found through the key
        self.n_outside = 0
        self.unmappable: list[str] = []
        self.n_unmappable = 0
        self.n_no_id = 0
        self._row = 0

    def begin_columns(self, shard: ShardOutput, columns: list[str]) -> int | None:
        """begin() for an output whose columns come before its rows (a CSV header, a Parquet schema): the id
        column's position, or None when there is none (noted, as no_column() does)."""
        self.begin(shard)
        if self.column in columns:
            return columns.index(self.column)
        self.no_column()
        return None

    def abandon(self) -> None:
        """Forget the shard begun last, as if begin() had not been called: it is being read again."""
        if self._open:
            self.names.pop()
            if self._lacked:
                self.lacking.pop()
            self._open = False

    def no_column(self) -> None:
        self.lacking.append(self.shard.task_id)
        self._lacked = True

    def see(self, raw: Any) -> None:
        self.see_values([raw])

    def see_ints(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Canonical decimal ids, already parsed: only when self.vector."""
        if len(keys):
            self.checked_any = True
            self._keys.append(keys.astype(np.int64, copy=False))
            self._rows.append(rows.astype(np.int64, copy=False))

    def see_values(self, raws: list[Any], rows: Iterable[int] | None = None) -> None:
        """Raw ids (None: the row has none) of the given rows, by default the rows after the last ones."""
        if not raws:
            return
        self.checked_any = True
        if rows is None:
            rows = range(self._row, self._row + len(raws))
            self._row += len(raws)
        key, low, high = self.key, self.shard.low, self.shard.high
        pyk, pyr, pyraw = self._pyk, self._pyr, self._pyraw
        for raw, row in zip(raws, rows, strict=True):
            if raw is None:
                self.n_no_id += 1
                continue
            try:
                k = key(raw)
                inside = low <= k < high
            except Exception as e:  # a user-supplied key; any failure means this id can't be placed
                self.n_unmappable += 1
                if len(self.unmappable) < EXAMPLES:
                    self.unmappable.append(f"{raw!r} ({type(e).__name__}: {e})")
                continue
            if not inside:
                self.n_outside += 1
                if len(self.outside) < EXAMPLES:
                    self.outside.append((row, raw))
            if type(k) is not int:
                k = _as_int(k)
            if type(k) is int and _I64_MIN <= k <= _I64_MAX:
                pyk.append(k)
                pyr.append(row)
                pyraw.append(raw)
            else:
                self._extra.append((row, k, raw))

    def end(self) -> None:
        s = self.shard
        self._open = False
        kv = np.concatenate(self._keys) if self._keys else np.zeros(0, np.int64)
        rv = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
        low, high = int(s.low), int(s.high)
        out = np.zeros(len(kv), bool)
        if low > _I64_MAX or high <= _I64_MIN:
            out[:] = True
        else:
            if low > _I64_MIN:
                out |= kv < low
            if high <= _I64_MAX:
                out |= kv >= high
        hits = np.flatnonzero(out)
        self.n_outside += len(hits)
        outside = self.outside + [(int(rv[i]), str(kv[i])) for i in hits[:EXAMPLES]]
        outside.sort(key=lambda t: t[0])

        where = f"{s.task_id} [{s.low}, {s.high})"
        if self.n_outside:
            shown = [raw for _, raw in outside[:EXAMPLES]]
            self._problems.append(
                f"{where}: {self.n_outside} row(s) with ids outside its range, e.g. {examples(shown)}"
            )
        if self.n_unmappable:
            self._problems.append(
                f"{where}: {self.n_unmappable} row(s) with ids that can't be placed in a range, "
                f"e.g. {', '.join(self.unmappable)}"
            )
        if self.n_no_id:
            self._problems.append(f"{where}: {self.n_no_id} row(s) with no {self.column!r} value")
        self._record(kv, rv)
        self._keys, self._rows, self._pyk, self._pyr, self._pyraw = [], [], [], [], []
        for _, k, raw in sorted(self._extra, key=lambda t: t[0]):
            first = self._xowner.setdefault(k, self.cur)
            if first != self.cur:
                self.dups.setdefault(k, (raw, {first}))[1].add(self.cur)
        self._extra = []

    def _record(self, kv: np.ndarray, rv: np.ndarray) -> None:
        """Add this shard's int keys to those seen, noting the ones an earlier shard had."""
        n_vec = len(kv)
        if self._pyk:
            kv = np.concatenate([kv, np.array(self._pyk, np.int64)])
            rv = np.concatenate([rv, np.array(self._pyr, np.int64)])
            order = np.argsort(rv, kind="stable")  # row order, so np.unique's first index is the first row
            kv, rv, src = kv[order], rv[order], order
        else:
            src = None
        if not len(kv):
            return
        uniq, first = np.unique(kv, return_index=True)
        pos = np.searchsorted(self._seen, uniq)
        found = pos < len(self._seen)
        found[found] = self._seen[pos[found]] == uniq[found]
        hit = np.flatnonzero(found)
        for i in hit[np.argsort(rv[first[hit]], kind="stable")]:
            k = int(uniq[i])
            j = int(first[i]) if src is None else int(src[first[i]])
            raw = str(k) if j < n_vec else self._pyraw[j - n_vec]
            owner = int(self._owner[pos[i]])
            self.dups.setdefault(k, (raw, {owner}))[1].add(self.cur)
        new = uniq[~found]
        if len(new):
            seen = np.concatenate([self._seen, new])
            owner = np.concatenate([self._owner, np.full(len(new), self.cur, np.int32)])
            order = np.argsort(seen, kind="stable")  # two sorted runs: a linear merge
            self._seen, self._owner = seen[order], owner[order]

    def problems(self, expected_ids: Iterable[Any] | None) -> list[str]:
        out = list(self._problems)
        if self.dups:
            shown = [
                f"{raw!r} ({', '.join(self.names[i] for i in sorted(where))})"
                for raw, where in list(self.dups.values())[:EXAMPLES]
            ]
            out.append(f"{len(self.dups)} id(s) appear in more than one shard, e.g. {'; '.join(shown)}")
        if expected_ids is None:
            return out
        if self.lacking:
            out.append(
                f"can't check that every id has output: no {self.column!r} column in {', '.join(self.lacking)}"
            )
            return out
        seq = expected_ids if isinstance(expected_ids, (list, tuple, np.ndarray)) else list(expected_ids)
        ints = self.expected_ints(seq)
        bad: list[Any] = []
        xmissing: dict[Any, int] = {}  # missing non-int64 key -> its first position
        if ints is None:
            ks: list[int] = []
            ps: list[int] = []
            for p, raw in enumerate(seq):
                try:
                    k = _as_int(self.key(raw))
                except Exception:  # reported below with the others
                    bad.append(raw)
                    continue
                if type(k) is int and _I64_MIN <= k <= _I64_MAX:
                    ks.append(k)
                    ps.append(p)
                elif k not in self._xowner and k not in xmissing:
                    xmissing[k] = p
            keys, positions = np.array(ks, np.int64), np.array(ps, np.int64)
        else:
            keys, positions = ints, np.arange(len(ints))
        pos = np.searchsorted(self._seen, keys)
        present = pos < len(self._seen)
        present[present] = self._seen[pos[present]] == keys[present]
        absent = ~present
        mk, first = np.unique(keys[absent], return_index=True)
        firsts = sorted(np.sort(positions[absent][first])[:EXAMPLES].tolist() + list(xmissing.values()))
        n_missing = len(mk) + len(xmissing)
        if n_missing:
            shown_missing = [seq[p] for p in firsts[:EXAMPLES]]
            out.append(f"{n_missing} expected id(s) have no output row, e.g. {examples(shown_missing)}")
        if bad:
            out.append(f"{len(bad)} expected id(s) can't be placed in a range, e.g. {examples(bad)}")
        return out

    def expected_ints(self, seq: Any) -> np.ndarray | None:
        """The expected ids as int64 keys without a call per id, where the key is int() on integers."""
        if not self.vector or not len(seq):
            return None
        if isinstance(seq, np.ndarray):
            if seq.dtype.kind == "i" or (seq.dtype.kind == "u" and (not seq.size or seq.max() <= _I64_MAX)):
                return seq.astype(np.int64).ravel() if seq.ndim == 1 else None
            return None
        if set(map(type, seq)) != {int}:
            return None
        try:
            return np.fromiter(seq, np.int64, len(seq))
        except OverflowError:
            return None


def examples(values: list[Any]) -> str:
    return ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:EXAMPLES])


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2.4's hashing np.unique takes 1.9 s on 2 M consecutive ints, this 0.02 s."""
    k = np.sort(keys)
    return k[np.concatenate(([True], k[1:] != k[:-1]))] if len(k) else k


def expected_in(expected_ids: Iterable[Any], ids: IdCheck, low: int, high: int) -> list[Any] | np.ndarray:
    """The expected ids whose keys lie in [low, high): one shard's share of them."""
    seq = expected_ids if isinstance(expected_ids, (list, tuple, np.ndarray)) else list(expected_ids)
    keys = ids.expected_ints(seq)
    if keys is not None:
        return keys[(keys >= low) & (keys < high)]
    inside = []
    for raw in seq:
        try:
            k = ids.key(raw)
            if low <= k < high:
                inside.append(raw)
        except Exception:  # can't be placed: not this shard's to cover (the merge reports it)
            continue
    return inside
