"""``check_bundle`` and ``make_bundle``: find out at packing time what the audit would refuse after an upload.

The check loads the model file through the audit's loader in the audit's sandbox child (the file is a
stranger's even here), reads both tables as the audit reads them, and runs
:func:`~mia_robustness.model_check.check_model`: a fitted classifier, the label column in both tables, the
model's feature columns, a few rows of each table scored. It runs on the files as the user named them, so
an error about ``prep_only.skops`` says ``prep_only.skops``, never the ``model.skops`` it is packed as.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .archive import BundleLimits
from .bundle import Bundle, check_part_names, open_bundle, pack_bundle
from .bundle_audit import resolve_options
from .deadline import Deadline
from .model_check import CHECK_ROWS, CHECK_SEED, CheckRequest, ModelCheck, check_model
from .options import AuditOptions, options_from_mapping
from .sandbox.session import SandboxedModel, default_address_space_mb
from .sandbox.stage import ModelFiles, load_files
from .supplied import supplied_target
from .tables import read_table
from .target import ScoreRequest


def check_files(
    files: ModelFiles,
    *,
    label_column: str | None = None,
    rows: int = CHECK_ROWS,
    sandbox: bool = True,
    workdir: str | Path | None = None,
    timeout: float | None = None,
    sandbox_memory_mb: int | None = None,
) -> ModelCheck:
    """Check a model file and its two tables (see :func:`~mia_robustness.model_check.check_model`).

    Parameters
    ----------
    files:
        The model file, the members table and the non-members table, under the user's own names.
    label_column:
        The label column, or ``None`` for the audit's default (``label``/``target``/``class``/``y``, else
        the last column).
    rows:
        Rows of each table to score.
    sandbox:
        Load and score the model in a confined child process, as the audit does; ``False`` runs its code
        in this process: only for models you trust.
    workdir:
        Parent folder of the sandbox's private folder (the system's temporary folder when ``None``).
    timeout:
        Stop after this many seconds (``LimitError``, code ``audit_timeout``); ``None`` for no limit.
    sandbox_memory_mb:
        The sandbox child's address-space limit; ``None`` for an estimate from the files' sizes.

    Raises
    ------
    MiaError
        The loader's, the tables' and the target's errors, as the audit would raise them.
    """
    request = CheckRequest(label_column=label_column, rows=rows)
    if not sandbox:
        model, members, non_members, _ = load_files(files)
        return check_model(
            model,
            members,
            non_members,
            request,
            model_name=files.model.name,
            table_names=(files.members.name, files.non_members.name),
        )
    child = SandboxedModel(
        files,
        work_parent=None if workdir is None else Path(workdir),
        threads=1,
        address_space_mb=sandbox_memory_mb or default_address_space_mb(files, 1, 0, None),
        deadline=Deadline(timeout),
        progress=lambda stage, done, total: None,
    )
    try:
        return child.check(request)
    finally:
        child.close()


def check_bundle(
    source: str | Path | bytes,
    overrides: Mapping[str, Any] | None = None,
    *,
    limits: BundleLimits | None = None,
    **check: Any,
) -> ModelCheck:
    """Check the bundle at ``source`` (a folder, an archive file or an archive's bytes) without auditing it.

    ``overrides`` are audit options laid over the bundle's ``config.json`` (only ``label_column`` matters
    here, but every option is parsed, as the audit would); ``check`` takes :func:`check_files`'s keyword
    arguments but ``label_column``. Returns what the check found; raises what the audit would.
    """
    with open_bundle(source, limits=limits, workdir=check.get("workdir")) as bundle:
        options = resolve_options(bundle.config, overrides)
        if bundle.predictions is not None:
            return _check_supplied(bundle, options)
        files = ModelFiles(bundle.model_path, bundle.members_path, bundle.non_members_path, options.classes)
        return check_files(files, label_column=options.label_column, **check)


def _check_supplied(bundle: Bundle, options: AuditOptions) -> ModelCheck:
    """A predictions bundle's check: every supplied output checked as the audit checks it (there is no model
    to load, so nothing runs in a sandbox), every balanced row."""
    members = read_table(bundle.members_path, "members")
    non_members = read_table(bundle.non_members_path, "non-members")
    assert bundle.predictions is not None
    scored = supplied_target(
        bundle.predictions, members, non_members, ScoreRequest(options.label_column, CHECK_SEED)
    )
    return ModelCheck(
        model_class=scored.model_class,
        estimator_class=scored.estimator_class,
        n_classes=len(scored.classes),
        output_kind=scored.output_kind,
        label_column=scored.label_column,
        n_features=scored.n_features,
        members_rows=len(members),
        non_members_rows=len(non_members),
        rows_scored=scored.rows_per_side,
    )


def make_bundle(
    model: str | Path,
    members: str | Path,
    non_members: str | Path,
    output: str | Path,
    *,
    label_column: str | None = None,
    classes: str | Sequence[str | int] | None = None,
    check: bool = True,
    **check_arguments: Any,
) -> ModelCheck | None:
    """Check a model file and its two tables, then pack them into the bundle zip ``output``.

    Parameters
    ----------
    model, members, non_members:
        The model file (``.pkl``, ``.pickle``, ``.joblib``, ``.skops``), the members table and the
        non-members table (CSV or Parquet).
    output:
        The bundle zip to write; nothing is written when the check fails.
    label_column:
        Stored in the bundle's ``config.json`` (and checked).
    classes:
        The class names of a model file that knows its classes only as ``0..K-1`` (a native booster, an ONNX
        graph exported from PyTorch), in that order; stored in ``config.json`` (and checked).
    check:
        ``False`` packs the files unchecked.
    **check_arguments:
        :func:`check_files`'s ``rows``, ``sandbox``, ``workdir``, ``timeout``, ``sandbox_memory_mb``.

    Returns
    -------
    What the check found, or ``None`` when it was skipped.
    """
    parsed = options_from_mapping({"label_column": label_column, "classes": classes})
    label_column = parsed.label_column
    parts = ModelFiles(Path(model), Path(members), Path(non_members), parsed.classes)
    check_part_names(parts.model, parts.members, parts.non_members, Path(output))
    checked = check_files(parts, label_column=label_column, **check_arguments) if check else None
    config = {"label_column": label_column} if label_column else {}
    if parsed.classes is not None:
        config["classes"] = list(parsed.classes)
    config = config or None
    pack_bundle(parts.model, parts.members, parts.non_members, Path(output), config=config)
    return checked
