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
  directory is then walked record by record, header only, before :mod:`zipfile` parses it: a directory of
  millions of entries is refused after reading at most ``max_members + 1`` record headers, instead of
  after ``zipfile`` has built an object for each (about 350 bytes and 7 us apiece: 2 million
  records took 0.7 GiB and 14 s).
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
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import math
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError, LimitError, MiaError, OptionsError

__all__ = ["BundleLimits", "UnpackBudget", "detect_archive_kind", "extract_archive"]

# Bytes copied per read/write step; also the granularity of the streaming limit checks.
_CHUNK = 64 * 1024
# Below this many unpacked bytes the ratio limit is not applied: small files (a config.json of a few
# hundred bytes, a CSV of one repeated value) legitimately compress far beyond any sane bomb ratio, and
# a member this small cannot hurt anyone.
_RATIO_FLOOR_BYTES = 1024 * 1024
# Compressed bytes handed to a gzip/bzip2/xz decompressor per read. Small reads keep the count of
# "compressed bytes consumed so far" close to the truth, so the ratio check on a tar.gz bomb fires after
# a few MiB instead of after whatever one large read buffer expands to.
_COMPRESSED_READ = 16 * 1024
# tarfile reads a pax / GNU long-name header's declared size in one call; legitimate ones are a few KiB.
_MAX_TAR_HEADER_READ = 1024 * 1024
# How much of what follows a tar's end-of-archive marker is checked to be zero padding.
_MAX_TAR_TRAILER_CHECK = 8 * 1024 * 1024
# zip end-of-central-directory records and central-directory record headers (see APPNOTE.TXT 4.3.12-16).
_ZIP_EOCD = struct.Struct("<4s4H2LH")
_ZIP_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_ZIP_CENTRAL = struct.Struct("<4s6H3L5H2L")
_ZIP_CENTRAL_SIGNATURE = b"PK\x01\x02"
_ZIP_MAX_COMMENT = 0xFFFF
# zip compression methods we decompress: stored and deflate (see the module docstring for why not others).
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# What the standard-library readers raise on malformed input. Anything in this tuple, raised while
# *reading* an archive, means the archive is corrupt (write-side OSErrors are converted before they can
# reach a handler for this tuple).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,  # includes UnicodeDecodeError from a bad member-name encoding
    struct.error,
    NotImplementedError,
    RuntimeError,
    IndexError,
    KeyError,
    OverflowError,
    TypeError,
)


