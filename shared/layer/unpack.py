"""Tar stream -> overlay diff directory, with the diff_id computed in the same pass.

Rules (image-spec layer.md, applied as moby's overlay2 and containerd do):

* Entries are applied, not just extracted: dir over dir changes attributes only; anything else replaces.
* ``.wh.NAME`` becomes a 0/0 char device, ``.wh..wh..opq`` the opaque xattr on its directory, wherever the marker
  stands in the tar; plain whiteouts under a directory made opaque by the same layer are redundant and dropped
  (overlayfs misbehaves with both, as umoci notes). ``.wh.``, ``.wh..`` and ``.wh...`` are refused.
* A parent directory the tar creates only implicitly takes mode, owner, xattrs and mtime from the topmost lower
  layer that shows it (containerd's ``WithParents``), so it cannot change what the merged view shows. The diff
  directory's own root is such a parent too.
* A hardlink whose target is not in this layer (only in a lower one) cannot be a link across directories: the
  target is copied up from the lower diff dir into a new inode at the link's name (content, mode, owner, xattrs
  and mtime equal; link count not shared). This is the policy in the README.
* Directory mtimes are set last, after their contents.

Safety: every entry goes through :class:`shared.layer.safepath.SafeRoot`; see its module for the threat model.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Self, TypeVar, cast

if TYPE_CHECKING:  # tarfile and zlib cost the runner's start-up; only unpacking needs them
    import tarfile

from shared.digest import Digest
from shared.errors import Kind, StrataError, hostile, integrity
from shared.layer import compress
from shared.layer.safepath import (
    MakeDir,
    PathBlocked,
    SafeRoot,
    lstat_at,
    open_dir_at,
    proc_path,
    remove_at,
    split,
)
from shared.layer.tarstream import TarStream, plain_header
from shared.layer.whiteout import AUFS_META_PREFIX, OPAQUE_MARKER, OVERLAY, WHITEOUT_PREFIX, OverlayFormat

CHUNK = 1 << 20
REGULAR = b"0"  # tarfile.REGTYPE, without importing tarfile (the runner's start-up)
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC  # a new file, never through a link
# tarfile's stream buffer re-slices what it holds on every read (each 512-byte header): 64 KiB measured fastest
# (412 MB bench image on tmpfs: 69 MB/s with 1 MiB, 92 MB/s with 64 KiB, 91 MB/s with tarfile's own 10 KiB).
TAR_BUFFER = 1 << 16
XATTR_PAX_PREFIX = "SCHILY.xattr."
# uid_t and gid_t are 32 bits; (uid_t)-1 means "leave unchanged" to chown(2), so it cannot be an owner.
ID_MAX = (1 << 32) - 2
# The seconds of an mtime must fit time_t (64 bits), which os.utime converts them to.
TIME_MIN, TIME_MAX = -(1 << 63) + 1, (1 << 63) - 2
NAME_MAX = 255  # bytes in one path component, on every Linux file system a diff dir may live on
PATH_MAX = 4096  # bytes in a path passed to the kernel, its NUL included (linux/limits.h): a link target's bound
# Linux encodes a device number in 12 bits of major and 20 of minor (new_encode_dev); more does not fit mknod(2).
DEV_MAJOR_MAX, DEV_MINOR_MAX = (1 << 12) - 1, (1 << 20) - 1
_PAX_UINT = re.compile(r"[0-9]{1,20}")
_PAX_TIME = re.compile(r"(-?)([0-9]{1,20})(?:\.([0-9]*))?")
T = TypeVar("T")


@dataclass(frozen=True)
class UnpackResult:
    """What unpacking a layer found: its diff_id and size, and what it had to leave out."""

    diff_id: Digest
    size: int  # bytes of uncompressed tar
    left_out: tuple[str, ...] = ()  # what a user namespace could not make, as "3 device nodes" (DiffWriter.left_out)


@dataclass
class DirMeta:
    """A lower layer's directory's mode, owner, mtime and xattrs: what a parent made in an upper layer copies."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int | None
    xattrs: dict[str, bytes] = field(default_factory=dict)


