"""Malformed tars at unpack: tars that end without their final padding (``umoci insert`` 0.4.7 writes them) are
taken, tars cut inside a header or data, garbage after the members, PAX values and header numbers out of range,
names and xattrs the kernel refuses are each one line naming the member (never a traceback).

The short tar is made by the real peer (umoci insert) and compared with ``umoci unpack``; everything else is
hand-written byte by byte (tests/tarmaker.py's :func:`header`, :func:`pax`, :func:`member`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.digest import Digest
from shared.errors import Kind, StrataError
from shared.layer.unpack import extract, unpack_blob
from tests.marks import needs_root
from tests.tarmaker import BLOCK, END, header, member, pax

pytestmark = needs_root


def unpack(tmp_path: Path, data: bytes, name: str = "dest") -> Path:
    dest = tmp_path / name
    dest.mkdir()
    extract(io.BytesIO(data), dest)
    return dest


# -- 1. tars that end without their final padding ---------------------------------------------------------------


def _umoci(*args: str | Path) -> None:
    subprocess.run(["umoci", *(str(a) for a in args)], check=True, capture_output=True)


def _layers(layout: Path, tag: str) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    desc = next(d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == tag)

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.split(":", 1)[1]

    manifest = json.loads(blob(desc["digest"]).read_text())
    return [blob(layer["digest"]) for layer in manifest["layers"]]


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v umoci"], capture_output=True).returncode != 0,
                    reason="needs umoci (scripts/test installs it)")
def test_umoci_insert_layer_without_final_padding_unpacks(tmp_path: Path) -> None:
    """``umoci insert`` 0.4.7 ends its layer right after the last file's data; umoci unpack takes it, so do we."""
    layout, image = tmp_path / "layout", f"{tmp_path / 'layout'}:t"
    _umoci("init", "--layout", layout)
    _umoci("new", "--image", image)
    source = tmp_path / "inserted.txt"
    source.write_bytes(b"inserted by umoci, 37 bytes of data!\n")  # not a multiple of 512: padding is due
    os.chmod(source, 0o640)
    _umoci("insert", "--image", image, source, "/etc/inserted.txt")
    blob = _layers(layout, "t")[-1]
    tar = gzip.decompress(blob.read_bytes())
    data_end = tar.index(source.read_bytes()) + len(source.read_bytes())
    assert data_end == len(tar) and len(tar) % BLOCK != 0, "umoci insert wrote a complete tar: nothing to test"

    ours = tmp_path / "ours"
    result = unpack_blob(blob, ours, Digest("sha256", hashlib.sha256(tar).hexdigest()))
    assert result.size == len(tar)  # the diff_id is of the bytes as they are
    bundle = tmp_path / "bundle"
    _umoci("unpack", "--image", image, bundle)
    theirs = bundle / "rootfs/etc/inserted.txt"
    for path in (ours / "etc/inserted.txt", theirs):
        assert path.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(os.stat(ours / "etc/inserted.txt").st_mode) == stat.S_IMODE(os.stat(theirs).st_mode) == 0o640


# 700 bytes of data: 324 bytes of padding after it, then the two zero blocks (1,024 bytes)
@pytest.mark.parametrize("keep", [0, 1, 323, 324, 324 + BLOCK, 324 + 2 * BLOCK - 1],
                         ids=lambda keep: f"{keep}-bytes-after-data")
def test_complete_tar_without_end_blocks_unpacks(tmp_path: Path, keep: int) -> None:
    """Cut anywhere in the last file's padding, or after a whole zero block: every member is complete."""
    body = header(b"d/", b"5", mode=0o750) + header(b"d/f", size=700, mode=0o600) + b"x" * 700
    d = unpack(tmp_path, (body + b"\0" * (324 + 2 * BLOCK))[: len(body) + keep])
    assert (d / "d/f").read_bytes() == b"x" * 700
    assert stat.S_IMODE(os.stat(d / "d/f").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d / "d").st_mode) == 0o750


def test_cut_inside_the_first_zero_block_is_refused(tmp_path: Path) -> None:
    """As Go's archive/tar: a block cut short where a header is due is a cut header, zeros or not."""
    body = header(b"f", size=700) + b"x" * 700 + b"\0" * 324
    with pytest.raises(StrataError, match="truncated inside the header at byte 1536"):
        unpack(tmp_path, body + b"\0" * 100)


