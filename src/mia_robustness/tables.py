"""Tables: read the members / non-members files (CSV or Parquet) into DataFrames, checked.

Reading validates what a CSV or Parquet file can get wrong (encoding, ragged rows, duplicate or too many
columns, empty tables). Shaping the rows for the target is the engine's (``prepare.py``).

A table comes from an untrusted bundle, so what could make the parser do unbounded work is checked
before pandas runs: a CSV's header row and first data row are parsed from the file's first
``HEAD_BYTES`` (4 MiB) only, refusing a header over ``MAX_COLUMNS`` columns, a column name over
``MAX_COLUMN_NAME_CHARS`` (131,072, Python's csv field limit), a header row that does not end within
those 4 MiB, and a first data row with more fields than the header (which pandas would otherwise turn
into an index of up to millions of levels, minutes of work for a 2 MB line). A Parquet file's column
count is read from its schema before its data. Every failure is a :class:`~mia_robustness.errors.DataError`
naming the table; a file's size is bounded by the bundle's unpacking limits.
"""

from __future__ import annotations

import codecs
import csv
import io
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd

from .errors import DataError
from .json_config import shown, shown_names

try:  # for a Parquet file's schema alone; pandas reads the data with it too
    import pyarrow.parquet as _parquet
except ImportError:  # pragma: no cover - pandas then says the Parquet file is unreadable
    _parquet = None

MAX_COLUMNS = 10_000
ENCODINGS = ("utf-8-sig", "latin-1")
# The header row and the first data row must lie within a CSV's first HEAD_BYTES (10,000 columns of
# 200-character names take 2 MB).
HEAD_BYTES = 4 * 1024 * 1024
# Python's csv module refuses longer fields (csv.field_size_limit(), a process-wide setting left alone).
MAX_COLUMN_NAME_CHARS = 131_072


def read_table(path: Path, role: str) -> pd.DataFrame:
    """Read a CSV or Parquet table; ``role`` ("members" / "non-members") names it in errors."""
    name = f"{role} table {path.name}"
    if path.suffix.lower() in (".parquet", ".pq"):
        _check_parquet_schema(path, name)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise DataError(
                f"the {name} is not a readable Parquet file ({type(exc).__name__}); re-export it",
                code="unreadable_table",
            ) from None
    else:
        frame = _read_csv(path, name)
    if frame.shape[1] < 2:
        raise DataError(
            f"the {name} has {frame.shape[1]} column; it needs feature columns and a label column (is the separator a comma?)",
            code="too_few_columns",
        )
    if frame.empty:
        raise DataError(f"the {name} has no rows", code="empty_table")
    columns = [str(c) for c in frame.columns]
    _check_column_names(columns, name)
    frame.columns = columns
    return frame


def _too_many_columns(name: str, count: int | str) -> DataError:
    return DataError(
        f"the {name} has {count} columns; at most {MAX_COLUMNS} are supported, so drop the columns the model "
        "does not use",
        code="too_many_columns",
    )


def _check_column_names(columns: list[str], name: str) -> None:
    """At most MAX_COLUMNS columns, each named once."""
    if len(columns) > MAX_COLUMNS:
        raise _too_many_columns(name, len(columns))
    duplicates = sorted(column for column, count in Counter(columns).items() if count > 1)
    if duplicates:
        raise DataError(
            f"the {name} has duplicate column names: {shown_names(duplicates)}; rename them",
            code="duplicate_columns",
        )


def _check_parquet_schema(path: Path, name: str) -> None:
    """Refuse a Parquet file with too many columns from its footer, before any column is read."""
    if _parquet is None:
        return
    try:
        count = len(_parquet.read_schema(path).names)
    except Exception:  # unreadable: pd.read_parquet below gives the error
        return
    if count > MAX_COLUMNS:
        raise _too_many_columns(name, count)


