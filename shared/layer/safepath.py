"""The one path-resolution primitive every write into a diff directory goes through, and the one tree remover.

Threat: a layer tar is hostile input. Its names may hold ``..``, be absolute, or lead through symlinks it (or a
racing process) planted, so that a write lands outside the directory we unpack into. Defence: never resolve a
path string. Every component is opened relative to its parent's fd with ``O_NOFOLLOW | O_DIRECTORY``, so a
symlink anywhere in the parent chain fails instead of being followed, and a component swapped for a symlink
after we opened it cannot redirect us (we hold the fd of what we checked). Final components are then created,
changed or removed with the ``*at`` calls relative to that fd, never following a symlink.

Removal lives here too (:func:`remove_at`), because a tree we delete is as hostile as a tar we unpack: a
container's rw layer or an image layer may be thousands of directories deep, hold symlinks to ``/``, directories
of mode 000, devices and fifos. It walks with the same rule (fd-relative, never through a symlink) and with
:class:`DirWalk`, the iterative walk the packer shares, so that the whole project has one way down a tree.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable, Iterator

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

    def open_dir(self, parts: list[str], make: MakeDir | None = None, start: tuple[int, int] | None = None) -> int:
        """Open the directory at ``parts`` and return a new fd the caller closes.

        A missing component is created by ``make(parent_fd, name, parts_so_far)`` when given (the unpacker uses
        it to give implicit parents their lower-layer metadata), else FileNotFoundError propagates. A component
        that is a symlink or not a directory is refused as hostile. ``start`` is ``(fd, n)``: the directory at
        ``parts[:n]``, already open through this walk (the caller keeps the fd), to go on from instead of the
        root, so that a path 1,200 levels deep does not cost 1,200 opens for each entry in it.
        """
        first = 0 if start is None else start[1]
        fd = os.dup(self.fd if start is None else start[0])
        try:
            for i in range(first, len(parts)):
                part = parts[i]
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


# -- walking a tree: one directory at a time, never through a symlink or into another mount ---------------------

# linux/openat2.h; the syscall number is the same on every architecture (added after the tables were unified)
_SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
_SUBDIR_RESOLVE = RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH
_OPENAT2_RETRIES = 16


@functools.cache
def _openat2() -> Callable[[int, str, int, int], int] | None:
    """openat2(2) through ctypes (Python 3.11's os lacks it), loaded on first use: ctypes costs start-up time.
    None where the kernel or a seccomp filter refuses the call."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    syscall = ctypes.CDLL(None, use_errno=True).syscall

    def call(dir_fd: int, name: str, flags: int, resolve: int) -> int:
        how = OpenHow(flags, 0, resolve)
        fd = int(syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), os.fsencode(name), ctypes.byref(how),
                         ctypes.c_size_t(ctypes.sizeof(how))))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), name)
        return fd

    root = os.open("/", DIR_FLAGS)
    try:
        os.close(call(root, ".", DIR_FLAGS, _SUBDIR_RESOLVE))
    except OSError:  # ENOSYS (before Linux 5.6), EPERM or ENOSYS from a seccomp filter, EINVAL for a flag
        return None
    finally:
        os.close(root)
    return call


def openat2(dir_fd: int, name: str, flags: int, resolve: int) -> int:
    """openat2(2), close-on-exec, for the whole project (the runner resolves mount targets and the image's /etc
    files with RESOLVE_IN_ROOT: ``..`` and absolute symlinks stay inside ``dir_fd``, atomically). OSError ENOSYS
    where the kernel or a seccomp filter refuses the call."""
    call = _openat2()
    if call is None:
        raise OSError(errno.ENOSYS, "openat2 is not available", name)
    return _retried(call, dir_fd, name, flags | os.O_CLOEXEC, resolve)


def _retried(call: Callable[[int, str, int, int], int], dir_fd: int, name: str, flags: int, resolve: int) -> int:
    """EINTR, and EAGAIN: with RESOLVE_IN_ROOT or RESOLVE_BENEATH the kernel answers EAGAIN when a rename or a
    mount anywhere on the machine raced a ``..`` walk (openat2(2): "the caller may choose to retry"). A host busy
    mounting (containers starting beside ours) made one try fail a start; a bounded number of tries."""
    for _ in range(_OPENAT2_RETRIES - 1):
        try:
            return call(dir_fd, name, flags, resolve)
        except (InterruptedError, BlockingIOError):
            continue
    return call(dir_fd, name, flags, resolve)


