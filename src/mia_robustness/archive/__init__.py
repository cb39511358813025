"""Safe unpacking of bundle archives (zip, tar, tar.gz, tar.bz2, tar.xz) into a private folder.

A bundle arrives from an untrusted caller, so unpacking assumes the archive is hostile:

* The kind is found by **content** (magic bytes), never by file name: a tar named ``.zip`` unpacks.
  Supported: ``zip`` (members stored or deflated), ``tar``, and tars compressed with gzip, bzip2 or xz
  (``tar.gz``, ``tar.bz2``, ``tar.xz``). A gzip/bzip2/xz file whose payload is not a tar, 7z, rar and zstd
  are refused with ``unsupported_archive_format``; anything else with ``unknown_archive_format``.
* Member names must be relative POSIX paths: absolute paths, ``..`` components, drive letters and
  backslashes are refused, as are symlinks, hard links, device files, fifos and duplicate names. Directory
  entries are skipped (folders are made as files need them) and macOS junk (``__MACOSX/``, ``._*``,
  ``.DS_Store``) is ignored. Files are created with ``O_EXCL | O_NOFOLLOW``, so nothing is overwritten and
  no link is followed, and every folder made is checked to resolve inside the destination.
* Sizes are counted while streaming, and the copy stops *before* writing the chunk that would cross a
  limit (:class:`BundleLimits`): total bytes written, number of entries, and the unpacked/compressed ratio
  of each member and of the whole archive (zip bombs). Declared sizes are checked first as a fast path but
  never trusted alone.
* A zip's entry count is read from its end-of-central-directory record (zip64 too) and its central
  directory is then walked record by record, header only, before :mod:`zipfile` parses it, so a directory
  of millions of entries is refused after reading at most ``max_members + 1`` record headers (see
  :mod:`mia_robustness.archive.zips`).
* An archive inside the archive (the legacy ``data.zip``) draws on what is left of the same limits: pass
  one :class:`UnpackBudget` to every :func:`extract_archive` call of a bundle.
* zip members compressed with bzip2 or LZMA are refused: Python's ``zipfile`` decompresses those without
  an output bound (a few bytes of bzip2 expand to gigabytes in memory before any check can run).

Every failure raises :class:`~mia_robustness.errors.BundleError` (or its subclass
:class:`~mia_robustness.errors.LimitError` for limits) with a specific ``code``:

``archive_unreadable``, ``empty_archive``, ``unknown_archive_format``, ``unsupported_archive_format``,
``corrupt_archive``, ``absolute_member_path``, ``member_path_traversal``, ``windows_member_path``,
``bad_member_name``, ``symlink_member``, ``hardlink_member``, ``special_file_member``,
``unsupported_member_type``, ``unsafe_member``, ``duplicate_member``, ``member_path_conflict``,
``encrypted_member``, ``unsupported_compression``; limits: ``unpacked_size_limit``,
``member_count_limit``, ``compression_ratio_limit``.

On any error the destination may hold partial files, but nothing is ever written outside it; the caller
removes the destination. :func:`extract_archive` unpacks one archive; handling a nested archive (the
legacy ``data.zip``) within :attr:`BundleLimits.max_nesting` is the caller's job.

The package's modules:

* this one: the public API (:class:`BundleLimits`, :class:`UnpackBudget`, :func:`detect_archive_kind`,
  :func:`extract_archive`) and the detection of an archive's kind by content;
* :mod:`~mia_robustness.archive.limits`: :class:`BundleLimits` and :class:`UnpackBudget`;
* :mod:`~mia_robustness.archive.unpack`: member-name and member-kind checks, the streaming writer that
  enforces the limits, and the read errors that mean a corrupt archive;
* :mod:`~mia_robustness.archive.zips`: the zip end record, the central-directory walk and zip extraction;
* :mod:`~mia_robustness.archive.tars`: tar streams (plain or compressed) and tar extraction.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import BundleError, MiaError
from .limits import BundleLimits, UnpackBudget
from .tars import _extract_tar, _open_decompressed
from .unpack import _READ_ERRORS, _Unpacker
from .zips import _extract_zip

__all__ = ["BundleLimits", "UnpackBudget", "detect_archive_kind", "extract_archive"]

# --------------------------------------------------------------------------------------------------
# Detection by content
# --------------------------------------------------------------------------------------------------

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_OTHER_FORMATS = (
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
)


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is the first 512-byte header of a tar (any dialect) or an empty tar's zero block."""
    if len(block) < 512:
        return False
    block = block[:512]
    if block == bytes(512):
        return True  # an archive that starts with the end-of-archive marker: an empty tar
    # Validate the header checksum the way tarfile does: the octal field up to the first NUL, compared
    # with the byte sum of the header taken with the checksum field as eight spaces (unsigned or signed).
    field = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        stored = int(field.decode("ascii") or "0", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = sum(struct.unpack("148b", block[:148])) + 8 * 32 + sum(struct.unpack("356b", block[156:]))
    return stored in (unsigned, signed)


def _sniff(path: Path) -> tuple[str | None, str]:
    """(kind, reason): the archive kind, or None and why (a phrase for the error message)."""
    try:
        if path.is_dir():
            return None, "a folder, not an archive file"
        with open(path, "rb") as handle:
            head = handle.read(4096)
            if not head:
                return None, "empty"
            if head.startswith(_ZIP_MAGICS):
                return "zip", ""
            compressed = None
            if head.startswith(_GZIP_MAGIC):
                compressed = ("tar.gz", "gzip")
            elif head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
                compressed = ("tar.bz2", "bzip2")
            elif head.startswith(_XZ_MAGIC):
                compressed = ("tar.xz", "xz")
            if compressed is not None:
                kind, codec = compressed
                handle.seek(0)
                try:
                    first = _open_decompressed(kind, handle).read(512)
                except _READ_ERRORS:
                    return None, f"{codec}-corrupt"
                if _is_tar_header(first):
                    return kind, ""
                return None, f"a {codec}-compressed file that is not a tar archive"
    except OSError as exc:
        raise BundleError(
            f"cannot read the archive {path.name!r}: {exc.strerror or exc}; check that the file exists and "
            "is readable",
            code="archive_unreadable",
        ) from None
    if _is_tar_header(head):
        return "tar", ""
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return None, what
    return None, "unknown"


def detect_archive_kind(path: Path) -> str | None:
    """The archive kind of the file at ``path``, found from its content (magic bytes), not its name.

    Parameters
    ----------
    path:
        A file (or folder, which gives None).

    Returns
    -------
    ``"zip"``, ``"tar"``, ``"tar.gz"``, ``"tar.bz2"`` or ``"tar.xz"`` (a compressed file counts only if
    its payload starts with a tar header), or None for anything else, including an empty file, a folder,
    a bare gzip of a non-tar, and a compressed file too corrupt to read its first 512 bytes.

    Raises :class:`BundleError` (``archive_unreadable``) only when the file cannot be opened.
    """
    return _sniff(Path(path))[0]


def _format_error(path: Path, reason: str) -> BundleError:
    """The error for an archive whose kind was not recognised, worded from :func:`_sniff`'s reason."""
    supported = "zip, tar, tar.gz, tar.bz2 or tar.xz"
    if reason == "empty":
        return BundleError(
            f"the archive {path.name!r} is empty (0 bytes); send a {supported} archive with the bundle's files",
            code="empty_archive",
        )
    if reason.endswith("-corrupt"):
        codec = reason.split("-")[0]
        return BundleError(
            f"the {codec}-compressed archive {path.name!r} is corrupt or truncated; re-create it and send it "
            "again",
            code="corrupt_archive",
        )
    if reason == "unknown":
        return BundleError(
            f"{path.name!r} is not a {supported} archive (its content matches none of them); pack the "
            "bundle's files with zip or tar",
            code="unknown_archive_format",
        )
    return BundleError(
        f"{path.name!r} is {reason}; only {supported} archives are supported, so re-pack the bundle's files "
        "with zip or tar",
        code="unsupported_archive_format",
    )


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def extract_archive(
    archive: Path,
    dest: Path,
    limits: BundleLimits = BundleLimits(),  # noqa: B008
    *,
    budget: UnpackBudget | None = None,
) -> list[Path]:
    """Unpack one archive into ``dest`` safely and return the regular files written.

    Parameters
    ----------
    archive:
        The archive file; its kind is found from its content (see :func:`detect_archive_kind`).
    dest:
        An existing, empty folder to unpack into. On error it may hold partial files (nothing is ever
        written outside it); the caller removes it.
    limits:
        Unpacking limits (bytes, entries, compression ratio). Nested archives are not unpacked here.
    budget:
        What the bundle has left of ``limits`` when this archive is one of several unpacked for it (the
        legacy ``data.zip`` after its outer archive); the entries read and bytes written are deducted
        from it, also on failure. None gives this archive the whole of ``limits``.

    Returns
    -------
    Paths of the files written, in archive order (folders, skipped entries and macOS junk excluded).

    Raises
    ------
    BundleError
        Unknown/corrupt/empty archive or an unsafe member (see the module docstring for the codes).
    LimitError
        A limit of ``limits`` was crossed; unpacking stopped before writing past it.
    """
    archive = Path(archive)
    dest = Path(dest)
    try:
        dest_ok = dest.is_dir() and not dest.is_symlink() and not any(dest.iterdir())
    except OSError:
        dest_ok = False
    if not dest_ok:
        raise MiaError(
            f"unpacking needs an existing empty folder, got {str(dest)!r}", code="bad_extract_destination"
        )
    kind, reason = _sniff(archive)
    if kind is None:
        raise _format_error(archive, reason)
    if budget is None:
        budget = UnpackBudget.of(limits)
    unpacker = _Unpacker(dest, limits, archive.name, budget)
    try:
        if kind == "zip":
            _extract_zip(archive, unpacker)
        else:
            _extract_tar(archive, kind, unpacker)
        return unpacker.finish()
    finally:
        budget.bytes_left -= unpacker.total_written
        budget.members_left -= unpacker.members
