"""``runner run --userns=auto`` (issue 20; podman's option): a container started by root in a user namespace of
its own, whose root is an unprivileged id of the host.

The ids are a block of 65536 from the subordinate ranges of one user in ``/etc/subuid`` and ``/etc/subgid``
(podman's ``containers`` user; the settings file's ``root-auto-userns-user`` names another). Each container
of the host gets a block no other live container has: a lease per block in ``/run/strata-userns/`` (the block's
first uid, naming the store and container) taken under a lock at ``create`` and dropped at ``rm``, so stores
sharing the host never hand out one block twice. The block stays the container's until it is removed: its rw
layer's owners are in it.

The store is root's: its layers are owned by the image's ids. The container sees them through idmapped mounts
(``mount_setattr(MOUNT_ATTR_IDMAP)``, Linux >= 5.12; overlayfs takes idmapped lower layers since 5.19), each
layer and the -init layer bound with the block's mapping, so a file of uid 0 in the image is uid 0 inside and
the block's first id on the host. Root mounts the overlay over them before it enters the namespace (overlay's
``trusted.*`` whiteouts need root of the host's, and a mount made inside would need ``userxattr``); the rw layer
is not idmapped, so what the container writes is owned by the block's ids on disk, and ``commit`` maps them back
(:func:`shift_back`). Everything after the overlay is the same path a user's container takes: the namespaces are
the user namespace's, /dev gets the host's nodes bound, a host network gets the host's /sys read-only.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runner import linux
from shared.errors import Kind, StrataError
from shared.userns import SUBGID, SUBUID, IdBlock, subordinate_ranges

BLOCK = 65536
LEASES = Path("/run/strata-userns")
CLONE_NEWUSER = 0x10000000

# asm/unistd.h: the new mount API is numbered alike on every architecture (since 5.2)
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
_AT_EMPTY_PATH, _AT_FDCWD = 0x1000, -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000


def to_oci(block: IdBlock) -> dict[str, list[dict[str, int]]]:
    """The runtime-spec's ``linux.uidMappings`` and ``gidMappings`` of BLOCK."""
    return {"uidMappings": [{"containerID": 0, "hostID": block.uid_base, "size": block.size}],
            "gidMappings": [{"containerID": 0, "hostID": block.gid_base, "size": block.size}]}


def from_oci(linux_doc: dict[str, Any]) -> IdBlock | None:
    uids, gids = linux_doc.get("uidMappings"), linux_doc.get("gidMappings")
    if not uids or not gids:
        return None
    return IdBlock(int(uids[0]["hostID"]), int(gids[0]["hostID"]), int(uids[0]["size"]))