@dataclass(frozen=True)
class BundleLimits:
    """Limits that make unpacking an untrusted archive safe.

    Attributes
    ----------
    max_unpacked_bytes:
        Total bytes that may be written while unpacking one archive.
    max_members:
        Entries (files, folders, anything) one archive may hold.
    max_compression_ratio:
        Highest unpacked/compressed ratio allowed for one member and for the whole archive (zip bombs).
        Only applied once more than 1 MiB has been unpacked, since tiny files compress arbitrarily well.
    max_nesting:
        How many levels of archive inside an archive the caller may unpack (the legacy layout's
        ``data.zip`` needs 1; 0 forbids nested archives). :func:`extract_archive` never recurses itself.

    The server builds this from its environment; nothing here reads environment variables.
    """

    max_unpacked_bytes: int = 2 * 1024**3
    max_members: int = 1000
    max_compression_ratio: float = 200.0
    max_nesting: int = 1

    def __post_init__(self) -> None:
        for name, low in (("max_unpacked_bytes", 1), ("max_members", 1), ("max_nesting", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise OptionsError(
                    f"bundle limit {name} must be an integer >= {low}, got {value!r}", code="bad_bundle_limit"
                )
        ratio = self.max_compression_ratio
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or ratio < 1
        ):
            raise OptionsError(
                f"bundle limit max_compression_ratio must be a finite number >= 1, got {ratio!r}",
                code="bad_bundle_limit",
            )


@dataclass
class UnpackBudget:
    """What one bundle may still unpack: shared by its archive and every archive unpacked from it.

    :func:`extract_archive` enforces the smaller of these and :class:`BundleLimits`, and deducts what it
    counted (entries and bytes written) when it returns or fails. So the legacy ``data.zip`` gets what
    the outer archive left, not a fresh allowance: an archive cannot double the limits by nesting.

    Attributes
    ----------
    bytes_left:
        Bytes that may still be written (starts at ``max_unpacked_bytes``).
    members_left:
        Entries that may still be read (starts at ``max_members``).
    """

    bytes_left: int
    members_left: int

    @classmethod
    def of(cls, limits: BundleLimits) -> UnpackBudget:
        """A full budget for one bundle under ``limits``."""
        return cls(bytes_left=limits.max_unpacked_bytes, members_left=limits.max_members)


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


def _open_decompressed(kind: str, fileobj):
    """A decompressing reader over ``fileobj`` for the compressed tar kinds (bounded reads for all three)."""
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if kind == "tar.bz2":
        return bz2.BZ2File(fileobj, mode="rb")
    if kind == "tar.xz":
        return lzma.LZMAFile(fileobj, mode="rb")
    return fileobj


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
# Shared member checks and the streaming writer
# --------------------------------------------------------------------------------------------------


def _is_macos_junk(parts: tuple[str, ...]) -> bool:
    """Finder/AppleDouble metadata that macOS adds to archives; never part of a bundle."""
    return "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


def _shown_name(name: str) -> str:
    """A member name for a message: ASCII-escaped (no control or bidi characters) and cut at 200 characters."""
    return ascii(name) if len(name) <= 200 else ascii(name[:200]) + "..."


def _member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, after refusing anything that could leave the destination.

    An empty result means the name denotes the archive root (``./``); leading ``./`` is allowed because
    ``tar -C dir .`` writes it.
    """
    shown = _shown_name(name)
    if "\x00" in name:
        raise BundleError(
            f"archive member name {shown} contains a NUL byte; rename it", code="bad_member_name"
        )
    if "\\" in name or _DRIVE_LETTER.match(name):
        raise BundleError(
            f"archive member {shown} has a Windows-style path (backslash or drive letter); re-create the "
            "archive with relative paths using '/'",
            code="windows_member_path",
        )
    if name.startswith("/"):
        raise BundleError(
            f"archive member {shown} has an absolute path; re-create the archive with paths relative to the "
            "bundle folder",
            code="absolute_member_path",
        )
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise BundleError(
            f"archive member {shown} has a '..' component that would escape the bundle folder; re-create "
            "the archive with plain relative paths",
            code="member_path_traversal",
        )
    return parts


def _refuse_kind(kind: str, name: str) -> None:
    """Raise for member kinds that are never unpacked (links and special files)."""
    shown = _shown_name(name)
    if kind == "symlink":
        raise BundleError(
            f"archive member {shown} is a symbolic link; links are not allowed in a bundle, so put the real "
            "file in the archive",
            code="symlink_member",
        )
    if kind == "hardlink":
        raise BundleError(
            f"archive member {shown} is a hard link; links are not allowed in a bundle, so put the real file "
            "in the archive",
            code="hardlink_member",
        )
    if kind == "special":
        raise BundleError(
            f"archive member {shown} is a device file, fifo or socket; a bundle may hold only regular files",
            code="special_file_member",
        )
    if kind not in ("file", "dir"):
        raise BundleError(
            f"archive member {shown} has an entry type this tool does not unpack; a bundle may hold only "
            "regular files and folders",
            code="unsupported_member_type",
        )


def _size_text(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


class _Unpacker:
    """Bookkeeping shared by the zip and tar paths: names seen, bytes written, limits, and file writing.

    Parameters
    ----------
    dest:
        The existing, empty destination folder.
    limits:
        The limits to enforce.
    archive_name:
        The archive's file name, for messages.
    budget:
        What the bundle has left; the caps are the smaller of it and ``limits``.
    """

    def __init__(self, dest: Path, limits: BundleLimits, archive_name: str, budget: UnpackBudget) -> None:
        self.dest = dest
        self.dest_real = os.path.realpath(dest)
        self.limits = limits
        self.archive_name = archive_name
        # Caps for this archive: what the bundle has left (all of the limits unless it is a nested one).
        self.max_bytes = max(0, min(limits.max_unpacked_bytes, budget.bytes_left))
        self.max_members = max(0, min(limits.max_members, budget.members_left))
        self.members = 0
        self.total_written = 0
        self.files: set[tuple[str, ...]] = set()
        self.dirs: set[tuple[str, ...]] = set()
        self.written: list[Path] = []

    # -- limits ------------------------------------------------------------------------------------

    def count_member(self) -> None:
        """Count one archive entry against ``max_members``."""
        self.members += 1
        if self.members > self.max_members:
            raise self.member_error(f"has more than {self.max_members} entries")

    def member_error(self, detail: str) -> LimitError:
        limit = self.limits.max_members
        used = limit - self.max_members
        shared = f" ({used} of them used by the archive it came in)" if used > 0 else ""
        return LimitError(
            f"the archive {self.archive_name!r} {detail} (limit max_members={limit} for the bundle and any "
            f"archive inside it{shared}); put fewer files in the bundle, or raise the max_members bundle "
            "limit if this is expected",
            code="member_count_limit",
        )

    def size_error(self, detail: str) -> LimitError:
        limit = self.limits.max_unpacked_bytes
        used = limit - self.max_bytes
        shared = f", {_size_text(used)} of it used by the archive it came in" if used > 0 else ""
        return LimitError(
            f"the archive {self.archive_name!r} {detail}, more than the {_size_text(limit)} allowed (limit "
            f"max_unpacked_bytes={limit} for the bundle and any archive inside it{shared}); make the bundle "
            "smaller, or raise the max_unpacked_bytes bundle limit if this is expected",
            code="unpacked_size_limit",
        )

    def ratio_error(self, what: str, ratio: float) -> LimitError:
        limit = self.limits.max_compression_ratio
        return LimitError(
            f"{what} in the archive {self.archive_name!r} expands more than {limit:g} times its compressed "
            f"size (at least {ratio:.0f}x; limit max_compression_ratio), which looks like a zip bomb; send "
            "the files uncompressed or less compressible, or raise the max_compression_ratio bundle limit "
            "if this is expected",
            code="compression_ratio_limit",
        )

    def check_ratio(self, what: str, unpacked: int, compressed: float) -> None:
        """Raise if ``unpacked`` bytes came from too few ``compressed`` bytes (past the small-file floor)."""
        if unpacked > _RATIO_FLOOR_BYTES and unpacked > self.limits.max_compression_ratio * max(
            compressed, 1
        ):
            raise self.ratio_error(what, unpacked / max(compressed, 1))

    # -- names -------------------------------------------------------------------------------------

    def plan(self, name: str, kind: str) -> tuple[str, ...] | None:
        """Validate one entry; return its path parts if it is a file to write, None if it is skipped."""
        parts = _member_parts(name)
        _refuse_kind(kind, name)
        if kind == "dir" or not parts or _is_macos_junk(parts):
            return None
        shown = _shown_name("/".join(parts))
        if parts in self.files:
            raise BundleError(
                f"the archive {self.archive_name!r} holds {shown} more than once; re-create it with each file "
                "once",
                code="duplicate_member",
            )
        if parts in self.dirs or any(parts[:i] in self.files for i in range(1, len(parts))):
            raise BundleError(
                f"the archive {self.archive_name!r} uses {shown} both as a file and as a folder; re-create it "
                "with distinct names",
                code="member_path_conflict",
            )
        self.files.add(parts)
        self.dirs.update(parts[:i] for i in range(1, len(parts)))
        return parts

    # -- writing -----------------------------------------------------------------------------------

    def _write_error(self, exc: OSError, parts: tuple[str, ...]) -> MiaError:
        shown = _shown_name("/".join(parts))
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
            return BundleError(
                f"archive member {shown} has a name this system cannot create ({exc.strerror}); use shorter, "
                "plain file names",
                code="bad_member_name",
            )
        return MiaError(
            f"could not write archive member {shown} while unpacking ({exc.strerror or exc}); check free disk "
            "space in the work folder",
            code="unpack_write_failed",
        )

    def _open_target(self, parts: tuple[str, ...]):
        """Create the member's folders and open a new file for it, refusing to follow or overwrite anything."""
        folder = self.dest
        for part in parts[:-1]:
            folder = folder / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o755)
            # We never create links, so this only trips if something else raced us; refuse anyway.
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise BundleError(
                    f"archive member {_shown_name('/'.join(parts))} needs a folder that is not a folder; re-create "
                    "the archive with distinct names",
                    code="member_path_conflict",
                )
        real_folder = os.path.realpath(folder)
        if real_folder != self.dest_real and not real_folder.startswith(self.dest_real + os.sep):
            raise BundleError(
                f"archive member {_shown_name('/'.join(parts))} resolves outside the bundle folder; re-create the "
                "archive with plain relative paths",
                code="member_path_traversal",
            )
        target = folder / parts[-1]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        return target, os.fdopen(os.open(target, flags, 0o644), "wb")

    def copy(
        self,
        parts: tuple[str, ...],
        read: Callable[[int], bytes],
        member_compressed: Callable[[], float],
        total_compressed: Callable[[], float],
    ) -> None:
        """Stream one member into the destination, checking every limit before each chunk is written.

        Parameters
        ----------
        parts:
            The member's validated path components.
        read:
            Reads up to n unpacked bytes of the member (b"" at its end). Its exceptions propagate.
        member_compressed, total_compressed:
            Compressed bytes consumed so far for this member and for the whole archive (for the ratio limit).
        """
        try:
            target, out = self._open_target(parts)
        except OSError as exc:
            raise self._write_error(exc, parts) from None
        self.written.append(target)
        with out:
            self._pump(
                _shown_name("/".join(parts)), read, member_compressed, total_compressed, out.write, parts
            )

    def drain(
        self,
        name: str,
        read: Callable[[int], bytes],
        member_compressed: Callable[[], float],
        total_compressed: Callable[[], float],
    ) -> None:
        """Read a skipped member's data and discard it, under the same limits as :meth:`copy`.

        Skipping by seeking would decompress it just the same, only without any check on the way.
        """
        self._pump(_shown_name(name), read, member_compressed, total_compressed, None, ())

    def _pump(self, shown, read, member_compressed, total_compressed, write, parts) -> None:
        written = 0
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            self.total_written += len(chunk)
            if self.total_written > self.max_bytes:
                raise self.size_error("unpacks to")
            self.check_ratio(f"member {shown}", written, member_compressed())
            self.check_ratio("the archive as a whole", self.total_written, total_compressed())
            if write is not None:
                try:
                    write(chunk)
                except OSError as exc:
                    raise self._write_error(exc, parts) from None

    def corrupt(self, detail: object) -> BundleError:
        return BundleError(
            f"the archive {self.archive_name!r} is corrupt or truncated ({detail}); re-create it and send it "
            "again",
            code="corrupt_archive",
        )

    def finish(self) -> list[Path]:
        if not self.written:
            raise BundleError(
                f"the archive {self.archive_name!r} holds no files; put the model and the data tables in it",
                code="empty_archive",
            )
        return list(self.written)


