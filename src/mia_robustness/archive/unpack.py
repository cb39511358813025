"""Member checks and the streaming writer shared by the zip and tar paths.

Every entry's name is checked before anything is written for it: only relative POSIX paths get through
(no absolute path, ``..`` component, drive letter, backslash or NUL), links and special files are refused,
duplicates and file/folder clashes too, and macOS junk is skipped. :class:`_Unpacker` keeps the
bookkeeping of one archive (names seen, entries counted, bytes written) and streams each member into a
file it creates with ``O_EXCL | O_NOFOLLOW`` in a folder checked to resolve inside the destination,
checking the size and ratio limits before each chunk is written. ``_READ_ERRORS`` lists what the
standard-library readers raise on malformed input, which both paths report as a corrupt archive.
"""

from __future__ import annotations

import contextlib
import errno
import lzma
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ..errors import BundleError, LimitError, MiaError
from .limits import BundleLimits, UnpackBudget

# Bytes copied per read/write step; also the granularity of the streaming limit checks.
_CHUNK = 64 * 1024
# Below this many unpacked bytes the ratio limit is not applied: small files (a config.json of a few
# hundred bytes, a CSV of one repeated value) legitimately compress far beyond any sane bomb ratio, and
# a member this small cannot hurt anyone.
_RATIO_FLOOR_BYTES = 1024 * 1024
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
        used = self.limits.max_members - self.max_members
        shared = f" ({used} of them used by the archive it came in)" if used > 0 else ""
        return self._cap_error(
            detail, "max_members", shared, "put fewer files in the bundle", "member_count_limit"
        )

    def size_error(self, detail: str) -> LimitError:
        limit = self.limits.max_unpacked_bytes
        used = limit - self.max_bytes
        shared = f", {_size_text(used)} of it used by the archive it came in" if used > 0 else ""
        detail = f"{detail}, more than the {_size_text(limit)} allowed"
        return self._cap_error(
            detail, "max_unpacked_bytes", shared, "make the bundle smaller", "unpacked_size_limit"
        )

    def _cap_error(self, detail: str, setting: str, shared: str, fix: str, code: str) -> LimitError:
        """The archive passed the bundle limit ``setting`` (which nested archives share: ``shared`` says how
        much of it the enclosing archive used)."""
        return LimitError(
            f"the archive {self.archive_name!r} {detail} (limit {setting}={getattr(self.limits, setting)} for the "
            f"bundle and any archive inside it{shared}); {fix}, or raise the {setting} bundle limit if this is "
            "expected",
            code=code,
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
