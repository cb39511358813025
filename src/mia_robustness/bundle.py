"""Bundle reading: an archive, a folder or raw archive bytes -> the paths of its parts.

A bundle holds exactly one model file, the members table and the non-members table, and optionally
``config.json``; a predictions bundle holds no model file and names, in ``config.json``'s ``predictions``
(:mod:`mia_robustness.predictions`), the table columns that hold the model's outputs. Two layouts are
recognised:

* standard: ``train.csv`` (members) and ``subject.csv`` (non-members), CSV or Parquet;
* legacy (the product this one replaces): ``model.pkl`` beside a nested ``data.zip`` that holds
  ``train_mia.csv`` (members) and ``test_mia.csv`` (non-members).

Archives are unpacked by :mod:`mia_robustness.archive` into a private temporary folder that is removed
when the ``open_bundle`` context ends, on every path. A nested ``data.zip`` draws on what its outer
archive left of the bundle limits (one :class:`~mia_robustness.archive.UnpackBudget` per bundle), and
``config.json`` is parsed by :func:`~mia_robustness.json_config.load_json_config` (size, depth and number
limits).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archive import BundleLimits, UnpackBudget, extract_archive
from .errors import BundleError
from .json_config import MAX_JSON_CONFIG_BYTES, load_json_config, shown
from .loading import MODEL_SUFFIXES
from .loading.boosters import native_kind
from .loading.messages import HEAD_BYTES
from .predictions import PREDICTIONS_KEY, PredictionsSpec, predictions_spec

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
MEMBER_STEMS = ("train",)
NON_MEMBER_STEMS = ("subject",)
LEGACY_MEMBER_STEMS = ("train_mia",)
LEGACY_NON_MEMBER_STEMS = ("test_mia",)
LEGACY_DATA_ARCHIVE = "data.zip"
CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = MAX_JSON_CONFIG_BYTES


@dataclass(frozen=True)
class Bundle:
    """The located parts of a bundle.

    Attributes
    ----------
    model_path, members_path, non_members_path:
        Files inside the bundle's (possibly temporary) folder; ``model_path`` is ``None`` in a
        predictions bundle.
    config:
        The parsed ``config.json`` (an empty dict when absent).
    layout:
        ``"standard"`` or ``"legacy"`` (``data.zip`` with ``train_mia.csv`` / ``test_mia.csv``).
    predictions:
        Where the tables hold the target's outputs (``config.json``'s ``predictions``), in a bundle that
        holds them instead of a model file; ``None`` in a model bundle.
    """

    model_path: Path | None
    members_path: Path
    non_members_path: Path
    config: dict[str, Any] = field(default_factory=dict)
    layout: str = "standard"
    predictions: PredictionsSpec | None = None


def _is_junk(path: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def _files_under(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and not _is_junk(p.relative_to(root))
    )


def _pick_one(files: list[Path], stems: tuple[str, ...], suffixes: tuple[str, ...]) -> Path | None:
    matches = [p for p in files if p.stem.lower() in stems and p.suffix.lower() in suffixes]
    if len(matches) > 1:
        names = ", ".join(shown(p.name, 80) for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise BundleError(
            f"the bundle has more than one {stems[0]} table ({names}); keep exactly one",
            code="ambiguous_table",
        )
    return matches[0] if matches else None


def _read_config(files: list[Path]) -> dict[str, Any]:
    configs = [p for p in files if p.name.lower() == CONFIG_NAME]
    if not configs:
        return {}
    if len(configs) > 1:
        raise BundleError(
            "the bundle has more than one config.json; keep exactly one", code="ambiguous_config"
        )
    # Read at most one byte over the cap, so a huge file is refused without being read whole.
    with open(configs[0], "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    return load_json_config(
        data, CONFIG_NAME, error=BundleError, code="bad_config", max_bytes=MAX_CONFIG_BYTES
    )


# Suffixes other files share with native model files (a README.txt, a feature list in JSON): a file with
# one is the model only when the bundle has no other model file and, among several, when it holds one.
_SHARED_SUFFIXES = (".json", ".txt")


def _model_files(files: list[Path]) -> list[Path]:
    """The candidates for the bundle's model file (config.json never is one)."""
    named = [p for p in files if p.suffix.lower() in MODEL_SUFFIXES and p.name.lower() != CONFIG_NAME]
    distinct = [p for p in named if p.suffix.lower() not in _SHARED_SUFFIXES]
    if distinct or len(named) < 2:
        return distinct or named
    native = [path for path in named if _holds_native(path)]
    return native or named