def test_no_padding_after_several_members_unpacks(tmp_path: Path) -> None:
    d = unpack(tmp_path, member(b"a", b"A") + header(b"b", size=5) + b"hello")
    assert (d / "a").read_bytes() == b"A" and (d / "b").read_bytes() == b"hello"


def test_unpack_blob_hashes_the_short_tar_as_it_is(tmp_path: Path) -> None:
    tar = member(b"a", b"A") + header(b"b", size=5) + b"hello"
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(tar))
    result = unpack_blob(blob, tmp_path / "d", Digest("sha256", hashlib.sha256(tar).hexdigest()))
    assert result.size == len(tar)


@pytest.mark.parametrize("keep", [1, 100, 499], ids=lambda k: f"{k}-of-500-bytes")
def test_tar_cut_inside_data_is_refused(tmp_path: Path, keep: int) -> None:
    tar = member(b"a", b"A") + header(b"b", size=500) + b"y" * keep
    with pytest.raises(StrataError, match="truncated inside 'b'") as info:
        unpack(tmp_path, tar)
    assert info.value.kind is Kind.INTEGRITY


@pytest.mark.parametrize("keep", [1, 100, 511], ids=lambda k: f"{k}-of-512-bytes")
def test_tar_cut_inside_header_is_refused(tmp_path: Path, keep: int) -> None:
    tar = member(b"a", b"A") + header(b"b", size=5)[:keep]
    with pytest.raises(StrataError, match="truncated inside the header at byte 1024") as info:
        unpack(tmp_path, tar)
    assert info.value.kind is Kind.INTEGRITY


@pytest.mark.parametrize("keep", [700, 1024], ids=["in-its-data", "before-its-member"])
def test_tar_cut_inside_pax_header_is_refused(tmp_path: Path, keep: int) -> None:
    tar = member(b"a", b"A") + pax({b"path": b"long/" * 40})[:keep]
    blob = tmp_path / "blob"
    blob.write_bytes(tar)
    with pytest.raises(StrataError, match=r"^layer 1 is corrupt") as info:
        unpack_blob(blob, tmp_path / "d", Digest("sha256", hashlib.sha256(tar).hexdigest()), what="layer 1")
    assert info.value.kind is Kind.INTEGRITY


def test_garbage_after_members_is_refused(tmp_path: Path) -> None:
    """tarfile took a block failing its checksum for the end of the archive; GNU tar and Go refuse it."""
    with pytest.raises(StrataError, match="invalid header at byte 1024") as info:
        unpack(tmp_path, member(b"a", b"A") + b"\x01" * BLOCK + member(b"b", b"B") + END)
    assert info.value.kind is Kind.INTEGRITY


def test_truncated_tar_blob_is_one_line_error(tmp_path: Path) -> None:
    tar = member(b"a", b"A") + header(b"b", size=5)[:100]
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(tar))
    with pytest.raises(StrataError) as info:
        unpack_blob(blob, tmp_path / "d", Digest("sha256", hashlib.sha256(tar).hexdigest()), what="layer 2")
    assert str(info.value) == "layer 2: layer tar is truncated inside the header at byte 1024"


# -- 2. PAX values the platform cannot take ----------------------------------------------------------------------

