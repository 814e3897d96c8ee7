"""Byte-level, vectorised reading of CSV blocks: where records and one column's fields lie, and that field's
integer value where it is written canonically. Only for CSV the scan reads exactly as the csv module would;
anything else raises Irregular, and that file is read with the csv module instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gputui.results.merge_io import Irregular

NL, CR, QUOTE, COMMA, MINUS, ZERO = 10, 13, 34, 44, 45, 48
MAX_DIGITS = 18  # any 18-digit number fits an int64
_NONE = np.iinfo(np.int64).max  # sentinel position past every record


@dataclass
class Block:
    cut: int  # buf[:cut] holds whole records, the rest starts the next one
    n_rows: int  # non-blank records in buf[:cut]
    starts: np.ndarray  # field bounds in buf, one per non-blank record (empty without a column)
    ends: np.ndarray
    short: np.ndarray  # records with too few fields to have the column
    quoted: np.ndarray  # fields that hold a quote: read them with the csv module


def scan(buf: bytes, col: int | None, final: bool) -> Block:
    """Records of `buf`, which starts at a record; `final`: no more bytes follow, the last record may lack
    its newline. Blank records are skipped like csv.reader's empty rows are by the merge."""
    a = np.frombuffer(buf, np.uint8)
    n = len(a)
    if buf.find(b"\r") >= 0 and buf.count(b"\r") != buf.count(b"\r\n"):
        raise Irregular("a carriage return outside a CRLF line ending")
    nl = np.flatnonzero(a == NL)
    q = None
    if buf.find(b'"') >= 0:
        q = np.flatnonzero(a == QUOTE)
        _check_quotes(a, q, final)
        nl = nl[np.searchsorted(q, nl) % 2 == 0]
    if final and len(q if q is not None else ()) % 2:
        raise Irregular("a quoted field runs to the end of the file")
    cut = int(nl[-1]) + 1 if len(nl) else 0
    starts = np.empty(len(nl), np.int64)
    if len(nl):
        starts[0] = 0
        starts[1:] = nl[:-1] + 1
    ends = nl.astype(np.int64)
    if final and cut < n:
        starts = np.append(starts, cut)
        ends = np.append(ends, n)
        cut = n
    if len(ends):
        ends -= (ends > starts) & (a[np.maximum(ends - 1, 0)] == CR)
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    empty = np.zeros(0, np.int64)
    if col is None:
        return Block(cut, len(starts), empty, empty, np.zeros(0, bool), np.zeros(0, bool))
    if col == 0:  # the usual case: look for the first comma near each record's start
        fs, short = starts, np.zeros(len(starts), bool)
        width = MAX_DIGITS + 2
        at = starts[:, None] + np.arange(width)
        stop = (a[np.minimum(at, n - 1)] == COMMA) | (at >= ends[:, None])
        fe = starts + stop.argmax(axis=1)
        hard = ~stop.any(axis=1)
        if q is not None:
            hard |= a[np.minimum(starts, n - 1)] == QUOTE
        if hard.any():
            fe[hard] = _field_ends(a, q, cut, starts[hard], ends[hard], 0)[1]
    else:
        fs, fe = _field_ends(a, q, cut, starts, ends, col)
        short = fs > ends
        fs = np.minimum(fs, ends)
    quoted = np.zeros(len(fs), bool) if q is None else (np.searchsorted(q, fe) - np.searchsorted(q, fs)) > 0
    return Block(cut, len(starts), fs, fe, short, quoted)


def _field_ends(a, q, cut: int, starts, ends, col: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of field `col` of each record, from the commas outside quotes; a start past the record's end
    means it has too few fields."""
    cm = np.flatnonzero(a[:cut] == COMMA)
    if q is not None:
        cm = cm[np.searchsorted(q, cm) % 2 == 0]
    cm = np.append(cm, _NONE)
    i = np.searchsorted(cm, starts)
    if col == 0:
        fs = starts
    else:
        before = cm[np.minimum(i + col - 1, len(cm) - 1)]
        fs = np.where(before >= ends, ends + 1, before + 1)
    after = cm[np.minimum(i + col, len(cm) - 1)]
    return fs, np.where(after < ends, after, ends)


def _check_quotes(a: np.ndarray, q: np.ndarray, final: bool) -> None:
    """Quotes must open a field (after a comma or a line end, or right after a quote: an escaped one) and
    close one (before a comma, a line end or another quote); then their parity says what is quoted."""
    n = len(a)
    opening = q[0::2]
    prev = a[np.maximum(opening - 1, 0)]
    ok = (opening == 0) | (prev == COMMA) | (prev == NL) | (prev == QUOTE)
    if not ok.all():
        raise Irregular("a quote inside an unquoted field")
    closing = q[1::2]
    at_end = closing + 1 >= n
    nxt = a[np.minimum(closing + 1, n - 1)]
    ok = at_end | (nxt == COMMA) | (nxt == NL) | (nxt == CR) | (nxt == QUOTE)
    if not ok.all():
        raise Irregular("text after a closing quote")


def parse_ints(buf: bytes, fs: np.ndarray, fe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of the fields buf[fs:fe] and which of them are canonical integers (-?[1-9][0-9]* or 0, at
    most MAX_DIGITS digits): exactly those whose str() gives back the field."""
    a = np.frombuffer(buf, np.uint8)
    last = len(a) - 1
    length = fe - fs
    if last < 0 or not len(fs):
        return np.zeros(len(fs), np.int64), np.zeros(len(fs), bool)
    neg = (length > 0) & (a[np.minimum(fs, last)] == MINUS)
    ds = fs + neg
    dl = length - neg
    ok = (dl >= 1) & (dl <= MAX_DIGITS)
    ok &= ~((dl > 1) & (a[np.minimum(ds, last)] == ZERO))
    v = np.zeros(len(fs), np.int64)
    width = int(dl[ok].max()) if ok.any() else 0
    for j in range(width):
        valid = ok & (j < dl)
        d = a[np.minimum(ds + j, last)].astype(np.int64) - ZERO
        ok &= ~valid | ((d >= 0) & (d <= 9))
        v = np.where(valid, v * 10 + d, v)
    ok &= ~(neg & (v == 0))  # "-0" isn't str(0)
    return np.where(neg, -v, v), ok
