"""A tree's every observable attribute, for comparing two trees (ours vs a peer's, before vs after a trip)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def entry(path: Path, with_mtime: bool = True) -> tuple[object, ...]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    detail: object = None
    if stat.S_ISREG(st.st_mode):
        detail = (st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    elif stat.S_ISLNK(st.st_mode):
        detail = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
    mtime = st.st_mtime_ns if with_mtime else None
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail, _xattrs(path), mtime)


def snapshot(root: Path, with_mtime: bool = True, skip_root: bool = False) -> dict[str, tuple[object, ...]]:
    out = {} if skip_root else {".": entry(root, with_mtime)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = entry(path, with_mtime)
    return out


def differences(ours: dict[str, tuple[object, ...]], theirs: dict[str, tuple[object, ...]]) -> list[str]:
    lines = []
    for path in sorted(set(ours) | set(theirs)):
        a, b = ours.get(path), theirs.get(path)
        if a != b:
            lines.append(f"{path}: ours={a} theirs={b}")
    return lines
