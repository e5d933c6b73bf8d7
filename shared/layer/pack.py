"""Diff directory or overlay upper dir -> layer tar: the reverse of :mod:`shared.layer.unpack`, for commit.

Deterministic, so the same tree always gives the same diff_id: entries sorted by name, PAX format, numeric ids
with no user or group names, the files' own mtimes, a gzip header without name or time. Overlay's on-disk format
turns back into the tar's: a 0/0 char device NAME into ``.wh.NAME``; ``trusted.overlay.opaque=y`` into a
``.wh..wh..opq`` entry right after its directory; overlayfs' own xattrs are dropped and escaped layer xattrs
(``trusted.overlay.overlay.X``) unescaped. Hardlinks inside the tree become tar hardlinks to the first name.
The root directory itself is not an entry (as Docker's diffs), unless asked for.

The tree is read with the same fd-relative, no-follow walk as unpacking, so a symlink in the tree can not make
the packer read a file outside it. A tree that a running container changes meanwhile (``commit --pause=false``)
can not make it open anything but the regular file it lstat'ed (:func:`_open_same`): a device node swapped in
would be the host's device (the store is not ``nodev``), a fifo would hang the pack. Such a change fails the pack;
a name removed meanwhile is left out.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from shared.digest import Digest, HashingWriter
from shared.errors import Kind, StrataError
from shared.layer.safepath import DirWalk, SafeRoot, proc_path
from shared.layer.unpack import TAR_BUFFER
from shared.layer.whiteout import OPAQUE_MARKER, OVERLAY, WHITEOUT_PREFIX, OverlayFormat
from shared.userns import IdBlock

CHUNK = 1 << 20
COMPRESSIONS = ("gzip", "zstd", "none")


@dataclass(frozen=True)
class PackResult:
    digest: Digest  # of the blob as written (compressed)
    diff_id: Digest  # of the uncompressed tar
    size: int  # bytes of the blob
    uncompressed_size: int


class _Changed(Exception):
    """The entry being packed is no longer what its lstat said (a live container changed it meanwhile)."""


class _FdReader:
    """The file's bytes for tarfile, which took the size from the lstat: a file that ends sooner is a change,
    not a short entry."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size

    def read(self, size: int = -1) -> bytes:
        want = min(self.left, size if size >= 0 else CHUNK)
        data = os.read(self.fd, want) if want else b""
        if want and not data:
            raise _Changed("it shrank")
        self.left -= len(data)
        return data


