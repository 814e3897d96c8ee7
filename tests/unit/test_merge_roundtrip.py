"""The merge never rewrites a row wrongly: over random tables (bare CRs, CRLFs, quotes, NULs, BOMs, U+2028,
escape bytes, long fields, each shard with its own line ending), the merged file reads back as the shards'
rows, header once, whichever path wrote it (the byte copy, the csv module's rewrite, the copy of shards
vouched for by their manifests), and the coverage check reads every id as the csv module does."""

from __future__ import annotations

import codecs
import contextlib
import csv
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gputui.results.merge_io as merge_io
from gputui.jobs import tabular
from gputui.results.idcheck import IdCheck, ShardOutput, expected_in, int_key
from gputui.results.idscan import MAX_DIGITS, parse_ints
from gputui.results.merge import check_shard, merge_shards
from tests.unit.test_merge_vouched import finished


def examples(n: int):
    """No example database: it would leave a .hypothesis folder in the working tree."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# What breaks CSV and JSON readers and writers, among ordinary text.
TRICKY = [*'\r\n",\x00\ufeff\u2028\x85\x1b é😀', "\r\n", '""', "\x1b[2J"]
cells = st.lists(st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), max_size=8).map("".join)
# CSV syntax in any order: bodies no writer would produce, which the csv module still reads somehow.
SYNTAX = ["0", "1", "7", "-", "a", " ", ",", '"', "\r", "\n", "\r\n", "\ufeff", "\x00", "\u2028"]
garbage = st.lists(st.sampled_from(SYNTAX), max_size=60).map("".join)
blocks = st.sampled_from([3, 16, 61, merge_io.BLOCK])  # records, quotes and CRLFs cut across block ends


@contextlib.contextmanager
def block_size(n: int):
    """The merge's read size, small so that one table spans many blocks."""
    old, merge_io.BLOCK = merge_io.BLOCK, n
    try:
        yield
    finally:
        merge_io.BLOCK = old