class Lowers:
    """Read-only view of the lower diff dirs (topmost first), to answer "what does the merged view show here?"."""

    def __init__(self, paths: Sequence[Path], fmt: OverlayFormat = OVERLAY) -> None:
        self.roots = [SafeRoot(p) for p in paths]
        self.fmt = fmt

    def close(self) -> None:
        for root in self.roots:
            root.close()

    def _walk(self, parts: list[str]) -> tuple[int, os.stat_result] | None:
        """The fd of the parent and the stat of ``parts`` in the topmost lower that decides it, or None.

        The caller closes the returned fd. For ``parts == []`` the "parent" is the lower's root itself.
        """
        for root in self.roots:
            fd = os.dup(root.fd)
            if not parts:
                return fd, os.fstat(fd)
            opaque_above = False
            try:
                for part in parts[:-1]:
                    st = lstat_at(fd, part)
                    if st is None:
                        break
                    if not stat.S_ISDIR(st.st_mode):
                        return None  # a file, symlink or whiteout here hides every lower below it
                    nfd = open_dir_at(fd, part)
                    os.close(fd)
                    fd = nfd
                    opaque_above = opaque_above or self.fmt.is_opaque(fd)
                else:
                    st = lstat_at(fd, parts[-1])
                    if st is not None:
                        fd_out, fd = fd, -1
                        return fd_out, st
                if opaque_above:
                    return None
            finally:
                if fd >= 0:
                    os.close(fd)
        return None

    def dir_meta(self, parts: list[str]) -> DirMeta | None:
        found = self._walk(parts)
        if found is None:
            return None
        fd, st = found
        try:
            if not stat.S_ISDIR(st.st_mode):
                return None
            target = fd if not parts else open_dir_at(fd, parts[-1])
            try:
                xattrs = {n: os.getxattr(target, n) for n in os.listxattr(target)
                          if not self.fmt.is_overlay_metadata(n)}
            finally:
                if target != fd:
                    os.close(target)
            return DirMeta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, xattrs)
        finally:
            os.close(fd)

    def open_file(self, parts: list[str]) -> tuple[int, os.stat_result] | None:
        """(parent fd, stat) of a non-directory in the merged lower view, for hardlink copy-up."""
        found = self._walk(parts)
        if found is None:
            return None
        fd, st = found
        if stat.S_ISDIR(st.st_mode) or OverlayFormat.is_whiteout(st):
            os.close(fd)
            return None
        return fd, st


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in ns, exact: tarfile parses a PAX ``mtime`` into a float, which loses microseconds.
    A PAX mtime that is no decimal number is refused by :func:`check_member` before this is asked."""
    text = member.pax_headers.get("mtime")
    if text:
        match = _PAX_TIME.fullmatch(text)
        if match is not None:
            sign, sec, frac = match.groups()
            ns = int(sec) * 1_000_000_000 + int(((frac or "") + "000000000")[:9])
            return -ns if sign else ns
    return int(member.mtime) * 1_000_000_000


def _show(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message: repr escapes newlines, and a 1 MB PAX path is cut short."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse, naming the member, what the syscalls cannot take or would take to mean something else.

    tarfile parses headers leniently: a PAX number that is no number becomes 0, a base-256 header field may be
    negative or far beyond 32 or 64 bits, a PAX path may hold a NUL byte. Passed on, these would end in
    ValueError or OverflowError from os (a traceback), or worse quietly: chown(2) takes uid -1 as "unchanged",
    and a C string ends at the NUL, so other readers of the tar would see another path than we do.
    """
    for what, path in (("path", member.name), ("link target", member.linkname)):
        if "\0" in path:
            raise hostile(f"refusing entry {_show(member.name)}: its {what} contains a NUL byte")
    if member.issym() or member.islnk():
        _check_link(member)
    # a component of 64 characters or fewer is at most 256 bytes (4 a character): only longer ones are counted
    if len(member.name) > NAME_MAX // 4 and any(len(part) > NAME_MAX // 4 and len(os.fsencode(part)) > NAME_MAX
                                                for part in member.name.split("/")):
        raise integrity(f"entry {_show(member.name)} has a path component longer than {NAME_MAX} bytes")
    if member.pax_headers:
        _check_pax(member)
    for key, value in (("uid", member.uid), ("gid", member.gid)):
        if not 0 <= value <= ID_MAX:
            raise integrity(f"invalid {key} {value} for entry {_show(member.name)}: out of range")
    if member.size < 0:
        raise integrity(f"invalid size {member.size} for entry {_show(member.name)}")
    # tarfile applies the PAX records of a header that follows another one to the member, then keeps only the
    # first header's records in pax_headers: its float mtime (nan, inf) may stand without a text to check.
    if not math.isfinite(member.mtime) or not TIME_MIN <= mtime_ns(member) // 1_000_000_000 <= TIME_MAX:
        raise integrity(f"invalid mtime {_show(member.pax_headers.get('mtime', str(member.mtime)))} for entry "
                        f"{_show(member.name)}: out of range")
    if (member.ischr() or member.isblk()) and not (0 <= member.devmajor <= DEV_MAJOR_MAX
                                                   and 0 <= member.devminor <= DEV_MINOR_MAX):
        raise integrity(f"invalid device number {member.devmajor},{member.devminor} for entry {_show(member.name)}")


