"""Hand-written layer tars, for what no real tool produces (hostile input, edge cases of the rules): entries
through tarfile (:func:`make_tar`), and raw blocks with any value in any field (:func:`header`, :func:`pax`,
:func:`member`), because tarfile's writer refuses or rewrites the hostile values under test."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | chr | blk | fifo
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    link: str = ""
    mtime: int = 1_600_000_000
    xattrs: dict[str, bytes] = field(default_factory=dict)
    dev: tuple[int, int] = (0, 0)


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def make_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.link
            info.devmajor, info.devminor = e.dev
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                for k, v in e.xattrs.items()}
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


# Tars that try to write outside their directory: (case, entries, what the refusal says). OUTSIDE in a link is
# replaced by the test's sentinel directory. Unpacked as root (tests/test_unpack.py) and as a user without root
# (tests/test_rootless.py).
HOSTILE = [
    ("dotdot", [Entry("../escaped", data=b"x")], "contains '..'"),
    ("deep dotdot", [Entry("a/../../escaped", data=b"x")], "contains '..'"),
    ("symlink then write through", [Entry("evil", "symlink", link="OUTSIDE"), Entry("evil/escaped", data=b"x")],
     "'evil' is a symlink"),
    ("relative symlink parent", [Entry("evil", "symlink", link="../.."), Entry("evil/escaped", data=b"x")],
     "'evil' is a symlink"),
    ("hardlink to outside", [Entry("hl", "hardlink", link="../outside/victim")], "contains '..'"),
    ("root entry as symlink (CVE-2021-29136)", [Entry(".", "symlink", link="OUTSIDE")],
     "refusing to change the type of the root directory"),
    ("root entry ./ as file", [Entry("./", data=b"x")], "refusing to change the type of the root directory"),
    ("whiteout naming ..", [Entry("a/", "dir"), Entry("a/.wh..."), ], "invalid whiteout"),
    ("whiteout as a directory", [Entry(".wh.x/y", data=b"x")], "a whiteout cannot be a directory"),
]


# -- a raw tar writer: any value in any field -------------------------------------------------------------------

BLOCK = 512


def number_field(value: int, digits: int) -> bytes:
    """A numeric header field: octal when it fits, else GNU base-256 (which also holds negative numbers), clamped
    to the largest or smallest number the field can hold."""
    if 0 <= value < 8 ** (digits - 1):
        return bytes(b"%0*o\0" % (digits - 1, value))
    span: int = 256 ** (digits - 1)
    value = max(-span, min(span - 1, value))
    return bytes([0x80 if value >= 0 else 0xFF]) + (value % span).to_bytes(digits - 1, "big")


def header(name: bytes, kind: bytes = b"0", size: int = 0, mode: int = 0o644, uid: int = 0, gid: int = 0,
           mtime: int = 1_600_000_000, link: bytes = b"", dev: tuple[int, int] = (0, 0)) -> bytes:
    """One ustar header block, fields as given (numbers out of octal range in base-256)."""
    buf = bytearray(BLOCK)

    def put(offset: int, length: int, value: bytes) -> None:
        buf[offset:offset + length] = value[:length].ljust(length, b"\0")

    put(0, 100, name)
    put(100, 8, number_field(mode, 8))
    put(108, 8, number_field(uid, 8))
    put(116, 8, number_field(gid, 8))
    put(124, 12, number_field(size, 12))
    put(136, 12, number_field(mtime, 12))
    put(148, 8, b" " * 8)
    put(156, 1, kind)
    put(157, 100, link)
    put(257, 8, b"ustar\x0000")
    put(329, 8, number_field(dev[0], 8))
    put(337, 8, number_field(dev[1], 8))
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def pax(records: dict[bytes, bytes], kind: bytes = b"x") -> bytes:
    """A PAX extended header (``x``, or ``g`` for global) holding RECORDS as they are: any key, any value."""
    body = b""
    for key, value in records.items():
        rest = b" " + key + b"=" + value + b"\n"
        length = len(rest) + 1
        while len(str(length).encode()) + len(rest) != length:
            length += 1
        body += str(length).encode() + rest
    return header(b"PaxHeaders/x", kind, len(body)) + padded(body)


def member(name: bytes, data: bytes = b"", records: dict[bytes, bytes] | None = None, **fields: Any) -> bytes:
    """A PAX header (when RECORDS) and a member with its data, padded."""
    return (pax(records) if records else b"") + header(name, size=len(data), **fields) + padded(data)


END = b"\0" * (2 * BLOCK)
