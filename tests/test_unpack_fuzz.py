"""Fuzzing the layer unpacker with hypothesis, PAX headers included (issue 13).

Hypothesis writes tars byte by byte (tests/tarmaker.py's raw writer): random member names (``..``, ``.``,
absolute paths to the sandbox's own files, whiteouts, NUL bytes, long and non-UTF-8 names), types (the ones we
keep, GNU long names, sparse, unknown), sizes, modes, ids and mtimes (base-256 extremes), and PAX records (path,
linkpath, uid, gid, mtime, size, ``SCHILY.xattr.*``, GNU sparse keys, garbage keys; huge, negative, non-numeric
values, NUL bytes, global headers), then ends it properly, leaves the end blocks out, cuts it at a random offset or
flips a byte. The property: ``unpack_blob`` (what a pull calls) either succeeds or raises a one-line StrataError,
never another exception, and nothing outside its target changes: a sentinel tree beside the target (files, a
directory, a symlink, a hardlinkable file) and the lower layer it unpacks onto are snapshotted before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.digest import Digest
from shared.errors import Kind, StrataError
from shared.layer.unpack import unpack_blob
from shared.layer.whiteout import OVERLAY, OverlayFormat
from tests.marks import needs_root
from tests.rootless import User
from tests.tarmaker import END, header, padded, pax
from tests.treesnap import node, snapshot

pytestmark = needs_root

SANDBOX_BASE = Path(tempfile.gettempdir())
# bounded for CI; STRATA_FUZZ_EXAMPLES=5000 for a longer hunt
EXAMPLES = int(os.environ.get("STRATA_FUZZ_EXAMPLES", "300"))
USER_EXAMPLES = EXAMPLES // 3
RUNS = {"examples": 0, "ok": 0, "refused": 0}

# -- what a member may be made of ---------------------------------------------------------------------------------

PARTS = ["a", "b", "dir", "..", ".", "", "outside", "victim", ".wh.a", ".wh..wh..opq", ".wh.", ".wh..wh.plnk",
         "x\0y", "é", "\udcff", "n" * 300, "lower-file", "sub"]
NAME = st.one_of(
    st.lists(st.sampled_from(PARTS), min_size=0, max_size=4).map("/".join),
    st.sampled_from(["../outside/victim", "OUTSIDE/victim", "OUTSIDE/new", "/", "./", "lower-file", "sub/f"]),
    st.text(max_size=40),
)
# mostly the types a layer has, so that many tars get far; then the rare and the unknown
TYPES = st.one_of(st.sampled_from([b"0", b"5", b"2", b"1"]),
                  st.sampled_from([b"\0", b"3", b"4", b"6", b"7", b"L", b"K", b"S", b"V", b"Z", b"x", b"g", b"D",
                                   b"M"]))
BIG = st.sampled_from([0, 1, -1, -2, 7, 1000, 2**21, 2**31, 2**32 - 2, 2**32 - 1, 2**32, 2**63 - 1, 2**63, -(2**63),
                       2**80])
NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "-", "1e30", "1.5", "-1.5", "0.000000001", "nan", "inf", "-inf", "abc", " 1", "1 ", "0x10",
                     "9" * 30, "9" * 5000, "1.2.3", "\0", "1\n2", "١٢", "+5", ".5", "5."]),
)
VALUE = st.one_of(NUMBER_TEXT, st.text(max_size=30), st.sampled_from(["a\0b", "OUTSIDE/victim", "../x", "/"]))
KEYS = st.one_of(
    st.sampled_from(["path", "linkpath", "uid", "gid", "mtime", "atime", "ctime", "size", "uname", "gname",
                     "hdrcharset", "charset", "comment", "GNU.sparse.size", "GNU.sparse.realsize",
                     "GNU.sparse.numblocks", "GNU.sparse.offset", "GNU.sparse.numbytes", "GNU.sparse.map",
                     "GNU.sparse.name", "GNU.sparse.major", "GNU.sparse.minor", "SCHILY.xattr.",
                     "SCHILY.xattr.user.k", "SCHILY.xattr.trusted.overlay.opaque", "SCHILY.xattr.security.capability",
                     "SCHILY.xattr.user.a\0b", "SCHILY.xattr.bogus", "SCHILY.xattr." + "k" * 300,
                     "LIBARCHIVE.xattr.user.k", "SCHILY.devmajor", "SCHILY.devminor"]),
    st.text(min_size=1, max_size=12).filter(lambda k: "=" not in k),
)
SANE_RECORDS = st.fixed_dictionaries({}, optional={
    "path": st.sampled_from(["p/long/" + "n" * 120, "é/ü", "dir/x"]), "uid": st.sampled_from(["0", "1000", "70000"]),
    "mtime": st.sampled_from(["1.5", "-1.25", "1600000000.123456789", "0"]), "SCHILY.xattr.user.k": st.text(max_size=5),
})
RECORDS: st.SearchStrategy[dict[str, str]] = st.one_of(st.just({}), SANE_RECORDS,
                                                       st.dictionaries(KEYS, VALUE, max_size=5))


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@st.composite
def members(draw: st.DrawFn, outside: str) -> bytes:
    """One member: maybe a PAX header (``x`` or global ``g``), the header, its data."""
    name = _raw(draw(NAME).replace("OUTSIDE", outside))
    kind = draw(TYPES)
    data = draw(st.one_of(st.just(b""), st.binary(max_size=40), st.sampled_from([b"z" * 511, b"z" * 513])))
    sane = draw(st.booleans())  # half the members are well-formed but for name, type and records
    size = len(data) if sane else draw(st.one_of(st.just(len(data)), BIG, st.integers(min_value=0, max_value=2000)))
    fields: dict[str, Any] = {
        "mode": draw(st.one_of(st.sampled_from([0o644, 0o755, 0o4755, 0o7777, 0]), BIG)),
        "uid": 0 if sane else draw(st.one_of(st.just(0), BIG)),
        "gid": 0 if sane else draw(st.one_of(st.just(0), BIG)),
        "mtime": 1_600_000_000 if sane else draw(st.one_of(st.just(1_600_000_000), BIG)),
        "link": _raw(draw(st.one_of(st.just(""), NAME)).replace("OUTSIDE", outside)),
        "dev": (1, 3) if sane else (draw(st.one_of(st.just(1), BIG)), draw(st.one_of(st.just(3), BIG))),
    }
    records = draw(RECORDS)
    raw_records = {_raw(k): _raw(v.replace("OUTSIDE", outside)) for k, v in records.items()}
    extended = pax(raw_records, draw(st.sampled_from([b"x", b"x", b"g"]))) if raw_records else b""
    return extended + header(name, kind, size, **fields) + padded(data)


SAFE_NAME = st.lists(st.sampled_from(["a", "b", "sub", "lower-file", ".wh.a", ".wh..wh..opq", "é"]), min_size=1,
                     max_size=3).map("/".join)


@st.composite
def plausible_members(draw: st.DrawFn, outside: str) -> bytes:
    """A member as a layer writer makes it (data only for files, links to names that may exist): these tars get
    past the parser, so the writer's rules and the sandbox are what is tested."""
    name = draw(st.one_of(SAFE_NAME, st.sampled_from(["../outside/victim", f"{outside}/victim", "sub"])))
    kind = draw(st.sampled_from([b"0", b"0", b"5", b"2", b"1", b"3", b"6"]))
    data = draw(st.binary(max_size=600)) if kind == b"0" else b""
    link = draw(st.one_of(SAFE_NAME, st.sampled_from([outside, f"{outside}/victim", "../outside", "/"])))
    records = draw(st.one_of(st.just({}), SANE_RECORDS))
    return (pax({_raw(k): _raw(v) for k, v in records.items()}) if records else b"") + header(
        _raw(name), kind, len(data), mode=draw(st.sampled_from([0o644, 0o755, 0o4755, 0o1777, 0])),
        link=_raw(link) if kind in (b"1", b"2") else b"", dev=(1, 3)) + padded(data)


