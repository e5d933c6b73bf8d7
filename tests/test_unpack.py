"""tar -> overlay diff dir: the whiteout rules, implicit parents, hardlinks, and hostile entries.

Each hostile case checks that nothing outside the destination changed and that the error names the cause.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from shared.digest import Digest
from shared.errors import Kind, StrataError
from shared.layer.unpack import extract, unpack_blob
from tests.marks import needs_root
from tests.tarmaker import HOSTILE, Entry, make_tar

pytestmark = needs_root


def unpack(tmp_path: Path, name: str, data: bytes, lowers: tuple[Path, ...] = ()) -> Path:
    dest = tmp_path / name
    dest.mkdir()
    extract(io.BytesIO(data), dest, lowers)
    return dest


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_whiteouts_become_overlay_format(tmp_path: Path) -> None:
    d = unpack(tmp_path, "l", make_tar(Entry("etc/", "dir"), Entry("etc/.wh.gone"), Entry("opq/", "dir"),
                                       Entry("opq/.wh..wh..opq"), Entry("opq/kept", data=b"k")))
    assert is_whiteout(d / "etc/gone")
    assert not (d / "etc/.wh.gone").exists()
    assert os.getxattr(d / "opq", "trusted.overlay.opaque") == b"y"
    assert (d / "opq/kept").read_bytes() == b"k"  # the same layer's entries stay, whatever the order
    assert not (d / "opq/.wh..wh..opq").exists()


def test_opaque_marker_after_whiteouts_drops_them(tmp_path: Path) -> None:
    d = unpack(tmp_path, "l", make_tar(Entry("d/", "dir"), Entry("d/.wh.x"), Entry("d/new", data=b"n"),
                                       Entry("d/.wh..wh..opq")))
    assert os.getxattr(d / "d", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(d / "d")) == ["new"]


@pytest.mark.parametrize("name", [".wh.", "etc/.wh.", ".wh..", "etc/.wh..", ".wh...", "etc/.wh..."])
def test_invalid_whiteouts_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(StrataError, match="invalid whiteout") as info:
        unpack(tmp_path, "l", make_tar(Entry("etc/", "dir"), Entry(name)))
    assert info.value.kind is Kind.HOSTILE


def test_implicit_parent_keeps_lower_metadata(tmp_path: Path) -> None:
    low = unpack(tmp_path, "low", make_tar(Entry("./", "dir", mode=0o751, uid=3), Entry("srv/", "dir", mode=0o710,
                                                                                          uid=1234, gid=99,
                                                                                          mtime=1234567)))
    up = unpack(tmp_path, "up", make_tar(Entry("srv/new", data=b"x"), Entry("brand/new/file")), (low,))
    st = os.stat(up / "srv")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o710, 1234, 99, 1234567)
    root = os.stat(up)
    assert (stat.S_IMODE(root.st_mode), root.st_uid) == (0o751, 3)  # the diff dir's root is a parent too
    fresh = os.stat(up / "brand/new")
    assert (stat.S_IMODE(fresh.st_mode), fresh.st_uid) == (0o755, 0)


def test_implicit_parent_hidden_by_opaque_lower_gets_defaults(tmp_path: Path) -> None:
    base = unpack(tmp_path, "base", make_tar(Entry("a/", "dir"), Entry("a/b/", "dir", mode=0o700, uid=5)))
    mid = unpack(tmp_path, "mid", make_tar(Entry("a/", "dir"), Entry("a/.wh..wh..opq")), (base,))
    top = unpack(tmp_path, "top", make_tar(Entry("a/b/c")), (mid, base))
    st = os.stat(top / "a/b")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0)


def test_metadata_kept(tmp_path: Path) -> None:
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    d = unpack(tmp_path, "l", make_tar(
        Entry("bin/", "dir"), Entry("bin/su", data=b"#!", mode=0o4755, uid=0),
        Entry("bin/ping", data=b"p", mode=0o755, xattrs={"security.capability": cap}),
        Entry("tmp/", "dir", mode=0o1777), Entry("f", data=b"f", mode=0o2640, uid=1234, gid=5678, mtime=42,
                                                 xattrs={"user.k": b"v", "trusted.overlay.x": b"1"}),
        Entry("sym", "symlink", link="/bin/su", mtime=77), Entry("null", "chr", dev=(1, 3), mode=0o666),
        Entry("fifo", "fifo"), Entry("bin/hl", "hardlink", link="bin/su")))
    assert stat.S_IMODE(os.stat(d / "bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(d / "tmp").st_mode) == 0o1777
    st = os.stat(d / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o2640, 1234, 5678, 42)
    assert os.getxattr(d / "f", "user.k") == b"v"
    assert os.getxattr(d / "f", "trusted.overlay.overlay.x") == b"1"  # escaped, as overlayfs documents
    assert os.getxattr(d / "bin/ping", "security.capability") == cap
    assert os.readlink(d / "sym") == "/bin/su" and os.lstat(d / "sym").st_mtime == 77
    assert os.stat(d / "null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.stat(d / "fifo").st_mode)
    assert os.stat(d / "bin/hl").st_ino == os.stat(d / "bin/su").st_ino


def test_hardlink_to_lower_layer_is_copied_up(tmp_path: Path) -> None:
    low = unpack(tmp_path, "low", make_tar(Entry("lib/", "dir"), Entry("lib/a.so", data=b"ELF", mode=0o750,
                                                                         uid=7, mtime=99)))
    up = unpack(tmp_path, "up", make_tar(Entry("lib/b.so", "hardlink", link="lib/a.so")), (low,))
    st = os.stat(up / "lib/b.so")
    assert (up / "lib/b.so").read_bytes() == b"ELF"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o750, 7, 99)
    assert not (up / "lib/a.so").exists()


def test_hardlink_to_nowhere_refused(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match="in neither this layer nor a lower one"):
        unpack(tmp_path, "l", make_tar(Entry("x", "hardlink", link="missing")))


def test_later_entry_replaces_earlier(tmp_path: Path) -> None:
    d = unpack(tmp_path, "l", make_tar(Entry("x/", "dir"), Entry("x/y", data=b"1"), Entry("x", data=b"file"),
                                       Entry("z", data=b"1"), Entry("z/", "dir")))
    assert (d / "x").read_bytes() == b"file"
    assert (d / "z").is_dir()




@pytest.mark.parametrize(("case", "entries", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_tar_writes_nothing_outside(tmp_path: Path, case: str, entries: list[Entry], message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"safe")
    resolved = [Entry(e.name, e.kind, e.data, e.mode, e.uid, e.gid, e.link.replace("OUTSIDE", str(outside)))
                for e in entries]
    before = sorted(p.name for p in tmp_path.rglob("*") if "dest" not in p.parts)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StrataError) as info:
        extract(io.BytesIO(make_tar(*resolved)), dest)
    assert message in str(info.value)
    assert info.value.kind is Kind.HOSTILE
    assert sorted(p.name for p in tmp_path.rglob("*") if "dest" not in p.parts) == before
    assert (outside / "victim").read_bytes() == b"safe"
    assert not (tmp_path / "escaped").exists() and not (outside / "escaped").exists()
    assert os.stat(outside / "victim").st_nlink == 1


def test_unpack_blob_checks_diff_id(tmp_path: Path) -> None:
    tar = make_tar(Entry("a", data=b"a"))
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(tar))
    result = unpack_blob(blob, tmp_path / "ok", Digest("sha256", hashlib.sha256(tar).hexdigest()))
    assert result.size == len(tar)
    with pytest.raises(StrataError, match="diff_id mismatch") as info:
        unpack_blob(blob, tmp_path / "bad", Digest("sha256", "0" * 64), what="layer 1")
    assert info.value.kind is Kind.INTEGRITY


def test_corrupt_compressed_stream_is_a_clear_error(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    noise = b"".join(hashlib.sha256(bytes([i % 256, i // 256])).digest() for i in range(4000))  # incompressible
    whole = gzip.compress(make_tar(Entry("a", data=noise)))
    blob.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StrataError, match="layer 1 is corrupt") as info:
        unpack_blob(blob, tmp_path / "d", Digest("sha256", "0" * 64), what="layer 1")
    assert info.value.kind is Kind.INTEGRITY


class SwappingReader:
    """Feeds a tar one block per read, and as soon as ``a/one`` has been written swaps directory ``a`` for a
    symlink to the outside: what a racing process could do mid-extraction."""

    def __init__(self, data: bytes, dest: Path, outside: Path) -> None:
        self.buf = io.BytesIO(data)
        self.dest, self.outside = dest, outside
        self.swapped = False

    def read(self, size: int = -1) -> bytes:
        if not self.swapped and (self.dest / "a" / "one").exists():
            os.rename(self.dest / "a", self.dest / "a.moved")
            os.symlink(self.outside, self.dest / "a")
            self.swapped = True
        return self.buf.read(512)


def test_component_swapped_for_symlink_mid_extraction(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    data = make_tar(Entry("a/", "dir"), Entry("a/one", data=b"1"), Entry("a/two", data=b"2"),
                    Entry("a/sub/three", data=b"3"), Entry("a/four", data=b"4"))
    reader = SwappingReader(data, dest, outside)
    with pytest.raises(StrataError) as info:
        extract(reader, dest)  # type: ignore[arg-type]
    assert reader.swapped
    assert info.value.kind is Kind.HOSTILE and "'a' is a symlink" in str(info.value)
    assert list(outside.iterdir()) == []  # nothing went through the planted symlink
    assert (dest / "a.moved" / "two").read_bytes() == b"2"  # the fd we held still named the real directory


def test_whiteouts_below_a_dir_turned_file_are_redundant(tmp_path: Path) -> None:
    """Regression (found by the umoci differential test): umoci writes ``d`` as a file, then ``d/.wh.a``."""
    low = unpack(tmp_path, "low", make_tar(Entry("d/", "dir"), Entry("d/a", data=b"a"), Entry("d/sub/", "dir")))
    up = unpack(tmp_path, "up", make_tar(Entry("d", data=b"f"), Entry("d/.wh.a"), Entry("d/.wh.sub"),
                                         Entry("d/.wh..wh..opq")), (low,))
    assert (up / "d").read_bytes() == b"f"
    with pytest.raises(StrataError, match="'d' is not a directory"):  # an ordinary entry there is still refused
        unpack(tmp_path, "bad", make_tar(Entry("d", data=b"f"), Entry("d/x", data=b"x")))
    with pytest.raises(StrataError, match="'d' is a symlink"):  # and so is a whiteout through a symlink
        unpack(tmp_path, "bad2", make_tar(Entry("d", "symlink", link="/tmp"), Entry("d/.wh.x")))


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    """As tar does: a leading / is dropped; an absolute hardlink target names a file of this layer."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"safe")
    d = unpack(tmp_path, "l", make_tar(Entry(f"{outside}/victim", data=b"owned"), Entry("/etc/x", data=b"x"),
                                       Entry("hl", "hardlink", link=f"/{outside.relative_to('/')}/victim")))
    assert (outside / "victim").read_bytes() == b"safe" and os.stat(outside / "victim").st_nlink == 1
    assert (d / outside.relative_to("/") / "victim").read_bytes() == b"owned"
    assert (d / "etc/x").read_bytes() == b"x"
    assert os.stat(d / "hl").st_ino == os.stat(d / outside.relative_to("/") / "victim").st_ino