def _open_same(dir_fd: int, name: str, st: os.stat_result) -> int | None:
    """An fd for reading the regular file ``name`` that ``st`` (its lstat) describes, or None if the name is
    gone. The name is first opened O_PATH, which opens nothing (no device's open, no fifo's wait), and only
    once fstat shows the same regular file (device and inode) is that inode reopened for reading through the
    fd's magic link: whatever a live container renames there meanwhile, nothing else is ever opened."""
    try:
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink now
            raise _Changed("it is no longer a regular file") from None
        raise
    try:
        now = os.fstat(path_fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _Changed("it is no longer the same regular file")
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(path_fd)
    if os.fstat(fd).st_size != st.st_size:
        os.close(fd)
        raise _Changed("its size changed")
    return fd


def _xattrs(path: str, fmt: OverlayFormat) -> dict[str, str]:
    """PAX values for the entry's xattrs, overlay's own dropped, escaped ones unescaped."""
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in sorted(names):
        if fmt.is_overlay_metadata(name):
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        if name.startswith(fmt.overlay_prefix + "overlay."):
            name = fmt.overlay_prefix + name[len(fmt.overlay_prefix + "overlay."):]
        out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


def _set_mtime(info: tarfile.TarInfo, ns: int) -> None:
    """Whole seconds in the ustar field; the exact value as a PAX decimal string (which tarfile lets win over
    its own float rendering), so a round trip keeps every nanosecond."""
    sign = "-" if ns < 0 else ""
    sec, frac = divmod(abs(ns), 1_000_000_000)
    info.mtime = -sec if sign else sec
    if frac or sign:
        info.pax_headers = {**info.pax_headers, "mtime": f"{sign}{sec}.{frac:09d}".rstrip("0").rstrip(".")}


class _Packer:
    def __init__(self, tar: tarfile.TarFile, fmt: OverlayFormat, src: Path, block: IdBlock | None) -> None:
        self.tar = tar
        self.src = src
        self.fmt = fmt
        self.block = block
        self.links: dict[tuple[int, int], str] = {}

    def owners(self, st: os.stat_result) -> tuple[int, int]:
        return (st.st_uid, st.st_gid) if self.block is None else self.block.back(st.st_uid, st.st_gid)

    def _info(self, name: str, st: os.stat_result, path: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = self.owners(st)
        info.uname = info.gname = ""
        info.pax_headers = _xattrs(path, self.fmt)
        _set_mtime(info, st.st_mtime_ns)
        return info

    def walk(self, root_fd: int) -> None:
        """Every entry below ``root_fd`` in name order, depth first (a directory, its opaque marker, then what it
        holds). Iterative, in constant fds (:class:`DirWalk`): a container's upper dir may be thousands of levels
        deep, past both Python's stack and the fd limit that a recursive walk holding one fd a level would hit."""
        walk = DirWalk(root_fd)
        todo = [self._names(root_fd)]  # per level: names still to pack, the next one last
        try:
            while todo:
                if not todo[-1]:
                    todo.pop()
                    if todo and walk.leave() is None:
                        raise StrataError(f"cannot pack {self.src}: a directory in it was moved meanwhile",
                                          Kind.STATE)
                    continue
                name = todo[-1].pop()
                if self._entry(walk, name):
                    todo.append(self._names(walk.fd))
        finally:
            walk.close()

    @staticmethod
    def _names(dir_fd: int) -> list[str]:
        return sorted(os.listdir(dir_fd), key=os.fsencode, reverse=True)

    def _entry(self, walk: DirWalk, name: str) -> bool:
        """Add one entry of the directory the walk is in; True when it was a directory and the walk went in."""
        dir_fd = walk.fd
        rel = walk.rel(name)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:  # removed since the listing (a live pack): left out, as Docker's tar does
            return False
        path = proc_path(dir_fd, name)
        if OverlayFormat.is_whiteout(st):
            prefix = rel[: len(rel) - len(name)]
            info = tarfile.TarInfo(f"{prefix}{WHITEOUT_PREFIX}{name}")
            # overlayfs makes a whiteout with the mounter's credentials: root's of the host, outside a block
            info.mode, (info.uid, info.gid) = stat.S_IMODE(st.st_mode), \
                (0, 0) if self.block is not None and (st.st_uid, st.st_gid) == (0, 0) else self.owners(st)
            info.uname = info.gname = ""
            _set_mtime(info, st.st_mtime_ns)
            self.tar.addfile(info)
            return False
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(dir_fd, name, rel, st, path)
            return False
        info = self._info(rel + "/", st, path)
        info.type = tarfile.DIRTYPE
        self.tar.addfile(info)
        try:
            walk.enter(name)
        except OSError as e:
            if e.errno == errno.EXDEV:
                raise StrataError(f"cannot pack {self.src}: {rel} is a mount point", Kind.STATE) from None
            raise
        if self.fmt.is_opaque(walk.fd):
            marker = tarfile.TarInfo(f"{rel}/{OPAQUE_MARKER}")
            marker.mode, marker.uname, marker.gname = 0, "", ""
            _set_mtime(marker, st.st_mtime_ns)
            self.tar.addfile(marker)
        return True

    def _leaf(self, dir_fd: int, name: str, rel: str, st: os.stat_result, path: str) -> None:
        info = self._info(rel, st, path)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) and key in self.links:
            info.type = tarfile.LNKTYPE
            info.linkname = self.links[key]
            info.pax_headers = {}
            _set_mtime(info, st.st_mtime_ns)
            self.tar.addfile(info)
            return
        if stat.S_ISREG(st.st_mode):
            if not self._file(dir_fd, name, rel, st, info):
                return  # gone meanwhile: not an entry, and not a hardlink target either
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            self.tar.addfile(info)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
            self.tar.addfile(info)
        # sockets have no tar form; like GNU tar and Docker, they are left out
        if st.st_nlink > 1:
            self.links[key] = rel

    def _file(self, dir_fd: int, name: str, rel: str, st: os.stat_result, info: tarfile.TarInfo) -> bool:
        """A regular file's entry, its bytes read from the very inode its lstat described and no more than its
        lstat's size of them; False when the name is gone. A live container that swaps the name for anything
        else, or changes the file's size, fails the pack (its tar entry would be a lie or torn)."""
        try:
            fd = _open_same(dir_fd, name, st)
            if fd is None:
                return False
            try:
                info.size = st.st_size
                self.tar.addfile(info, cast(BinaryIO, _FdReader(fd, st.st_size)))
                if os.fstat(fd).st_size != st.st_size:
                    raise _Changed("its size changed")
            finally:
                os.close(fd)
        except _Changed as e:
            raise StrataError(f"cannot pack {self.src}: {rel} changed while it was packed ({e})",
                              Kind.STATE) from None
        return True


def write_tar(src: Path, out: BinaryIO, include_root: bool = False, fmt: OverlayFormat = OVERLAY,
              block: IdBlock | None = None) -> None:
    """The tar of the tree at ``src`` (a diff dir or an overlay upper dir) to the stream ``out``; owners in BLOCK
    (a ``--userns=auto`` container's rw layer) are written as the ids inside."""
    with SafeRoot(src) as root, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                                            bufsize=TAR_BUFFER) as tar:
        packer = _Packer(tar, fmt, src, block)
        if include_root:
            st = os.fstat(root.fd)
            info = packer._info("./", st, f"/proc/self/fd/{root.fd}")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            if fmt.is_opaque(root.fd):
                raise StrataError("the root of a layer cannot be opaque", Kind.INTEGRITY)
        packer.walk(root.fd)


def pack(src: Path, dest: Path, compression: str = "gzip", include_root: bool = False,
         block: IdBlock | None = None) -> PackResult:
    """Pack ``src`` into the new file ``dest`` (gzip, zstd or none); return both hashes of the result."""
    if compression not in COMPRESSIONS:
        raise StrataError(f"unknown compression {compression!r} (one of {', '.join(COMPRESSIONS)})", Kind.USAGE)
    with open(dest, "xb") as f:
        blob = HashingWriter(cast(BinaryIO, f))
        if compression == "gzip":
            from isal import igzip

            compressor: BinaryIO = cast(BinaryIO, igzip.IGzipFile(  # type: ignore[no-untyped-call]
                filename="", mode="wb", fileobj=blob, mtime=0))
        elif compression == "zstd":
            import zstandard

            compressor = cast(BinaryIO, zstandard.ZstdCompressor(level=3).stream_writer(
                cast(BinaryIO, blob), closefd=False))
        else:
            compressor = cast(BinaryIO, blob)
        tar_stream = HashingWriter(compressor)
        write_tar(src, cast(BinaryIO, tar_stream), include_root, block=block)
        if compression != "none":
            compressor.close()  # writes the trailer; leaves f open
        f.flush()
        os.fsync(f.fileno())
    return PackResult(blob.digest(), tar_stream.digest(), blob.count, tar_stream.count)
