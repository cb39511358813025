"""Red-team findings on unbounded input: each test attacks the real code path (options_from_mapping,
open_bundle, read_table, load_json_config, and where cheap the whole ``audit()`` call) and expects a
specific 4xx MiaError, quickly and without echoing the hostile input back."""

from __future__ import annotations

import importlib
import re
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from builders import (
    CHEAPEST,
    REPO_ROOT,
    archive_bytes,
    folder_files,
    noisy_numeric_frame,
    raised,
    split_fit,
    write_bundle,
)
from mia_robustness import audit
from mia_robustness.archive import BundleLimits, UnpackBudget, extract_archive
from mia_robustness.bundle import open_bundle
from mia_robustness.errors import BundleError, DataError, InputError, LimitError, MiaError, OptionsError
from mia_robustness.json_config import load_json_config, shown
from mia_robustness.options import (
    MAX_PROPORTIONS,
    MAX_REFERENCE_MODELS,
    MAX_REPEATS,
    AuditOptions,
    options_from_mapping,
    parse_key_value_pairs,
)
from mia_robustness.tables import HEAD_BYTES, MAX_COLUMNS, read_table

MIB = 1024 * 1024


def check_message(error: MiaError, *fragments: str, longest: int = 700) -> None:
    """A 4xx error whose message is short, free of control characters and says the given things."""
    assert 400 <= error.http_status < 500, error.http_status
    assert error.message and len(error.message) <= longest, len(error.message)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in error.message), error.message
    for fragment in fragments:
        assert fragment in error.message, (fragment, error.message)


@pytest.fixture(scope="module")
def frames():
    return split_fit(noisy_numeric_frame(300, seed=3), DecisionTreeClassifier(max_depth=3, random_state=0))


# --------------------------------------------------------------------------------------------------
# 1. Options that set the audit's cost are bounded
# --------------------------------------------------------------------------------------------------


def test_limits_are_the_documented_ones():
    readme = (REPO_ROOT / "README.md").read_text()
    stated = re.search(
        r"at most (\d+) distinct proportions, 1 to (\d+) repeats, 2 to (\d+) reference models", readme
    )
    assert stated, "README's Security section no longer states the cost bounds"
    assert tuple(map(int, stated.groups())) == (MAX_PROPORTIONS, MAX_REPEATS, MAX_REFERENCE_MODELS)
    # and each is where the parsers draw the line: the bound itself passes, one more is refused
    at_the_limit = options_from_mapping(
        {
            "proportions": [i / MAX_PROPORTIONS for i in range(1, MAX_PROPORTIONS + 1)],
            "repeats": MAX_REPEATS,
            "reference_models": MAX_REFERENCE_MODELS,
        }
    )
    assert len(at_the_limit.proportions) == MAX_PROPORTIONS
    assert (at_the_limit.repeats, at_the_limit.reference_models) == (MAX_REPEATS, MAX_REFERENCE_MODELS)
    for over in (
        {"proportions": [i / (MAX_PROPORTIONS + 1) for i in range(1, MAX_PROPORTIONS + 2)]},
        {"repeats": MAX_REPEATS + 1},
        {"reference_models": MAX_REFERENCE_MODELS + 2},
    ):
        with pytest.raises(OptionsError):
            options_from_mapping(over)


def test_nine_thousand_proportions_in_config_json_are_refused_before_any_work(tmp_path, frames, monkeypatch):
    model, members, non_members = frames
    config = {"proportions": ",".join(f"{i / 9000:.4f}".lstrip("0") for i in range(1, 9001))}  # .0001,...
    bundle = write_bundle(tmp_path, model, members, non_members, config=config)
    assert (bundle / "config.json").stat().st_size < 64 * 1024  # it fits the config size cap
    engine = importlib.import_module("mia_robustness.bundle_audit")
    monkeypatch.setattr(engine, "open_model", lambda *a, **k: pytest.fail("the model was opened"))
    with pytest.raises(OptionsError) as caught:
        audit(bundle)
    assert caught.value.code == "too_many_values"
    check_message(caught.value, "proportions", str(MAX_PROPORTIONS))


