"""bundle.py on small folders and archives: which file is which part, config.json, the legacy layout, and an
error code (with a fix in its message) for every way a bundle can be incomplete or ambiguous.

Nothing here loads a model or reads a table: the parts are placeholder files.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from builders import archive_bytes, raised
from mia_robustness.archive import BundleLimits
from mia_robustness.bundle import locate_parts, open_bundle, pack_bundle
from mia_robustness.errors import BundleError
from mia_robustness.loading import MODEL_SUFFIXES

TABLE = "x0,label\n1,0\n"


def folder(root: Path, files: dict[str, str | bytes]) -> Path:
    """``root/bundle`` holding ``files`` (relative path -> content)."""
    base = root / "bundle"
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return base


def locate(root: Path, files: dict[str, str | bytes], limits: BundleLimits | None = None):
    scratch = root / "scratch"
    scratch.mkdir(parents=True)
    return locate_parts(folder(root, files), scratch, limits or BundleLimits())


def refused(root: Path, files: dict[str, str | bytes], code: str, limits: BundleLimits | None = None) -> str:
    error = raised(BundleError, code, locate, root, files, limits)
    assert error.http_status == 400
    return error.message


STANDARD = {"model.pkl": b"m", "train.csv": TABLE, "subject.csv": TABLE}


# ---------------------------------------------------------------- finding the parts


def test_standard_layout_with_config(tmp_path):
    bundle = locate(tmp_path, STANDARD | {"config.json": '{"repeats": 2, "proportions": [1]}'})
    assert (bundle.model_path.name, bundle.members_path.name, bundle.non_members_path.name) == (
        "model.pkl",
        "train.csv",
        "subject.csv",
    )
    assert bundle.config == {"repeats": 2, "proportions": [1]}
    assert bundle.layout == "standard"


@pytest.mark.parametrize("suffix", MODEL_SUFFIXES)
def test_every_model_suffix_in_any_case(tmp_path, suffix):
    files = {f"Model{suffix.upper()}": b"m", "TRAIN.Parquet": b"p", "Subject.pq": b"p"}
    bundle = locate(tmp_path, files)
    assert bundle.model_path.name == f"Model{suffix.upper()}"
    assert (bundle.members_path.name, bundle.non_members_path.name) == ("TRAIN.Parquet", "Subject.pq")
    assert bundle.config == {}


def test_parts_in_subfolders_and_junk_ignored(tmp_path):
    files = {
        "model/model.joblib": b"m",
        "data/train.csv": TABLE,
        "data/subject.csv": TABLE,
        "__MACOSX/data/._train.csv": b"junk",  # macOS resource forks: not a second train table
        ".git/train.csv": TABLE,  # hidden folders are not looked into
        "notes.txt": "hello",
        "train.txt": "not a table suffix",
    }
    bundle = locate(tmp_path, files)
    assert bundle.model_path.relative_to(tmp_path / "bundle").as_posix() == "model/model.joblib"
    assert bundle.members_path.relative_to(tmp_path / "bundle").as_posix() == "data/train.csv"


def test_a_model_file_of_another_format_is_no_model(tmp_path):
    message = refused(tmp_path, {"model.h5": b"m", "train.csv": TABLE, "subject.csv": TABLE}, "missing_model")
    assert all(suffix in message for suffix in MODEL_SUFFIXES)  # says which endings it looks for


def test_two_models_are_named(tmp_path):
    message = refused(tmp_path, STANDARD | {"old/model.skops": b"m"}, "ambiguous_model")
    assert "2 model files" in message and "model.pkl" in message and "old/model.skops" in message
    assert "keep exactly one" in message


def test_two_members_tables_are_named(tmp_path):
    message = refused(tmp_path, STANDARD | {"train.parquet": b"p"}, "ambiguous_table")
    assert "train.csv" in message and "train.parquet" in message and "keep exactly one" in message


@pytest.mark.parametrize(
    ("missing", "code", "fix"),
    [
        ("subject.csv", "missing_non_members", "add rows the model never saw as subject.csv"),
        ("train.csv", "missing_members", "add the model's training rows as train.csv"),
    ],
)
def test_one_table_missing(tmp_path, missing, code, fix):
    files = {name: data for name, data in STANDARD.items() if name != missing}
    assert fix in refused(tmp_path, files, code)


def test_no_tables_names_both_layouts(tmp_path):
    message = refused(tmp_path, {"model.pkl": b"m", "data.csv": TABLE}, "missing_tables")
    assert "train.csv" in message and "subject.csv" in message and "train_mia.csv" in message


# ---------------------------------------------------------------- config.json


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("{repeats: 1", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"a": 1, "a": 2}', "more than once")],
)
def test_bad_config_json(tmp_path, text, fragment):
    message = refused(tmp_path, STANDARD | {"config.json": text}, "bad_config")
    assert "config.json" in message and fragment in message


def test_two_config_files(tmp_path):
    refused(tmp_path, STANDARD | {"config.json": "{}", "extra/CONFIG.JSON": "{}"}, "ambiguous_config")


# ---------------------------------------------------------------- the legacy layout


LEGACY_TABLES = {"train_mia.csv": TABLE, "test_mia.csv": TABLE}


def test_legacy_data_zip_is_unpacked_into_the_scratch_folder(tmp_path):
    bundle = locate(tmp_path, {"model.pkl": b"m", "data.zip": archive_bytes(LEGACY_TABLES)})
    assert bundle.layout == "legacy"
    assert (bundle.members_path.name, bundle.non_members_path.name) == ("train_mia.csv", "test_mia.csv")
    assert bundle.members_path.is_relative_to(tmp_path / "scratch")  # never unpacked beside the bundle
    assert bundle.members_path.read_text() == TABLE


def test_legacy_tables_already_unpacked(tmp_path):
    bundle = locate(tmp_path, {"model.pkl": b"m"} | LEGACY_TABLES)
    assert bundle.layout == "legacy" and bundle.members_path.parent == tmp_path / "bundle"


def test_legacy_data_zip_refused_without_nesting_or_twice(tmp_path):
    data = archive_bytes(LEGACY_TABLES)
    message = refused(
        tmp_path / "a", {"model.pkl": b"m", "data.zip": data}, "nesting_limit", BundleLimits(max_nesting=0)
    )
    assert "unpack data.zip into the bundle" in message
    refused(tmp_path / "b", {"model.pkl": b"m", "data.zip": data, "more/data.zip": data}, "ambiguous_table")


def test_legacy_data_zip_without_its_tables(tmp_path):
    refused(
        tmp_path, {"model.pkl": b"m", "data.zip": archive_bytes({"train_mia.csv": TABLE})}, "missing_tables"
    )


# ---------------------------------------------------------------- open_bundle


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_open_bundle_from_archive_bytes_and_file_cleans_up(tmp_path, kind):
    data = archive_bytes(STANDARD | {"config.json": '{"seed": 4}'}, kind)
    work = tmp_path / "work"
    work.mkdir()
    with open_bundle(data, workdir=work) as bundle:
        assert bundle.config == {"seed": 4} and bundle.members_path.read_text() == TABLE
        assert bundle.model_path.is_relative_to(work)
    assert list(work.iterdir()) == []  # the private folder is gone
    path = tmp_path / "bundle.bin"  # the kind comes from the content, not the name
    path.write_bytes(data)
    with open_bundle(path, workdir=work) as bundle:
        assert bundle.non_members_path.name == "subject.csv"
    assert list(work.iterdir()) == []


def test_open_bundle_cleans_up_after_an_error(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BundleError) as caught, open_bundle(archive_bytes({"model.pkl": b"m"}), workdir=work):
        pass
    assert caught.value.code == "missing_tables" and list(work.iterdir()) == []


def test_open_bundle_of_nothing(tmp_path):
    with pytest.raises(BundleError) as caught, open_bundle(b""):
        pass
    assert caught.value.code == "empty_bundle" and "send a zip, tar or tar.gz" in caught.value.message
    with pytest.raises(BundleError) as caught, open_bundle(tmp_path / "nowhere"):
        pass
    assert caught.value.code == "bundle_not_found" and "nowhere" in caught.value.message


# ---------------------------------------------------------------- pack_bundle


def test_pack_bundle_names_the_parts_and_opens_again(tmp_path):
    parts = folder(tmp_path, {"my-model.JOBLIB": b"m", "members.csv": TABLE, "others.parquet": b"p"})
    packed = pack_bundle(
        parts / "my-model.JOBLIB",
        parts / "members.csv",
        parts / "others.parquet",
        tmp_path / "out" / "bundle.zip",
        config={"label_column": "label"},
    )
    with zipfile.ZipFile(packed) as archive:
        assert sorted(archive.namelist()) == ["config.json", "model.joblib", "subject.parquet", "train.csv"]
        assert json.loads(archive.read("config.json")) == {"label_column": "label"}
    with open_bundle(packed) as bundle:
        assert bundle.config == {"label_column": "label"} and bundle.members_path.read_text() == TABLE


@pytest.mark.parametrize(
    ("names", "code", "fragment"),
    [
        (("model.pkl", "missing.csv", "subject.csv"), "file_not_found", "train file"),
        (("model.h5", "train.csv", "subject.csv"), "bad_model_name", "must end in .pkl"),
        (("model.pkl", "train.xlsx", "subject.csv"), "bad_table_name", "CSV or Parquet"),
    ],
)
def test_pack_bundle_refusals(tmp_path, names, code, fragment):
    parts = folder(tmp_path, {"model.pkl": b"m", "model.h5": b"m", "train.csv": TABLE, "train.xlsx": b"x"})
    parts.joinpath("subject.csv").write_text(TABLE)
    with pytest.raises(BundleError) as caught:
        pack_bundle(*(parts / name for name in names), tmp_path / "b.zip")
    assert caught.value.code == code and fragment in caught.value.message
    assert not (tmp_path / "b.zip").exists()
