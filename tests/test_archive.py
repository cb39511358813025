"""Safe unpacking: every test builds a hostile (or valid) archive in tmp_path and checks the error code
and that nothing was written outside the destination folder."""

from __future__ import annotations

import bz2
import gzip
import io
import random
import stat
import struct
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import archive_bytes
from mia_robustness.archive import BundleLimits, detect_archive_kind, extract_archive
from mia_robustness.bundle import open_bundle
from mia_robustness.errors import BundleError, LimitError, MiaError, OptionsError

MIB = 1024 * 1024

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


class Workspace:
    """tmp_path laid out as ``in/`` (archives), ``dest/`` (the unpack target) and a sentinel next to dest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbox = root / "in"
        self.inbox.mkdir()
        self.dest = root / "dest"
        self.dest.mkdir()
        self.count = 0
        # A member that escaped by one level would land here (dest/../evil); none may ever appear.
        self.sentinel = root / "evil"

    def path(self, name: str) -> Path:
        return self.inbox / name

    def write(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path

    def outside_dest(self) -> set[Path]:
        return {p for p in _tree(self.root) if p != self.dest and self.dest not in p.parents}

    def dest_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dest.rglob("*") if p.is_file())

    def refuse(self, archive: Path, code: str, error: type[MiaError] = BundleError, limits=None) -> MiaError:
        """Unpack ``archive`` into a fresh dest, expecting ``error`` with ``code``; check nothing appeared
        outside that dest (a streamed tar may leave partial files inside it, which the caller removes)."""
        if any(self.dest.iterdir()):
            self.count += 1
            self.dest = self.root / f"dest{self.count}"
            self.dest.mkdir()
        before = self.outside_dest()
        with pytest.raises(error) as caught:
            extract_archive(archive, self.dest, limits or BundleLimits())
        assert caught.value.code == code, caught.value.message
        assert caught.value.message
        assert self.outside_dest() == before
        assert not self.sentinel.exists()
        # Nothing inside dest is a link either.
        assert not any(p.is_symlink() for p in _tree(self.dest))
        return caught.value


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def make_zip(
    path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]], method=zipfile.ZIP_DEFLATED
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names some tests need
        with zipfile.ZipFile(path, "w", method) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def tar_member(name: str, data: bytes = b"", type_=tarfile.REGTYPE, linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.size = len(data) if type_ == tarfile.REGTYPE else 0
    return info, data


def make_tar(path: Path, members: list[tuple], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.size else None)
    return path


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def raw_zip(entries: list[dict]) -> bytes:
    """Hand-built zip: each entry has name, payload, crc, usize and optional method, flag, ext_attr."""
    out, central = bytearray(), bytearray()
    for entry in entries:
        name = entry["name"].encode()
        method, flag, ext_attr = entry.get("method", 8), entry.get("flag", 0), entry.get("ext_attr", 0)
        crc, payload, usize = entry["crc"], entry["payload"], entry["usize"]
        offset = len(out)
        out += (
            struct.pack(
                "<4s5H3L2H", b"PK\x03\x04", 20, flag, method, 0, 0x21, crc, len(payload), usize, len(name), 0
            )
            + name
            + payload
        )
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                (3 << 8) | 20,
                20,
                flag,
                method,
                0,
                0x21,
                crc,
                len(payload),
                usize,
                len(name),
                0,
                0,
                0,
                0,
                ext_attr,
                offset,
            )
            + name
        )
    n = len(entries)
    return bytes(
        out + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    )


def deflate_zeros(n_mib: int, prefix: bytes = b"", suffix: bytes = b"") -> tuple[bytes, int, int]:
    """Raw deflate of prefix + n_mib MiB of zeros + suffix, built cheaply: after a full flush the
    compressor's state is reset, so the compressed form of each MiB of zeros is the same bytes, repeated.
    Returns (deflate bytes, crc32 of the plain data, plain size)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    mib = bytes(MIB)
    block = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(suffix) + comp.flush()
    crc = zlib.crc32(prefix)
    for _ in range(n_mib):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(suffix, crc)
    return head + block * n_mib + tail, crc, len(prefix) + n_mib * MIB + len(suffix)


