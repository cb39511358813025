"""What a run sends: each bundle as one archive with a name, and the audit options checked before upload.

A folder is packed into a zip by :func:`mia_robustness.bundle.pack_bundle`, the function behind
``mia-robustness bundle``, from the parts :func:`~mia_robustness.bundle.locate_parts` finds (its
``config.json`` goes along). An archive is sent as it is: the container recognises the kind by content.
Nothing here opens the model file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..archive import BundleLimits, detect_archive_kind
from ..bundle import locate_parts, pack_bundle
from ..errors import BundleError, MiaError, SageMakerError
from ..options import normalize_name, options_from_mapping
from ..training import MAX_RUNTIME, parse_max_runtime

ARCHIVE_SUFFIXES = {
    "zip": ".zip",
    "tar": ".tar",
    "tar.gz": ".tar.gz",
    "tar.bz2": ".tar.bz2",
    "tar.xz": ".tar.xz",
}
NAME_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar")
# Characters kept in a bundle's name, which names its S3 object and its report files.
UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 100


def bundle_name(path: Path) -> str:
    """The name a bundle's reports get: its file name without the archive suffix, or its folder's name."""
    name = path.name
    for suffix in NAME_SUFFIXES:
        if path.is_file() and name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = UNSAFE_NAME_CHARACTERS.sub("-", name).strip("-.")[:MAX_NAME_CHARS]
    return name or "bundle"


def bundle_archives(bundles: Sequence[str | Path], scratch: Path) -> dict[str, Path]:
    """Bundle name -> archive to upload; folders are packed into ``scratch`` (which the caller removes)."""
    if not bundles:
        raise SageMakerError("give at least one bundle (an archive or a folder)", code="no_bundles")
    archives: dict[str, Path] = {}
    for given in bundles:
        path = Path(given)
        name = bundle_name(path)
        if name in archives:
            raise SageMakerError(
                f"two bundles are both named {name!r}; their reports would overwrite each other: rename one",
                code="duplicate_bundle_name",
            )
        if path.is_dir():
            archives[name] = _pack_folder(path, scratch / name)
        elif path.is_file():
            kind = detect_archive_kind(path)
            if kind is None:
                raise BundleError(
                    f"{path} is not a bundle archive (zip, tar, tar.gz, tar.bz2 or tar.xz) nor a folder",
                    code="not_an_archive",
                )
            archives[name] = path
        else:
            raise BundleError(f"the bundle {path} does not exist", code="file_not_found")
    return archives


def archive_suffix(path: Path) -> str:
    """The archive's proper suffix, from its content (``.zip`` for a packed folder)."""
    return ARCHIVE_SUFFIXES.get(detect_archive_kind(path) or "zip", ".zip")


def _pack_folder(folder: Path, scratch: Path) -> Path:
    scratch.mkdir(parents=True)
    parts = locate_parts(folder, scratch, BundleLimits())
    return pack_bundle(
        parts.model_path,
        parts.members_path,
        parts.non_members_path,
        scratch / "bundle.zip",
        config=parts.config or None,
    )


def check_options(options: dict[str, str], mode: str) -> dict[str, str]:
    """Validate audit options as the container will, so that a typo costs no job; return them as strings.

    Names are normalised (``attack-models`` -> ``attack_models``). ``max_runtime`` (seconds) is a
    training job's own hyperparameter and is accepted there only.
    """
    checked = {normalize_name(name): str(value) for name, value in options.items()}
    for name, value in checked.items():
        if ";" in value:
            raise SageMakerError(
                f"option {name}: a value cannot hold ';' (it separates options in the header form)",
                code="bad_option",
            )
    audit_options = dict(checked)
    if mode == "training" and MAX_RUNTIME in audit_options:
        parse_max_runtime(audit_options.pop(MAX_RUNTIME))
    try:
        options_from_mapping(audit_options)
    except MiaError as error:
        raise SageMakerError(error.message, code=error.code) from None
    return checked
