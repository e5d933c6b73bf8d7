"""``USER`` / ``--user`` resolution from the container's own /etc/passwd and /etc/group, read as plain files.

Never through NSS: NSS would load libraries the image controls (the moby CVE-2019-14271 lesson). Rules as
Docker's (moby/sys/user GetExecUser): a numeric uid needs no passwd entry; a name must exist; without a group the
user's primary gid is used; supplementary groups are those whose member list names the user, and the primary gid
is always among them (GHSA-rc4r-wh2q-q6c4).

The files are the image's (and whatever runs in the container may have replaced them), yet they are read by the
runner itself: inside the container's mount namespace, before exec, still holding the runner's privileges, fds and
environment. So they are read only through :func:`read_etc`, which cannot be made to hang (a fifo), to read
without end (/dev/zero, a 10 GB file), to leave the container's root, or to read the runner's own process
(/proc/self/environ, /proc/self/fd/N). A file it will not read counts as absent, as Docker counts a missing
/etc/passwd: a numeric ``UID[:GID]`` then still works, and only a lookup by name fails, saying why.
"""

from __future__ import annotations

import ctypes
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shared.errors import Kind, StrataError
from shared.layer import safepath

ETC_CAP = 4 << 20  # bytes: ~60,000 passwd lines, where a distribution's own is ~2 KB
MAX_ID = (1 << 31) - 1  # runc's range for uids and gids ("uids and gids must be in range 0-2147483647")

