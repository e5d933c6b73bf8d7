"""The two halves of ``cp``: a tree read into archive entries, and archive entries written into a directory, each
side of the copy through the one path primitive (:mod:`shared.layer.safepath`).

Either side may be hostile: a container's tree (symlinks to ``/`` or ``../..``, devices, fifos, components a
racing process swaps for symlinks) and an archive's names (``..``, absolute paths, an entry below a symlink the
archive planted). So the reader walks fd by fd without following a symlink, reads a regular file only once an
O_PATH fd shows it is the regular file it listed (a device or fifo is never opened: ``pack._open_same``), and
stays on the file systems its caller allows (a running container's /proc, /sys and /dev are not copied, as
Docker's ``cp`` does not see them). The writer opens every parent directory component by component with
``O_NOFOLLOW`` from the directory it was given, refuses ``..``, creates each entry with ``O_EXCL``/``*at`` calls
after removing what stood there (never opening it), and writes nothing on a file system it was not allowed.
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol, cast

from shared.errors import Kind, StrataError
from shared.layer.pack import _Changed, _FdReader, _open_same, _set_mtime
from shared.layer.safepath import SafeRoot, lstat_at, sorted_walk, split

Ids = Callable[[int, int], tuple[int, int]]
CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


Entry = tuple[tarfile.TarInfo, Readable | None]


def same_ids(uid: int, gid: int) -> tuple[int, int]:
    return uid, gid


def _mtime_ns(info: tarfile.TarInfo) -> int:
    text = info.pax_headers.get("mtime")
    if text is not None:
        sec, _, frac = text.partition(".")
        sign = -1 if sec.startswith("-") else 1
        return int(sec) * 1_000_000_000 + sign * int((frac + "000000000")[:9])
    return int(info.mtime) * 1_000_000_000


class TreeReader:
    """Archive entries of one object (an O_PATH fd its caller resolved) and, for a directory, everything below it,
    named ``top/...`` (``top`` None: the directory's own entry is left out and its content is named from the
    top). ``allowed`` holds the st_dev of the file systems that may be read (None: any); a directory on another
    one (a mount point of /proc, /sys, /dev) is an empty directory. ``ids`` turns owners as this process sees
    them into the archive's."""

    def __init__(self, allowed: frozenset[int] | None, ids: Ids = same_ids) -> None:
        self.allowed = allowed
        self.ids = ids
        self.links: dict[tuple[int, int], str] = {}

    def _ok(self, st: os.stat_result) -> bool:
        return self.allowed is None or st.st_dev in self.allowed

    def _info(self, name: str, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = self.ids(st.st_uid, st.st_gid)
        info.uname = info.gname = ""
        _set_mtime(info, st.st_mtime_ns)
        return info

    def entries(self, obj_fd: int, top: str | None) -> Iterator[Entry]:
        """Everything the object at ``obj_fd`` (O_PATH, not followed) holds, in name order, parents first. A
        non-directory's own file system is not checked (overlayfs may give a file its lower layer's st_dev): the
        caller checked its parent's, as the walk checks every directory it enters."""
        st = os.fstat(obj_fd)
        if not stat.S_ISDIR(st.st_mode):
            if top is not None:
                yield from self._leaf(obj_fd, "", top, st)
            return
        if top is not None:
            info = self._info(top + "/", st)
            info.type = tarfile.DIRTYPE
            yield info, None
        if not self._ok(st):
            return
        fd = os.open(f"/proc/self/fd/{obj_fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield from self._walk(fd, f"{top}/" if top else "")
        finally:
            os.close(fd)

    def _walk(self, top_fd: int, prefix: str) -> Iterator[Entry]:
        for walk, name, st in sorted_walk(top_fd, self._ok, cross_mounts=True):
            rel = prefix + walk.rel(name)
            if stat.S_ISDIR(st.st_mode):  # (one on a file system not allowed, a mount point of /proc, /sys,
                info = self._info(rel + "/", st)  # /dev..., is not entered: empty, as Docker sees it)
                info.type = tarfile.DIRTYPE
                yield info, None
            else:
                yield from self._leaf(walk.fd, name, rel, st)

    def _leaf(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> Iterator[Entry]:
        info = self._info(rel, st)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            info.type, info.linkname = tarfile.LNKTYPE, self.links[key]
            yield info, None
            return
        if stat.S_ISREG(st.st_mode):
            fd = _open_same(dir_fd, name, st) if name else _reopen(dir_fd, st)
            if fd is None:
                return
            try:
                info.size = st.st_size
                yield info, _FileReader(fd, st.st_size)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
            yield info, None
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            yield info, None
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
            yield info, None
        else:
            return  # a socket has no tar form (GNU tar and Docker leave it out)
        if st.st_nlink > 1:
            self.links[key] = rel


class _FileReader(_FdReader):
    """A file's bytes, no more than its lstat said; one that shrinks meanwhile (a live container) is our error."""

    def read(self, size: int = -1) -> bytes:
        try:
            return super().read(size)
        except _Changed:
            raise StrataError("a file being copied shrank meanwhile; copy again", Kind.STATE) from None


def _reopen(path_fd: int, st: os.stat_result) -> int:
    """The regular file an O_PATH fd names, opened for reading through its magic link (the very inode)."""
    fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
        os.close(fd)
        raise StrataError("the file being copied changed meanwhile", Kind.STATE)
    return fd


def read_tar(stream: BinaryIO) -> Iterator[Entry]:
    """The entries of a tar stream (``cp -``), in order, each file's bytes readable until the next entry."""
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                yield member, (tar.extractfile(member) if member.isreg() else None)
    except tarfile.TarError as e:
        raise StrataError(f"the archive on standard input is not a tar: {e}", Kind.USAGE) from None


def write_tar(entries: Iterator[Entry], out: BinaryIO) -> None:
    """Entries as a PAX tar on ``out`` (``cp CONTAINER:SRC -``)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, cast(BinaryIO, data) if data is not None else None)


class TreeWriter:
    """Writes archive entries below the directory ``dest_fd`` (the caller keeps it open).

    ``owner``: the (uid, gid) an entry is given from the archive's, or None to leave it the writer's own (Docker:
    into a container root's, out of it the user's, with ``-a`` the archive's; the container's side maps them).
    ``allowed``: st_dev values that may be written (None: any). ``devices``: device nodes are made, else left out
    with a note on stderr. ``keep_setid``: setuid and setgid bits are kept."""

    def __init__(self, dest_fd: int, owner: Callable[[tarfile.TarInfo], tuple[int, int] | None],
                 allowed: frozenset[int] | None, devices: bool, keep_setid: bool, where: str) -> None:
        self.root = SafeRoot.from_fd(dest_fd)
        self.owner = owner
        self.allowed = allowed
        self.devices = devices
        self.keep_setid = keep_setid
        self.where = where  # how messages name the destination
        self.dirs: list[tuple[list[str], int, tarfile.TarInfo]] = []
        self.made: set[str] = set()  # what this copy wrote (a hard link may name only these)
        self.left_out: set[str] = set()  # device nodes not made (their hard links are not either)
        self.cached: tuple[tuple[str, ...], int] | None = None  # the last entry's directory: (parts, fd)

    def close(self) -> None:
        self._drop_cached()
        self.root.close()

    def _show(self, parts: list[str]) -> str:
        return f"{self.where.rstrip('/')}/{'/'.join(parts)}"

    def write(self, entries: Iterator[Entry]) -> None:
        for info, data in entries:
            parts = split(info.name)
            if parts:
                self._entry(parts, info, data)
        for parts, mtime, info in reversed(self.dirs):  # deepest last written first: children done
            fd = self.root.open_dir(parts)
            try:
                self._attrs(fd, info)
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)

    def _mkdir(self, parent: int, name: str, _parts: list[str]) -> None:
        os.mkdir(name, 0o755, dir_fd=parent)

    def _entry(self, parts: list[str], info: tarfile.TarInfo, data: Readable | None) -> None:
        parent = self._parent(parts)
        name = parts[-1]
        old = lstat_at(parent, name)
        if old is not None and stat.S_ISDIR(old.st_mode) != info.isdir():
            a, b = ("non-directory", "directory") if info.isdir() else ("directory", "non-directory")
            raise StrataError(f'cannot overwrite {a} "{self._show(parts)}" with {b} "{info.name}"', Kind.USAGE)
        if info.isdir():
            if old is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            self.dirs.append((parts, _mtime_ns(info), info))
            return
        if old is not None:
            os.unlink(name, dir_fd=parent)
        self._create(parent, name, parts, info, data)
        self.made.add("/".join(parts))

    def _parent(self, parts: list[str]) -> int:
        """The directory an entry goes in, opened component by component (never through a symlink), kept open for
        the entries after it in the same directory (an archive lists a directory's files together); checked to be
        on a file system that may be written."""
        key = tuple(parts[:-1])
        if self.cached is not None and self.cached[0] == key:
            return self.cached[1]
        fd = self.root.open_dir(parts[:-1], make=self._mkdir)
        if self.allowed is not None and os.fstat(fd).st_dev not in self.allowed:
            os.close(fd)
            raise StrataError(f"cannot copy to {self._show(parts)}: not in the container's own file system "
                              "(/proc, /sys, /dev and such are not copied to)", Kind.USAGE)
        self._drop_cached()
        self.cached = (key, fd)
        return fd

    def _drop_cached(self) -> None:
        if self.cached is not None:
            os.close(self.cached[1])
            self.cached = None

    def _create(self, parent: int, name: str, parts: list[str], info: tarfile.TarInfo, data: Readable | None) -> None:
        if info.isreg():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
            try:
                _copy(data, fd, info.size)
                self._attrs(fd, info)
                mtime = _mtime_ns(info)
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
            return
        if info.islnk():
            target = split(info.linkname)
            if "/".join(target) in self.left_out:
                self.left_out.add("/".join(parts))
                return
            if "/".join(target) not in self.made:  # not a file of this copy's: one already there is not linked
                raise StrataError(f"refusing hard link {info.name!r}: {info.linkname!r} is not in the archive before "
                                  "it", Kind.HOSTILE)
            tparent = self.root.open_dir(target[:-1])
            try:
                os.link(target[-1], name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(tparent)
            return
        if info.issym():
            os.symlink(info.linkname, name, dir_fd=parent)
        elif info.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
        elif info.ischr() or info.isblk():
            if not self.devices:
                self.left_out.add("/".join(parts))
                print(f"{os.path.basename(sys.argv[0])}: left out device node {self._show(parts)}", file=sys.stderr)
                return
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=parent)
        else:
            return  # no other type has a form on disk
        self._path_attrs(parent, name, info)

    def _path_attrs(self, parent: int, name: str, info: tarfile.TarInfo) -> None:
        """Owner, mode and time of what was just made at ``name``, through an O_PATH fd of it: a racing process that
        swaps it for a symlink meanwhile gets nothing followed (chmod has no no-follow form; the symlink's own
        owner and time are set with the no-follow calls)."""
        ids = self.owner(info)
        mtime = _mtime_ns(info)
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                if ids is not None:
                    os.chown(name, *ids, dir_fd=parent, follow_symlinks=False)
                os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
                return
            if info.issym():
                raise StrataError(f"{info.name} changed while it was copied", Kind.STATE)
            if ids is not None:
                os.chown(f"/proc/self/fd/{fd}", *ids)
            os.chmod(f"/proc/self/fd/{fd}", self._mode(info))
            os.utime(f"/proc/self/fd/{fd}", ns=(mtime, mtime))
        finally:
            os.close(fd)

    def _mode(self, info: tarfile.TarInfo) -> int:
        return info.mode & (0o7777 if self.keep_setid else 0o1777)

    def _attrs(self, fd: int, info: tarfile.TarInfo) -> None:
        ids = self.owner(info)
        if ids is not None:
            os.fchown(fd, *ids)
        os.fchmod(fd, self._mode(info))


def _copy(data: Readable | None, fd: int, size: int) -> None:
    left = size
    while left > 0 and data is not None:
        chunk = data.read(min(CHUNK, left))
        if not chunk:
            raise StrataError("the archive ended inside a file", Kind.INTEGRITY)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        left -= len(chunk)