def blocks(subuid: str, subgid: str, name: str, uid: int) -> list[tuple[int, int]]:
    """The whole blocks of BLOCK ids the user NAME's ranges hold, as (uid_base, gid_base) pairs: the n-th block
    of its uid ranges with the n-th of its gid ranges."""
    def split(ranges: list[tuple[int, int]]) -> list[int]:
        return [start + i * BLOCK for start, count in ranges for i in range(count // BLOCK)]

    return list(zip(split(subordinate_ranges(subuid, name, uid)), split(subordinate_ranges(subgid, name, uid)),
                    strict=False))


def allocate(owner: str, store_root: Path, container_id: str) -> IdBlock:
    """A block no live container of the host holds, leased to this one (module doc)."""
    import pwd

    try:
        uid = pwd.getpwnam(owner).pw_uid
        subuid, subgid = SUBUID.read_text(), SUBGID.read_text()
    except (KeyError, OSError):
        subuid = subgid = ""
        uid = -1
    candidates = blocks(subuid, subgid, owner, uid)
    if not candidates:
        raise StrataError(f"--userns=auto takes its ids from user {owner}'s ranges in /etc/subuid and /etc/subgid, "
                          "and there are none: add them (usermod --add-subuids/--add-subgids), or name another "
                          "user in the settings file's root-auto-userns-user", Kind.UNSUPPORTED)
    with _leases_locked():
        for uid_base, gid_base in candidates:
            lease = LEASES / str(uid_base)
            if lease.exists() and _held(lease):
                continue
            lease.write_text(json.dumps({"store": str(store_root), "container": container_id,
                                         "gid": gid_base}))
            return IdBlock(uid_base, gid_base)
    raise StrataError(f"--userns=auto: every block of {BLOCK} ids of user {owner} is taken by a container: remove "
                      "one, or grant the user more ranges", Kind.STATE)


def release(store_root: Path, container_id: str, block: IdBlock) -> None:
    """The container's lease, if it is still this container's."""
    lease = LEASES / str(block.uid_base)
    with _leases_locked(), contextlib.suppress(OSError, ValueError):
        said = json.loads(lease.read_text())
        if said.get("store") == str(store_root) and said.get("container") == container_id:
            lease.unlink()


def _held(lease: Path) -> bool:
    """A lease is held while its container's directory exists (a store deleted by hand frees its blocks), and for
    a minute after it is taken (``create`` records the container just after)."""
    try:
        if time.time() - lease.stat().st_mtime < 60:
            return True
        said = json.loads(lease.read_text())
        return (Path(str(said["store"])) / "containers" / str(said["container"])).is_dir()
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _leases_locked() -> Iterator[None]:
    LEASES.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(LEASES / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@functools.cache
def userns_of(block: IdBlock) -> int:
    """The container's user namespace, made once in this process (the start path: the network's namespace and
    PID 1 join the same one, made before either is forked)."""
    return new_userns(block)


def new_userns(block: IdBlock) -> int:
    """A user namespace with the block's mapping, as an fd: made by a short-lived child, mapped by us (root
    writes the maps itself; setgroups stays allowed, as the image's users need their groups)."""
    def maps(pid: int) -> None:
        for name, base in (("uid_map", block.uid_base), ("gid_map", block.gid_base)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {base} {block.size}\n")

    return linux.child_namespace(lambda: linux.unshare(CLONE_NEWUSER), "user", "the container's user namespace",
                                 then=maps)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def bind_idmapped(source: str, target: str, userns: int) -> None:
    """SOURCE bound at TARGET with USERNS's mapping (in this process's mount namespace)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tree = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC)
    if tree < 0:
        raise _failed("open_tree", source)
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
        if libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
            raise _failed("an idmapped mount of", source)
        if libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH) < 0:
            raise _failed("move_mount to", target)
    finally:
        os.close(tree)


def _failed(what: str, path: str) -> StrataError:
    err = ctypes.get_errno()
    return StrataError(f"--userns=auto: {what} {path}: {os.strerror(err)} (idmapped mounts need Linux >= 5.19 "
                       f"and a file system that has them; this is {os.uname().release})", Kind.SYSTEM)


def lower_dirs(count: int) -> list[str]:
    """The idmapped binds of the -init layer and the COUNT image layers, in the container's directory."""
    return ["m/init", *(f"m/{i}" for i in range(count))]


def mount_lowers(sources: Sequence[str], userns: int) -> None:
    """Each of SOURCES (``init``, ``l/0``, ...) bound idmapped onto its ``m/`` mount point, in the container's
    directory (the current one), in a mount namespace of the caller's own."""
    for source, target in zip(sources, lower_dirs(len(sources) - 1), strict=True):
        os.makedirs(target, exist_ok=True)
        bind_idmapped(source, target, userns)


def enter(bundle: str, mount_overlay: Callable[[int], None], block: IdBlock) -> None:
    """In the helper that forks PID 1, before the pid namespace: a mount namespace of root's with the container's
    overlay on idmapped lowers (MOUNT_OVERLAY), then the container's user namespace, as its root. The current
    directory stays the container's: PID 1 builds the rest from there."""
    userns = userns_of(block)
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    os.chdir(bundle)
    mount_overlay(userns)
    linux.setns(userns, CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