HUGE = b"99999999999999999999"
BAD_PAX: list[tuple[str, dict[bytes, bytes], str, Kind]] = [
    ("path with NUL", {b"path": b"etc/pass\0wd"}, "path contains a NUL byte", Kind.HOSTILE),
    ("linkpath with NUL", {b"linkpath": b"/etc\0/x"}, "link target contains a NUL byte", Kind.HOSTILE),
    ("uid too large", {b"uid": HUGE}, "invalid uid 99999999999999999999", Kind.INTEGRITY),
    ("gid too large", {b"gid": HUGE}, "invalid gid 99999999999999999999", Kind.INTEGRITY),
    ("uid 2**32-1 means unchanged to chown", {b"uid": b"4294967295"}, "invalid uid 4294967295", Kind.INTEGRITY),
    ("uid negative", {b"uid": b"-2"}, "invalid PAX uid '-2'", Kind.INTEGRITY),
    ("uid -1 means unchanged to chown", {b"uid": b"-1"}, "invalid PAX uid '-1'", Kind.INTEGRITY),
    ("gid non-numeric", {b"gid": b"wheel"}, "invalid PAX gid 'wheel'", Kind.INTEGRITY),
    ("uid 5000 digits", {b"uid": b"9" * 5000}, "invalid PAX uid", Kind.INTEGRITY),
    ("mtime 1e30", {b"mtime": b"1e30"}, "invalid PAX mtime '1e30'", Kind.INTEGRITY),
    ("mtime huge integer", {b"mtime": b"9" * 30}, "invalid PAX mtime", Kind.INTEGRITY),
    ("mtime past time_t", {b"mtime": HUGE}, "invalid mtime '99999999999999999999'", Kind.INTEGRITY),
    ("mtime non-numeric", {b"mtime": b"yesterday"}, "invalid PAX mtime 'yesterday'", Kind.INTEGRITY),
    ("mtime nan", {b"mtime": b"nan"}, "invalid PAX mtime 'nan'", Kind.INTEGRITY),
    ("mtime inf", {b"mtime": b"inf"}, "invalid PAX mtime 'inf'", Kind.INTEGRITY),
    ("size negative", {b"size": b"-5"}, "invalid PAX size '-5'", Kind.INTEGRITY),
    ("size non-numeric", {b"size": b"big"}, "invalid PAX size 'big'", Kind.INTEGRITY),
    ("xattr name with NUL", {b"SCHILY.xattr.user.a\0b": b"v"}, "invalid xattr name", Kind.INTEGRITY),
    ("xattr name empty", {b"SCHILY.xattr.": b"v"}, "invalid xattr name ''", Kind.INTEGRITY),
    ("GNU sparse size non-numeric", {b"GNU.sparse.size": b"x"}, "malformed header", Kind.INTEGRITY),
]


@pytest.mark.parametrize(("case", "records", "message", "kind"), BAD_PAX, ids=[c[0] for c in BAD_PAX])
def test_bad_pax_value_is_one_line_error(tmp_path: Path, case: str, records: dict[bytes, bytes], message: str,
                                         kind: Kind) -> None:
    link = b"target" if b"linkpath" in records else b""
    tar = member(b"ok", b"fine") + member(b"victim", records=records, kind=b"2" if link else b"0", link=link) + END
    with pytest.raises(StrataError) as info:
        unpack(tmp_path, tar)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "'victim'" in text or "NUL" in text or "malformed" in text  # names the member where it has its name
    assert info.value.kind is kind


BAD_HEADER: list[tuple[str, dict[str, Any], str]] = [
    ("uid negative (base-256)", {"uid": -5}, "invalid uid -5"),
    ("gid beyond 32 bits (base-256)", {"gid": 1 << 40}, f"invalid gid {1 << 40}"),
    ("mtime beyond time_t (base-256)", {"mtime": 1 << 80}, "invalid mtime"),
    ("device major too large", {"kind": b"3", "dev": (1 << 20, 0)}, "invalid device number"),
    ("device minor negative", {"kind": b"4", "dev": (1, -1)}, "invalid device number"),
]


@pytest.mark.parametrize(("case", "fields", "message"), BAD_HEADER, ids=[c[0] for c in BAD_HEADER])
def test_bad_header_number_is_one_line_error(tmp_path: Path, case: str, fields: dict[str, Any],
                                             message: str) -> None:
    with pytest.raises(StrataError, match=message) as info:
        unpack(tmp_path, member(b"victim", **fields) + END)
    assert info.value.kind is Kind.INTEGRITY and "'victim'" in str(info.value)


def test_negative_size_in_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match="invalid size -1 for entry 'victim'"):
        unpack(tmp_path, header(b"victim", size=-1) + END)


def test_pax_values_in_range_still_work(tmp_path: Path) -> None:
    """The checks refuse only what cannot be meant: large ids, old and far mtimes, exact fractions pass."""
    tar = (member(b"a", b"A", {b"uid": b"4294967294", b"gid": b"70000", b"mtime": b"-1.5"})
           + member(b"b", b"B", {b"mtime": b"4102444800.123456789"}) + END)
    d = unpack(tmp_path, tar)
    st = os.stat(d / "a")
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (4294967294, 70000, -1_500_000_000)
    assert os.stat(d / "b").st_mtime_ns == 4102444800_123456789


