"""The one path-resolution primitive every write into a diff directory goes through.

Threat: a layer tar is hostile input. Its names may hold ``..``, be absolute, or lead through symlinks it (or a
racing process) planted, so that a write lands outside the directory we unpack into. Defence: never resolve a
path string. Every component is opened relative to its parent's fd with ``O_NOFOLLOW | O_DIRECTORY``, so a
symlink anywhere in the parent chain fails instead of being followed, and a component swapped for a symlink
after we opened it cannot redirect us (we hold the fd of what we checked). Final components are then created,
changed or removed with the ``*at`` calls relative to that fd, never following a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from shared.errors import Kind, StrataError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathBlocked(StrataError):
    """A component of a path is a symlink or not a directory: we never go through it."""

    def __init__(self, message: str, symlink: bool) -> None:
        super().__init__(message, Kind.HOSTILE)
        self.symlink = symlink


def split(name: str) -> list[str]:
    """A tar member name as path components inside the root. Leading ``/`` and ``.`` parts are dropped, as
    tar does; ``..`` anywhere is refused, since nothing legitimate needs it."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StrataError(f"refusing path {name!r}: it contains '..'", Kind.HOSTILE)
    return parts


def proc_path(dir_fd: int, name: str) -> str:
    """A path for the calls that lack a dir_fd form (lsetxattr): the magic link pins the parent we checked."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir_at(dir_fd: int, name: str) -> int:
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


MakeDir = Callable[[int, str, list[str]], None]


class SafeRoot:
    """An open directory that paths are resolved inside of. Close it (or use ``with``) when done."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, DIR_FLAGS)

    @classmethod
    def from_fd(cls, fd: int) -> SafeRoot:
        """A root for a directory already open (the fd is duplicated; the caller keeps its own)."""
        root = cls.__new__(cls)
        root.path = f"/proc/self/fd/{fd}"
        root.fd = os.dup(fd)
        return root

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_dir(self, parts: list[str], make: MakeDir | None = None) -> int:
        """Open the directory at ``parts`` and return a new fd the caller closes.

        A missing component is created by ``make(parent_fd, name, parts_so_far)`` when given (the unpacker uses
        it to give implicit parents their lower-layer metadata), else FileNotFoundError propagates. A component
        that is a symlink or not a directory is refused as hostile.
        """
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                try:
                    nfd = open_dir_at(fd, part)
                except FileNotFoundError:
                    if make is None:
                        raise
                    make(fd, part, parts[: i + 1])
                    nfd = open_dir_at(fd, part)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        link = _is_link(fd, part)
                        raise PathBlocked(f"refusing path {'/'.join(parts)!r}: {'/'.join(parts[: i + 1])!r} is "
                                          f"{'a symlink' if link else 'not a directory'}", link) from None
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise


def _is_link(dir_fd: int, name: str) -> bool:
    st = lstat_at(dir_fd, name)
    return st is not None and stat.S_ISLNK(st.st_mode)


def remove_at(dir_fd: int, name: str) -> None:
    """Remove whatever ``name`` is in ``dir_fd``, a whole directory tree included, without following links."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = open_dir_at(dir_fd, name)
    try:
        for child in os.listdir(fd):
            remove_at(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