def resolve_in_root(root_fd: int, path: str, flags: int, follow: bool, in_root: bool = True) -> int:
    """An fd for PATH below ``root_fd`` as a process chrooted there would find it, atomically (openat2
    RESOLVE_IN_ROOT: ``..`` and absolute symlinks stay inside, a component swapped for a symlink meanwhile is
    resolved inside too; magic links are refused). The last component is followed only with ``follow`` (then
    opened with FLAGS), else opened ``O_NOFOLLOW`` in its resolved parent. ``in_root`` False: PATH resolves as
    the caller's own (the host's side of ``cp``). OSError as open(2)."""
    resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS if in_root else 0
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if follow or not parts or parts[-1] == "..":
        return openat2(root_fd, "/".join(parts) or ".", flags, resolve)
    parent = openat2(root_fd, "/".join(parts[:-1]) or ".", os.O_PATH | os.O_DIRECTORY, resolve)
    try:
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)


def open_subdir(dir_fd: int, name: str, cross_mounts: bool = False) -> int:
    """Open the directory ``name`` in ``dir_fd``; a new fd the caller closes.

    Never through a symlink (ELOOP or ENOTDIR, as :func:`open_dir_at`), and never onto another mount: a mount
    point gives EXDEV (openat2's RESOLVE_NO_XDEV, bind mounts included), so a walk that deletes cannot reach into
    a filesystem mounted inside the tree, such as a volume or a leaked bind mount of ``/``. Where openat2 is
    refused, a different st_dev gives EXDEV (bind mounts of the same filesystem then pass unseen). With
    ``cross_mounts`` (``cp`` reading a running container's volumes, which its caller vetted) a mount is entered.
    """
    openat2 = _openat2()
    if openat2 is not None:
        return _retried(openat2, dir_fd, name, DIR_FLAGS,
                        _SUBDIR_RESOLVE & ~RESOLVE_NO_XDEV if cross_mounts else _SUBDIR_RESOLVE)
    fd = open_dir_at(dir_fd, name)
    if not cross_mounts and os.fstat(fd).st_dev != os.fstat(dir_fd).st_dev:
        os.close(fd)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), name)
    return fd


class DirWalk:
    """Where an iterative walk down a tree stands, in constant file descriptors however deep it goes.

    It holds one fd: the directory it is in (the top's fd belongs to the caller and stays open). Above that it
    keeps only the name, st_dev and st_ino of each level, so depth costs memory, never fds (1,500 levels would
    pass the usual soft limit of 1,024) nor Python stack. Going up re-opens ``..`` and checks it is the
    directory we came down from: if a directory on the way was moved meanwhile, ``..`` is somewhere else, and
    :meth:`leave` says so and goes back to the top instead of continuing in a directory outside the tree.
    """

    def __init__(self, top_fd: int) -> None:
        self.top = top_fd
        self.fd = top_fd
        self._levels: list[tuple[str, int, int]] = []  # (name, st_dev, st_ino) of each level below the top

    @property
    def depth(self) -> int:
        return len(self._levels)

    def rel(self, name: str = "") -> str:
        """The path of ``name`` in the current directory, relative to the top ("" for the top itself)."""
        return "/".join([*(level[0] for level in self._levels), *([name] if name else [])])

    def enter(self, name: str, cross_mounts: bool = False) -> None:
        """Go down into the subdirectory ``name``; OSError as :func:`open_subdir` when it is not one here."""
        fd = open_subdir(self.fd, name, cross_mounts)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._levels.append((name, st.st_dev, st.st_ino))
        self._close_current()
        self.fd = fd

    def leave(self) -> str | None:
        """Go up one level and return the name of the directory left; None when ``..`` is no longer the
        directory we came from (something on the way was moved): the walk is then back at the top."""
        name = self._levels.pop()[0]
        if not self._levels:
            parent = self.top
        else:
            parent = os.open("..", DIR_FLAGS, dir_fd=self.fd)
            try:
                st = os.fstat(parent)
            except BaseException:
                os.close(parent)
                raise
            if (st.st_dev, st.st_ino) != self._levels[-1][1:]:
                os.close(parent)
                self.reset()
                return None
        self._close_current()
        self.fd = parent
        return name

    def reset(self) -> None:
        self._close_current()
        self.fd = self.top
        self._levels.clear()

    def close(self) -> None:
        """Close the walk's own fd (not the top's)."""
        self.reset()

    def _close_current(self) -> None:
        if self.fd != self.top:
            os.close(self.fd)
            self.fd = self.top