@pytest.mark.parametrize(
    "value",
    [
        [round(0.05 * i, 2) for i in range(1, 21)] + [0.33],  # 21 distinct shares
        ",".join(str(i) for i in range(5, 101, 4)),  # 24 shares in percent, as a header string
        "0.5," * 500,  # a header of 500 items, even if all the same
    ],
)
def test_too_many_proportions_refused(value):
    with pytest.raises(OptionsError) as caught:
        options_from_mapping({"proportions": value})
    assert caught.value.code == "too_many_values"
    check_message(caught.value, "proportions", "at most 20")


def test_twenty_proportions_and_duplicates_are_fine():
    shares = [round(0.05 * i, 2) for i in range(1, 21)]
    assert len(options_from_mapping({"proportions": shares + shares[:5]}).proportions) == 20


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        ({"repeats": 21}, ("repeats", "20")),
        ({"repeats": "1000000"}, ("repeats", "20")),
        ({"reference_models": 66}, ("reference_models", "64", "retrains")),
        ({"reference_models": "128"}, ("reference_models", "64")),
        ({"reference_models": 7}, ("reference_models", "even", "64")),
        ({"repeats": 0}, ("repeats", "1 to 20")),
    ],
)
def test_repeats_and_reference_models_bounded(values, fragments):
    with pytest.raises(OptionsError) as caught:
        options_from_mapping(values)
    check_message(caught.value, *fragments)


def test_the_bounds_hold_for_an_options_object_built_in_code():
    with pytest.raises(OptionsError):
        AuditOptions(proportions=tuple(i / 100 for i in range(1, 101)))
    with pytest.raises(OptionsError):
        AuditOptions(repeats=MAX_REPEATS + 1)
    with pytest.raises(OptionsError):
        AuditOptions(reference_models=MAX_REFERENCE_MODELS + 2)
    options = AuditOptions(proportions=(1.0,), attack_models=("threshold",), repeats=MAX_REPEATS)
    assert options.repeats == MAX_REPEATS
    assert options_from_mapping({"reference_models": MAX_REFERENCE_MODELS}).reference_models == 64


@pytest.mark.parametrize(
    "values",
    [
        {"repeats": "9" * 5000},
        {"seed": 10**5000},  # repr() of this integer raises ValueError in Python >= 3.11
        {"device": "gpu\x1b[31m" + "x" * 100_000},
        {"attack_models": "nn," + "\u202e" * 10_000},
        {"eval_fraction": "1" * 100_000},
        {"x" * 100_000 + "\n": 1},
        {"proportions": [10**5000]},
        {"proportions": "nan"},
    ],
)
def test_error_messages_never_echo_long_or_control_input(values):
    with pytest.raises(OptionsError) as caught:
        options_from_mapping(values)
    check_message(caught.value, longest=400)


def test_custom_attribute_pair_echo_is_capped():
    with pytest.raises(OptionsError) as caught:
        parse_key_value_pairs("x" * 50_000 + "\r\n")
    check_message(caught.value, longest=300)


def test_shown_describes_what_it_cannot_quote():
    assert shown(10**5000).startswith("an integer of about 5001 digits")
    assert shown(list(range(1000))) == "a list of 1000 items"
    assert len(shown("y" * 10**6)) < 80
    assert "\n" not in shown("a\nb")


# --------------------------------------------------------------------------------------------------
# 2. A zip's entry count is checked before zipfile parses the central directory
# --------------------------------------------------------------------------------------------------

LOCAL_HEADER = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"


