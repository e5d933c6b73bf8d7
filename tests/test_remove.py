"""The one tree remover (shared.layer.safepath.remove_at, behind shared.store.files.remove_tree) and the walk it shares
with the packer: depth without limit, constant fds, never through a symlink or into a mount.

The deep trees are made fd-relative (a 3,000-level path is past PATH_MAX) and checked the same way; tests.treesnap
is recursive, so it only ever looks at shallow trees here (the outside sentinels).
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import Kind, StrataError
from shared.layer.pack import write_tar
from shared.layer.safepath import DirWalk, SafeRoot, remove_at
from shared.store.files import remove_tree
from tests.marks import needs_root
from tests.tools import ROOT
from tests.treesnap import snapshot

pytestmark = needs_root

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def make_chain(top: Path, depth: int, name: str = "d") -> None:
    """TOP/d/d/.../d, DEPTH directories, with a file ``bottom`` in the last."""
    fd = os.open(top, DIR)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def chain_depth(top: Path, name: str = "d") -> int:
    """How many levels of NAME go down from TOP, counted without a path string."""
    fd, depth = os.open(top, DIR), 0
    try:
        while True:
            try:
                nfd = os.open(name, DIR, dir_fd=fd)
            except FileNotFoundError:
                return depth
            os.close(fd)
            fd, depth = nfd, depth + 1
    finally:
        os.close(fd)


def open_fds() -> set[tuple[str, str]]:
    """This process's open fds and what each names. Other threads of the process (a pytest-xdist worker's channel,
    a session server's) may close theirs meanwhile: a leak is an fd that is open after and was not before."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, closed by now
            fds.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return fds


@pytest.fixture(autouse=True)
def remove_leftovers(tmp_path: Path) -> Iterator[None]:
    """Deep trees go with our remover whatever happened: pytest's own clean-up of old temp dirs uses
    shutil.rmtree, which a deep tree left behind by a failed test would crash (in every later session)."""
    yield
    with contextlib.suppress(StrataError):  # a mount left behind stays, and the test has failed already
        remove_tree(tmp_path)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    """A directory outside every tree a test removes; the test checks it is exactly as it was."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep").write_text("precious\n")
    (outside / "sub" / "also").write_text("precious too\n")
    before = snapshot(outside)
    yield outside
    assert snapshot(outside) == before


def test_a_3000_deep_tree_is_removed_and_no_fd_leaks(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    make_chain(tree, 3000)
    assert chain_depth(tree) == 3000
    gc.collect()  # what earlier tests left to the collector is closed now, not during the remove
    before = open_fds()
    remove_tree(tree)
    assert not tree.exists()
    assert open_fds() - before == set()
    assert sorted(os.listdir(tmp_path)) == []


def test_symlinks_are_unlinked_never_followed(tmp_path: Path, sentinel: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "to-outside").symlink_to(sentinel)
    (tree / "a" / "to-root").symlink_to("/")
    (tree / "a" / "dotdot").symlink_to("../../outside")
    (tree / "to-keep").symlink_to(sentinel / "keep")
    remove_tree(tree)
    assert not tree.exists()
    assert (Path("/") / "etc" / "passwd").exists()


def test_the_path_itself_as_a_symlink_is_unlinked(tmp_path: Path, sentinel: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(sentinel)
    remove_tree(link)
    assert not os.path.lexists(link)


def test_special_files_xattrs_and_unreadable_dirs(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "x" / "closed" / "inner").mkdir(parents=True)
    (tree / "x" / "closed" / "inner" / "f").write_text("f")
    os.mkfifo(tree / "x" / "fifo")
    os.mknod(tree / "x" / "whiteout", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # overlay's whiteout
    os.mknod(tree / "x" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(tree / "x" / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    fd = os.open(tree / "x", DIR)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(f"/proc/self/fd/{fd}/sock")  # a short path to a bound socket, whatever tmp_path is
    finally:
        os.close(fd)
    os.setxattr(tree / "x", "trusted.overlay.opaque", b"y")
    os.setxattr(tree / "x" / "closed" / "inner" / "f", "user.note", b"v")
    os.chmod(tree / "x" / "closed" / "inner", 0)
    os.chmod(tree / "x" / "closed", 0)
    os.chmod(tree / "x", 0o500)
    assert stat.S_ISSOCK(os.lstat(tree / "x" / "sock").st_mode)
    remove_tree(tree)
    assert not tree.exists()


def test_an_absent_path_is_fine(tmp_path: Path) -> None:
    remove_tree(tmp_path / "nothing")
    remove_tree(tmp_path / "no" / "parent")
    fd = os.open(tmp_path, DIR)
    try:
        with pytest.raises(StrataError, match="not a name"):
            remove_at(fd, "..")
    finally:
        os.close(fd)


UNPRIVILEGED = textwrap.dedent("""
    import ctypes, os, sys
    from shared.layer.safepath import remove_at
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    # as a user who never was root: changing ids made us undumpable, which closes /proc/self/fd to ourselves
    assert ctypes.CDLL(None).prctl(4, 1, 0, 0, 0) == 0  # PR_SET_DUMPABLE
    remove_at(int(sys.argv[1]), "tree")
