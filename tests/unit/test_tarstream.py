"""shared/layer/tarstream.py: the stream tarfile reads a layer through, and the plain header read without tarfile.

plain_header is a second reader of hostile header blocks, so it is held to tarfile's own: for every block it
accepts, tarfile's TarInfo.frombuf (and _proc_builtin's offsets) must give the same member, field by field;
every block it does not accept goes to tarfile. Hypothesis writes the blocks: tarfile's own headers (ustar, GNU,
PAX formats; every plain type; long, non-UTF-8 and prefixed names), then bytes of their numeric fields replaced
by what tarfile reads leniently or refuses (blanks, NULs, 8 and 9, signs, underscores, base-256 markers), the
checksum recomputed or not.
"""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.layer.tarstream import FIELDS, TarStream, plain_header

FIELD_BYTES = st.sampled_from([b"0", b"7", b"8", b"9", b" ", b"\0", b"+", b"-", b"_", b"\x80", b"\xff", b"a",
                               b"\t", b"\x1c"])
TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE,
                         tarfile.BLKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"x", b"g", b"L",
                         b"S", b"Z"])
NAMES = st.one_of(st.text(max_size=20), st.sampled_from(["a/", "dir/sub/", "é", "x" * 99, "p/" * 60 + "leaf"]))


def _checksum(block: bytearray) -> None:
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % (sum(block))


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    info = tarfile.TarInfo(draw(NAMES))
    info.type = draw(TYPES)
    info.mode = draw(st.integers(0, 0o7777))
    info.uid, info.gid = draw(st.integers(0, 2**21 - 1)), draw(st.integers(0, 2**21 - 1))
    info.size = draw(st.integers(0, 2**33)) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.mtime = draw(st.integers(0, 2**33))
    info.linkname = draw(st.sampled_from(["", "target", "a/b"]))
    info.devmajor, info.devminor = draw(st.integers(0, 4095)), draw(st.integers(0, 4095))
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]))
    try:
        block = bytearray(info.tobuf(fmt, "utf-8", "surrogateescape")[:512])
    except ValueError:  # a name ustar cannot hold
        block = bytearray(tarfile.TarInfo("fallback").tobuf(fmt)[:512])
    for _ in range(draw(st.integers(0, 3))):
        start, end = draw(st.sampled_from(FIELDS))
        at = draw(st.integers(start, end - 1))
        block[at:at + 1] = draw(FIELD_BYTES)
    if draw(st.booleans()):
        _checksum(block)
    return bytes(block)


def _fields(info: Any) -> tuple[Any, ...]:
    return (info.name, info.mode, info.uid, info.gid, info.size, info.mtime, info.chksum, info.type, info.linkname,
            info.uname, info.gname, info.devmajor, info.devminor, info.offset, info.offset_data, info.pax_headers)


@settings(max_examples=2000)
@given(blocks())
def test_a_plain_header_is_what_tarfile_reads(block: bytes) -> None:
    tar = SimpleNamespace(pax_headers={}, encoding="utf-8", errors="surrogateescape", offset=0)
    ours = plain_header(tarfile.TarInfo, tar, block, 1024)  # type: ignore[arg-type]
    if ours is None:
        return
    theirs = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    theirs.offset, theirs.offset_data = 1024, 1536
    if theirs.isdir():
        theirs.name = theirs.name.rstrip("/")
    assert _fields(ours) == _fields(theirs)
    skip = theirs._block(theirs.size) if theirs.isreg() or theirs.type not in tarfile.SUPPORTED_TYPES else 0
    assert tar.offset == 1536 + skip


def test_what_is_not_plain_goes_to_tarfile() -> None:
    tar = SimpleNamespace(pax_headers={}, encoding="utf-8", errors="surrogateescape", offset=0)
    good = bytearray(tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT)[:512])
    assert plain_header(tarfile.TarInfo, tar, bytes(good), 0) is not None  # type: ignore[arg-type]
    assert plain_header(tarfile.TarInfo, tar, bytes(good[:511]), 0) is None  # type: ignore[arg-type]
    assert plain_header(tarfile.TarInfo, tar, bytes(512), 0) is None  # type: ignore[arg-type]  # the end
    bad = bytearray(good)
    bad[148] ^= 1  # the checksum wrong
    assert plain_header(tarfile.TarInfo, tar, bytes(bad), 0) is None  # type: ignore[arg-type]
    pax = SimpleNamespace(**{**vars(tar), "pax_headers": {"uid": "5"}})  # global PAX records in force
    assert plain_header(tarfile.TarInfo, pax, bytes(good), 0) is None  # type: ignore[arg-type]


def test_the_stream_reads_seeks_forward_and_writes_from_its_buffer(tmp_path: Any) -> None:
    data = bytes(range(256)) * 5000
    stream = TarStream(io.BytesIO(data))
    assert stream.read(10) == data[:10] and stream.tell() == 10
    assert stream.seek(9) == 9 and stream.read(2) == data[9:11]  # back, within what is buffered
    assert stream.seek(600_000) == 600_000 and stream.read(3) == data[600_000:600_003]
    out = tmp_path / "out"
    with open(out, "wb") as f:
        assert stream.copy_to(f.fileno(), 500_000) == 500_000
        assert stream.copy_to(f.fileno(), 10**9) == len(data) - 1_100_003  # to the end, no further
    assert out.read_bytes() == data[600_003:]
    stream.drain()
    assert stream.count == len(data) and stream.digest().hex == __import__("hashlib").sha256(data).hexdigest()