def _holds_native(path: Path) -> bool:
    """Whether the file's first bytes are those of a native booster model."""
    with open(path, "rb") as handle:
        return native_kind(handle.read(HEAD_BYTES)) is not None


def _without_nested_bundles(files: list[Path]) -> list[Path]:
    """``files`` less those in folders below the model's that hold a bundle of their own (a model file and
    both tables): a second bundle kept inside this one (``sample_input/xgboost/`` inside ``sample_input/``)
    is not part of it. A lone second model file in a subfolder stays, and is ambiguous."""
    candidates = _model_files(files)
    if not candidates:
        return files
    top = min(len(p.parts) for p in candidates)
    named = [p for p in files if p.suffix.lower() in MODEL_SUFFIXES and p.name.lower() != CONFIG_NAME]
    stems = {(p.parent, p.stem.lower()) for p in files if p.suffix.lower() in TABLE_SUFFIXES}
    nested = {
        p.parent
        for p in named
        if len(p.parts) > top
        and any((p.parent, stem) in stems for stem in MEMBER_STEMS)
        and any((p.parent, stem) in stems for stem in NON_MEMBER_STEMS)
    }
    return [f for f in files if not any(folder == f.parent or folder in f.parents for folder in nested)]


def locate_parts(
    root: Path, scratch: Path, limits: BundleLimits, budget: UnpackBudget | None = None
) -> Bundle:
    """Find the model, tables and config under ``root``; unpack a legacy ``data.zip`` into ``scratch``.

    ``budget`` is what unpacking the bundle's archive left of ``limits``; ``data.zip`` draws on it (a
    folder bundle, which unpacked nothing, passes None: data.zip then gets all of ``limits``).
    """
    files = _without_nested_bundles(_files_under(root))
    models = _model_files(files)
    config = _read_config(files)
    predictions = predictions_spec(config[PREDICTIONS_KEY]) if PREDICTIONS_KEY in config else None
    if predictions is not None:
        # Beside supplied outputs, a README.txt or a feature list in JSON is not a model: only a file that is
        # one by its suffix or by its content counts.
        models = [p for p in models if p.suffix.lower() not in _SHARED_SUFFIXES or _holds_native(p)]
    if len(models) > 1:
        names = ", ".join(shown(str(p.relative_to(root)), 80) for p in models[:5])
        names += ", ..." if len(models) > 5 else ""
        raise BundleError(
            f"the bundle has {len(models)} model files ({names}); keep exactly one", code="ambiguous_model"
        )
    if not models and predictions is None:
        raise BundleError(
            f"the bundle has no model file; add one file ending in {', '.join(MODEL_SUFFIXES)}, or, for a "
            "model that cannot leave its home, its outputs as columns of the tables named in config.json's "
            '"predictions" (see the README, "Predictions instead of a model")',
            code="missing_model",
        )
    if models and predictions is not None:
        raise BundleError(
            f"the bundle has both a model file ({shown(str(models[0].relative_to(root)), 80)}) and config.json's "
            '"predictions" (the model\'s outputs supplied in the tables); keep one: remove the model file to audit '
            'the supplied outputs, or the "predictions" section to audit the model',
            code="model_and_predictions",
        )

    members = _pick_one(files, MEMBER_STEMS, TABLE_SUFFIXES)
    non_members = _pick_one(files, NON_MEMBER_STEMS, TABLE_SUFFIXES)
    layout = "standard"
    if members is None and non_members is None:
        nested = [p for p in files if p.name.lower() == LEGACY_DATA_ARCHIVE]
        if nested and limits.max_nesting < 1:
            raise BundleError(
                "nested archives are disabled (max_nesting=0); unpack data.zip into the bundle",
                code="nesting_limit",
            )
        if nested:
            if len(nested) > 1:
                raise BundleError(
                    "the bundle has more than one data.zip; keep exactly one", code="ambiguous_table"
                )
            target = scratch / "data"
            target.mkdir()
            extract_archive(nested[0], target, limits, budget=budget)
            files = files + _files_under(target)
        members = _pick_one(files, LEGACY_MEMBER_STEMS, TABLE_SUFFIXES)
        non_members = _pick_one(files, LEGACY_NON_MEMBER_STEMS, TABLE_SUFFIXES)
        layout = "legacy"
        if members is None or non_members is None:
            raise BundleError(
                "the bundle has no members and non-members tables; add train.csv (the model's training rows) and "
                "subject.csv (rows it never saw), or the legacy data.zip with train_mia.csv and test_mia.csv",
                code="missing_tables",
            )
    elif members is None:
        raise BundleError(
            "the bundle has subject.csv but no train.csv; add the model's training rows as train.csv",
            code="missing_members",
        )
    elif non_members is None:
        raise BundleError(
            "the bundle has train.csv but no subject.csv; add rows the model never saw as subject.csv",
            code="missing_non_members",
        )
    return Bundle(models[0] if models else None, members, non_members, config, layout, predictions)