# --------------------------------------------------------------------------------------------------
# zip
# --------------------------------------------------------------------------------------------------


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """file / dir / symlink / special / other, from the Unix mode in ``external_attr`` and the name."""
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        return "symlink"
    if file_type in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return "special"
    if file_type == stat.S_IFDIR or info.filename.endswith("/"):
        return "dir"
    if file_type in (0, stat.S_IFREG):
        return "file"
    return "other"


def _zip_end_record(handle, size: int) -> tuple[int, int, int] | None:
    """(entries declared, central directory size, its start) as :mod:`zipfile` reads them.

    Mirrors ``zipfile._EndRecData`` / ``_EndRecData64`` and the start computation of
    ``ZipFile._RealGetContents`` (Python 3.11), so the directory walked here is the one zipfile would
    parse. None when there is no end record (zipfile then refuses the file itself, parsing nothing).
    """
    eocd_size = _ZIP_EOCD.size
    if size < eocd_size:
        return None
    handle.seek(size - eocd_size)
    tail = handle.read(eocd_size)
    if tail[:4] == _ZIP_EOCD_SIGNATURE and tail[-2:] == b"\x00\x00":
        location = size - eocd_size
        record = tail
    else:  # an archive comment (up to 64 KiB) follows the end record: search for it from the back
        search_from = max(size - _ZIP_MAX_COMMENT - 1 - eocd_size, 0)
        handle.seek(search_from)
        window = handle.read()
        found = window.rfind(_ZIP_EOCD_SIGNATURE)
        if found < 0 or len(window) - found < eocd_size:
            return None
        location = search_from + found
        record = window[found : found + eocd_size]
    _sig, _disk, _disk_start, this_disk, total, cd_size, _cd_offset, _comment = _ZIP_EOCD.unpack(record)
    declared = max(this_disk, total)
    start = location - cd_size
    if location >= _ZIP64_LOCATOR.size:
        handle.seek(location - _ZIP64_LOCATOR.size)
        locator = handle.read(_ZIP64_LOCATOR.size)
        if len(locator) == _ZIP64_LOCATOR.size and locator[:4] == _ZIP64_LOCATOR_SIGNATURE:
            record64_at = location - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size
            if record64_at >= 0:
                handle.seek(record64_at)
                record64 = handle.read(_ZIP64_EOCD.size)
                if len(record64) == _ZIP64_EOCD.size and record64[:4] == _ZIP64_EOCD_SIGNATURE:
                    fields = _ZIP64_EOCD.unpack(record64)
                    this_disk, total, cd_size = fields[6], fields[7], fields[8]
                    declared = max(this_disk, total)
                    start = location - cd_size - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size
    return declared, cd_size, start