@st.composite
def tars(draw: st.DrawFn, outside: str) -> bytes:
    kind = draw(st.sampled_from(["wild", "plausible"]))
    event(f"members: {kind}")
    strategy = members(outside) if kind == "wild" else plausible_members(outside)
    body = b"".join(draw(st.lists(strategy, min_size=0, max_size=6)))
    ending = draw(st.sampled_from(["end", "end", "none", "cut", "flip"]))
    event(f"ending: {ending}")
    if ending == "end":
        return body + END
    if ending == "none" or not body:
        return body
    offset = draw(st.integers(min_value=0, max_value=len(body) - 1))
    if ending == "cut":
        return body[:offset]
    return body[:offset] + bytes([body[offset] ^ draw(st.integers(1, 255))]) + body[offset + 1:] + END


# -- the sandbox --------------------------------------------------------------------------------------------------


def _sandbox() -> Path:
    """A fresh sandbox: outside/ (the sentinel), lower/ (the layer unpacked onto), nothing else yet."""
    box = Path(tempfile.mkdtemp(prefix="strata-fuzz-", dir=SANDBOX_BASE))
    outside = box / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "victim").write_bytes(b"safe")
    (outside / "dir/inner").write_bytes(b"inner")
    os.symlink("/", outside / "root-link")
    os.chmod(outside / "victim", 0o640)
    lower = box / "lower"
    (lower / "sub").mkdir(parents=True)
    (lower / "lower-file").write_bytes(b"lower")
    (lower / "sub/f").write_bytes(b"f")
    os.setxattr(lower / "lower-file", "user.k", b"v")
    return box


