"""``runner cp``: files between a container's root filesystem and the host (or a tar stream), with Docker's archive
semantics (:mod:`shared.layer.copyrules`) and its ownership rules.

Where the container's files are: a running container's root is opened as ``/proc/PID1/root`` (its own mount
namespace's view, volumes and tmpfs included, as Docker's ``cp`` follows volumes), pinned by a pidfd checked after
the open. A stopped one's overlay (its lowers and rw layer) is mounted in a private mount namespace of this
process (the user's own, without root), with its network files and volumes bound as a start binds them, and
vanishes with the process. Either way every path inside is resolved under that root fd (openat2
RESOLVE_IN_ROOT, :func:`shared.layer.safepath.resolve_in_root`; below it fd by fd without following a symlink:
:mod:`shared.layer.treecopy`), so neither a symlink (``/``, ``../..``) nor one a racing process swaps in
(CVE-2018-15664) reaches the host. Nothing of the container is executed or loaded (CVE-2019-14271: Docker's cp
loaded the container's libnss): ids are numbers, never names. Files of /proc, /sys and /dev in a running
container are neither read nor written (Docker's cp does not see them).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from runner.container.record import Container, find, wait_exited
from shared.errors import Kind, StrataError, not_found
from shared.layer import copyrules
from shared.layer.copyrules import absolute, asserts_dir, plan, split_dir_entry
from shared.layer.safepath import DIR_FLAGS, resolve_in_root
from shared.layer.treecopy import Entry, TreeReader, TreeWriter, read_tar, same_ids, write_tar
from shared.store.layout import Store
from shared.userns import IdBlock

NOBODY = 65534
MAX_LINKS = 40


class ContainerRoot(NamedTuple):
    """The container's root directory (an fd), the file systems below it that cp may touch, its ids' block."""

    fd: int
    allowed: frozenset[int]
    block: IdBlock | None


def cp(store: Store, src: str, dest: str, archive: bool, follow: bool) -> None:
    """``runner cp [-a] [-L] SRC DEST``, one side ``CONTAINER:PATH``."""
    a, b = copyrules.split_args(src, dest)
    try:
        if a.container is not None:
            _copy_out(find(store, a.container), a.path, b.path, archive, follow)
        else:
            assert b.container is not None
            _copy_in(find(store, b.container), a.path, b.path, archive, follow)
    except OSError as e:
        where = f": {e.filename}" if isinstance(e.filename, str) else ""
        raise StrataError(f"cannot copy: {e.strerror}{where}", Kind.SYSTEM) from None


# -- the container's root ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def container_root(container: Container) -> Iterator[ContainerRoot]:
    """The root of the container's filesystem as its processes see it (module doc). A stopped container's start
    lock is held meanwhile: a ``start`` waits for the copy, so that its overlay and ours never share the rw layer."""
    from runner.container.start import StartLock

    lock = None
    pidfd = container.verified_pidfd()
    if pidfd is None:
        lock = StartLock(container)
        if lock.running():  # started between the two looks: it is a running one's copy
            lock.release()
            lock, pidfd = None, container.open_process()
    try:
        fd = _mount_stopped(container) if pidfd is None else _open_running(container, pidfd)
        try:
            yield ContainerRoot(fd, _allowed(container, fd), container.spec.id_block)
        finally:
            os.close(fd)
    finally:
        if lock is not None:
            lock.release()


def _open_running(container: Container, pidfd: int) -> int:
    """PID 1's root, checked after the open to be the recorded process's (its pidfd not yet readable); closes
    the pidfd."""
    try:
        fd = os.open(f"/proc/{container.state().pid}/root", DIR_FLAGS & ~os.O_NOFOLLOW)
        if wait_exited(pidfd, 0):
            os.close(fd)
            raise StrataError(f"container {container.name} exited during the copy; copy again", Kind.STATE)
        return fd
    finally:
        os.close(pidfd)


def _mount_stopped(container: Container) -> int:
    """A stopped container's tree in a mount namespace of this process's own: its overlay on merged/ (kept if one
    is there already: a runtime's container as root), the network files and volumes bound on it."""
    from runner.executor import runtime
    from runner.isolation import idmap, rootfs
    from shared.layer.safepath import SafeRoot

    spec = container.spec
    merged = container.path("merged")
    runtime.own_mount_namespace()
    if spec.id_block is None:
        runtime.mount_rootfs(spec, binds=True)
    elif not os.path.ismount(merged):
        here = os.open(".", os.O_PATH | os.O_CLOEXEC)
        try:
            os.chdir(spec.bundle)
            rootfs.mount_overlay(spec, idmap.userns_of(spec.id_block))
        finally:
            os.fchdir(here)
            os.close(here)
        with SafeRoot(merged) as root:
            rootfs.mount_network_files(root, Path(spec.bundle))
            for volume in spec.volumes:
                rootfs.mount_volume(root, volume, spec.privileged)
    return os.open(merged, DIR_FLAGS)


def _allowed(container: Container, root_fd: int) -> frozenset[int]:
    """The file systems whose directories cp may enter: the root's, its volumes', its tmpfs' (not /proc, /sys,
    /dev: what Docker's cp sees). A file is judged by its directory's (a bound file, as /etc/hosts, is read)."""
    devs = {os.fstat(root_fd).st_dev}
    spec = container.spec
    for target in [*(v.target for v in spec.volumes), *(t.target for t in spec.tmpfs)]:
        with contextlib.suppress(OSError):
            fd = resolve_in_root(root_fd, target, os.O_PATH, follow=True)
            st = os.fstat(fd)
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                devs.add(st.st_dev)
    return frozenset(devs)


def _ids_in(block: IdBlock | None) -> Callable[[int, int], tuple[int, int]]:
    """Owners as the host sees the container's files -> as the container sees them."""
    if block is None:
        return same_ids

    def back(uid: int, gid: int) -> tuple[int, int]:
        u, g = uid - block.uid_base, gid - block.gid_base
        return (u if 0 <= u < block.size else NOBODY), (g if 0 <= g < block.size else NOBODY)
    return back


def _ids_out(block: IdBlock | None, uid: int, gid: int) -> tuple[int, int]:
    """The container's ids -> the host's, for a file written into it."""
    if block is None:
        return uid, gid
    if not (0 <= uid < block.size and 0 <= gid < block.size):
        raise StrataError(f"owner {uid}:{gid} is outside the container's ids (0 to {block.size - 1}); copy without "
                          "-a", Kind.USAGE)
    return uid + block.uid_base, gid + block.gid_base


# -- resolving paths on either side -----------------------------------------------------------------------------


def _final(root_fd: int, path: str, in_root: bool) -> str:
    """PATH with a symlink in its last component followed (Docker resolves a link at DEST, or at SRC with -L),
    each hop resolved under the root again."""
    for _ in range(MAX_LINKS):
        if path == "/":
            return path
        try:
            fd = resolve_in_root(root_fd, path, os.O_PATH, follow=False, in_root=in_root)
        except OSError:
            return path
        try:
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                return path
            target = os.readlink("", dir_fd=fd)
        finally:
            os.close(fd)
        path = absolute(target, os.path.dirname(path))
    raise StrataError(f"{path}: too many levels of symbolic links", Kind.USAGE)


class Located(NamedTuple):
    """PATH as its parent directory (an fd the caller closes) and the name in it."""

    parent: int
    name: str
    path: str  # the path resolved (links at its end followed as asked)


def _locate(root_fd: int, path: str, follow: bool, in_root: bool) -> Located:
    """The parent directory (opened under the root) and last component of PATH; with ``follow`` (or a path that
    asserts a directory) a symlink at its end is followed first. FileNotFoundError or NotADirectoryError for the
    parent."""
    clean = posixpath.normpath(path)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if follow or asserts_dir(path):
        clean = _final(root_fd, clean, in_root)
    if clean == "/":
        return Located(os.dup(root_fd) if in_root else os.open("/", DIR_FLAGS), ".", "/")
    parent, name = os.path.split(clean)
    return Located(resolve_in_root(root_fd, parent, DIR_FLAGS & ~os.O_NOFOLLOW, follow=True, in_root=in_root),
                   name, clean)


def _open_object(loc: Located) -> int | None:
    """An O_PATH fd of what the located name is (never followed), None when it is missing."""
    try:
        return os.open(loc.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=loc.parent)
    except FileNotFoundError:
        return None


# -- out of the container ---------------------------------------------------------------------------------------


def _validate_output(dest: str) -> None:
    """Docker's ValidateOutputPath: the parent must exist; an existing DEST a directory or a regular file."""
    parent = os.path.dirname(dest.rstrip("/") or "/")
    if not os.path.exists(parent):
        raise StrataError(f'invalid output path: directory "{parent}" does not exist', Kind.NOT_FOUND)
    with contextlib.suppress(OSError):
        mode = os.stat(dest).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise StrataError(f'invalid output path: "{dest}" must be a directory or a regular file', Kind.USAGE)


def _copy_out(container: Container, src: str, dest: str, archive: bool, follow: bool) -> None:
    src_abs = absolute(src)
    dest_abs = dest if dest == "-" else absolute(dest, os.getcwd())
    if dest != "-":
        _validate_output(dest_abs)
    missing = not_found(f"Could not find the file {src} in container {container.name}")
    with container_root(container) as root:
        try:
            loc = _locate(root.fd, src_abs, follow, in_root=True)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        try:
            obj = _open_object(loc)
            if obj is None:
                raise missing
            try:
                is_dir = stat.S_ISDIR(os.fstat(obj).st_mode)
                if not is_dir and (os.fstat(loc.parent).st_dev not in root.allowed or asserts_dir(src_abs)):
                    raise missing  # a file of /proc, /sys or /dev; or SRC/ naming a file
                name = _top_name(src_abs)
                reader = TreeReader(root.allowed, _ids_in(root.block))
                if dest == "-":
                    write_tar(reader.entries(obj, name), sys.stdout.buffer)
                    return
                _extract_on_host(reader, obj, is_dir, src_abs, name, dest_abs, archive)
            finally:
                os.close(obj)
        finally:
            os.close(loc.parent)


def _extract_on_host(reader: TreeReader, obj: int, is_dir: bool, src: str, name: str, dest: str,
                     archive: bool) -> None:
    """The container's entries written on the host with Docker's rules; a link at DEST is followed (the user's
    own path), names from the container never are."""
    real = os.path.realpath(dest)
    exists = os.path.exists(real)
    if exists and asserts_dir(dest) and not os.path.isdir(real):
        raise StrataError(f"lstat {dest}: not a directory", Kind.USAGE)  # as Go's lstat of "FILE/"
    how = plan(is_dir, src, name, exists, os.path.isdir(real), dest if not exists else real)
    target = os.path.dirname(real) if how.into_parent else real
    fd = os.open(target, DIR_FLAGS & ~os.O_NOFOLLOW)
    writer = TreeWriter(fd, (lambda i: (i.uid, i.gid)) if archive else (lambda i: None), None, devices=False,
                        keep_setid=archive, where=target)
    try:
        writer.write(reader.entries(obj, how.top))
    finally:
        writer.close()
        os.close(fd)


# -- into the container -----------------------------------------------------------------------------------------


def _host_source(src: str, follow: bool) -> tuple[int, bool, str]:
    """The local SRC: an O_PATH fd (its last symlink followed only with -L), whether it is a directory, its name."""
    src_abs = absolute(src, os.getcwd())
    root = os.open("/", DIR_FLAGS)
    try:
        try:
            loc = _locate(root, src_abs, follow, in_root=False)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise StrataError(f"lstat {src_abs.rstrip('/')}: {os.strerror(e.errno or 2).lower()}", Kind.NOT_FOUND) \
                from None
    finally:
        os.close(root)
    try:
        obj = _open_object(loc)
    finally:
        os.close(loc.parent)
    if obj is None:
        raise StrataError(f"lstat {src_abs.rstrip('/')}: no such file or directory", Kind.NOT_FOUND)
    is_dir = stat.S_ISDIR(os.fstat(obj).st_mode)
    if asserts_dir(src_abs) and not is_dir:
        os.close(obj)
        raise StrataError(f"lstat {src_abs}: not a directory", Kind.USAGE)
    return obj, is_dir, _top_name(src_abs)


def _top_name(path: str) -> str:
    """The archive's name for SRC: its base name (``.`` for ``DIR/.`` and for ``/``)."""
    name = split_dir_entry(path)[1]
    return "." if name == "/" else name


def _copy_in(container: Container, src: str, dest: str, archive: bool, follow: bool) -> None:
    dest_abs = absolute(dest)
    source = None if src == "-" else _host_source(src, follow)
    try:
        with container_root(container) as root:
            loc = _container_dest(container, root, dest_abs)
            try:
                obj = _open_object(loc)
                dest_mode = 0 if obj is None else os.fstat(obj).st_mode
                if obj is not None:
                    os.close(obj)
                if source is None:
                    if not stat.S_ISDIR(dest_mode):
                        raise StrataError(f'destination "{container.name}:{dest}" must be a directory', Kind.USAGE)
                    _write_in(container, root, loc, True, read_tar(sys.stdin.buffer), archive)
                    return
                obj_fd, is_dir, name = source
                how = plan(is_dir, src, name, obj is not None, stat.S_ISDIR(dest_mode),
                           loc.path.rstrip("/") + ("/" if asserts_dir(dest_abs) else ""))
                entries = TreeReader(None).entries(obj_fd, how.top)
                _write_in(container, root, loc, not how.into_parent, entries, archive)
            finally:
                os.close(loc.parent)
    finally:
        if source is not None:
            os.close(source[0])


def _container_dest(container: Container, root: ContainerRoot, dest: str) -> Located:
    """DEST in the container, a link at its end followed (inside the container, as Docker does); Docker's words
    when its parent is missing or not a directory."""
    try:
        return _locate(root.fd, dest, True, in_root=True)
    except FileNotFoundError:
        parent = os.path.dirname(dest.rstrip("/")) or "/"
        raise not_found(f"Could not find the file {parent} in container {container.name}") from None
    except NotADirectoryError:
        raise StrataError("extraction point is not a directory", Kind.USAGE) from None


def _write_in(container: Container, root: ContainerRoot, loc: Located, into_dest: bool, entries: Iterator[Entry],
              archive: bool) -> None:
    """ENTRIES written into DEST (``into_dest``) or its parent, owned by the container's root (with -a: their
    own ids, as the container sees them)."""
    if into_dest:
        fd = os.open(loc.name, DIR_FLAGS, dir_fd=loc.parent)
        where = loc.path
    else:
        fd = os.dup(loc.parent)
        where = os.path.dirname(loc.path) or "/"
    rootfs_dev, dest_dev = os.fstat(root.fd).st_dev, os.fstat(fd).st_dev
    writable = frozenset(root.allowed - ({rootfs_dev} if container.spec.read_only else set()))
    if dest_dev not in writable:
        os.close(fd)
        if dest_dev == rootfs_dev:  # --read-only: only its volumes and tmpfs mounts take a copy
            raise StrataError("container rootfs is marked read-only", Kind.USAGE)  # Docker's words
        raise StrataError(f"cannot copy to {where} in container {container.name}: not in its own file system "
                          "(/proc, /sys, /dev and such are not copied to)", Kind.USAGE)

    def owner(info: tarfile.TarInfo) -> tuple[int, int]:
        return _ids_out(root.block, info.uid, info.gid) if archive else _ids_out(root.block, 0, 0)

    writer = TreeWriter(fd, owner, writable, devices=True, keep_setid=True, where=f"{container.name}:{where}")
    try:
        writer.write(entries)
    finally:
        writer.close()
        os.close(fd)