def _check_zip_directory(archive: Path, unpacker: _Unpacker) -> None:
    """Refuse a zip whose central directory holds more entries than allowed, before zipfile parses it.

    The declared count (end record, or zip64 end record) is the fast path; it is not trusted, since
    zipfile itself ignores it and reads records until the directory's declared byte size is used up. So
    the directory is then walked header by header exactly as zipfile will, stopping at the first record
    past the limit: at most ``max_members + 1`` reads of 46 bytes, whatever the archive holds. A directory
    this walk cannot follow is refused as corrupt (zipfile would refuse it too).
    """
    try:
        with open(archive, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            end = _zip_end_record(handle, size)
            if end is None:
                return
            declared, cd_size, start = end
            if declared > unpacker.max_members:
                raise unpacker.member_error(
                    f"declares {declared} entries in its zip directory, more than the {unpacker.max_members} allowed"
                )
            if start < 0:
                raise unpacker.corrupt("the zip directory's recorded size runs past the start of the file")
            walked = 0
            count = 0
            while walked < cd_size:
                handle.seek(start + walked)
                header = handle.read(_ZIP_CENTRAL.size)
                if len(header) != _ZIP_CENTRAL.size or header[:4] != _ZIP_CENTRAL_SIGNATURE:
                    raise unpacker.corrupt("the zip directory is truncated or garbled")
                fields = _ZIP_CENTRAL.unpack(header)
                count += 1
                if count > unpacker.max_members:
                    raise unpacker.member_error(f"has more than {unpacker.max_members} entries")
                walked += _ZIP_CENTRAL.size + fields[10] + fields[11] + fields[12]
    except MiaError:
        raise
    except _READ_ERRORS as exc:
        raise unpacker.corrupt(exc) from None


def _extract_zip(archive: Path, unpacker: _Unpacker) -> None:
    archive_size = archive.stat().st_size
    _check_zip_directory(archive, unpacker)
    try:
        zf = zipfile.ZipFile(archive)
    except _READ_ERRORS as exc:
        raise unpacker.corrupt(exc) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > unpacker.max_members:  # not reachable after the walk; kept as a second guard
            raise unpacker.member_error(f"has more than {unpacker.max_members} entries")
        # The central directory lists everything up front, so validate every entry before writing any.
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        declared_total = 0
        for info in infos:
            unpacker.count_member()
            parts = unpacker.plan(info.filename, _zip_kind(info))
            if parts is None:
                continue
            shown = _shown_name("/".join(parts))
            if info.flag_bits & 0x41:  # bit 0: encrypted; bit 6: strong encryption
                raise BundleError(
                    f"archive member {shown} is encrypted; send the bundle as a zip without a password",
                    code="encrypted_member",
                )
            if info.compress_type not in _ZIP_METHODS:
                raise BundleError(
                    f"archive member {shown} uses zip compression method {info.compress_type}; only stored "
                    "and deflate are accepted, so re-create the zip with standard (deflate) compression",
                    code="unsupported_compression",
                )
            declared_total += info.file_size
            if declared_total > unpacker.max_bytes:
                raise unpacker.size_error(f"declares {_size_text(declared_total)} of files")
            unpacker.check_ratio(f"member {shown}", info.file_size, info.compress_size)
            plan.append((info, parts))
        unpacker.check_ratio("the archive as a whole", declared_total, archive_size)

        for info, parts in plan:
            # The declared sizes passed; now count what really comes out, whatever the headers said.
            try:
                with zf.open(info) as source:
                    unpacker.copy(
                        parts,
                        source.read,
                        member_compressed=lambda info=info: info.compress_size,
                        total_compressed=lambda: archive_size,
                    )
            except MiaError:
                raise
            except _READ_ERRORS as exc:
                raise unpacker.corrupt(exc) from None


# --------------------------------------------------------------------------------------------------
# tar (plain or compressed)
# --------------------------------------------------------------------------------------------------


class _MeteredReader(io.RawIOBase):
    """Reads a file and counts the bytes consumed, optionally in small reads (for a decompressor above it).

    Parameters
    ----------
    raw:
        The archive file, opened in binary mode.
    max_read:
        Largest read handed upward, or None for full reads (needed when tarfile reads it directly,
        since tarfile treats a short read as the end of the data).
    """

    def __init__(self, raw, max_read: int | None) -> None:
        super().__init__()
        self._raw = raw
        self._max_read = max_read
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        if self._max_read is not None:
            view = view[: self._max_read]
        n = self._raw.readinto(view)
        n = n or 0
        self.consumed = max(self.consumed, self._raw.tell())
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._raw.seek(offset, whence)
        self.consumed = max(self.consumed, position)
        return position

    def tell(self) -> int:
        return self._raw.tell()


class _TarStream:
    """What tarfile reads from: forwards to the (decompressed) stream, refusing absurd single reads.

    tarfile reads a pax or GNU long-name header's whole declared size in one call, so a crafted header
    declaring gigabytes of compressed zeros would otherwise be pulled into memory before any check ran.
    """

    def __init__(self, stream, archive_name: str) -> None:
        self._stream = stream
        self._archive_name = archive_name

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > _MAX_TAR_HEADER_READ:
            raise BundleError(
                f"the archive {self._archive_name!r} has a tar extended header declaring {size} bytes, more "
                f"than the {_MAX_TAR_HEADER_READ} a real one needs; it is corrupt or hostile, so re-create it",
                code="corrupt_archive",
            )
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._stream.tell()


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk() or member.isfifo():
        return "special"
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    return "other"


def _check_tar_end(stream: _TarStream, offset: int, unpacker: _Unpacker) -> None:
    """Require an end-of-archive marker followed only by zero padding.

    tarfile silently stops at a truncated or garbled header once past the first member, which would drop
    files without a word; a real tar ends with zero blocks, so anything else means truncation, corruption
    or concatenated archives (whose later members would be lost).
    """
    stream.seek(offset)
    seen = 0
    while seen < _MAX_TAR_TRAILER_CHECK:
        block = stream.read(_CHUNK)
        if not block:
            break
        if block.count(0) != len(block):
            raise unpacker.corrupt("unreadable data where the next tar header or the end marker should be")
        seen += len(block)
    if seen < 512:
        raise unpacker.corrupt("the tar ends without its end-of-archive marker")


def _extract_tar(archive: Path, kind: str, unpacker: _Unpacker) -> None:
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.10.12 / 3.11.4
    with open(archive, "rb") as raw:
        metered = _MeteredReader(raw, None if kind == "tar" else _COMPRESSED_READ)
        try:
            stream = _TarStream(_open_decompressed(kind, metered), archive.name)
            # Closed by the ``with tf`` below; opening sits in its own try to map its errors.
            tf = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115
        except MiaError:
            raise
        except _READ_ERRORS as exc:
            raise unpacker.corrupt(exc) from None
        with tf:
            while True:
                try:
                    member = tf.next()
                except MiaError:
                    raise
                except _READ_ERRORS as exc:
                    raise unpacker.corrupt(exc) from None
                if member is None:
                    break
                unpacker.count_member()
                parts = unpacker.plan(member.name, _tar_kind(member))
                if data_filter is not None:
                    # The standard library's own 'data' filter, as a second opinion after our checks.
                    try:
                        data_filter(member, str(unpacker.dest))
                    except tarfile.FilterError as exc:
                        raise BundleError(
                            f"archive member {_shown_name(member.name)} is unsafe to unpack ({exc}); re-create the "
                            "archive with plain relative files only",
                            code="unsafe_member",
                        ) from None
                if parts is None and not (member.isreg() and member.size > 0):
                    continue
                if member.size > unpacker.max_bytes - unpacker.total_written:
                    raise unpacker.size_error(
                        f"declares {_size_text(unpacker.total_written + member.size)} of files"
                    )
                start = metered.consumed
                # One read buffer of slack: the decompressor may have consumed this member's bytes while
                # reading the previous one, and must not make a normal member look like a bomb.
                slack = 0 if kind == "tar" else _COMPRESSED_READ
                try:
                    source = tf.extractfile(member)
                    if source is None:  # not reachable for regular files; refuse rather than guess
                        raise unpacker.corrupt(f"no data for member {_shown_name(member.name)}")
                    member_compressed = lambda start=start, slack=slack: metered.consumed - start + slack  # noqa: E731
                    total_compressed = lambda slack=slack: metered.consumed + slack  # noqa: E731
                    with source:
                        if parts is None:  # macOS junk with data
                            unpacker.drain(member.name, source.read, member_compressed, total_compressed)
                        else:
                            unpacker.copy(parts, source.read, member_compressed, total_compressed)
                except MiaError:
                    raise
                except _READ_ERRORS as exc:
                    raise unpacker.corrupt(exc) from None
            try:
                _check_tar_end(stream, tf.offset, unpacker)
            except MiaError:
                raise
            except _READ_ERRORS as exc:
                raise unpacker.corrupt(exc) from None


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
