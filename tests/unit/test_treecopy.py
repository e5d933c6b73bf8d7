"""cp's two halves without a container (shared.layer.treecopy, safepath.resolve_in_root and sorted_walk), on
trees made in a temporary directory: what a hostile tree or archive may try, and the walk's order."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import StrataError
from shared.layer.safepath import DIR_FLAGS, resolve_in_root, sorted_walk
from shared.layer.treecopy import Entry, TreeReader, TreeWriter


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A 'container' tree beside a sentinel outside it: (the tree's path, an fd of it)."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_text("HOST\n")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/passwd").write_text("inside\n")
    os.symlink("/etc", tree / "abs")
    os.symlink("../../../../../../../etc", tree / "rel")
    os.symlink(str(tmp_path / "outside"), tree / "out")
    fd = os.open(tree, DIR_FLAGS)
    yield tree, fd
    os.close(fd)
    assert (tmp_path / "outside/secret").read_text() == "HOST\n" and os.listdir(tmp_path / "outside") == ["secret"]


def _read(fd: int) -> str:
    with os.fdopen(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY), "r") as f:
        return f.read()


def test_resolution_stays_in_the_root(root: tuple[Path, int]) -> None:
    _, fd = root
    for path in ("/abs/passwd", "/rel/passwd", "/../../etc/passwd", "etc/passwd"):
        found = resolve_in_root(fd, path, os.O_PATH, follow=True)
        assert _read(found) == "inside\n", path
        os.close(found)
    with pytest.raises(FileNotFoundError):
        resolve_in_root(fd, "/out/secret", os.O_PATH, follow=True)
    link = resolve_in_root(fd, "/abs", os.O_PATH, follow=False)  # the link itself
    assert os.readlink("", dir_fd=link) == "/etc"
    os.close(link)


def _tar(*entries: tuple[str, str | None]) -> Iterator[Entry]:
    for name, target in entries:
        info = tarfile.TarInfo(name)
        if target is None:
            info.size = 5
            yield info, io.BytesIO(b"EVIL\n")
        else:
            info.type, info.linkname = tarfile.SYMTYPE, target
            yield info, None


@pytest.mark.parametrize("entries", [
    (("../outside/secret", None),),
    (("x", "../outside"), ("x/secret", None)),
    (("out/secret", None),),  # below a symlink already in the tree
], ids=["dotdot", "link-then-write", "existing-link"])
def test_the_writer_never_writes_through_a_symlink_or_dotdot(root: tuple[Path, int],
                                                             entries: tuple[tuple[str, str | None], ...]) -> None:
    _, fd = root
    writer = TreeWriter(fd, lambda i: None, None, devices=False, keep_setid=False, where="/")
    try:
        with pytest.raises(StrataError, match="refusing path"):
            writer.write(_tar(*entries))
    finally:
        writer.close()


def test_the_writer_keeps_dockers_conflicts_and_drops_setid(root: tuple[Path, int]) -> None:
    tree, fd = root
    writer = TreeWriter(fd, lambda i: None, None, devices=False, keep_setid=False, where="/")
    try:
        with pytest.raises(StrataError, match='cannot overwrite directory "/etc" with non-directory'):
            writer.write(_tar(("etc", None)))
        info = tarfile.TarInfo("suid")
        info.mode, info.size = 0o4755, 1
        fifo = tarfile.TarInfo("fifo")
        fifo.type = tarfile.FIFOTYPE
        dev = tarfile.TarInfo("dev")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
        writer.write(iter([(info, io.BytesIO(b"x")), (fifo, None), (dev, None)]))
    finally:
        writer.close()
    assert (tree / "suid").stat().st_mode & 0o7777 == 0o755
    assert not os.path.lexists(tree / "dev") and not (tree / "fifo").is_file()


def test_the_reader_names_follow_walk_order_and_keep_links(root: tuple[Path, int]) -> None:
    tree, fd = root
    (tree / "a").mkdir()
    (tree / "a/b").write_text("b")
    (tree / "a.txt").write_text("t")
    os.link(tree / "a.txt", tree / "hard")
    names = [walk.rel(name) for walk, name, _ in sorted_walk(fd, lambda st: True)]
    assert names == ["a", "a/b", "a.txt", "abs", "etc", "etc/passwd", "hard", "out", "rel"]  # Go's Walk order
    obj = os.open(tree, os.O_PATH)
    entries = {i.name: i for i, _ in TreeReader(None).entries(obj, "top")}
    os.close(obj)
    assert entries["top/abs"].issym() and entries["top/abs"].linkname == "/etc"
    assert entries["top/hard"].islnk() and entries["top/hard"].linkname == "top/a.txt"
    assert "top/out/secret" not in entries


def test_a_hard_link_names_only_what_the_archive_wrote(root: tuple[Path, int]) -> None:
    tree, fd = root
    link = tarfile.TarInfo("grab")
    link.type, link.linkname = tarfile.LNKTYPE, "etc/passwd"  # a file of the tree's, not of the archive's
    writer = TreeWriter(fd, lambda i: None, None, devices=False, keep_setid=False, where="/")
    try:
        with pytest.raises(StrataError, match="refusing hard link"):
            writer.write(iter([(link, None)]))
        own = tarfile.TarInfo("mine")
        own.size = 1
        again = tarfile.TarInfo("again")
        again.type, again.linkname = tarfile.LNKTYPE, "mine"
        writer.write(iter([(own, io.BytesIO(b"m")), (again, None)]))
    finally:
        writer.close()
    assert not os.path.lexists(tree / "grab") and os.stat(tree / "again").st_ino == os.stat(tree / "mine").st_ino


def test_a_file_that_shrinks_while_it_is_read_is_one_error(root: tuple[Path, int]) -> None:
    tree, _ = root
    (tree / "big").write_bytes(b"x" * 100)
    obj = os.open(tree / "big", os.O_PATH)
    try:
        entries = TreeReader(None).entries(obj, "big")
        _, data = next(entries)  # the file is open for as long as its entry is being read
        assert data is not None
        os.truncate(tree / "big", 10)
        with pytest.raises(StrataError, match="shrank"):
            while data.read(7):
                pass
        entries.close()
    finally:
        os.close(obj)
