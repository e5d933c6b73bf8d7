"""A tree's every observable attribute, for comparing two trees: ours vs a peer's, before vs after a trip.

No nlink, inode, atime or ctime: overlayfs and other tools may legitimately differ there; hardlinks are compared
as the files they are.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
          stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


class Node(NamedTuple):
    """What a path shows, as far as an image defines it."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int | None  # regular files only
    sha256: str | None  # regular files only
    target: str | None  # symlinks only
    rdev: tuple[int, int] | None  # devices only
    xattrs: tuple[tuple[str, bytes], ...]  # sorted by name
    mtime_ns: int | None  # None when a comparison leaves mtimes out

    def show(self, field: str) -> str:
        value = getattr(self, field)
        return oct(value) if field == "mode" else repr(value)


Snapshot = dict[str, Node]


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = os.listxattr(path, follow_symlinks=False)
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def node(path: Path, with_mtime: bool = True) -> Node:
    st = os.lstat(path)
    fmt = stat.S_IFMT(st.st_mode)
    regular, device = stat.S_ISREG(fmt), fmt in (stat.S_IFCHR, stat.S_IFBLK)
    return Node(
        type=_TYPES.get(fmt, f"unknown {fmt:o}"),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if regular else None,
        sha256=_sha256(path) if regular else None,
        target=os.readlink(path) if stat.S_ISLNK(fmt) else None,
        rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if device else None,
        xattrs=_xattrs(path),
        mtime_ns=st.st_mtime_ns if with_mtime else None,
    )


def snapshot(root: Path, with_mtime: bool = True, skip_root: bool = False) -> Snapshot:
    """Every path under ROOT (relative, "." for ROOT itself unless skipped), never following a symlink."""
    out: Snapshot = {} if skip_root else {".": node(root, with_mtime)}

    def walk(directory: Path) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = Path(entry.path)
            out[str(path.relative_to(root))] = node(path, with_mtime)
            if entry.is_dir(follow_symlinks=False):
                walk(path)

    walk(root)
    return out


def differences(ours: Snapshot, theirs: Snapshot) -> list[str]:
    """One readable line per differing path: what differs, ours vs theirs."""
    lines = []
    for path in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(path), theirs.get(path)
        if a is None or b is None:
            lines.append(f"{path}: ours {a} vs theirs {b}")
        elif a != b:
            fields = [f for f in Node._fields if getattr(a, f) != getattr(b, f)]
            what = ", ".join(f"{f} {a.show(f)} vs {b.show(f)}" for f in fields)
            only = " [directory mtime only]" if fields == ["mtime_ns"] and a.type == "dir" else ""
            lines.append(f"{path} ({a.type}): {what}{only}")
    return lines
