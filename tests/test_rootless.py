"""Without root (issue 20): ``puller`` run by an ordinary user, in a user namespace of the user's subordinate ids.

Each test makes its own users (tests/rootless.py): one with subordinate ranges, one without, and runs the tools
as them with Debian's python3. What is checked: the store is the user's own (where, mode, owner), an image's
owners survive the trip into it (the same tree comparison against ``umoci unpack`` as tests/test_differential.py,
read inside the namespace), what a user namespace cannot make is said per layer and left out, one id without
ranges works and says so once, another user cannot read the store, a root store and a user's store are never
taken for each other, removal leaves nothing of the subordinate ids, and ``runner`` says in one line what it
cannot do yet.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.rootless import User, user
from tests.scripts import image_script
from tests.tarmaker import HOSTILE, Entry, make_tar
from tests.tools import Tools
from tests.treesnap import Node, differences, snapshot

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[User]:
    with user(tmp_path / "homes", ranges=True) as made:
        yield made


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[User]:
    """A user without subordinate ids."""
    with user(tmp_path / "homes", ranges=False) as made:
        yield made


@pytest.fixture(autouse=True)
def _homes(tmp_path: Path) -> None:
    (tmp_path / "homes").mkdir(mode=0o755)


def _store_of(u: User) -> Path:
    return u.home / ".local" / "share" / "strata"


def test_a_user_pulls_into_a_store_of_their_own(alice: User, test_image: str) -> None:
    pulled = alice.tool("puller", "pull", "--quiet", test_image)
    assert pulled.code == 0, pulled.err
    assert pulled.err == ""  # full ranges: nothing to say
    store = _store_of(alice)
    st = store.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, 0o700)
    assert json.loads((store / "strata.json").read_text()) == {"overlayXattrs": "user"}
    listed = alice.tool("puller", "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert listed.code == 0 and listed.out.split() == [test_image], listed.err
    # XDG_DATA_HOME moves it, as the XDG spec says
    elsewhere = alice.home / "data"
    moved = alice.tool("puller", "pull", "--quiet", test_image, XDG_DATA_HOME=str(elsewhere))
    assert moved.code == 0, moved.err
    assert (elsewhere / "strata" / "strata.json").exists()


def test_an_images_owners_survive_into_a_users_store(alice: User, tools: Tools, rich_image: str,
                                                     rich_layout: Path, tmp_path: Path) -> None:
    """The rich image (owners 0, 1000, 65534, setuid, caps, xattrs, whiteouts, an opaque dir) as the user's
    namespace sees it equals ``umoci unpack`` as root: only the two device nodes are missing, and said so."""
    import subprocess

    pulled = alice.tool("puller", "pull", "--quiet", rich_image)
    assert pulled.code == 0, pulled.err
    said = pulled.err.splitlines()
    assert len(said) == 1 and "left out 2 device nodes: a user namespace cannot make them" in said[0], said
    assert said[0].startswith("puller: warning: layer ")

    scratch = alice.home / "scratch"
    scratch.mkdir()
    os.chown(scratch, alice.uid, alice.gid)
    seen = alice.tool("tests.rootless_driver", "snapshot", str(_store_of(alice)), rich_image, str(scratch))
    assert seen.code == 0, seen.err
    ours = {path: Node(*fields[:7], tuple(fields[7]) if fields[7] else None,  # type: ignore[misc]
                       tuple((k, bytes.fromhex(v)) for k, v in fields[8]), fields[9])
            for path, fields in json.loads(seen.out).items()}

    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{rich_layout}:{image_script.RICH_TAG}", str(bundle)],
                   check=True, capture_output=True, text=True)
    theirs = snapshot(bundle / "rootfs")
    devices = {p for p, n in theirs.items() if n.type in ("char", "block")}
    assert devices == {"rich/char-null", "rich/block-loop0"}
    assert len(theirs) > 300
    diff = differences(ours, {p: n for p, n in theirs.items() if p not in devices})
    assert diff == [], "\n".join(diff)

    # on the host, every file of the store is the user's or one of its subordinate ids: none is root's
    strays = [p for p in _walk(_store_of(alice)) if not alice.owns(os.lstat(p).st_uid)]
    assert strays == []


def _walk(top: Path) -> Iterator[str]:
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            yield os.path.join(parent, name)


def test_without_ranges_one_id_is_mapped_and_the_user_is_told_once(bob: User, test_image: str) -> None:
    first = bob.tool("puller", "pull", "--quiet", test_image)
    assert first.code == 0, first.err
    said = first.err.splitlines()
    assert len(said) == 1 and said[0].startswith("puller: warning: ") and "/etc/subuid" in said[0], said
    again = bob.tool("puller", "images")
    assert again.code == 0 and again.err == "", again.err
    owners = {os.lstat(p).st_uid for p in _walk(_store_of(bob))}
    assert owners == {bob.uid}


def test_another_user_cannot_read_or_change_the_store(alice: User, bob: User, test_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    store = str(_store_of(alice))
    for args in (("images",), ("rmi", test_image), ("pull", test_image)):
        tried = bob.tool("puller", "--root", store, *args)
        assert tried.code != 0
        assert tried.err.startswith("puller: error: ") and len(tried.err.splitlines()) == 1, tried.err
        assert "Permission denied" in tried.err or "permission denied" in tried.err, tried.err
    assert alice.tool("puller", "images", "--quiet").out.strip() != ""


def test_a_root_store_and_a_users_store_are_never_taken_for_each_other(alice: User, tools: Tools,
                                                                        test_image: str, tmp_path: Path) -> None:
    # root's store, where the user may go: the format, not the mode, refuses it
    assert tools.puller("pull", "--quiet", test_image).code == 0
    os.chmod(tools.root, 0o777)
    tried = alice.tool("puller", "--root", str(tools.root), "pull", "--quiet", test_image)
    assert tried.code != 0
    assert "was made by root" in tried.err and len(tried.err.splitlines()) == 1, tried.err
    # the user's store, as root
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    as_root = Tools(_store_of(alice), tools.docker_config, tools.settings).puller("pull", "--quiet", test_image)
    assert as_root.code != 0
    assert "was made by a user without root" in as_root.err and len(as_root.err.splitlines()) == 1, as_root.err


def test_rmi_in_the_namespace_leaves_nothing_behind(alice: User, rich_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", rich_image).code == 0
    store = _store_of(alice)
    assert any(os.lstat(p).st_uid != alice.uid for p in _walk(store))  # the image's owners are subordinate ids
    removed = alice.tool("puller", "rmi", rich_image)
    assert removed.code == 0, removed.err
    left = [p for p in _walk(store / "layers")] + [p for p in _walk(store / "blobs") if os.path.isfile(p)]
    assert left == []


def test_the_runner_says_what_it_cannot_do_yet(alice: User, test_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    ran = alice.tool("runner", "run", "--rm", test_image, "true")
    assert ran.code == 125
    assert ran.err.startswith("runner: error: running a container without root is not built yet"), ran.err
    assert len(ran.err.splitlines()) == 1
    listed = alice.tool("runner", "ps", "-a")
    assert listed.code == 0, listed.err


def _extract(u: User, tmp_path: Path, *entries: Entry) -> tuple[dict[str, object], Path]:
    """The unpacker on a tar of ``entries``, as ``u`` in its namespace, into a fresh dir of the user's."""
    work = u.home / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, u.uid, u.gid)
    tar = tmp_path / "layer.tar"
    tar.write_bytes(make_tar(*entries))
    tar.chmod(0o644)
    dest = work / f"dest{len(os.listdir(work))}"
    done = u.tool("tests.rootless_driver", "extract", str(tar), str(dest))
    assert done.code == 0, done.err
    return json.loads(done.out), dest