def zipcrypto_encrypt(plain: bytes, password: bytes, crc: int) -> bytes:
    """Traditional PKWARE encryption (what ``zip -e`` writes), so the test zip is really encrypted."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def crc_byte(value: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), value ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def update(byte: int) -> None:
        keys[0] = crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = crc_byte(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in bytes(11) + bytes([crc >> 24]) + plain:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


BUNDLE_FILES = {
    "model.pkl": bytes(range(256)) * 20,
    "train.csv": b"a,b,label\n" + b"1,2,0\n3,4,1\n" * 50,
    "subject.csv": b"a,b,label\n" + b"5,6,0\n" * 50,
    "config.json": b'{"repeats": 1}',
}


def _relative(files: list[Path], dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in files}


# --------------------------------------------------------------------------------------------------
# Valid archives
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tar.bz2", "tar.xz"])
def test_valid_archive_extracts(ws: Workspace, kind: str) -> None:
    path = ws.path(f"bundle.{kind}")
    if kind == "zip":
        members = [("data/", b""), ("__MACOSX/._model.pkl", b"junk"), (".DS_Store", b"junk")]
        members += [
            (f"data/{name}" if name.endswith(".csv") else name, data) for name, data in BUNDLE_FILES.items()
        ]
        make_zip(path, members)
    else:
        mode = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[kind]
        members = [tar_member("./data", type_=tarfile.DIRTYPE), tar_member("./._model.pkl", b"junk")]
        members += [
            tar_member(f"./data/{n}" if n.endswith(".csv") else f"./{n}", d) for n, d in BUNDLE_FILES.items()
        ]
        make_tar(path, members, mode)
    assert detect_archive_kind(path) == kind
    files = extract_archive(path, ws.dest)
    expected = {(f"data/{n}" if n.endswith(".csv") else n): d for n, d in BUNDLE_FILES.items()}
    assert _relative(files, ws.dest) == expected
    # Only the bundle files (and their folder) were created: junk skipped, nothing else.
    assert {p.relative_to(ws.dest).as_posix() for p in _tree(ws.dest)} == set(expected) | {"data"}


def test_kind_is_found_by_content_not_name(ws: Workspace) -> None:
    path = make_tar(ws.path("bundle.zip"), [tar_member("model.pkl", b"x" * 10)], "w:gz")
    assert detect_archive_kind(path) == "tar.gz"
    assert _relative(extract_archive(path, ws.dest), ws.dest) == {"model.pkl": b"x" * 10}
    assert detect_archive_kind(ws.inbox) is None  # a folder is not an archive


def test_nested_zip_is_one_file_not_recursed(ws: Workspace) -> None:
    inner = make_zip(ws.path("data.zip"), [("train_mia.csv", b"a\n1\n"), ("test_mia.csv", b"a\n2\n")])
    outer = make_zip(ws.path("bundle.zip"), [("model.pkl", b"m" * 100), ("data.zip", inner.read_bytes())])
    files = extract_archive(outer, ws.dest)
    assert sorted(p.name for p in files) == ["data.zip", "model.pkl"]
    assert detect_archive_kind(ws.dest / "data.zip") == "zip"
    assert zipfile.ZipFile(ws.dest / "data.zip").namelist() == ["train_mia.csv", "test_mia.csv"]
    # The caller unpacks data.zip one level down by default, and not at all with max_nesting=0.
    with open_bundle(outer, workdir=ws.root) as bundle:
        assert bundle.layout == "legacy" and bundle.members_path.name == "train_mia.csv"
    with pytest.raises(BundleError) as caught, open_bundle(outer, limits=BundleLimits(max_nesting=0)):
        pass
    assert caught.value.code == "nesting_limit"


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_nesting", -1),
        ("max_members", 0),
        ("max_unpacked_bytes", 0),
        ("max_unpacked_bytes", "10"),
        ("max_members", True),
        ("max_compression_ratio", 0.5),
        ("max_compression_ratio", float("nan")),
        ("max_compression_ratio", float("inf")),
    ],
)
def test_limits_are_validated(field: str, value) -> None:
    with pytest.raises(OptionsError) as caught:
        BundleLimits(**{field: value})
    assert caught.value.code == "bad_bundle_limit"
    assert field in caught.value.message


def test_destination_must_be_empty_folder(ws: Workspace) -> None:
    path = make_zip(ws.path("b.zip"), [("model.pkl", b"m")])
    (ws.dest / "already").write_bytes(b"")
    with pytest.raises(MiaError) as caught:
        extract_archive(path, ws.dest)
    assert caught.value.code == "bad_extract_destination"


# --------------------------------------------------------------------------------------------------
# Escapes, links, special files, duplicates
# --------------------------------------------------------------------------------------------------


def test_zip_slip(ws: Workspace) -> None:
    ws.refuse(
        make_zip(ws.path("b.zip"), [("model.pkl", b"m"), ("../evil", b"pwned")]), "member_path_traversal"
    )
    assert list(ws.dest.iterdir()) == []  # zip members are all checked before anything is written


def test_zip_absolute_and_windows_paths(ws: Workspace) -> None:
    target = str(ws.root / "evil")
    ws.refuse(make_zip(ws.path("a.zip"), [(target, b"pwned")]), "absolute_member_path")
    ws.refuse(make_zip(ws.path("b.zip"), [("..\\evil", b"pwned")]), "windows_member_path")
    ws.refuse(make_zip(ws.path("c.zip"), [("C:/evil", b"pwned")]), "windows_member_path")


def test_tar_traversal_and_absolute(ws: Workspace) -> None:
    ws.refuse(
        make_tar(ws.path("a.tar"), [tar_member("model.pkl", b"m"), tar_member("../evil", b"x")]),
        "member_path_traversal",
    )
    ws.refuse(make_tar(ws.path("b.tar"), [tar_member("data/../../evil", b"x")]), "member_path_traversal")
    ws.refuse(
        make_tar(ws.path("c.tar.gz"), [tar_member(str(ws.root / "evil"), b"x")], "w:gz"),
        "absolute_member_path",
    )


def test_symlinks_refused(ws: Workspace) -> None:
    ws.refuse(make_zip(ws.path("a.zip"), [(zip_symlink("passwd"), b"/etc/passwd")]), "symlink_member")
    ws.refuse(
        make_tar(ws.path("b.tar"), [tar_member("passwd", type_=tarfile.SYMTYPE, linkname="/etc/passwd")]),
        "symlink_member",
    )
    # A link followed by a file written "through" it: the classic two-step escape.
    two_step = [tar_member("sub", type_=tarfile.SYMTYPE, linkname=str(ws.root)), tar_member("sub/evil", b"x")]
    ws.refuse(make_tar(ws.path("c.tar"), two_step), "symlink_member")


def test_hard_link_refused(ws: Workspace) -> None:
    members = [
        tar_member("train.csv", b"a\n1\n"),
        tar_member("copy.csv", type_=tarfile.LNKTYPE, linkname="/etc/passwd"),
    ]
    ws.refuse(make_tar(ws.path("a.tar"), members), "hardlink_member")


@pytest.mark.parametrize("type_", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_special_files_refused(ws: Workspace, type_) -> None:
    info, _ = tar_member("null", type_=type_)
    info.devmajor, info.devminor = 1, 3
    ws.refuse(make_tar(ws.path("a.tar"), [(info, b"")]), "special_file_member")


def test_zip_special_file_refused(ws: Workspace) -> None:
    info = zipfile.ZipInfo("fifo")
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    ws.refuse(make_zip(ws.path("a.zip"), [(info, b"")]), "special_file_member")


def test_duplicates_and_conflicts(ws: Workspace) -> None:
    ws.refuse(make_zip(ws.path("a.zip"), [("model.pkl", b"1"), ("model.pkl", b"2")]), "duplicate_member")
    ws.refuse(
        make_tar(ws.path("b.tar"), [tar_member("x/m.pkl", b"1"), tar_member("./x//m.pkl", b"2")]),
        "duplicate_member",
    )
    ws.refuse(make_zip(ws.path("c.zip"), [("data", b"1"), ("data/train.csv", b"2")]), "member_path_conflict")


# --------------------------------------------------------------------------------------------------
# Limits (bombs)
# --------------------------------------------------------------------------------------------------


def test_deflate_zeros_helper_is_real() -> None:
    data, crc, size = deflate_zeros(3, b"head", b"tail")
    plain = zlib.decompressobj(-15).decompress(data)
    assert plain == b"head" + bytes(3 * MIB) + b"tail" and size == len(plain) and crc == zlib.crc32(plain)


def test_zip_bomb_refused_before_writing(ws: Workspace) -> None:
    payload, crc, size = deflate_zeros(1024)  # 1 GiB of zeros in about 1 MiB
    path = ws.write(
        "bomb.zip", raw_zip([{"name": "model.pkl", "payload": payload, "crc": crc, "usize": size}])
    )
    assert path.stat().st_size < 2 * MIB and size == 1024 * MIB
    started = time.perf_counter()
    error = ws.refuse(path, "compression_ratio_limit", LimitError)
    assert time.perf_counter() - started < 5
    assert "max_compression_ratio" in error.message
    assert ws.dest_bytes() == 0


def test_many_small_bombs_caught_by_total_ratio(ws: Workspace) -> None:
    # 300 members of 900 KiB zeros each: every one is under the 1 MiB per-member floor, the sum is not.
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    plain = bytes(900 * 1024)
    payload = comp.compress(plain) + comp.flush()
    entries = [
        {"name": f"f{i}.bin", "payload": payload, "crc": zlib.crc32(plain), "usize": len(plain)}
        for i in range(300)
    ]
    ws.refuse(ws.write("bombs.zip", raw_zip(entries)), "compression_ratio_limit", LimitError)
    assert ws.dest_bytes() == 0


def test_tar_gz_bomb_stopped_while_streaming(ws: Workspace) -> None:
    # A tar whose one member is 1 GiB of zeros, gzipped to about 1 MiB. Its declared size is under the
    # 2 GiB default, so only the streaming ratio check can stop it.
    header = tarfile.TarInfo("model.pkl")
    header.size = 1024 * MIB
    payload, crc, size = deflate_zeros(1024, prefix=header.tobuf(), suffix=bytes(1024))
    path = ws.write(
        "bomb.tar.gz",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + payload + struct.pack("<2L", crc, size & 0xFFFFFFFF),
    )
    assert detect_archive_kind(path) == "tar.gz"
    started = time.perf_counter()
    ws.refuse(path, "compression_ratio_limit", LimitError)
    assert time.perf_counter() - started < 10
    assert ws.dest_bytes() < 16 * MIB  # stopped within a few MiB, never near the 1 GiB


def test_unpacked_size_limit(ws: Workspace) -> None:
    rng = random.Random(0)
    data = rng.randbytes(300_000)  # incompressible, so only the size limit applies
    limits = BundleLimits(max_unpacked_bytes=500_000)
    error = ws.refuse(
        make_tar(ws.path("a.tar.gz"), [tar_member("a.bin", data), tar_member("b.bin", data)], "w:gz"),
        "unpacked_size_limit",
        LimitError,
        limits,
    )
    assert "max_unpacked_bytes" in error.message
    assert ws.dest_bytes() <= 500_000
    ws.refuse(
        make_zip(ws.path("b.zip"), [("a.bin", data), ("b.bin", data)]),
        "unpacked_size_limit",
        LimitError,
        limits,
    )
    assert ws.dest_bytes() == 0  # zip: declared sizes refused before writing


def test_member_count_limit(ws: Workspace) -> None:
    names = [f"f{i}.csv" for i in range(10_000)]
    with zipfile.ZipFile(ws.path("many.zip"), "w") as zf:
        for name in names:
            zf.writestr(name, b"1")
    error = ws.refuse(ws.path("many.zip"), "member_count_limit", LimitError)
    assert "max_members" in error.message
    assert ws.dest_bytes() == 0
    make_tar(ws.path("many.tar"), [tar_member(name, b"1") for name in names])
    ws.refuse(ws.path("many.tar"), "member_count_limit", LimitError)
    assert len(list(ws.dest.iterdir())) <= 1000


def test_tar_extended_header_cannot_claim_gigabytes(ws: Workspace) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 4 * 1024 * MIB
    path = ws.write("pax.tar", info.tobuf(tarfile.USTAR_FORMAT) + b"x" * 512 + bytes(1024))
    ws.refuse(path, "corrupt_archive")


# --------------------------------------------------------------------------------------------------
# Corrupt, truncated, empty, unknown, encrypted
# --------------------------------------------------------------------------------------------------


def _valid_bytes(ws: Workspace, kind: str) -> bytes:
    path = ws.path(f"valid.{kind}")
    if kind == "zip":
        make_zip(path, list(BUNDLE_FILES.items()))
    else:
        make_tar(
            path, [tar_member(n, d) for n, d in BUNDLE_FILES.items()], "w:gz" if kind == "tar.gz" else "w"
        )
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_archives(ws: Workspace, kind: str, keep: float) -> None:
    data = _valid_bytes(ws, kind)
    # Cut inside the content: a plain tar's trailing zero padding can be lost without losing anything.
    content_end = len(data.rstrip(b"\x00"))
    ws.refuse(ws.write(f"cut.{kind}", data[: int(content_end * keep)]), "corrupt_archive")


def test_tar_without_end_marker_or_with_trailing_garbage(ws: Workspace) -> None:
    one = tarfile.TarInfo("model.pkl")
    one.size = 512
    member = one.tobuf() + b"m" * 512
    ws.refuse(ws.write("noend.tar", member), "corrupt_archive")  # cut exactly at a member boundary
    ws.refuse(ws.write("garbage.tar", member + b"garbage!" * 64 + bytes(1024)), "corrupt_archive")
    ws.refuse(ws.write("two.tar", member + bytes(1024) + member + bytes(1024)), "corrupt_archive")


def test_corrupted_zip_member_data(ws: Workspace) -> None:
    data = bytearray(_valid_bytes(ws, "zip"))
    start = data.index(b"PK\x03\x04") + 30 + len("model.pkl")
    data[start + 10 : start + 20] = b"\xff" * 10
    ws.refuse(ws.write("bad.zip", bytes(data)), "corrupt_archive")


def test_random_bytes_and_empty_files(ws: Workspace) -> None:
    ws.refuse(ws.write("noise.zip", random.Random(1).randbytes(5000)), "unknown_archive_format")
    ws.refuse(ws.write("empty.zip", b""), "empty_archive")
    ws.refuse(make_zip(ws.path("nothing.zip"), []), "empty_archive")
    ws.refuse(make_zip(ws.path("dirs.zip"), [("data/", b""), ("__MACOSX/._x", b"j")]), "empty_archive")
    ws.refuse(ws.write("nothing.tar", bytes(10240)), "empty_archive")
    assert detect_archive_kind(ws.path("empty.zip")) is None


def test_unsupported_formats(ws: Workspace) -> None:
    ws.refuse(ws.write("plain.gz", gzip.compress(b"a,b\n1,2\n" * 200)), "unsupported_archive_format")
    ws.refuse(ws.write("plain.bz2", bz2.compress(b"a,b\n1,2\n" * 200)), "unsupported_archive_format")
    ws.refuse(ws.write("x.7z", b"7z\xbc\xaf\x27\x1c" + bytes(100)), "unsupported_archive_format")
    ws.refuse(ws.write("broken.tar.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 20), "corrupt_archive")


def test_encrypted_zip(ws: Workspace) -> None:
    plain = b"a,b\n1,2\n"
    crc = zlib.crc32(plain)
    entry = {
        "name": "train.csv",
        "payload": zipcrypto_encrypt(plain, b"secret", crc),
        "crc": crc,
        "usize": len(plain),
        "method": 0,
        "flag": 1,
    }
    path = ws.write("locked.zip", raw_zip([entry]))
    assert zipfile.ZipFile(path).read("train.csv", pwd=b"secret") == plain  # really encrypted, really valid
    error = ws.refuse(path, "encrypted_member")
    assert "password" in error.message


def test_bzip2_member_in_zip_refused(ws: Workspace) -> None:
    ws.refuse(
        make_zip(ws.path("a.zip"), [("train.csv", b"a\n" * 100)], zipfile.ZIP_BZIP2),
        "unsupported_compression",
    )


# --------------------------------------------------------------------------------------------------
# Properties: hostile bytes only ever raise MiaError
# --------------------------------------------------------------------------------------------------


def _only_mia_errors(data: bytes) -> None:
    """Detect and unpack ``data``; anything but success or a MiaError fails; nothing lands outside dest."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive, dest = root / "upload", root / "dest"
        dest.mkdir()
        archive.write_bytes(data)
        try:
            detect_archive_kind(archive)
            extract_archive(archive, dest, BundleLimits(max_unpacked_bytes=8 * MIB, max_members=50))
        except MiaError:
            pass
        assert {p.name for p in root.iterdir()} == {"upload", "dest"}
        assert not any(p.is_symlink() for p in dest.rglob("*"))


_PREFIXES = [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08\x00", b"BZh9", b"\xfd7zXZ\x00"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_mia_errors(prefix: bytes, body: bytes) -> None:
    _only_mia_errors(prefix + body)


_SMALL_VALID = {"model.pkl": bytes(range(256)) * 4, "data/train.csv": b"a,b\n1,2\n" * 30}
_VALID = {kind: archive_bytes(_SMALL_VALID, kind) for kind in ("zip", "tar", "tar.gz")}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(_VALID)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_archives_only_raise_mia_errors(kind: str, flips: list, cut: float | None) -> None:
    data = bytearray(_VALID[kind])
    for where, value in flips:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    _only_mia_errors(bytes(data))