@contextlib.contextmanager
def open_bundle(
    source: str | Path | bytes, *, limits: BundleLimits | None = None, workdir: str | Path | None = None
) -> Iterator[Bundle]:
    """Yield the :class:`Bundle` in ``source``, unpacking archives into a private temporary folder.

    Parameters
    ----------
    source:
        A bundle folder, an archive file (zip, tar, tar.gz, tar.bz2, tar.xz; recognised by content), or an archive's bytes.
    limits:
        Unpacking limits (size, member count, compression ratio, nesting); defaults when ``None``.
    workdir:
        Parent folder of the private temporary folder (the system default when ``None``).
    """
    limits = limits or BundleLimits()
    scratch = Path(tempfile.mkdtemp(prefix="mia-bundle-", dir=workdir))
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not source:
                raise BundleError(
                    "the bundle is empty: send a zip, tar or tar.gz archive", code="empty_bundle"
                )
            upload = scratch / "upload.bin"
            upload.write_bytes(source)
            yield _open_archive(upload, scratch, limits)
            return
        path = Path(source)
        if path.is_dir():
            yield locate_parts(path, scratch, limits)
        elif path.is_file():
            yield _open_archive(path, scratch, limits)
        else:
            raise BundleError(
                f"{path} does not exist; give a bundle folder or a zip / tar / tar.gz archive",
                code="bundle_not_found",
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _open_archive(archive: Path, scratch: Path, limits: BundleLimits) -> Bundle:
    # extract_archive recognises the kind by content and says precisely what is wrong with one it can't read.
    root = scratch / "bundle"
    root.mkdir()
    budget = UnpackBudget.of(limits)  # one allowance for the archive and the data.zip inside it
    extract_archive(archive, root, limits, budget=budget)
    return locate_parts(root, scratch, limits, budget)


def check_part_names(
    model: Path | None, members: Path, non_members: Path, output: Path | None = None
) -> None:
    """Refuse parts that do not exist or whose names the bundle reader would not recognise, and an
    ``output`` that is a folder or one of the parts (writing it would destroy that part before it is read).
    ``model`` is ``None`` for a predictions bundle."""
    parts = [
        (path, what)
        for path, what in ((model, "model"), (members, "train"), (non_members, "subject"))
        if path
    ]
    for path, what in parts:
        if not Path(path).is_file():
            raise BundleError(f"the {what} file {path} does not exist", code="file_not_found")
    if model is not None and Path(model).suffix.lower() not in MODEL_SUFFIXES:
        raise BundleError(
            f"the model file must end in {', '.join(MODEL_SUFFIXES)}: got {Path(model).name}",
            code="bad_model_name",
        )
    for path in (members, non_members):
        if Path(path).suffix.lower() not in TABLE_SUFFIXES:
            raise BundleError(
                f"tables must be CSV or Parquet (.csv, .parquet): got {Path(path).name}",
                code="bad_table_name",
            )
    if output is None:
        return
    if Path(output).is_dir():
        raise BundleError(
            f"the bundle's output {output} is a folder; give a .zip file name", code="bad_output"
        )
    for path, _ in parts:
        if Path(output).exists() and Path(output).samefile(path):
            raise BundleError(
                f"the bundle's output {output} is its part {path}; writing it would destroy that file, so give "
                "the bundle a new file name",
                code="bad_output",
            )


def pack_bundle(
    model: Path | None,
    members: Path,
    non_members: Path,
    output: Path,
    *,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a zip bundle from a model file (``None`` for a predictions bundle, whose ``config`` names its
    output columns) and the two tables (kept in their own format).

    The parts are renamed to what :func:`locate_parts` looks for (``model.<suffix>``, ``train.<suffix>``,
    ``subject.<suffix>``); checking what they hold is :func:`mia_robustness.bundle_check.make_bundle`'s.
    """
    output = Path(output)
    check_part_names(model, members, non_members, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")  # a failed write leaves no half bundle behind
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            if model is not None:
                archive.write(model, "model" + Path(model).suffix.lower())
            archive.write(members, "train" + Path(members).suffix.lower())
            archive.write(non_members, "subject" + Path(non_members).suffix.lower())
            if config:
                archive.writestr(CONFIG_NAME, json.dumps(config, indent=2))
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return output