def bare_directory_zip(n: int, *, declared: int | None = None) -> bytes:
    """One local header, then ``n`` bare central-directory records (all pointing at it), then the end
    record(s). ``declared`` is the count written in the end record (the truth by default, with a zip64
    end record when it needs one); zipfile itself ignores it."""
    record = (
        struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    )
    directory = record * n
    offset = len(LOCAL_HEADER)
    count = n if declared is None else declared
    if count > 0xFFFF:
        zip64 = struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset
        )
        locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + len(directory), 1)
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
        return LOCAL_HEADER + directory + zip64 + locator + end
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return LOCAL_HEADER + directory + end


def measure(call) -> tuple[BaseException | None, float, int]:
    """(exception raised, seconds, peak bytes allocated by Python) for ``call()``."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - returned to the test
        error = exc
    else:
        error = None
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, seconds, peak


@pytest.mark.parametrize("declared", [None, 1], ids=["honest-zip64-count", "lying-count"])
def test_two_hundred_thousand_directory_records_refused_fast_and_small(tmp_path, declared):
    """Before: zipfile built 200k ZipInfo objects (~70 MiB, ~1.5 s; 2M took 0.7 GiB and 14 s) and only
    then was the count checked. Now the count is read from the end record and the directory is walked
    header by header, stopping at max_members + 1."""
    path = tmp_path / "many.zip"
    path.write_bytes(bare_directory_zip(200_000, declared=declared))
    (tmp_path / "dest").mkdir()
    error, seconds, peak = measure(lambda: extract_archive(path, tmp_path / "dest"))
    assert isinstance(error, LimitError) and error.code == "member_count_limit", error
    check_message(error, "max_members=1000")
    assert peak < 2 * MIB, f"{peak / MIB:.1f} MiB allocated"
    assert seconds < 1.0, f"{seconds:.2f} s"


def test_bare_directory_bomb_through_open_bundle(tmp_path):
    data = bare_directory_zip(100_000)
    error, _seconds, peak = measure(lambda: open_bundle(data, workdir=tmp_path).__enter__())
    assert isinstance(error, LimitError) and error.code == "member_count_limit", error
    assert peak < 2 * MIB + len(data), f"{peak / MIB:.1f} MiB allocated"
    assert list(tmp_path.iterdir()) == []  # the private folder is gone


def test_directory_that_the_walk_cannot_follow_is_corrupt(tmp_path):
    data = bytearray(bare_directory_zip(10))
    data[len(LOCAL_HEADER) + 47 * 5] ^= 0xFF  # the sixth record's signature
    path = tmp_path / "bad.zip"
    path.write_bytes(bytes(data))
    (tmp_path / "dest").mkdir()
    with pytest.raises(BundleError) as caught:
        extract_archive(path, tmp_path / "dest")
    assert caught.value.code == "corrupt_archive"


def test_real_zips_still_open_zip64_end_record_and_comment(tmp_path, monkeypatch):
    files = {f"f{i}.csv": f"a,b\n{i},1\n".encode() for i in range(30)}
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.comment = b"an archive comment, so the end record is searched for " * 100
    forced = tmp_path / "zip64.zip"
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # makes zipfile write zip64 end records
    with zipfile.ZipFile(forced, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    monkeypatch.undo()
    assert b"PK\x06\x06" in forced.read_bytes()[-200:]
    for index, archive in enumerate((plain, forced)):
        dest = tmp_path / f"dest{index}"
        dest.mkdir()
        written = extract_archive(archive, dest)
        assert {p.name: p.read_bytes() for p in written} == files
        dest = tmp_path / f"small{index}"
        dest.mkdir()
        with pytest.raises(LimitError):  # the walk counts them: 30 entries over a limit of 29
            extract_archive(archive, dest, BundleLimits(max_members=29))


# --------------------------------------------------------------------------------------------------
# 3. The nested data.zip draws on what the outer archive left
# --------------------------------------------------------------------------------------------------


def legacy_bundle(path: Path, inner_files: dict[str, bytes], model: bytes = b"m" * 1000) -> Path:
    inner = archive_bytes(inner_files, compression=zipfile.ZIP_STORED)
    path.write_bytes(archive_bytes({"model.pkl": model, "data.zip": inner}, compression=zipfile.ZIP_STORED))
    return path


def csv_bytes(n_bytes: int) -> bytes:
    row = b"1.25,2.5,0\n"
    return b"a,b,label\n" + row * (n_bytes // len(row))


def test_nested_data_zip_shares_the_member_budget(tmp_path):
    inner = {"train_mia.csv": csv_bytes(100), "test_mia.csv": csv_bytes(100)}
    inner |= {f"notes/{i}.txt": b"x" for i in range(3)}  # 5 entries inside, 2 outside: 7 in all
    archive = legacy_bundle(tmp_path / "legacy.zip", inner)
    with open_bundle(archive, limits=BundleLimits(max_members=7), workdir=tmp_path) as bundle:
        assert bundle.layout == "legacy"
    with (
        pytest.raises(LimitError) as caught,
        open_bundle(archive, limits=BundleLimits(max_members=6), workdir=tmp_path),
    ):  # before: each archive had 6 of its own, and this passed
        pass
    assert caught.value.code == "member_count_limit"
    check_message(caught.value, "'data.zip'", "max_members=6", "2 of them used by the archive it came in")


def test_nested_data_zip_shares_the_byte_budget(tmp_path):
    inner = {"train_mia.csv": csv_bytes(int(0.8 * MIB)), "test_mia.csv": csv_bytes(int(0.8 * MIB))}
    archive = legacy_bundle(tmp_path / "legacy.zip", inner)
    # Outer: ~1.6 MiB (model + stored data.zip); inner: ~1.6 MiB. Each fits 3 MiB alone, not together.
    with (
        pytest.raises(LimitError) as caught,
        open_bundle(archive, limits=BundleLimits(max_unpacked_bytes=3 * MIB), workdir=tmp_path),
    ):
        pass
    assert caught.value.code == "unpacked_size_limit"
    check_message(caught.value, "'data.zip'", "used by the archive it came in")
    with open_bundle(archive, limits=BundleLimits(max_unpacked_bytes=4 * MIB), workdir=tmp_path) as bundle:
        assert bundle.members_path.name == "train_mia.csv"
    assert list(tmp_path.glob("mia-bundle-*")) == []


def test_one_budget_across_extract_archive_calls(tmp_path):
    archive = legacy_bundle(tmp_path / "a.zip", {"train_mia.csv": b"a\n1\n"})
    limits = BundleLimits(max_members=5)
    budget = UnpackBudget.of(limits)
    for name in ("d1", "d2"):
        (tmp_path / name).mkdir()
        extract_archive(archive, tmp_path / name, limits, budget=budget)
    assert budget.members_left == 1
    assert budget.bytes_left == limits.max_unpacked_bytes - 2 * sum(
        p.stat().st_size for p in (tmp_path / "d1").iterdir()
    )
    (tmp_path / "d3").mkdir()
    with pytest.raises(LimitError) as caught:
        extract_archive(archive, tmp_path / "d3", limits, budget=budget)
    check_message(caught.value, "4 of them used")


# --------------------------------------------------------------------------------------------------
# 4. CSV parser blow-ups give specific DataErrors naming the table
# --------------------------------------------------------------------------------------------------


def table(tmp_path: Path, data: bytes, name: str = "train.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refuse_table(path: Path, code: str, role: str = "members") -> DataError:
    error = raised(DataError, code, read_table, path, role)
    check_message(error, f"{role} table {path.name}")
    return error


def test_header_field_over_the_csv_field_limit(tmp_path):
    path = table(tmp_path, b"x" * 140_000 + b",label\n1,0\n")
    refuse_table(path, "bad_header")


def test_header_field_over_the_limit_through_the_whole_audit(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    good = (bundle / "train.csv").read_text()
    (bundle / "train.csv").write_text("x" * 140_000 + good)  # the first column's name is 140k long
    with pytest.raises(DataError) as caught:
        audit(bundle, CHEAPEST)
    assert caught.value.code == "bad_header"
    check_message(caught.value, "members table train.csv")


@pytest.mark.parametrize(
    "data",
    [
        b"," * 1_000_000 + b"\n1\n",  # a million unnamed columns in 1 MB
        b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n",
        b"a," * (3 * MIB) + b"\n",  # a header row longer than the head that is read
    ],
    ids=["unnamed", "named", "beyond-head"],
)
def test_a_million_columns(tmp_path, data):
    started = time.perf_counter()
    error = refuse_table(table(tmp_path, data), "too_many_columns")
    assert str(MAX_COLUMNS) in error.message
    assert time.perf_counter() - started < 5


def test_first_data_row_with_a_huge_number_of_fields(tmp_path):
    """pandas made the extra fields of a first data row index columns: a 2 MB line of 1M fields took
    over two minutes (a 999,998-level MultiIndex); 200k fields gave a silently wrong one-row frame."""
    path = table(tmp_path, b"a,b\n" + b"1," * 200_000 + b"1\n")
    started = time.perf_counter()
    error = refuse_table(path, "ragged_rows")
    assert "first data row" in error.message
    assert time.perf_counter() - started < 5


def test_first_data_row_longer_than_the_head(tmp_path):
    path = table(tmp_path, b"a,b\n" + b"1," * (3 * MIB) + b"1\n")  # 6 MiB, no line end in the head
    refuse_table(path, "ragged_rows")


def test_extra_fields_hidden_behind_a_long_quoted_field(tmp_path):
    # The head's csv parse gives up (a field over 131,072 characters), so pandas' own check must refuse
    # the row instead of dropping its extra fields or turning them into an index.
    path = table(tmp_path, b'a,b\n"' + b"x" * 200_000 + b'",1,2,3\n5,6\n')
    refuse_table(path, "ragged_rows")


def test_trailing_field_on_data_rows_is_not_an_index(tmp_path):
    path = table(tmp_path, b"a,b\n1,2,\n3,4,\n")  # pandas used to take column a as the index
    refuse_table(path, "ragged_rows")


def test_a_single_line_without_newline(tmp_path):
    refuse_table(table(tmp_path, b"y" * (2 * HEAD_BYTES)), "bad_header")  # no line end: not a header
    refuse_table(table(tmp_path, b"y" * 200_000), "bad_header")  # a column name over 131,072


def test_unclosed_quote_is_not_called_ragged(tmp_path):
    refuse_table(table(tmp_path, b'a,b\n1,"2\n3,4\n'), "malformed_csv")


def test_long_column_names_are_not_echoed(tmp_path):
    name = "z" * 100_000
    error = refuse_table(table(tmp_path, f"{name},{name},label\n1,2,0\n".encode()), "duplicate_columns")
    assert error.message.count("z") < 100


def test_valid_tables_still_read(tmp_path):
    frame = read_table(table(tmp_path, b"\xef\xbb\xbfa, b ,label\r\n1,2,0\r\n3,4,1\r\n"), "members")
    assert list(frame.columns) == ["a", "b", "label"] and frame.shape == (2, 3)
    latin = read_table(table(tmp_path, "caf\xe9,label\n1,0\n".encode("latin-1"), "l.csv"), "members")
    assert list(latin.columns) == ["caf\xe9", "label"]
    quoted = read_table(table(tmp_path, b'"a,x","b\nc",label\n1,2,0\n', "q.csv"), "members")
    assert list(quoted.columns) == ["a,x", "b\nc", "label"]
    wide = ",".join(f"c{i}" for i in range(MAX_COLUMNS)).encode()
    assert read_table(
        table(tmp_path, wide + b"\n" + b"1," * (MAX_COLUMNS - 1) + b"1\n", "w.csv"), "x"
    ).shape == (
        1,
        MAX_COLUMNS,
    )


def test_parquet_column_count_read_from_its_schema(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({f"c{i}": [1] for i in range(MAX_COLUMNS + 1)}).to_parquet(path)
    refuse_table(path, "too_many_columns")


# --------------------------------------------------------------------------------------------------
# 5. config.json (and any JSON carrying options) is parsed within limits
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[" * 30_000 + "]" * 30_000, "levels deep"),
        ('{"a": ' + "[" * 17 + "]" * 17 + "}", "levels deep"),
        ('{"seed": ' + "1" * 5000 + "}", "number of 5000 characters"),
        ('{"eval_fraction": 0.' + "1" * 5000 + "}", "number of"),
        ('{"eval_fraction": NaN}', "NaN"),
        ('{"repeats": -Infinity}', "Infinity"),
        ('{"repeats": 1, "repeats": 20}', "more than once"),
        ("[1, 2]", "JSON object"),
        ('"repeats"', "JSON object"),
        ("{repeats: 1}", "not valid JSON"),
        ('{"label_column": "' + "x" * 70_000 + '"}', "larger than 64 KiB"),
    ],
)
def test_load_json_config_refusals(text, fragment):
    with pytest.raises(OptionsError) as caught:
        load_json_config(text, "config.json")
    assert caught.value.code == "bad_config"
    check_message(caught.value, "config.json", fragment, longest=300)


def test_load_json_config_accepts_what_options_need():
    text = '\ufeff{"proportions": [0.5, 1], "label_column": "[[[[{{{{\\"]]]]", "seed": 12345678901234567890}'
    assert load_json_config(text) == {
        "proportions": [0.5, 1],
        "label_column": '[[[[{{{{"]]]]',
        "seed": 12345678901234567890,
    }
    nested = '{"a": ' + "[" * 15 + "]" * 15 + "}"  # depth 16: at the limit
    assert load_json_config(nested.encode())["a"] == [[[[[[[[[[[[[[[]]]]]]]]]]]]]]]
    assert load_json_config(b'\xef\xbb\xbf{"repeats": 1}') == {"repeats": 1}


def test_load_json_config_for_other_shells():
    with pytest.raises(InputError) as caught:
        load_json_config(b"\xff\xfe{}", "hyperparameters.json", error=InputError, code="bad_hyperparameters")
    assert type(caught.value) is InputError and caught.value.code == "bad_hyperparameters"
    check_message(caught.value, "hyperparameters.json", "UTF-8")
    with pytest.raises(InputError):
        load_json_config("{}" + " " * 100, "header", error=InputError, max_bytes=64)


@pytest.mark.parametrize(
    "text",
    ["[" * 30_000 + "]" * 30_000, '{"seed": ' + "1" * 5000 + "}", '{"repeats": ' + "9" * 4000 + "}"],
    ids=["30000-deep", "5000-digit-int", "4000-digit-int"],
)
def test_hostile_config_json_through_the_whole_audit(tmp_path, frames, text):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    (bundle / "config.json").write_text(text)
    with pytest.raises(BundleError) as caught:
        audit(bundle, CHEAPEST)
    assert caught.value.code == "bad_config"
    check_message(caught.value, "config.json", longest=300)


def test_huge_config_json_in_an_archive_is_refused(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    (bundle / "config.json").write_bytes(b'{"label_column": "' + b"x" * (5 * MIB) + b'"}')
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(archive_bytes(folder_files(bundle), compression=zipfile.ZIP_STORED))
    with pytest.raises(BundleError) as caught, open_bundle(archive, workdir=tmp_path):
        pass
    assert caught.value.code == "bad_config"
    check_message(caught.value, "64 KiB")


def test_config_json_is_still_applied(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members, config={"repeats": 2, "seed": 7})
    with open_bundle(bundle) as opened:
        assert opened.config == {"repeats": 2, "seed": 7}