@st.composite
def dialects(draw):
    """How one shard was written: its line ending, quoting, a BOM, its last line ending kept or not."""
    return {
        "eol": draw(st.sampled_from(["\n", "\r\n"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
        "bom": draw(st.booleans()),
        "last_eol": draw(st.booleans()),
    }


def write_csv(path: Path, header, rows, d: dict, *, careful: bool = True, body: str = "") -> Path:
    """A shard as a worker writes it. careful: a row with a bare CR is quoted even where the line ending is
    "\\n" (Python's writer quotes only its own line ending's characters); careless shards read back as
    whatever the csv module makes of them. `body`: raw text after the header instead of rows."""
    out = _csv_text([header], d["eol"], csv.QUOTE_MINIMAL, careful)
    out += body if body else _csv_text(rows, d["eol"], d["quoting"], careful)
    if not d["last_eol"] and out.endswith(d["eol"]):
        out = out[: -len(d["eol"])]
    path.write_bytes((codecs.BOM_UTF8 if d["bom"] else b"") + out.encode("utf-8"))
    return path


def _csv_text(rows, eol: str, quoting: int, careful: bool) -> str:
    buf = _Buf()
    plain = csv.writer(buf, lineterminator=eol, quoting=quoting)
    every = csv.writer(buf, lineterminator=eol, quoting=csv.QUOTE_ALL)
    for row in rows:
        (every if careful and eol == "\n" and any("\r" in v for v in row) else plain).writerow(row)
    return buf.text


class _Buf:
    text = ""

    def write(self, s: str) -> None:
        self.text += s


def read_csv(path: Path) -> list[list[str]]:
    """As gputui and most programs read CSV: the csv module, newline="", an Excel BOM dropped."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


def concatenation(tables: list[list[list[str]]]) -> list[list[str]]:
    """The shards' rows, the header once: what the merged file must read back as."""
    out: list[list[str]] = []
    for rows in tables:
        out += rows if not out else rows[1:]
    return out


def merged_rows(path: Path) -> list[list[str]]:
    data = path.read_bytes()
    assert not data.startswith(codecs.BOM_UTF8)  # so it reads the same with or without utf-8-sig
    return read_csv(path)


def counted(rows: list[list[str]]) -> int:
    return sum(1 for r in rows[1:] if r)


# -- CSV ------------------------------------------------------------------------------------------------------


@st.composite
def csv_shard_files(draw):
    """Two to four shards sharing a header, each any rows of tricky text (or raw CSV syntax) in any dialect,
    some written carelessly, some empty."""
    header = draw(st.lists(cells, min_size=1, max_size=3))
    shards = []
    for _ in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from(["rows", "rows", "careless", "garbage", "empty"]))
        rows = draw(st.lists(st.lists(cells, max_size=4), max_size=5)) if kind in ("rows", "careless") else []
        body = draw(garbage) if kind == "garbage" else ""
        shards.append((kind, rows, body, draw(dialects())))
    return header, shards


@examples(300)
@given(spec=csv_shard_files(), block=blocks)
def test_a_merged_csv_reads_back_as_its_shards_rows(spec, block):
    header, specs = spec
    with tempfile.TemporaryDirectory() as d, block_size(block):
        folder = Path(d)
        shards, tables = [], []
        for i, (kind, rows, body, dialect) in enumerate(specs):
            path = folder / f"s{i}.csv"
            if kind == "empty":
                path.write_bytes(b"")
            else:
                write_csv(path, header, rows, dialect, careful=kind != "careless", body=body)
            shards.append(ShardOutput(f"shard-{i}", i, i + 1, path))
            tables.append(read_csv(path))
        summary = merge_shards(shards, folder / "m.csv", folder / "m.json")
        headers = {tuple(t[0]) for t in tables if t}
        if len(headers) > 1:  # a careless shard whose header reads otherwise: refused, never mangled
            assert not summary["ok"] and any("CSV header" in p for p in summary["problems"])
            assert not (folder / "m.csv").exists()
            return
        assert summary["ok"], summary["problems"]
        assert merged_rows(folder / "m.csv") == concatenation(tables)
        assert [e["rows"] for e in summary["shards"]] == [counted(t) for t in tables]


@st.composite
def checked_csv_shards(draw):
    """Shards of consecutive id ranges, every id with a row or two, ids written canonically, padded or
    quoted, the id column anywhere, the other columns tricky text; each shard in its own dialect."""
    n_cols = draw(st.integers(1, 3))
    col = draw(st.integers(0, n_cols))
    header = [f"c{j}" for j in range(n_cols)]
    header.insert(col, "id")
    shards, low = [], 0
    for _ in range(draw(st.integers(1, 4))):
        high = low + draw(st.integers(0, 4))
        rows = []
        for i in range(low, high):
            for _ in range(draw(st.integers(1, 2))):
                row = draw(st.lists(cells, min_size=n_cols, max_size=n_cols))
                row.insert(col, draw(st.sampled_from([str(i), str(i), f" {i}", f"0{i}", f"+{i} "])))
                rows.append(row)
        shards.append((low, high, rows, draw(dialects()), draw(st.integers(0, 2))))
        low = high
    return header, shards, low


@examples(150)
@given(spec=checked_csv_shards(), block=blocks)
def test_a_coverage_checked_csv_merge_reads_back_the_same_with_or_without_manifests(spec, block):
    header, specs, n_ids = spec
    expected = list(range(n_ids))
    with tempfile.TemporaryDirectory() as d, block_size(block):
        folder = Path(d)
        shards, tables = [], []
        for i, (low, high, rows, dialect, blanks) in enumerate(specs):
            path = write_csv(folder / f"s{i}.csv", header, rows + [[]] * blanks, dialect)
            shards.append(ShardOutput(f"shard-{i}", low, high, path))
            tables.append(read_csv(path))
        here = merge_shards(shards, folder / "here.csv", folder / "here.json", id_column="id", key=int_key,
                            expected_ids=expected)  # fmt: skip
        assert here["ok"] and here["coverage"] == "here", here["problems"]
        assert merged_rows(folder / "here.csv") == concatenation(tables)
        assert here["total_rows"] == sum(len(rows) for _, _, rows, _, _ in specs)
        # As the scheduler does when each shard finishes: check it, vouch for it in its done-manifest.
        verbatim = [finished(s, expected)["verbatim"] for s in shards]
        vouched = merge_shards(shards, folder / "v.csv", folder / "v.json", id_column="id", key=int_key,
                               expected_ids=expected)  # fmt: skip
        assert vouched["ok"], vouched["problems"]
        if expected:  # (no expected id at all: nothing to vouch for, it is read here)
            assert vouched["coverage"] == ("as each shard finished" if all(verbatim) else "here")
        assert (folder / "v.csv").read_bytes() == (folder / "here.csv").read_bytes()


def test_a_continuation_with_a_bare_carriage_return_merges_unchanged(tmp_path):
    """The run that found it: a model's continuation held a bare CR; csv.DictWriter quoted it, the byte scan
    gave the file to the csv module, whose rewrite left the CR unquoted: one row read back as two."""
    texts = ["plain", "one\rtwo", "ends with\r", "\r", "mixed\r\n\rbreaks\n"]
    shards = []
    for s in range(2):
        path = tmp_path / f"out_{s * 5}_{s * 5 + 5}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["data_id", "continuation"])
            w.writeheader()
            w.writerows({"data_id": s * 5 + i, "continuation": t} for i, t in enumerate(texts))
        shards.append(ShardOutput(f"shard-{s}", s * 5, s * 5 + 5, path))
    want = concatenation([read_csv(s.path) for s in shards])
    assert want[2] == ["1", "one\rtwo"] and len(want) == 11
    summary = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="data_id", key=int_key,
                           expected_ids=range(10))  # fmt: skip
    assert summary["ok"], summary["problems"]
    assert merged_rows(tmp_path / "m.csv") == want
    for s in shards:
        finished(s, range(10), column="data_id")
    again = merge_shards(shards, tmp_path / "v.csv", tmp_path / "v.json", id_column="data_id", key=int_key,
                         expected_ids=range(10))  # fmt: skip
    assert again["ok"] and merged_rows(tmp_path / "v.csv") == want


def test_a_header_line_with_a_stray_carriage_return_is_not_copied_as_a_plain_header(tmp_path):
    """A header line "id,text\r\r\n" is the header, then a blank record: the byte scan once took it for a
    plain header, dropped the blank record from a later shard and vouched for the file as copyable as is."""
    a = tmp_path / "a.csv"
    a.write_bytes(b"id,text\n0,a\n")
    b = tmp_path / "b.csv"
    b.write_bytes(b"id,text\r\r\n1,b\r\n")
    shards = [ShardOutput("shard-0", 0, 1, a), ShardOutput("shard-1", 1, 2, b)]
    found, _ = check_shard(shards[1], id_column="id", key=int_key, expected_ids=[0, 1])
    assert found == {"column": "id", "expected": 1, "rows": 1, "verbatim": False}
    summary = merge_shards(shards, tmp_path / "m.csv", tmp_path / "m.json", id_column="id", key=int_key,
                           expected_ids=[0, 1])  # fmt: skip
    assert summary["ok"], summary["problems"]
    assert merged_rows(tmp_path / "m.csv") == [["id", "text"], ["0", "a"], [], ["1", "b"]]


@examples(40)
@given(
    pattern=st.lists(st.sampled_from(TRICKY + ["a", "b"]), min_size=1, max_size=6).map("".join),
    size=st.integers(100_000, 200_000),
    block=st.sampled_from([4096, merge_io.BLOCK]),
    dialect=dialects(),
)
def test_fields_of_200_kb_merge_unchanged(pattern, size, block, dialect):
    """Model outputs run long: past the csv module's field limit and across many blocks."""
    big = (pattern * (size // len(pattern) + 1))[:size]
    with tempfile.TemporaryDirectory() as d, block_size(block):
        folder = Path(d)
        a = write_csv(folder / "a.csv", ["id", "text"], [["0", big], ["1", "short"]], dialect)
        b = write_csv(folder / "b.csv", ["id", "text"], [["2", big[::-1]]], {**dialect, "eol": "\r\n"})
        shards = [ShardOutput("shard-0", 0, 2, a), ShardOutput("shard-1", 2, 3, b)]
        summary = merge_shards(shards, folder / "m.csv", folder / "m.json", id_column="id", key=int_key,
                               expected_ids=range(3))  # fmt: skip
        assert summary["ok"], summary["problems"]
        assert merged_rows(folder / "m.csv") == concatenation([read_csv(a), read_csv(b)])
        j = folder / "a.jsonl"
        j.write_text(json.dumps({"id": 0, "text": big}, ensure_ascii=False) + "\r\n", encoding="utf-8")
        summary = merge_shards([ShardOutput("shard-0", 0, 1, j)], folder / "m.jsonl", folder / "j.json",
                               id_column="id", key=int_key, expected_ids=[0])  # fmt: skip
        assert summary["ok"], summary["problems"]
        assert list(tabular.iter_rows(folder / "m.jsonl")) == [{"id": 0, "text": big}]


# -- the coverage check reads ids as the csv module does ------------------------------------------------------


def csv_module_check(path: Path, column: str, key, low: int, high: int, expected) -> list[str]:
    """The coverage check fed the ids the csv module reads: what the scan must agree with."""
    rows = read_csv(path)
    ids = IdCheck(column, key)
    ids.begin(ShardOutput("shard-0", low, high, path))
    if rows and column in rows[0]:
        c = rows[0].index(column)
        ids.see_values([r[c] if c < len(r) else None for r in rows[1:] if r])
    else:
        ids.no_column()
    ids.end()
    return ids.problems(None if expected is None else expected_in(expected, ids, low, high))


@st.composite
def id_tables(draw):
    """A header with the id column anywhere, then rows whose ids are canonical, padded, negative, huge,
    quoted or not, or any tricky text, or a body of raw CSV syntax."""
    n_cols = draw(st.integers(0, 2))
    col = draw(st.integers(0, n_cols))
    header = [f"c{j}" for j in range(n_cols)]
    header.insert(col, "id")
    number = st.integers(-30, 30).map(str) | st.integers(-(10**20), 10**20).map(str)
    ident = st.one_of(number, number.map(lambda s: f" {s}"), number.map(lambda s: "0" + s), cells, garbage)
    rows = draw(st.lists(st.lists(cells, max_size=n_cols + 1), max_size=8))
    for row in rows:
        if len(row) > col and draw(st.booleans()):
            row[col] = draw(ident)
    body = draw(garbage) if draw(st.integers(0, 3)) == 0 else ""
    return header, rows, body, draw(dialects()), draw(st.booleans())


@examples(900)
@given(table=id_tables(), block=blocks)
def test_the_coverage_check_reads_every_id_as_the_csv_module_does(table, block):
    header, rows, body, dialect, careful = table
    with tempfile.TemporaryDirectory() as d, block_size(block):
        path = write_csv(Path(d) / "s.csv", header, rows, dialect, careful=careful, body=body)
        shard = ShardOutput("shard-0", -20, 20, path)
        # Every id the check reads, through a key that sees each one (as string ids are checked).
        seen: list[str] = []
        found, problems = check_shard(shard, id_column="id", key=lambda raw: seen.append(raw) or 0,
                                      expected_ids=None)  # fmt: skip
        table_rows = read_csv(path)
        c = table_rows[0].index("id") if table_rows and "id" in table_rows[0] else None
        want = [r[c] for r in table_rows[1:] if r and c is not None and c < len(r)]
        # A scan that gives up on a block hands the file to the csv module: what it read before must be right.
        given_up = seen[: len(seen) - len(want)]
        assert seen[len(given_up) :] == want and given_up == want[: len(given_up)]
        assert problems == csv_module_check(path, "id", lambda raw: 0, -20, 20, None)
        if found is not None:
            assert found["rows"] == counted(table_rows)
        # Integer ids, parsed without a call per id where they are written canonically.
        expected = list(range(-25, 25))
        _, problems = check_shard(shard, id_column="id", key=int_key, expected_ids=expected)
        assert problems == csv_module_check(path, "id", int_key, -20, 20, expected)


@examples(400)
@given(fields=st.lists(st.text(alphabet="0123456789-+ a", max_size=MAX_DIGITS + 3), max_size=20))
def test_integer_ids_are_parsed_exactly_when_str_gives_them_back(fields):
    """Only a canonical id ("-12", not "012", "+12", " 12" or "-0") is parsed without calling the key."""
    buf, starts, ends = b"", [], []
    for f in fields:
        starts.append(len(buf))
        buf += f.encode() + b","
        ends.append(len(buf) - 1)
    values, ok = parse_ints(buf, np.array(starts, np.int64), np.array(ends, np.int64))
    for f, v, good in zip(fields, values.tolist(), ok.tolist(), strict=True):
        digits = f[1:] if f.startswith("-") else f
        canonical = digits.isdigit() and str(int(f)) == f
        assert good == (canonical and len(digits) <= MAX_DIGITS), f
        if good:
            assert v == int(f)


# -- JSONL and Parquet ----------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | cells
json_values = json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(cells, json_scalars, max_size=2)


@st.composite
def jsonl_shards(draw):
    """Shards of consecutive id ranges, records of any JSON values, each file with its own line ending,
    ASCII or raw UTF-8, a BOM or not, blank lines, its last newline or not."""
    shards, low = [], 0
    for _ in range(draw(st.integers(1, 4))):
        high = low + draw(st.integers(0, 4))
        records = [
            {"id": i} | draw(st.dictionaries(cells.filter(lambda k: k != "id"), json_values, max_size=3))
            for i in range(low, high)
        ]
        lines = [json.dumps(r, ensure_ascii=draw(st.booleans())) for r in records]
        for _ in range(draw(st.integers(0, 2))):
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", " ", "\t"])))
        eol = draw(st.sampled_from(["\n", "\r\n"]))
        text = eol.join(lines) + (eol if draw(st.booleans()) else "")
        data = (codecs.BOM_UTF8 if draw(st.booleans()) else b"") + text.encode("utf-8")
        shards.append((low, high, records, data))
        low = high
    return shards, low


@examples(200)
@given(spec=jsonl_shards(), block=blocks)
def test_a_merged_jsonl_reads_back_as_its_shards_records(spec, block):
    specs, n_ids = spec
    expected = list(range(n_ids))
    with tempfile.TemporaryDirectory() as d, block_size(block):
        folder = Path(d)
        shards = []
        for i, (low, high, _records, data) in enumerate(specs):
            (folder / f"s{i}.jsonl").write_bytes(data)
            shards.append(ShardOutput(f"shard-{i}", low, high, folder / f"s{i}.jsonl"))
        want = [r for _, _, records, _ in specs for r in records]
        here = merge_shards(shards, folder / "here.jsonl", folder / "here.json", id_column="id", key=int_key,
                            expected_ids=expected)  # fmt: skip
        assert here["ok"], here["problems"]
        assert list(tabular.iter_rows(folder / "here.jsonl")) == want
        text = (folder / "here.jsonl").read_text(encoding="utf-8")  # JSON text: no BOM anywhere
        assert [json.loads(line) for line in text.split("\n") if line] == want
        plain = merge_shards(shards, folder / "plain.jsonl", folder / "plain.json")  # no ids: copied in blocks
        assert plain["ok"] and [e["rows"] for e in plain["shards"]] == [len(r) for _, _, r, _ in specs]
        assert (folder / "plain.jsonl").read_bytes() == (folder / "here.jsonl").read_bytes()
        for s in shards:
            finished(s, expected)
        vouched = merge_shards(shards, folder / "v.jsonl", folder / "v.json", id_column="id", key=int_key,
                               expected_ids=expected)  # fmt: skip
        assert vouched["ok"], vouched["problems"]
        assert (folder / "v.jsonl").read_bytes() == (folder / "here.jsonl").read_bytes()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="Parquet needs pyarrow: gputui[parquet]")
@examples(150)
@given(
    tables=st.lists(
        st.lists(st.tuples(cells, st.binary(max_size=8), st.lists(cells, max_size=2)), max_size=4),
        min_size=1,
        max_size=3,
    )
)
def test_a_merged_parquet_reads_back_as_its_shards_rows(tables):
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("blob", pa.binary()),
                        ("parts", pa.list_(pa.string()))])  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        shards, want, low = [], [], 0
        for i, rows in enumerate(tables):
            records = [{"id": low + j, "text": t, "blob": b, "parts": p} for j, (t, b, p) in enumerate(rows)]
            pq.write_table(pa.Table.from_pylist(records, schema), folder / f"s{i}.parquet")
            shards.append(ShardOutput(f"shard-{i}", low, low + len(rows), folder / f"s{i}.parquet"))
            want += records
            low += len(rows)
        summary = merge_shards(shards, folder / "m.parquet", folder / "m.json", id_column="id", key=int_key,
                               expected_ids=range(low))  # fmt: skip
        assert summary["ok"], summary["problems"]
        assert pq.read_table(folder / "m.parquet").to_pylist() == want