def sorted_walk(top_fd: int, descend: Callable[[os.stat_result], bool],
                cross_mounts: bool = False) -> Iterator[tuple[DirWalk, str, os.stat_result]]:
    """``(walk, name, lstat)`` of every entry below ``top_fd``, depth first, names in byte order (Go's
    filepath.Walk order, which ``docker diff`` prints); ``walk.fd`` is the entry's directory, ``walk.rel(name)``
    its path. A directory is entered after it was yielded if ``descend(lstat)``; one removed or swapped for a
    symlink since its lstat is not. In constant fds (:class:`DirWalk`). A directory on the way that is moved
    meanwhile ends the walk with a :class:`StrataError`."""
    walk = DirWalk(top_fd)
    todo = [sorted(os.listdir(top_fd), key=os.fsencode, reverse=True)]  # per level: names left, the next last
    try:
        while todo:
            if not todo[-1]:
                todo.pop()
                if todo and walk.leave() is None:
                    raise StrataError("a directory being read was moved meanwhile", Kind.STATE)
                continue
            name = todo[-1].pop()
            st = lstat_at(walk.fd, name)
            if st is None:
                continue  # removed since the listing
            yield walk, name, st
            if not (stat.S_ISDIR(st.st_mode) and descend(st)):
                continue
            try:
                walk.enter(name, cross_mounts)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue
                raise
            todo.append(sorted(os.listdir(walk.fd), key=os.fsencode, reverse=True))
    finally:
        walk.close()


# -- removing a tree ---------------------------------------------------------------------------------------------

# How often a tree may surprise the remover (a directory refilled after it was emptied, one moved while we were
# in it) before we give up: each surprise costs a rescan, and a live process refilling it could go on forever.
SURPRISE_LIMIT = 1000


def remove_at(dir_fd: int, name: str, display: str | None = None) -> None:
    """Remove whatever ``name`` is in ``dir_fd``, a whole directory tree included; absent is fine.

    Iterative (no recursion, so no depth limit) and in constant fds (:class:`DirWalk`): a hostile container or
    layer may make a tree deeper than Python's stack and the fd limit both. Never follows a symlink (it is
    unlinked, never entered); copes with fifos, sockets, devices, whiteouts and (for an unprivileged caller)
    directories of mode 000, which it makes accessible first. Never enters another mount: a mount point inside
    the tree stays, with everything on the path to it, and the rest is removed before a :class:`StrataError`
    names it. Every failure is a StrataError naming the path; ``display`` is how the message names ``name``.
    """
    _Remover(dir_fd, name, display or name).run()


def _shorten(path: str, limit: int = 160) -> str:
    """A path for a one-line message: a 1,500-level path would be 3,000 characters."""
    return path if len(path) <= limit else f"{path[: limit // 2]}/.../{path[-limit // 2:]}"


class _Level:
    """What the remover knows of one directory on its current path."""

    __slots__ = ("kept", "subdirs")

    def __init__(self) -> None:
        self.subdirs: list[str] | None = None  # still to enter; None: not listed (or to be listed again)
        self.kept: set[str] = set()  # entries left in place: mount points, or directories holding one