@pytest.mark.parametrize(("case", "entries", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_layer_unpacked_by_a_user_writes_nothing_outside(alice: User, tmp_path: Path, case: str,
                                                                   entries: list[Entry], message: str) -> None:
    outside = alice.home / "outside"  # the user's own: a file the user could write, were the unpacker fooled
    outside.mkdir()
    (outside / "victim").write_bytes(b"safe")
    os.chown(outside, alice.uid, alice.gid)
    os.chown(outside / "victim", alice.uid, alice.gid)
    resolved = [Entry(e.name, e.kind, e.data, e.mode, e.uid, e.gid, e.link.replace("OUTSIDE", str(outside)))
                for e in entries]
    said, _ = _extract(alice, tmp_path, *resolved)
    assert said.get("kind") == "HOSTILE" and message in str(said.get("error")), said
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"safe" and os.stat(outside / "victim").st_nlink == 1
    assert not (alice.home / "work" / "escaped").exists() and not (alice.home / "escaped").exists()


def test_what_a_namespace_cannot_make_is_left_out_and_counted(alice: User, tmp_path: Path) -> None:
    said, dest = _extract(alice, tmp_path, Entry("dev/", "dir"), Entry("dev/null", "chr", dev=(1, 3)),
                          Entry("dev/loop0", "blk", dev=(7, 0)), Entry("dev/also-null", "hardlink", link="dev/null"),
                          Entry("fifo", "fifo"), Entry("f", data=b"x", xattrs={"trusted.secret": b"1",
                                                                                 "user.kept": b"2"}))
    assert said == {"left_out": ["3 device nodes", "1 trusted.* xattrs"]}
    assert sorted(os.listdir(dest / "dev")) == []
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert os.getxattr(dest / "f", "user.kept") == b"2"


def test_owners_beyond_the_users_ranges_are_refused_and_one_id_owns_all(alice: User, bob: User,
                                                                         tmp_path: Path) -> None:
    said, _ = _extract(alice, tmp_path, Entry("far", data=b"x", uid=70000))
    assert said.get("kind") == "UNSUPPORTED", said
    assert "owned by 70000:0, beyond the 65537 ids this user's namespace maps" in str(said.get("error"))
    said, dest = _extract(bob, tmp_path, Entry("d/", "dir", uid=42), Entry("d/f", data=b"x", uid=1000, gid=1000),
                          Entry("d/.wh.gone"))
    assert said == {"left_out": []}
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in _walk(dest)} == {(bob.uid, bob.gid)}
    assert stat.S_ISCHR(os.lstat(dest / "d" / "gone").st_mode)  # the whiteout, made in the namespace
