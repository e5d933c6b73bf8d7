"""A layer unpacked before its lowers are in (shared/layer/deferred.py), then finished on them, is the layer the
ordinary unpacker makes on them: every path, type, mode, owner, mtime and xattr (tests/treesnap.py), the diff
dir's root included. Hypothesis writes the upper tars over a fixed lower stack that shows every case of the rule
(directories with their own modes, owners, mtimes and xattrs, one of them made opaque above, a file to whiteout,
files to link to); a tar that links into a lower is refused with NeedsLowers (the store then unpacks it the
ordinary way), and a tar the ordinary unpacker refuses is refused the same way."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.digest import Digest
from shared.errors import StrataError
from shared.layer.deferred import NeedsLowers, apply_lowers, pending_from_json, pending_to_json, unpack_deferred
from shared.layer.unpack import extract, unpack_blob
from shared.layer.whiteout import OVERLAY
from tests.marks import needs_root
from tests.tarmaker import Entry, make_tar
from tests.treesnap import differences, snapshot

pytestmark = needs_root

CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
BASE = [Entry("./", "dir", mode=0o751, uid=3, gid=4, mtime=11, xattrs={"user.root": b"base"}),
        Entry("etc/", "dir", mode=0o755, mtime=12), Entry("etc/passwd", data=b"root"),
        Entry("srv/", "dir", mode=0o710, uid=1234, gid=99, mtime=13, xattrs={"user.srv": b"1"}),
        Entry("srv/deep/", "dir", mode=0o700, uid=5, mtime=14), Entry("srv/deep/f", data=b"f"),
        Entry("opq/", "dir", mode=0o705, uid=6), Entry("opq/inner/", "dir", mode=0o701, uid=7),
        Entry("lib/", "dir", mtime=15), Entry("lib/a.so", data=b"ELF", mode=0o750, uid=7, mtime=99)]
MID = [Entry("opq/", "dir", mode=0o705, uid=6, mtime=16), Entry("opq/.wh..wh..opq"),
       Entry("srv/", "dir", mode=0o711, uid=1234, gid=98, mtime=17, xattrs={"user.mid": b"2"})]

PATHS = ["srv/x", "srv/deep/y", "srv/new/z", "opq/inner/q", "etc/x", "brand/new/f", "lib/b.so", "a/b/c", "srv",
         "opq", "etc", "brand", "./", "srv/deep", "a", "a/b"]


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    name = draw(st.sampled_from(PATHS))
    kind = draw(st.sampled_from(["file", "file", "dir", "dir", "symlink", "whiteout", "opaque", "hardlink"]))
    xattrs = draw(st.sampled_from([{}, {}, {"user.k": b"v"}, {"user.srv": b"mine"}, {"security.capability": CAP}]))
    mode = draw(st.sampled_from([0o755, 0o700, 0o1777, 0o4755]))
    uid = draw(st.sampled_from([0, 1, 1234]))
    mtime = draw(st.sampled_from([1, 1_600_000_000]))
    parent, _, leaf = name.rstrip("/").rpartition("/")
    if kind == "whiteout":
        return Entry(f"{parent + '/' if parent else ''}.wh.{leaf or 'x'}")
    if kind == "opaque":
        return Entry(f"{name.rstrip('/')}/.wh..wh..opq" if name != "./" else ".wh..wh..opq")
    if kind == "hardlink":
        target = draw(st.sampled_from(["lib/a.so", "etc/passwd", "srv/x", "brand/new/f"]))
        return Entry(name.rstrip("/") or "x", "hardlink", link=target)
    if kind == "symlink":
        return Entry(name.rstrip("/") or "l", "symlink", link="/target", uid=uid, mtime=mtime)
    if kind == "dir":
        return Entry(name if name.endswith("/") else name + "/", "dir", mode=mode, uid=uid, mtime=mtime,
                     xattrs=xattrs)
    return Entry(name.rstrip("/") or "f", data=name.encode(), mode=mode & 0o777, uid=uid, mtime=mtime, xattrs=xattrs)


@pytest.fixture(scope="module")
def lowers() -> list[Path]:
    """The lower stack, top first: BASE, then MID over it."""
    work = Path(tempfile.mkdtemp(prefix="strata-deferred-"))
    base, mid = work / "base", work / "mid"
    base.mkdir()
    extract(io.BytesIO(make_tar(*BASE)), base)
    mid.mkdir()
    extract(io.BytesIO(make_tar(*MID)), mid, [base])
    yield [mid, base]
    shutil.rmtree(work)


def _ordinary(tar: bytes, dest: Path, lowers: list[Path]) -> str | None:
    dest.mkdir()
    try:
        extract(io.BytesIO(tar), dest, lowers)
    except StrataError as e:
        return str(e)
    return None


def _deferred(tar: bytes, dest: Path, lowers: list[Path]) -> str | None:
    r, w = os.pipe()
    os.write(w, gzip.compress(tar, 1))  # (small: the pipe holds it)
    os.close(w)
    try:
        with io.FileIO(r, "rb") as raw:
            done = unpack_deferred(raw, dest, "layer", OVERLAY, None)
    except StrataError as e:
        return str(e).removeprefix("layer: ")
    apply_lowers(dest, pending_from_json(pending_to_json(done.pending)), lowers, OVERLAY)  # (as JSON travels)
    assert done.diff_id == Digest.of_bytes(tar) and done.size == len(tar)
    return None


@settings(max_examples=int(os.environ.get("STRATA_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(entries(), min_size=1, max_size=8))
def test_deferred_then_finished_is_the_ordinary_layer(lowers: list[Path], layer: list[Entry]) -> None:
    tar = make_tar(*layer)
    started = time.time_ns() - 1_000_000_000  # (file times come from a coarser clock)
    work = Path(tempfile.mkdtemp(prefix="strata-deferred-case-"))
    try:
        refused = _ordinary(tar, work / "ordinary", lowers)
        try:
            deferred = _deferred(tar, work / "deferred", lowers)
        except NeedsLowers:
            assert any(e.kind == "hardlink" for e in layer)
            return
        assert deferred == refused
        if refused is None:
            assert _differences(work / "deferred", work / "ordinary", started) == []
    finally:
        shutil.rmtree(work)


def _differences(ours: Path, theirs: Path, started: int) -> list[str]:
    """treesnap's differences, but for the mtimes of directories that have none to take (made as parents where no
    lower shows them, or emptied by a later entry): both are the time of the unpack."""
    a, b = snapshot(ours), snapshot(theirs)
    for path in a.keys() & b.keys():
        if a[path].type == "dir" and min(a[path].mtime_ns or 0, b[path].mtime_ns or 0) >= started:
            a[path] = a[path]._replace(mtime_ns=b[path].mtime_ns)
    return differences(a, b)


def test_implicit_directories_wait_for_their_lowers(tmp_path: Path, lowers: list[Path]) -> None:
    """The examples the property stands for: a parent made implicitly takes the lower's metadata only once
    finished; a later explicit entry for it still wins, the lower's other xattrs stay; a layer's ``./`` too."""
    tar = make_tar(Entry("srv/new", data=b"x"), Entry("brand/new/f"), Entry("srv/", "dir", mode=0o700, uid=1,
                                                                           xattrs={"user.k": b"v"}))
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(tar))
    started = time.time_ns() - 1_000_000_000  # (file times come from a coarser clock)
    ordinary = unpack_blob(blob, tmp_path / "ordinary", Digest.of_bytes(tar), lowers)
    with open(blob, "rb") as raw:
        done = unpack_deferred(raw, tmp_path / "deferred", "layer", OVERLAY, None)  # type: ignore[arg-type]
    assert set(done.pending) == {(), ("srv",), ("brand",), ("brand", "new")}
    assert os.stat(tmp_path / "deferred").st_mode & 0o777 == 0o700  # bare until finished
    apply_lowers(tmp_path / "deferred", done.pending, lowers, OVERLAY)
    assert (done.diff_id, done.size) == (ordinary.diff_id, ordinary.size)
    assert _differences(tmp_path / "deferred", tmp_path / "ordinary", started) == []
    srv = tmp_path / "deferred" / "srv"
    assert (os.stat(srv).st_mode & 0o7777, os.stat(srv).st_uid) == (0o700, 1)
    assert os.getxattr(srv, "user.k") == b"v" and os.getxattr(srv, "user.mid") == b"2"


def test_a_hard_link_into_a_lower_needs_the_lowers(tmp_path: Path) -> None:
    tar = make_tar(Entry("lib/", "dir"), Entry("lib/b.so", "hardlink", link="lib/a.so"))
    with pytest.raises(NeedsLowers), io.BytesIO(gzip.compress(tar)) as raw:
        unpack_deferred(raw, tmp_path / "d", "layer", OVERLAY, None)  # type: ignore[arg-type]