# -- 3. found by the fuzzer (tests/test_unpack_fuzz.py) ------------------------------------------------------------


def test_fifo_device_fields_are_ignored(tmp_path: Path) -> None:
    """A fifo's devmajor/devminor mean nothing; a negative one (base-256) ended in OverflowError from makedev."""
    d = unpack(tmp_path, member(b"fifo", kind=b"6", dev=(-1, 1 << 40)) + END)
    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)


def test_gnu_sparse_garbage_in_first_member_is_one_line_error(tmp_path: Path) -> None:
    """tarfile parses the first header while it opens the tar, outside the loop that read the others."""
    with pytest.raises(StrataError, match="malformed header") as info:
        unpack(tmp_path, member(b"victim", records={b"GNU.sparse.size": b""}) + END)
    assert info.value.kind is Kind.INTEGRITY


@pytest.mark.parametrize(("xattr", "kind"), [(b"bogus.name", b"0"), (b"user." + b"k" * 300, b"5"),
                                             (b"user.x", b"2")], ids=["no-such-namespace", "name-too-long",
                                                                      "user-xattr-on-symlink-is-skipped"])
def test_xattr_the_kernel_refuses_is_an_integrity_error(tmp_path: Path, xattr: bytes, kind: bytes) -> None:
    tar = member(b"victim", records={b"SCHILY.xattr." + xattr: b"v"}, kind=kind,
                 link=b"t" if kind == b"2" else b"") + END
    if kind == b"2":
        assert os.path.islink(unpack(tmp_path, tar) / "victim")
        return
    with pytest.raises(StrataError, match=r"cannot set xattr .* of entry 'victim'") as info:
        unpack(tmp_path, tar)
    assert info.value.kind is Kind.INTEGRITY


@pytest.mark.parametrize("mtime", [b"nan", b"inf", b"1e30"])
def test_mtime_of_a_stacked_pax_header_is_checked(tmp_path: Path, mtime: bytes) -> None:
    """Two PAX headers in a row: tarfile applies the second's mtime (as a float) and keeps only the first's records,
    so the text was not there to check; ``int(nan)`` ended in ValueError."""
    tar = pax({b"path": b"victim"}) + pax({b"mtime": mtime}) + header(b"x") + END
    with pytest.raises(StrataError, match=r"invalid mtime .* for entry 'victim'") as info:
        unpack(tmp_path, tar)
    assert info.value.kind is Kind.INTEGRITY


@pytest.mark.parametrize(("entry", "message"), [
    (header(b"link", b"2"), "symlink 'link' has an empty target"),
    (pax({b"path": b"d/" + b"n" * 256}) + header(b"x"), "has a path component longer than 255 bytes"),
], ids=["empty-symlink-target", "component-over-255-bytes"])
def test_names_the_kernel_refuses_are_integrity_errors(tmp_path: Path, entry: bytes, message: str) -> None:
    """Were "cannot unpack layer: No such file or directory" / "File name too long", as if the host failed."""
    with pytest.raises(StrataError, match=message) as info:
        unpack(tmp_path, entry + END)
    assert info.value.kind is Kind.INTEGRITY


@pytest.mark.parametrize("kind", [b"2", b"1"], ids=["symlink", "hardlink"])
def test_link_target_longer_than_the_kernel_takes_is_the_layers_fault(tmp_path: Path, kind: bytes) -> None:
    """symlink(2) fails with ENAMETOOLONG: that was a SYSTEM error (as if the host were at fault); it is the
    layer's, named as such, before anything is created."""
    target = b"t/" * 2100
    tar = member(b"a", b"A") + member(b"link", records={b"linkpath": target}, kind=kind) + END
    with pytest.raises(StrataError, match=r"link target of 4200 bytes, over Linux's 4095") as info:
        unpack(tmp_path, tar)
    assert info.value.kind is Kind.INTEGRITY and "\n" not in str(info.value)
    assert not (tmp_path / "dest" / "link").exists()
