"""The Linux calls Python 3.11's os module lacks (unshare, setns, mount, umount2, pivot_root, the new mount API's
open_tree, mount_setattr and move_mount, prctl's settings, keyctl, bringing ``lo`` up), via ctypes and ioctl.

Each raises OSError with errno set, like the os module does, so callers handle one kind of failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import socket
import struct
from collections.abc import Callable

from shared.errors import Kind, StrataError

# linux/sched.h
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# linux/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# asm/unistd.h: glibc has no pivot_root() wrapper
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217, "armv7l": 218}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str, *paths: str | None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", *[p for p in paths[:1] if p])


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def _b(s: str | None) -> bytes | None:
    return os.fsencode(s) if s is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount {fstype or source or ''} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}", target)


# The new mount API (linux/mount.h, fcntl.h). Its syscall numbers are the same on every architecture (they came
# after the tables were unified).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def clone_tree(dir_fd: int, path: str = "", recursive: bool = True) -> int:
    """A detached copy of the mount tree at PATH (relative to DIR_FD; "" for DIR_FD itself), submounts included
    (unless not ``recursive``: a plain bind): open_tree(OPEN_TREE_CLONE|AT_RECURSIVE), the fd of a bind mount that
    is not attached anywhere yet."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if not path
                                                                                        else 0)
    fd = int(_libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(dir_fd), _b(path), ctypes.c_uint(flags)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"open_tree {path or dir_fd}: {os.strerror(err)}", path or None)
    return fd


def set_tree_attributes(tree: int, attr_set: int, propagation: int = 0, recursive: bool = True,
                        attr_clr: int = 0) -> None:
    """mount_setattr(AT_RECURSIVE) on a whole tree (the fd from :func:`clone_tree`): every submount gets the flags,
    not just the top one as a remount would (``recursive`` False: the top one only)."""
    attr = _MountAttr(attr_set, attr_clr, propagation, 0)
    _check(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(tree), b"",
                         ctypes.c_uint(AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr")


def move_tree(tree: int, target: int) -> None:
    """Attach the detached TREE at the file or directory the fd TARGET names (move_mount fd to fd): the target
    is the one already resolved, never a path looked up again."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
    _check(_libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(tree), b"", ctypes.c_int(target), b"",
                         ctypes.c_uint(flags)), "move_mount")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root", new_root)


PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg: int, arg3: int = 0, what: str = "") -> None:
    """prctl(2) with up to two arguments; ``what`` names the option in the error."""
    if _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                   ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({what or option}): {os.strerror(err)}")


def die_with_parent(parent_fd: int | None) -> None:
    """SIGKILL when the parent dies. The kernel clears this setting whenever the process's credentials change, so
    call it again after setuid/setgid; and if the parent died before we asked, nothing would ever fire: check, on
    a pidfd of the parent (``parent_fd``). ``None``: the parent is outside our pid namespace, where getppid() is 0
    while it lives and the pid of our namespace's reaper once it died (no pidfd of a host process needed)."""
    prctl(PR_SET_PDEATHSIG, 9, what="PR_SET_PDEATHSIG")
    if parent_fd is None:
        if os.getppid() != 0:
            os._exit(137)
    elif select.select([parent_fd], [], [], 0)[0]:  # a pidfd is readable once its process has exited
        os._exit(137)


def set_undumpable() -> None:
    """A non-dumpable process's /proc/PID/{exe,environ,fd,mem,...} belong to root and need CAP_SYS_PTRACE to open,
    whoever asks. execve() makes the container's own programs dumpable again."""
    prctl(PR_SET_DUMPABLE, 0, what="PR_SET_DUMPABLE")


def set_name(name: str) -> None:
    """The comm ``ps`` shows (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    prctl(PR_SET_NAME, ctypes.addressof(buf), what="PR_SET_NAME")


def set_child_subreaper() -> None:
    """Orphaned descendants (an OCI runtime's PID 1, once its ``create`` has exited) become our children, whose
    exit status is ours to wait for."""
    prctl(PR_SET_CHILD_SUBREAPER, 1, what="PR_SET_CHILD_SUBREAPER")


# linux/sockios.h, net/if.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """``lo`` up in the calling thread's network namespace, with one ioctl (no netlink library to import: PID 1
    of ``--network none`` calls it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


# keyctl(2): glibc has no wrapper (libkeyutils does); the numbers are asm/unistd.h's
_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 283, "s390x": 280, "armv7l": 311}
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_new_session_keyring() -> None:
    """A fresh anonymous session keyring, as runc gives every container process: the keys of the session that
    started the runner (and so of the user's login) are then out of the container's reach."""
    number = _SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"keyctl: unknown syscall number on {os.uname().machine}")
    if _libc.syscall(ctypes.c_long(number), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None)) < 0:
        err = ctypes.get_errno()
        if err != 38:  # ENOSYS: a kernel without keys has no keyring to hide
            raise OSError(err, f"keyctl(JOIN_SESSION_KEYRING): {os.strerror(err)}")


# fcntl.h: memfd sealing (F_ADD_SEALS, F_SEAL_*)
F_ADD_SEALS = 1033
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8


def sealed_copy(path: str, name: str) -> int:
    """A memfd holding a copy of the executable ``path``, sealed against every change (runc's exeseal,
    CVE-2019-5736): a process exec'd from it has a /proc/PID/exe that names no host file, and nothing can write
    it. The fd is close-on-exec; exec it through /proc/self/fd/N after passing it on."""
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            size, done = os.fstat(src).st_size, 0
            while done < size:
                sent = os.sendfile(fd, src, done, size - done)
                if sent == 0:
                    raise OSError(5, f"{path} shrank while it was copied")
                done += sent
            fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
            os.fchmod(fd, 0o555)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(src)
    return fd


def child_namespace(make: Callable[[], None], ns: str, what: str,
                    then: Callable[[int], None] | None = None) -> int:
    """An fd (close-on-exec) of the namespace NS (``net``, ``user``) of a short-lived child that ran MAKE (its
    unshare); THEN(pid) runs here once MAKE is done (a user namespace's maps), before the fd is opened. A user's
    process may make a namespace but not setns() back into the one it came from, so the child makes it, for root
    and users alike; only the fd keeps it alive. A failure is one line naming WHAT."""
    said_r, said_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(said_r)
            os.close(done_w)
            make()
            os.write(said_w, b"ok")
            os.read(done_r, 1)  # until the parent holds the namespace (end of file)
            code = 0
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(said_w, str(e).encode()[:400])
        finally:
            os._exit(code)
    os.close(said_w)
    os.close(done_r)
    try:
        said = os.read(said_r, 512).decode(errors="replace")
        if said != "ok":
            raise StrataError(f"cannot make {what}: {said or 'the child died'}", Kind.SYSTEM)
        if then is not None:
            then(pid)
        return os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(said_r)
        os.waitpid(pid, 0)