class _Remover:
    def __init__(self, parent_fd: int, name: str, display: str) -> None:
        if name in ("", ".", "..") or "/" in name:
            raise StrataError(f"refusing to remove {display!r}: not a name in a directory", Kind.USAGE)
        self.parent_fd = parent_fd
        self.name = name
        self.display = display
        self.mounts: dict[str, None] = {}  # paths (relative to the top) left in place, in the order met
        self.surprises = 0

    def _path(self, rel: str) -> str:
        return _shorten(f"{self.display}/{rel}" if rel else self.display)

    def _fail(self, e: OSError, rel: str) -> StrataError:
        return StrataError(f"cannot remove {self._path(rel)}: {e.strerror}", Kind.SYSTEM)

    def _surprise(self) -> None:
        self.surprises += 1
        if self.surprises > SURPRISE_LIMIT:
            raise StrataError(f"cannot remove {self._path('')}: it keeps changing while it is removed", Kind.STATE)

    def run(self) -> None:
        try:
            self._run()
        except OSError as e:
            raise self._fail(e, "") from None
        if self.mounts:
            first = next(iter(self.mounts))
            more = f" (and {len(self.mounts) - 1} more)" if len(self.mounts) > 1 else ""
            raise StrataError(f"cannot remove {self._path('')}: {self._path(first)} is a mount point{more}; "
                              "unmount it first", Kind.STATE)

    def _run(self) -> None:
        while True:
            st = lstat_at(self.parent_fd, self.name)
            if st is None:
                return
            if not stat.S_ISDIR(st.st_mode):
                if self._unlink(self.parent_fd, self.name, "", None):
                    return
                self._surprise()  # it became a directory meanwhile
                continue
            try:
                top = open_subdir(self.parent_fd, self.name)
            except OSError as e:
                if e.errno == errno.EXDEV:
                    self.mounts[""] = None
                    return
                if e.errno == errno.EACCES and _grant(self.parent_fd, self.name):
                    continue
                if e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    raise
                self._surprise()  # gone or replaced by a non-directory meanwhile: look again
                continue
            try:
                self._empty(top)
            finally:
                os.close(top)
            if self.mounts:
                return
            try:
                os.rmdir(self.name, dir_fd=self.parent_fd)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno == errno.EBUSY:
                    self.mounts[""] = None
                    return
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                self._surprise()  # refilled meanwhile

    def _empty(self, top: int) -> None:
        """Remove everything in the directory ``top`` but mount points (and the directories holding them)."""
        walk = DirWalk(top)
        levels = [_Level()]
        try:
            while True:
                level = levels[-1]
                if level.subdirs is None:
                    level.subdirs = self._scan(walk, level)
                if level.subdirs:
                    name = level.subdirs.pop()
                    if self._enter(walk, name, level):
                        levels.append(_Level())
                    continue
                if walk.depth == 0:
                    return
                done = levels.pop()
                left = walk.leave()
                if left is None:  # a directory on our path was moved: start again from the top, which we hold
                    self._surprise()
                    levels = [_Level()]
                    continue
                if done.kept:
                    levels[-1].kept.add(left)
                    continue
                self._rmdir(walk, left, levels[-1])
        except OSError as e:
            where = e.filename if isinstance(e.filename, str) and e.filename not in (".", "..") else ""
            raise self._fail(e, walk.rel(where)) from None
        finally:
            walk.close()

    def _scan(self, walk: DirWalk, level: _Level) -> list[str]:
        """Unlink every non-directory in the current directory; return its subdirectories (to enter)."""
        with os.scandir(walk.fd) as it:  # a dup of walk.fd for as long as the listing takes
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        subdirs = []
        for name, is_dir in entries:
            if name in level.kept:
                continue
            if is_dir or not self._unlink(walk.fd, name, walk.rel(name), level):
                subdirs.append(name)
        subdirs.reverse()  # popped from the end: entered in listing order
        return subdirs

    def _unlink(self, dir_fd: int, name: str, rel: str, level: _Level | None) -> bool:
        """Unlink a non-directory; False when it is a directory after all. ``level`` None: ``dir_fd`` is the
        caller's directory, which is not ours to make writable."""
        granted = False
        while True:
            try:
                os.unlink(name, dir_fd=dir_fd)
                return True
            except FileNotFoundError:
                return True
            except IsADirectoryError:
                return False
            except OSError as e:
                if e.errno == errno.EBUSY:  # a bind mount over a file
                    self.mounts[rel] = None
                    if level is not None:
                        level.kept.add(name)
                    return True
                if e.errno == errno.EACCES and level is not None and not granted and _grant_fd(dir_fd):
                    granted = True
                    continue
                e.filename = name
                raise

    def _enter(self, walk: DirWalk, name: str, level: _Level) -> bool:
        """Go down into ``name``; False when it is not a directory to go into (then dealt with here)."""
        try:
            walk.enter(name)
            return True
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            if e.errno == errno.EXDEV:
                self.mounts[walk.rel(name)] = None
                level.kept.add(name)
                return False
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a symlink or file since the listing
                if not self._unlink(walk.fd, name, walk.rel(name), level):
                    self._surprise()
                    level.subdirs = None
                return False
            if e.errno == errno.EACCES and _grant(walk.fd, name):
                if level.subdirs is not None:
                    level.subdirs.append(name)  # again, now that we may
                return False
            e.filename = name
            raise

    def _rmdir(self, walk: DirWalk, name: str, level: _Level) -> None:
        """Remove the directory ``name`` we just emptied, from the current directory (its parent)."""
        granted = False
        while True:
            try:
                os.rmdir(name, dir_fd=walk.fd)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):  # refilled meanwhile: list this level again
                    self._surprise()
                    level.subdirs = None
                    return
                if e.errno == errno.EBUSY:
                    self.mounts[walk.rel(name)] = None
                    level.kept.add(name)
                    return
                if e.errno == errno.EACCES and not granted and _grant_fd(walk.fd):
                    granted = True
                    continue
                e.filename = name
                raise


def _grant_fd(fd: int) -> bool:
    """Give the owner rwx on the directory ``fd`` (of mode 000, or read-only), so that an unprivileged remover may
    list it and remove its entries. Root needs none of this (CAP_DAC_OVERRIDE). False when it cannot help."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o700 == 0o700:
        return False
    try:
        os.fchmod(fd, mode | 0o700)
    except PermissionError:
        return False
    return True


def _grant(dir_fd: int, name: str) -> bool:
    """:func:`_grant_fd` for the directory ``name`` we may not open: through an O_PATH fd, which needs no
    permission on it and does not follow a symlink (a symlink is never chmodded: it is not a directory)."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return True  # gone meanwhile: the caller looks again and finds nothing to do
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o700 == 0o700:
            return False
        try:
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(st.st_mode) | 0o700)
        except PermissionError:
            return False
        return True
    finally:
        os.close(fd)