def _check_link(member: tarfile.TarInfo) -> None:
    if member.issym() and not member.linkname:
        raise integrity(f"symlink {_show(member.name)} has an empty target")  # symlink(2): ENOENT
    if len(os.fsencode(member.linkname)) >= PATH_MAX:
        # symlink(2) and link(2) would fail with ENAMETOOLONG: the layer's fault, not the host's
        raise integrity(f"entry {_show(member.name)} has a link target of {len(os.fsencode(member.linkname))} "
                        f"bytes, over Linux's {PATH_MAX - 1}")


def _check_pax(member: tarfile.TarInfo) -> None:
    name, pax = _show(member.name), member.pax_headers
    for key in ("uid", "gid", "size"):
        text = pax.get(key)
        if text is not None and _PAX_UINT.fullmatch(text) is None:
            raise integrity(f"invalid PAX {key} {_show(text)} for entry {name}: not a decimal number")
    text = pax.get("mtime")
    if text is not None and _PAX_TIME.fullmatch(text) is None:
        raise integrity(f"invalid PAX mtime {_show(text)} for entry {name}: not a decimal number")
    for key in pax:
        if key.startswith(XATTR_PAX_PREFIX) and (key == XATTR_PAX_PREFIX or "\0" in key):
            raise integrity(f"invalid xattr name {_show(key[len(XATTR_PAX_PREFIX):])} for entry {name}")


# What setxattr(2) answers for a name or value no file system takes: a namespace that does not exist (EOPNOTSUPP),
# a name over 255 bytes (ERANGE), a value over 64 KiB (E2BIG), a security.* value the kernel cannot parse (EINVAL).
_BAD_XATTR = (errno.EOPNOTSUPP, errno.ERANGE, errno.E2BIG, errno.EINVAL)


@contextlib.contextmanager
def _xattr_refused(member: tarfile.TarInfo, xname: str) -> Iterator[None]:
    """The layer's xattr cannot be set, said as the layer's fault and naming the entry (not "cannot unpack:
    Operation not supported: /proc/self/fd/8/x")."""
    try:
        yield
    except OSError as e:
        if e.errno not in _BAD_XATTR:
            raise
        raise integrity(f"cannot set xattr {_show(xname)} of entry {_show(member.name)}: {e.strerror}") from None


def xattrs_of(member: tarfile.TarInfo) -> dict[str, bytes]:
    return {k[len(XATTR_PAX_PREFIX):]: v.encode("utf-8", "surrogateescape")
            for k, v in member.pax_headers.items() if k.startswith(XATTR_PAX_PREFIX)}


