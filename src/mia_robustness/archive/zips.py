"""zip extraction: the end-of-central-directory record, the central-directory walk, and the members.

A zip's entry count is read from its end-of-central-directory record (zip64 too) and its central
directory is then walked record by record, header only, before :mod:`zipfile` parses it: a directory of
millions of entries is refused after reading at most ``max_members + 1`` record headers, instead of
after ``zipfile`` has built an object for each (about 350 bytes and 7 us apiece: 2 million
records took 0.7 GiB and 14 s).

Every entry is then checked (name, kind, encryption, compression method, declared sizes and ratios)
before any is written, and what each member really unpacks to is counted while it streams out.
zip members compressed with bzip2 or LZMA are refused: Python's ``zipfile`` decompresses those without
an output bound (a few bytes of bzip2 expand to gigabytes in memory before any check can run).
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

from ..errors import BundleError, MiaError
from .unpack import _READ_ERRORS, _shown_name, _size_text, _Unpacker

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