def _head_records(text: str, whole_file: bool, name: str) -> tuple[list[str] | None, list[str] | None]:
    """The header row and the first data row parsed from the start of a CSV (``text``).

    ``whole_file`` says whether ``text`` is all of the file. The first data row is None when there is
    none or it cannot be parsed here (pandas then judges it); when it is cut off at the end of ``text``,
    its fields are a lower bound of the real count.
    """
    stream = io.StringIO(text, newline="")
    reader = csv.reader(stream, skipinitialspace=True)
    try:
        header = next((record for record in reader if record), None)  # pandas skips blank lines
    except csv.Error as exc:
        detail = "a field is too long" if "field limit" in str(exc) else shown(str(exc), 80)
        raise DataError(
            f"the {name} has a header row that cannot be read ({detail}); column names must be at most "
            f"{MAX_COLUMN_NAME_CHARS:,} characters and every quote must be closed, so check its first line",
            code="bad_header",
        ) from None
    if header is None:
        return None, None
    if len(header) > MAX_COLUMNS:
        raise _too_many_columns(name, f"more than {MAX_COLUMNS}")
    if not whole_file and stream.tell() >= len(text) and not text.endswith(("\n", "\r")):
        raise DataError(
            f"the {name} has a header row longer than {HEAD_BYTES // (1024 * 1024)} MiB (no line end found); "
            "the first line must hold the column names only, so check the line endings and quoting",
            code="bad_header",
        )
    try:
        first_row = next((record for record in reader if record), None)
    except csv.Error:
        first_row = None
    return header, first_row


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
        whole_file = not handle.read(1)
    if b"\x00" in head[:4096]:
        raise DataError(
            f"the {name} is not a text CSV file (it holds binary data); export it as UTF-8 CSV",
            code="unreadable_table",
        )
    last_error: Exception | None = None
    for encoding in ENCODINGS:
        try:
            # pandas renames duplicate headers (a, a.1); read the header row ourselves to catch them, and
            # check the sizes that could make pandas work for minutes before it parses anything.
            text = codecs.getincrementaldecoder(encoding)().decode(head, final=whole_file)
            header, first_row = _head_records(text, whole_file, name)
            if header is None:
                raise DataError(f"the {name} is empty", code="empty_table")
            _check_column_names([h.strip() for h in header], name)
            if first_row is not None and len(first_row) > len(header):
                more = "" if len(first_row) <= MAX_COLUMNS else "more than "
                raise _ragged(
                    name,
                    f"the first data row has {more}{min(len(first_row), MAX_COLUMNS)} "
                    f"fields, the header {len(header)}",
                )
            with warnings.catch_warnings():
                # index_col=False: a first data row longer than the header is not taken as index columns;
                # pandas warns that it drops the extra fields instead, which is refused as a ragged row.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(
                    path,
                    encoding=encoding,
                    skipinitialspace=True,
                    on_bad_lines="error",
                    low_memory=False,
                    index_col=False,
                )
            frame.columns = [str(c).strip() for c in frame.columns]
            return frame
        except UnicodeDecodeError as exc:
            last_error = exc
            continue
        except pd.errors.EmptyDataError:
            raise DataError(f"the {name} is empty", code="empty_table") from None
        except pd.errors.ParserWarning:
            raise _ragged(name, "the first data row has more fields than the header") from None
        except pd.errors.ParserError as exc:
            detail = shown(str(exc).strip().splitlines()[-1], 200)
            if "Expected" in detail:
                raise _ragged(name, detail) from None
            raise DataError(
                f"the {name} cannot be parsed as CSV ({detail}); check its quoting (every quote closed) and "
                "that it is a comma-separated file",
                code="malformed_csv",
            ) from None
        except (ValueError, OverflowError) as exc:
            raise DataError(
                f"the {name} cannot be read as a table ({type(exc).__name__}); check that it is a plain "
                "comma-separated file with one header row",
                code="malformed_csv",
            ) from None
    raise DataError(
        f"the {name} is not UTF-8 or Latin-1 text ({shown(str(last_error), 120)}); save it as UTF-8 CSV",
        code="bad_encoding",
    )


def _ragged(name: str, detail: str) -> DataError:
    return DataError(
        f"the {name} has ragged rows ({detail}); every row needs the header's number of fields",
        code="ragged_rows",
    )