class DiffWriter:
    """Writes entries into one diff directory on top of its lowers: the tar unpacker, and the runner's -init
    layer, which needs the same rule that a directory created only as a parent must not hide the lower's."""

    def __init__(self, dest: Path, lowers: Lowers, fmt: OverlayFormat, ids: int | None = None) -> None:
        self.root = SafeRoot(dest)
        self.lowers = lowers
        self.fmt = fmt
        self.ids = ids  # how many uids and gids exist where this runs (a user namespace's), None: all
        self.dir_mtimes: dict[tuple[str, ...], int] = {}
        self.opaque_dirs: set[tuple[str, ...]] = set()
        self.whiteouts: dict[tuple[str, ...], set[str]] = {}
        self._cache: tuple[tuple[str, ...], int] | None = None
        self._root_meta_set = False
        self.left_out: collections.Counter[str] = collections.Counter()  # unprivileged formats: kind -> count
        self._left_out_paths: set[tuple[str, ...]] = set()  # the device nodes left out, for hard links to them

    def close(self) -> None:
        self._drop_cache()
        self.root.close()

    def _drop_cache(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    # -- directories ----------------------------------------------------------------------------------------

    def _make_implicit(self, parent_fd: int, name: str, parts: list[str]) -> None:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = open_dir_at(parent_fd, name)
        try:
            self._apply_dir_meta(fd, tuple(parts), self.lowers.dir_meta(parts))
        finally:
            os.close(fd)

    def _apply_dir_meta(self, fd: int, key: tuple[str, ...], meta: DirMeta | None) -> None:
        if meta is None:
            meta = DirMeta(0o755, 0, 0, None)
        os.fchown(fd, meta.uid, meta.gid)
        os.fchmod(fd, meta.mode)
        for name, value in meta.xattrs.items():
            os.setxattr(fd, name, value)
        if meta.mtime_ns is not None:
            self.dir_mtimes[key] = meta.mtime_ns

    def parent(self, parts: list[str]) -> int:
        """The fd of the directory ``parts`` (cached for runs of entries in one directory); not to be closed."""
        return self._open_cached(parts, self._make_implicit)

    def _open_cached(self, parts: list[str], make: MakeDir | None) -> int:
        """Open ``parts`` and cache it. Below the cached directory (a tar lists a directory, then what it holds)
        the walk goes on from there, not from the root: a layer 1,200 directories deep would otherwise cost
        ~720,000 opens. The cached fd is still the directory at its path: since it was cached, entries only
        changed what is in it, never the directory itself (a change to it would have needed its parent)."""
        key = tuple(parts)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        below = cached is not None and key[: len(cached[0])] == cached[0]
        fd = self.root.open_dir(parts, make, (cached[1], len(cached[0])) if below and cached else None)
        self._drop_cache()
        self._cache = (key, fd)
        return fd

    def init_root(self) -> None:
        """The diff dir's root is an implicit parent too, unless the tar has a ``./`` entry (applied later)."""
        self._apply_dir_meta(self.root.fd, (), self.lowers.dir_meta([]))

    # -- entries --------------------------------------------------------------------------------------------

    def _owner(self, member: tarfile.TarInfo) -> tuple[int, int]:
        """The owner an entry gets in a user namespace of ``ids`` ids: its own; with the user's id alone, the
        user's (0: nothing else exists); beyond the ranges, a refusal that says so, as podman's, rather than
        owners that silently change."""
        assert self.ids is not None
        if self.ids == 1:
            return 0, 0
        if member.uid >= self.ids or member.gid >= self.ids:
            raise StrataError(f"entry {_show(member.name)} is owned by {member.uid}:{member.gid}, beyond the "
                              f"{self.ids} ids this user's namespace maps (/etc/subuid, /etc/subgid)",
                              Kind.UNSUPPORTED)
        return member.uid, member.gid

    def entry(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        if self.ids is not None:
            member.uid, member.gid = self._owner(member)
        parts = split(member.name)
        if not parts:
            if not member.isdir():
                raise hostile(f"refusing to change the type of the root directory (entry {member.name!r})")
            self._metadata_dir(self.root.fd, (), member)
            return
        marked = WHITEOUT_PREFIX in member.name  # (most names hold none: the checks below cost each entry)
        if marked:
            if any(p.startswith(AUFS_META_PREFIX) and p != OPAQUE_MARKER for p in parts) or \
                    OPAQUE_MARKER in parts[:-1]:
                return  # AUFS metadata (hardlink stash, aufs bookkeeping), ignored like moby does
            if any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
                raise hostile(f"refusing path {member.name!r}: a whiteout cannot be a directory")
        name = parts[-1]
        dirparts = parts[:-1]
        try:
            fd = self.parent(dirparts)
        except PathBlocked as e:
            # umoci writes whiteouts below a directory the same layer turned into a file (d, then d/.wh.x):
            # the file already hides everything under it, so they say nothing. Through a symlink: refused.
            if name.startswith(WHITEOUT_PREFIX) and not e.symlink:
                return
            raise
        key = tuple(dirparts)
        if not marked and member.type == REGULAR:  # the common entry, first
            self._regular(fd, name, key, member, tar)
        elif name == OPAQUE_MARKER:
            self._opaque(fd, key)
        elif name.startswith(WHITEOUT_PREFIX):
            self._whiteout(fd, key, name[len(WHITEOUT_PREFIX):], member)
        elif member.isdir():
            self._directory(fd, name, tuple(parts), member)
        elif member.isreg() or member.issym():  # made exclusively: what is there goes first (_fresh)
            self._non_dir(fd, name, key, member, tar)
        else:
            self._replace(fd, name, key)
            self._non_dir(fd, name, key, member, tar)

    def _opaque(self, fd: int, key: tuple[str, ...]) -> None:
        """``.wh..wh..opq`` in the dir ``key`` (open at ``fd``): hide the lower layers' entries, and drop this
        layer's whiteouts there, which the opaque dir makes redundant."""
        self.fmt.make_opaque(fd)
        self.opaque_dirs.add(key)
        for hidden in self.whiteouts.pop(key, set()):
            st = lstat_at(fd, hidden)
            if st is not None and OverlayFormat.is_whiteout(st):
                os.unlink(hidden, dir_fd=fd)

    def _whiteout(self, fd: int, key: tuple[str, ...], target: str, member: tarfile.TarInfo) -> None:
        """``.wh.TARGET``: TARGET of the lower layers is deleted (nothing to say in a dir made opaque already)."""
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise hostile(f"invalid whiteout entry {member.name!r}")
        if key in self.opaque_dirs:
            return
        self._replace(fd, target, key)
        self.fmt.make_whiteout(fd, target, member.uid, member.gid)
        mtime = mtime_ns(member)
        os.utime(target, ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)
        self.whiteouts.setdefault(key, set()).add(target)

    def _directory(self, fd: int, name: str, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        """A directory entry: kept if one is there already (its metadata set again), else made in place of what is."""
        try:
            os.mkdir(name, 0o700, dir_fd=fd)
        except FileExistsError:
            existing = lstat_at(fd, name)
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                self._replace(fd, name, parts[:-1])
                os.mkdir(name, 0o700, dir_fd=fd)
        dfd = open_dir_at(fd, name)
        try:
            self._metadata_dir(dfd, parts, member)
        finally:
            os.close(dfd)

    def _non_dir(self, fd: int, name: str, key: tuple[str, ...], member: tarfile.TarInfo,
                 tar: tarfile.TarFile) -> None:
        """A file, symlink, hard link or device node at ``name`` (in the directory ``key``, open at ``fd``), where
        nothing is any more (a hard link or a device) or where what is goes first (a file or a symlink)."""
        if member.isreg():
            self._regular(fd, name, key, member, tar)
        elif member.issym():
            self._fresh(fd, name, key, lambda: os.symlink(member.linkname, name, dir_fd=fd))
            self._metadata_at(fd, name, member, symlink=True)
        elif member.islnk():
            self._hardlink(fd, name, member)
        elif (member.ischr() or member.isblk()) and not self.fmt.privileged:
            self.left_out["device nodes"] += 1  # mknod(2) of a device needs CAP_MKNOD outside any user namespace
            self._left_out_paths.add(tuple(split(member.name)))
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            # A fifo's device fields mean nothing (and may hold anything): check_member checks only devices'.
            dev = 0 if kind == stat.S_IFIFO else os.makedev(member.devmajor, member.devminor)
            os.mknod(name, kind | 0o600, dev, dir_fd=fd)
            self._metadata_at(fd, name, member, symlink=False)
        else:
            raise integrity(f"unsupported tar entry type {member.type!r} for {member.name!r}")

    def _replace(self, fd: int, name: str, key: tuple[str, ...]) -> None:
        """Remove what this layer already has at ``name`` in the directory ``key``: a later entry wins. ``fd`` is
        the cached parent, and what is removed lies below it, so the cache stays valid."""
        st = lstat_at(fd, name)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                remove_at(fd, name)
                self._removed((*key, name))
            else:
                os.unlink(name, dir_fd=fd)

    def _removed(self, path: tuple[str, ...]) -> None:
        """The directory ``path`` is gone, with everything in it (a hook: see shared.layer.deferred)."""

    def _fresh(self, fd: int, name: str, key: tuple[str, ...], make: Callable[[], T]) -> T:
        """MAKE, which creates ``name`` exclusively, after :meth:`_replace` when something is there already. Made
        first, removed only when that fails: most names are new, and a look first would cost a syscall each."""
        try:
            return make()
        except FileExistsError:
            self._replace(fd, name, key)
            return make()

    def _regular(self, dir_fd: int, name: str, key: tuple[str, ...], member: tarfile.TarInfo,
                 tar: tarfile.TarFile) -> None:
        fd = self._fresh(dir_fd, name, key, lambda: os.open(name, CREATE, 0o600, dir_fd=dir_fd))
        try:
            if member.issparse():
                self._sparse(fd, member, tar)
            elif cast(TarStream, tar.fileobj).copy_to(fd, member.size) < member.size:
                raise integrity(f"layer tar is truncated inside {member.name!r}")
            self._metadata_fd(fd, member)
        finally:
            os.close(fd)

    @staticmethod
    def _sparse(fd: int, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        """A GNU sparse file's contents, holes written as zeros, through tarfile's reader of its map."""
        import tarfile

        src = tar.extractfile(member)
        assert src is not None
        remaining = member.size
        while remaining > 0:
            try:
                chunk = src.read(min(CHUNK, remaining))
            except tarfile.ReadError:  # tarfile's "unexpected end of data"
                chunk = b""
            if not chunk:
                raise integrity(f"layer tar is truncated inside {member.name!r}")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            remaining -= len(chunk)

    def _hardlink(self, dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
        target = split(member.linkname)
        if not target:
            raise hostile(f"refusing hardlink {member.name!r} to the root directory")
        if tuple(target) in self._left_out_paths:
            self.left_out["device nodes"] += 1
            self._left_out_paths.add(tuple(split(member.name)))
            return
        try:
            tfd = self.root.open_dir(target[:-1])
        except FileNotFoundError:
            tfd = -1
        try:
            st = lstat_at(tfd, target[-1]) if tfd >= 0 else None
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise hostile(f"refusing hardlink {member.name!r} to directory {member.linkname!r}")
            if st is not None:
                os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=dir_fd, follow_symlinks=False)
                return
        finally:
            if tfd >= 0:
                os.close(tfd)
        self._copy_up(dir_fd, name, member, target)

    def _copy_up(self, dir_fd: int, name: str, member: tarfile.TarInfo, target: list[str]) -> None:
        found = self.lowers.open_file(target)
        if found is None:
            raise integrity(f"hardlink {member.name!r} points to {member.linkname!r}, which is in neither this "
                            "layer nor a lower one")
        lfd, st = found
        try:
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(target[-1], dir_fd=lfd), name, dir_fd=dir_fd)
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
                return
            if not stat.S_ISREG(st.st_mode):
                os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dir_fd)
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
                os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
                return
            src = os.open(target[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=lfd)
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dir_fd)
            try:
                while os.sendfile(dst, src, None, CHUNK) > 0:
                    pass
                os.fchown(dst, st.st_uid, st.st_gid)
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                for xname in os.listxattr(src):
                    if not self.fmt.is_overlay_metadata(xname):
                        os.setxattr(dst, xname, os.getxattr(src, xname))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(src)
                os.close(dst)
        finally:
            os.close(lfd)

    # -- metadata -------------------------------------------------------------------------------------------
    # Order matters: chown clears setuid/setgid and security.capability, so mode and xattrs come after it.

    def _xattrs(self, member: tarfile.TarInfo, target: int | str, follow: bool = True) -> None:
        """The entry's xattrs on ``target`` (an fd, or a /proc path of an entry not to be followed)."""
        for xname, value in xattrs_of(member).items():
            if not self.fmt.privileged and xname.startswith("trusted."):
                self.left_out["trusted.* xattrs"] += 1  # CAP_SYS_ADMIN outside any user namespace
                continue
            try:
                with _xattr_refused(member, xname):
                    os.setxattr(target, self.fmt.escape_xattr(xname), value, follow_symlinks=follow)
            except OSError as e:
                # Linux allows no user.* xattrs on symlinks or devices; GNU tar warns and goes on, so do we.
                if not (e.errno == errno.EPERM and xname.startswith("user.") and not follow):
                    raise

    def _metadata_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        if member.pax_headers:  # (where xattrs and exact mtimes come from)
            self._xattrs(member, fd)
        mtime = mtime_ns(member)
        os.utime(fd, ns=(mtime, mtime))

    def _metadata_dir(self, fd: int, key: tuple[str, ...], member: tarfile.TarInfo) -> None:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        self._xattrs(member, fd)
        self.dir_mtimes[key] = mtime_ns(member)

    def _metadata_at(self, dir_fd: int, name: str, member: tarfile.TarInfo, symlink: bool) -> None:
        os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
        if not symlink:
            os.chmod(name, member.mode & 0o7777, dir_fd=dir_fd)
        self._xattrs(member, proc_path(dir_fd, name), follow=False)
        mtime = mtime_ns(member)
        os.utime(name, ns=(mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory mtimes last, since creating their children changed them. In path order, parents first, so
        each directory is opened from its parent's cached fd; the order is free, as utime on a directory does
        not change its parent's mtime."""
        self._drop_cache()
        for key in sorted(self.dir_mtimes):
            try:
                fd = self._open_cached(list(key), None)
            except (FileNotFoundError, StrataError):
                continue  # replaced later in the tar by a non-directory (or its parent was)
            os.utime(fd, ns=(self.dir_mtimes[key], self.dir_mtimes[key]))
        self._drop_cache()


@functools.cache
def _strict_header() -> type[tarfile.TarInfo]:
    """A TarInfo whose headers refuse to end the archive quietly. tarfile takes a header block cut short, or one
    that fails its checksum, anywhere but at offset 0 for the end of the archive, and stops there: a tar cut in
    the middle of a header, or followed by garbage, would unpack as if complete. GNU tar and Go's archive/tar
    (umoci, podman, Docker) refuse both, and so do we. Made on first use: tarfile costs the runner's start-up."""
    import tarfile

    # Not in typeshed's tarfile, but in tarfile since Python 3.2.
    truncated: type[Exception] = vars(tarfile)["TruncatedHeaderError"]
    invalid: type[Exception] = vars(tarfile)["InvalidHeaderError"]

    class StrictHeader(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
            start = tar.fileobj.tell()
            plain = plain_header(cls, tar, tar.fileobj.read(tarfile.BLOCKSIZE), start)
            if plain is not None:  # the common header, read as tarfile reads it (shared.layer.tarstream)
                return cast(Self, plain)
            tar.fileobj.seek(start)  # (back within TarStream's buffer) for tarfile to read it
            try:
                return super().fromtarfile(tar)
            except truncated:
                raise integrity(f"layer tar is truncated inside the header at byte {start}") from None
            except invalid as e:
                raise integrity(f"layer tar has an invalid header at byte {start}: {e}") from None

    return StrictHeader


def _ends_in_padding(tar: tarfile.TarFile, last: tarfile.TarInfo | None) -> bool:
    """True when the stream ended after the last member's data, inside the zeros that pad it to 512 bytes.

    ``umoci insert`` (0.4.7) writes such tars: the last member's data, then nothing, neither the padding nor the
    two zero blocks. Go's archive/tar, and so umoci and podman, take that as the end of the archive; tarfile says
    "unexpected end of data" when it looks for the padding's last byte. The data itself must be complete: the
    check is on where the stream ended, between the end of the data and the next header's offset.
    """
    if last is None:
        return False
    data_end = last.offset_data + (last.size if tar.offset > last.offset_data else 0)
    return data_end <= int(tar.fileobj.tell()) < tar.offset


@contextlib.contextmanager
def _parsing() -> Iterator[None]:
    """tarfile's parsers of GNU sparse and PAX records raise ValueError (``int('')``) on garbage."""
    try:
        yield
    except (ValueError, OverflowError) as e:
        raise integrity(f"layer tar has a malformed header: {e}") from None


def _open_tar(stream: TarStream) -> tarfile.TarFile:
    """The tar in ``stream``, read forward (``r:`` over a :class:`TarStream`: see its module for why not tarfile's
    stream mode), its first header already parsed, as tarfile does."""
    import tarfile

    with _parsing():
        tar = tarfile.open(fileobj=cast(BinaryIO, stream), mode="r:", tarinfo=_strict_header())  # noqa: SIM115
    vars(tar)["members"] = _Forgotten()
    return tar


def _next_member(tar: tarfile.TarFile, last: tarfile.TarInfo | None) -> tarfile.TarInfo | None:
    """The member after ``last``, or None at the end of the archive (also when the final padding is missing)."""
    import tarfile

    try:
        return tar.next()
    except (ValueError, OverflowError) as e:  # as _parsing says them (a with block costs every entry)
        raise integrity(f"layer tar has a malformed header: {e}") from None
    except tarfile.ReadError:
        if _ends_in_padding(tar, last):
            return None
        raise


class _Forgotten(list):  # type: ignore[type-arg]
    """tarfile's list of every member read, for lookups by name we never make: kept empty."""

    def append(self, item: object) -> None:
        pass


def extract(tar_stream: BinaryIO | TarStream, dest: Path, lowers: Sequence[Path] = (),
            fmt: OverlayFormat = OVERLAY, ids: int | None = None) -> tuple[str, ...]:
    """Apply one layer's uncompressed tar to the empty directory ``dest``, given its lower diff dirs (top first).
    Returns what ``fmt`` could not hold, as ``("3 device nodes",)``: nothing for root's format."""
    low = Lowers(lowers, fmt)
    try:
        return apply_tar(tar_stream, DiffWriter(dest, low, fmt, ids))
    finally:
        low.close()


def apply_tar(tar_stream: BinaryIO | TarStream, writer: DiffWriter) -> tuple[str, ...]:
    """Apply a tar with ``writer`` (which this closes); what its format could not hold, as :func:`extract`."""
    if not isinstance(tar_stream, TarStream):
        tar_stream = TarStream(tar_stream)
    try:
        writer.init_root()
        with _open_tar(tar_stream) as tar:
            member = None
            while (member := _next_member(tar, member)) is not None:
                check_member(member)
                writer.entry(member, tar)
        writer.finish()
    finally:
        writer.close()
    return tuple(f"{n} {kind}" for kind, n in sorted(writer.left_out.items()))


def _data_errors() -> tuple[type[BaseException], ...]:
    """A stream that does not decompress (compress.stream_errors), or a tar that tarfile cannot parse."""
    import tarfile

    return (*compress.stream_errors(), tarfile.TarError, UnicodeError)


@contextlib.contextmanager
def unpacking(what: str) -> Iterator[None]:
    """What goes wrong while unpacking (or finishing) layer ``what``, said in one line naming it."""
    try:
        yield
    except StrataError as e:
        raise StrataError(f"{what}: {e}", e.kind) from None
    except _data_errors() as e:
        raise integrity(f"{what} is corrupt: {e}") from None
    except OSError as e:
        if e.errno is None:  # gzip.BadGzipFile and friends carry no errno
            raise integrity(f"{what} is corrupt: {e}") from None
        if e.errno == errno.ENOSPC:
            raise StrataError(f"no space left on device while unpacking {what}", Kind.SYSTEM) from None
        raise StrataError(f"cannot unpack {what}: {e.strerror}: {e.filename or ''}".rstrip(": "),
                          Kind.SYSTEM) from None


def check_diff_id(actual: Digest, expected: Digest, what: str) -> None:
    if actual != expected:
        raise integrity(f"{what}: diff_id mismatch: the config says {expected}, the tar is {actual}")


def unpack_blob(blob: Path, dest: Path, expected_diff_id: Digest, lowers: Sequence[Path] = (),
                what: str = "layer", fmt: OverlayFormat = OVERLAY, ids: int | None = None,
                progress: Callable[[int], None] | None = None) -> UnpackResult:
    """Unpack a stored (verified) layer blob into the new directory ``dest`` and check its diff_id; PROGRESS, if
    given, hears a few times a second how many of the blob's bytes were unpacked.

    On any error ``dest`` may hold a partial tree: the caller unpacks into a temp dir and removes it.
    """
    os.mkdir(dest, 0o700)
    with unpacking(what), compress.open_blob(os.fspath(blob), progress) as stream:
        reader = TarStream(stream)
        left_out = extract(reader, dest, lowers, fmt, ids)
        reader.drain()
    check_diff_id(reader.digest(), expected_diff_id, what)
    return UnpackResult(reader.digest(), reader.count, left_out)
