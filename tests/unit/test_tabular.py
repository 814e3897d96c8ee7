import json
import sys

import pytest

from gputui.jobs.tabular import (
    KEEP_BAD_BYTES,
    ColumnMissingError,
    MissingDependencyError,
    count_rows,
    detect_format,
    first_undecodable,
    iter_rows,
    normalize_ids,
    read_column,
    read_columns,
)


@pytest.fixture
def no_pyarrow(monkeypatch):
    """Pretend pyarrow is not installed, even on machines where it is."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("x/a.parquet", "parquet"),
    ],
)
def test_detect_format_by_extension(name, fmt):
    assert detect_format(name) == fmt


def test_detect_format_rejects_unknown_extension():
    with pytest.raises(ValueError, match=r"data\.tsv.*'\.tsv'.*\.csv"):
        detect_format("data.tsv")


def test_csv_header_and_column(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("id,text\n3,a\n1,b\n3,c\n", encoding="utf-8")
    assert read_columns(p) == ["id", "text"]
    assert read_column(p, "id") == ["3", "1", "3"]


def test_csv_excel_bom_does_not_rename_first_column(tmp_path):
    p = tmp_path / "in.csv"
    p.write_bytes("\ufeffid,text\n1,a\n".encode())
    assert read_columns(p) == ["id", "text"]
    assert read_column(p, "id") == ["1"]


def test_missing_column_message_names_file_column_and_available(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("uid,text\n1,a\n", encoding="utf-8")
    with pytest.raises(ColumnMissingError) as exc:
        read_column(p, "id")
    msg = str(exc.value)
    assert str(p) in msg and "'id'" in msg and "'uid'" in msg and "'text'" in msg
    assert isinstance(exc.value, KeyError)


def test_jsonl_columns_and_values(tmp_path):
    p = write_jsonl(tmp_path / "in.jsonl", [{"id": 5, "q": "x"}, {"id": 2, "q": "y"}])
    assert read_columns(p) == ["id", "q"]
    assert read_column(p, "id") == [5, 2]
    with pytest.raises(ColumnMissingError, match="'q'"):
        read_column(p, "uid")


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"id": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"in\.jsonl:2"):
        read_column(p, "id")


def test_normalize_ids_integer_mode_from_csv_strings():
    ids, integer = normalize_ids(["10", " 2", "+3", "-1", "10", "007"])
    assert integer is True
    assert ids == [-1, 2, 3, 7, 10]


def test_normalize_ids_accepts_ints_and_numpy_ints():
    np = pytest.importorskip("numpy")
    ids, integer = normalize_ids([np.int64(4), 1, "4"])
    assert integer is True
    assert ids == [1, 4]
    assert all(type(i) is int for i in ids)


def test_normalize_ids_string_mode():
    ids, integer = normalize_ids(["b", "a", "c", "a"])
    assert integer is False
    assert ids == ["a", "b", "c"]


def test_normalize_ids_one_non_integer_switches_all_to_strings():
    ids, integer = normalize_ids(["1", "2", "x", "10"])
    assert integer is False
    assert ids == ["1", "10", "2", "x"]  # string order, not numeric


def test_count_rows_csv_quoted_newline_is_one_row(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text('id,text\n1,"line one\nline two"\n2,plain\n\n', encoding="utf-8")
    assert count_rows(p) == 2
    assert [r["text"] for r in iter_rows(p)] == ["line one\nline two", "plain"]


def test_count_rows_csv_header_only_and_empty(tmp_path):
    (tmp_path / "h.csv").write_text("id,text\n", encoding="utf-8")
    (tmp_path / "e.csv").write_text("", encoding="utf-8")
    assert count_rows(tmp_path / "h.csv") == 0
    assert count_rows(tmp_path / "e.csv") == 0


def test_count_rows_jsonl_skips_blank_lines(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"id": 1}\n\n{"id": 2}\n   \n{"id": 3}', encoding="utf-8")
    assert count_rows(p) == 3
    assert [r["id"] for r in iter_rows(p)] == [1, 2, 3]


def test_huge_csv_field_is_read(tmp_path):
    p = tmp_path / "in.csv"
    big = "x" * 300_000  # over the csv module's default 128 KiB field limit
    p.write_text(f"id,text\n1,{big}\n", encoding="utf-8")
    assert count_rows(p) == 1
    assert read_column(p, "text") == [big]


def test_explicit_format_overrides_extension(tmp_path):
    p = tmp_path / "data.txt"
    p.write_text("id\n1\n2\n", encoding="utf-8")
    assert count_rows(p, "csv") == 2
    with pytest.raises(ValueError, match="unknown format"):
        count_rows(p, "tsv")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, no_pyarrow):
    p = tmp_path / "in.parquet"
    p.write_bytes(b"PAR1")
    for call in (lambda: read_columns(p), lambda: read_column(p, "id"), lambda: count_rows(p)):
        with pytest.raises(MissingDependencyError, match=r"pip install 'gputui\[parquet\]'"):
            call()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_byte_that_is_not_utf8_fails_a_strict_read_and_is_kept_by_a_tolerant_one(tmp_path, fmt):
    if fmt == "csv":
        path = tmp_path / "in.csv"
        path.write_bytes(b"data_id,prompt\n1,fine\n2,bad \xff byte\n3,caf\xc3\xa9\n")
    else:
        path = tmp_path / "in.jsonl"
        path.write_bytes(b'{"data_id": 1, "prompt": "fine"}\n{"data_id": 2, "prompt": "bad \xff byte"}\n')
    with pytest.raises(ValueError):
        list(iter_rows(path))
    rows = list(iter_rows(path, errors=KEEP_BAD_BYTES))
    assert rows[1]["prompt"] == "bad \udcff byte"  # the byte, kept as a lone surrogate
    ids = read_column(path, "data_id", errors=KEEP_BAD_BYTES)
    assert first_undecodable(ids) is None
    assert first_undecodable([r["prompt"] for r in rows]) == 1
    assert read_columns(path, errors=KEEP_BAD_BYTES) == ["data_id", "prompt"]
