"""tables.read_table on small files: what it returns, and the error (code, table named, fix) for each way a
CSV or Parquet file can be wrong. The parser blow-ups (a million columns, huge fields) are in
test_input_limits.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from builders import raised
from mia_robustness.errors import DataError
from mia_robustness.tables import read_table


def write(tmp_path: Path, data: bytes | str, name: str = "train.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def refused(path: Path, code: str, role: str = "members") -> str:
    error = raised(DataError, code, read_table, path, role)
    assert error.http_status == 400 and f"{role} table {path.name}" in error.message  # says which file
    return error.message


def test_a_csv_is_read_with_names_stripped_and_missing_values_kept(tmp_path):
    frame = read_table(write(tmp_path, " age , income,label\n30,,1\n41,2.5,0\n"), "members")
    assert list(frame.columns) == ["age", "income", "label"]
    assert frame["age"].tolist() == [30, 41] and np.isnan(frame["income"][0])


def test_a_parquet_table_keeps_its_types(tmp_path):
    path = tmp_path / "subject.parquet"
    written = pd.DataFrame({"x": [1.5, 2.5], "colour": ["red", "blue"], "label": [0, 1]})
    written.to_parquet(path)
    pd.testing.assert_frame_equal(read_table(path, "non-members"), written)


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        ("", "empty_table", "is empty"),
        ("\n\n\n", "empty_table", "is empty"),
        ("a,b,label\n", "empty_table", "has no rows"),
        ("label\n1\n0\n", "too_few_columns", "is the separator a comma?"),
        ("a;b;label\n1;2;0\n", "too_few_columns", "feature columns and a label column"),
        ("a,b,a\n1,2,0\n", "duplicate_columns", "'a'; rename them"),
        ("a, b,b \n1,2,0\n", "duplicate_columns", "'b'"),  # equal once stripped
        ("a,b,label\n1,2,0\n3,4\n5,6,7,8\n", "ragged_rows", "header's number of fields"),
        ("a,b,label\n1,2,0,9\n", "ragged_rows", "first data row has 4 fields, the header 3"),
        (b"a,b,label\n1,\x00,0\n", "unreadable_table", "export it as UTF-8 CSV"),
        ('a,b,label\n1,"2,0\n', "malformed_csv", "every quote closed"),
    ],
    ids=[
        "empty",
        "blank-lines",
        "header-only",
        "one-column",
        "semicolons",
        "duplicates",
        "duplicates-after-strip",
        "ragged-later-row",
        "ragged-first-row",
        "binary",
        "open-quote",
    ],
)
def test_csv_refusals(tmp_path, data, code, fragment):
    message = refused(write(tmp_path, data), code)
    assert fragment in message, message


def test_the_role_names_the_table(tmp_path):
    message = refused(write(tmp_path, "a,b\n", "subject.csv"), "empty_table", role="non-members")
    assert message.startswith("the non-members table subject.csv")


def test_latin_1_is_the_fallback_encoding(tmp_path):
    frame = read_table(write(tmp_path, "caf\xe9,label\nna\xefve,1\n".encode("latin-1")), "members")
    assert list(frame.columns) == ["caf\xe9", "label"] and frame.iloc[0, 0] == "na\xefve"


def test_a_broken_parquet_file(tmp_path):
    message = refused(write(tmp_path, b"PAR1 this is not parquet PAR1", "train.parquet"), "unreadable_table")
    assert "not a readable Parquet file" in message and "re-export it" in message


def test_a_parquet_file_with_one_column(tmp_path):
    path = tmp_path / "train.pq"
    pd.DataFrame({"label": [0, 1]}).to_parquet(path)
    refused(path, "too_few_columns")