""")


def test_an_unprivileged_remover_opens_mode_000_dirs_itself(tmp_path: Path) -> None:
    """Root passes mode 000 by CAP_DAC_OVERRIDE; a user owning the tree must chmod its way in."""
    work = tmp_path / "work"
    tree = work / "tree"
    (tree / "closed" / "deeper").mkdir(parents=True)
    (tree / "closed" / "deeper" / "f").write_text("f")
    (tree / "readonly").mkdir()
    (tree / "readonly" / "g").write_text("g")
    make_chain(tree / "closed" / "deeper", 50)
    for path in (work, *work.rglob("*")):
        os.lchown(path, 65534, 65534)
    os.chmod(tree / "closed" / "deeper", 0)
    os.chmod(tree / "closed", 0)
    os.chmod(tree / "readonly", 0o500)
    fd = os.open(work, DIR)
    try:
        # the child becomes user nobody once Python is loaded (the interpreter lives under /root), and reaches
        # the tree only through FD (tmp_path is root's, mode 0700)
        proc = subprocess.run([sys.executable, "-c", UNPRIVILEGED, str(fd)], pass_fds=(fd,), capture_output=True,
                              text=True, cwd=ROOT, timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    assert not tree.exists()


BOUNDED = textwrap.dedent("""
    import io, os, resource, sys, tarfile
    from pathlib import Path
    from shared.layer.pack import write_tar
    from shared.layer.unpack import extract
    from shared.store.files import remove_tree
    work = Path(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    buf = io.BytesIO()
    write_tar(work / "tree", buf)
    (work / "copy").mkdir()
    extract(io.BytesIO(buf.getvalue()), work / "copy")
    remove_tree(work / "tree")
    remove_tree(work / "copy")
    print(len(buf.getvalue()))
""")


def test_fds_stay_bounded_with_a_soft_limit_of_64(tmp_path: Path) -> None:
    """Pack, unpack and remove a 1,500-deep tree under RLIMIT_NOFILE 64: one fd per level would need 1,500."""
    tree = tmp_path / "tree"
    tree.mkdir()
    make_chain(tree, 1500)
    proc = subprocess.run([sys.executable, "-c", BOUNDED, str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) > 1500 * 512
    assert sorted(os.listdir(tmp_path)) == []


def test_pack_and_unpack_a_1500_deep_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    make_chain(tree, 1500)
    buf = io.BytesIO()
    write_tar(tree, buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        names = [m.name for m in tar]
    assert names == ["/".join(["d"] * n) for n in range(1, 1501)] + ["/".join(["d"] * 1500 + ["bottom"])]
    from shared.layer.unpack import extract

    copy = tmp_path / "copy"
    copy.mkdir()
    extract(io.BytesIO(buf.getvalue()), copy)
    assert chain_depth(copy) == 1500
    remove_tree(tree)
    remove_tree(copy)


def test_the_walk_does_not_climb_out_of_a_directory_moved_away(tmp_path: Path) -> None:
    """Going up re-opens ``..`` and checks it: a directory moved out from under the walk sends it back to the
    top, never into the directory it was moved to."""
    top = tmp_path / "top"
    (top / "a" / "b" / "c").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with SafeRoot(top) as root:
        walk = DirWalk(root.fd)
        try:
            for name in ("a", "b", "c"):
                walk.enter(name)
            assert walk.rel() == "a/b/c"
            os.rename(top / "a" / "b", elsewhere / "b")
            assert walk.leave() == "c"  # c's parent is still b, wherever b is now
            assert walk.leave() is None  # but b's parent is no longer a
            assert walk.depth == 0 and walk.fd == root.fd
        finally:
            walk.close()


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def test_a_mount_point_inside_stays_with_what_it_holds(tmp_path: Path, sentinel: Path) -> None:
    """A tmpfs, a bind mount of a directory on the same filesystem (same st_dev) and one over a file: the
    remover enters none of them, removes the rest, and says which path is in the way, on one line."""
    tree = tmp_path / "tree"
    for d in ("m/tmpfs", "m/bind", "other/sub"):
        (tree / d).mkdir(parents=True)
    (tree / "file").write_text("over me")
    (tree / "other" / "sub" / "x").write_text("x")
    make_chain(tree / "m", 20)
    mounts = [tree / "m" / "tmpfs", tree / "m" / "bind", tree / "file"]
    try:
        mount("-t", "tmpfs", "tmpfs", str(mounts[0]))
        (mounts[0] / "inside").write_text("on the tmpfs")
        mount("--bind", str(sentinel), str(mounts[1]))
        mount("--bind", str(sentinel / "keep"), str(mounts[2]))
        with pytest.raises(StrataError) as info:
            remove_tree(tree)
        message = str(info.value)
        assert "\n" not in message and info.value.kind is Kind.STATE
        assert f"cannot remove {tree}: {tree}/" in message and "is a mount point (and 2 more)" in message
        assert (mounts[0] / "inside").read_text() == "on the tmpfs"
        assert sorted(os.listdir(tree)) == ["file", "m"]  # everything else is gone
        assert sorted(os.listdir(tree / "m")) == ["bind", "tmpfs"]
    finally:
        for path in mounts:
            subprocess.run(["umount", str(path)], capture_output=True)
    remove_tree(tree)  # unmounted: now it goes
    assert not tree.exists()
