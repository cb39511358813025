"""tar extraction, plain or compressed with gzip, bzip2 or xz.

The archive file is read through a meter that counts the compressed bytes consumed (in small reads
under a decompressor, so the ratio check on a tar.gz bomb fires early); tarfile reads from a stream that
refuses absurd single reads (pax and GNU long-name headers declare their own size); each member goes
through the shared streaming writer; and the tar must end with its end-of-archive marker followed only by
zero padding, so a truncated, garbled or concatenated tar is refused instead of silently cut short.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from pathlib import Path

from ..errors import BundleError, MiaError
from .unpack import _CHUNK, _READ_ERRORS, _shown_name, _size_text, _Unpacker

# Compressed bytes handed to a gzip/bzip2/xz decompressor per read. Small reads keep the count of
# "compressed bytes consumed so far" close to the truth, so the ratio check on a tar.gz bomb fires after
# a few MiB instead of after whatever one large read buffer expands to.
_COMPRESSED_READ = 16 * 1024
# tarfile reads a pax / GNU long-name header's declared size in one call; legitimate ones are a few KiB.
_MAX_TAR_HEADER_READ = 1024 * 1024
# How much of what follows a tar's end-of-archive marker is checked to be zero padding.
_MAX_TAR_TRAILER_CHECK = 8 * 1024 * 1024


def _open_decompressed(kind: str, fileobj):
    """A decompressing reader over ``fileobj`` for the compressed tar kinds (bounded reads for all three)."""
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=fileobj, mode="rb")
    if kind == "tar.bz2":
        return bz2.BZ2File(fileobj, mode="rb")
    if kind == "tar.xz":
        return lzma.LZMAFile(fileobj, mode="rb")
    return fileobj


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