def _state(box: Path) -> object:
    return (sorted(os.listdir(box)), node(box, with_mtime=False), snapshot(box / "outside"),
            snapshot(box / "lower"), os.stat(box / "outside/victim").st_nlink)


def _fuzz_one(box: Path, data: bytes, fmt: OverlayFormat = OVERLAY, ids: int | None = None) -> None:
    blob = box / "blob"
    blob.write_bytes(data)
    before = _state(box)
    RUNS["examples"] += 1
    try:
        unpack_blob(blob, box / "dest", Digest("sha256", hashlib.sha256(data).hexdigest()), [box / "lower"],
                    fmt=fmt, ids=ids)
        RUNS["ok"] += 1
        event("unpacked")
    except StrataError as e:
        RUNS["refused"] += 1
        assert "\n" not in str(e), str(e)
        event(f"refused: {e.kind.name}")
        if e.kind is not Kind.INTEGRITY and e.kind is not Kind.HOSTILE:
            event(f"refused {e.kind.name}: {str(e).split(': ', 2)[-1][:50]}")
    after = _state(box)
    after[0].remove("dest")  # type: ignore[index]
    assert after == before


def _remove(box: Path) -> None:
    for dirpath, dirnames, _ in os.walk(box):  # mode 000 directories are fine for root, but not for os.walk's
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | 0o700)
    shutil.rmtree(box)


def fuzz(examples: int, fmt: OverlayFormat = OVERLAY, ids: int | None = None, **more: Any) -> None:
    """EXAMPLES random tars, each unpacked by ``unpack_blob`` (in FMT, with IDS ids, as a store of that kind
    does) in a fresh sandbox: the property of the module doc. Also what tests/rootless_driver.py runs as a user."""
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow,
              HealthCheck.data_too_large, HealthCheck.filter_too_much], **more)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        box = _sandbox()
        try:
            tar = data.draw(tars(str(box / "outside")))
            _fuzz_one(box, tar, fmt, ids)
        finally:
            _remove(box)

    one()


def test_unpack_random_tars_errs_cleanly_and_stays_inside() -> None:
    fuzz(EXAMPLES)


def test_as_a_user_random_tars_err_cleanly_and_stay_inside(rootless_user: User) -> None:
    """The same property in a user's namespace, with a user store's format and ids (a sandbox of the user's own,
    which the unpacker could write, were it fooled): fewer examples, the walls being the same code."""
    done = rootless_user.tool("tests.rootless_driver", "fuzz", str(USER_EXAMPLES))
    assert done.code == 0, done.err
    runs = json.loads(done.out)
    assert runs["examples"] == USER_EXAMPLES and runs["ok"] > 0 and runs["refused"] > 0, runs


@pytest.fixture(scope="module", autouse=True)
def _report() -> object:
    yield
    print(f"\nunpack fuzz: {RUNS['examples']} examples ({RUNS['ok']} unpacked, {RUNS['refused']} refused)")