# statfs(2) f_type of the file systems whose files the kernel writes as they are read (linux/magic.h). Their files
# pass for regular ones, but describe the reader: /proc/self/environ is the runner's environment.
_KERNEL_FS = {0x9FA0: "procfs", 0x62656572: "sysfs", 0x27E0EB: "cgroupfs", 0x63677270: "cgroup2fs",
              0x64626720: "debugfs", 0x74726163: "tracefs", 0x73636673: "securityfs"}

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class ExecUser:
    """The user a container process becomes: its ids, groups and home, as read from the image's /etc."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True)
class EtcFile:
    """One of the container's /etc files as :func:`read_etc` found it. ``text`` is "" when it was not read;
    ``problem`` then says why, or is None when the file simply does not exist (no problem: Docker's "no matching
    entries")."""

    path: str  # as the container names it, for messages: /etc/passwd
    text: str
    problem: str | None = None


class _Refused(Exception):
    """The file exists but is not one we read; the message says why, in words for the user."""


def read_etc(name: str, root: Path = Path("/")) -> EtcFile:
    """``/etc/NAME`` of the container whose root is ``root``, read safely, or why it was not.

    - Opened with openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: the image's symlinks (absolute ones and ``..``
      too) resolve inside ``root``; /proc magic links (/proc/self/fd/N, /proc/self/exe) are refused.
    - Only a regular file is read, judged first on an O_PATH fd, so a device is not even opened (opening some does
      something); then opened O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC and judged again, as the path may have changed
      in between: a fifo swapped in meanwhile neither blocks the open nor gets read.
    - Files of procfs, sysfs and kin are refused though they look regular: they describe the reader.
    - At most ETC_CAP bytes, and no more than the size fstat gave (a file that grows meanwhile is read as it was).
      A larger file is refused whole rather than cut at the last line before the cap: a cut file would find some
      users and not others, and drop group memberships, with no sign why, where a refusal says so. No real image
      comes near the cap.

    Anything else that stops the read (a permission, a loop of links, openat2 missing) is a problem too, reported,
    never raised: these files are optional.
    """
    path = f"/etc/{name}"
    try:
        data = _read_bounded(root, path)
    except (FileNotFoundError, NotADirectoryError):
        return EtcFile(path, "")
    except _Refused as e:
        return EtcFile(path, "", str(e))
    except OSError as e:
        return EtcFile(path, "", f"cannot read {path}: {e.strerror}")
    return EtcFile(path, data.decode(errors="replace"))


def _read_bounded(root: Path, path: str) -> bytes:
    dir_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        peek = _open_in_root(dir_fd, path, os.O_PATH)  # openat2 allows nothing else beside O_PATH
        try:
            _judge(peek, path)
        finally:
            os.close(peek)
        fd = _open_in_root(dir_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    finally:
        os.close(dir_fd)
    try:
        size = _judge(fd, path)
        chunks, left = [], size
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _open_in_root(dir_fd: int, path: str, flags: int) -> int:
    return safepath.openat2(dir_fd, path.lstrip("/"), flags, safepath.RESOLVE_IN_ROOT | safepath.RESOLVE_NO_MAGICLINKS)


def _judge(fd: int, path: str) -> int:
    """Raise _Refused unless ``fd`` is a regular file of a real file system, at most ETC_CAP bytes; its size."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(f"{path} is not a regular file")
    kernel_fs = _KERNEL_FS.get(_fs_type(fd))
    if kernel_fs is not None:
        raise _Refused(f"{path} leads into {kernel_fs}, not a file of the image")
    if st.st_size > ETC_CAP:
        raise _Refused(f"{path} is larger than {ETC_CAP >> 20} MiB, the most the runner reads")
    return st.st_size


def _fs_type(fd: int) -> int:
    """fstatfs(2)'s f_type, which os.fstatvfs leaves out. It is struct statfs's first field: a long, but an unsigned
    int on s390x; the buffer is larger than the struct on every architecture."""
    buf = ctypes.create_string_buffer(256)
    if _libc.fstatfs(ctypes.c_int(fd), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    field = ctypes.c_uint32 if os.uname().machine == "s390x" else ctypes.c_long
    return int(field.from_buffer(buf).value) & 0xFFFFFFFF


def _rows(text: str, fields: int) -> list[list[str]]:
    """Docker's line rules (lines trimmed, blank ones skipped), and ours: comments and short lines skipped."""
    rows = (line.strip() for line in text.split("\n"))
    return [row for line in rows if line and not line.startswith("#") and len(row := line.split(":")) >= fields]


def _id(text: str) -> int | None:
    """A uid or gid field: ASCII digits in range, else None (an image's malformed entry never matches)."""
    return int(text) if text.isascii() and text.isdigit() and int(text) <= MAX_ID else None


def _spec_id(text: str) -> int | None:
    """The number a ``--user`` part gives, None for a name; out of range is the user's error, as in runc."""
    if not (text.isascii() and text.isdigit()):
        return None
    if int(text) > MAX_ID:
        raise StrataError(f"uids and gids must be in range 0-{MAX_ID}: {text}", Kind.USAGE)
    return int(text)


def _not_found(what: str, name: str, file: EtcFile) -> StrataError:
    why = file.problem or f"no matching entries in {file.path.rsplit('/', 1)[1]} file"
    return StrataError(f"unable to find {what} {name}: {why}", Kind.NOT_FOUND)


def resolve(spec: str, root: Path = Path("/")) -> ExecUser:
    """``spec`` is ``user[:group]`` with names or numbers; ``root`` is where the container's /etc is.

    Numbers need neither file: when /etc/passwd is unreadable (or hostile), ``-u UID:GID`` still gives that uid
    and gid, with HOME=/; when it is readable, the uid's entry still gives HOME (and the gid, without ``:GID``)."""
    user, _, group = (spec or "0").partition(":")
    uid = _spec_id(user)
    passwd = read_etc("passwd", root)
    entries = [r for r in _rows(passwd.text, 7) if _id(r[2]) is not None and _id(r[3]) is not None]
    # as Docker: a number is always a uid, never a name
    entry = next((r for r in entries if (_id(r[2]) == uid if uid is not None else r[0] == user)), None)
    if entry is None and uid is None:
        raise _not_found("user", user, passwd)
    uid = uid if uid is not None else int(entry[2])  # type: ignore[index]
    gid = int(entry[3]) if entry else 0
    home = (entry[5] if entry else "") or "/"
    if group:
        given = _spec_id(group)
        if given is None:
            file = read_etc("group", root)
            grow = next((r for r in _rows(file.text, 4) if r[0] == group and _id(r[2]) is not None), None)
            if grow is None:
                raise _not_found("group", group, file)
            given = int(grow[2])
        return ExecUser(uid, given, (given,), home)
    extra: list[int] = []
    if entry is not None and entry[0]:
        extra = [int(r[2]) for r in _rows(read_etc("group", root).text, 4)
                 if _id(r[2]) is not None and entry[0] in r[3].split(",")]
    return ExecUser(uid, gid, tuple(dict.fromkeys([gid, *extra])), home)
