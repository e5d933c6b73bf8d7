"""Without root (issue 20): the ids a user may map, and the user namespace both tools enter before any command.

Why the whole tool enters one: a user's store holds the files of an image's owners (uid 0..65535 inside the
image), which on the host are the user's subordinate ids from ``/etc/subuid``. Only inside a user namespace that
maps those ranges can the user make, chown, read and remove them. So a tool run without root enters such a
namespace first, as podman does (``podman unshare``), and every command then runs as it does for root, as root
of that namespace, with what a user namespace forbids (device nodes, ``trusted.*`` xattrs) told apart where it
matters (the store's :class:`~shared.layer.whiteout.OverlayFormat`).

How: the kernel lets a process write its own ``uid_map`` for its own id only; a map of a range is written by
the setuid helpers ``newuidmap``/``newgidmap`` (Debian's ``uidmap``), which check ``/etc/subuid`` and run from
outside the namespace. So, before ``unshare(CLONE_NEWUSER)``, the process forks a helper that stays outside; the
helper waits for the word, writes both maps of its parent with them and exits; the parent then becomes root of
the namespace. No re-exec and no process in between: the tool keeps its pid, its terminal and its signals.
Without ranges the process maps its own id alone (setgroups denied first, as the kernel requires), and says once
what that costs.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from shared.errors import Kind, StrataError
from shared.proc import alive, boot_id, start_keeper

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True)
class IdRange:
    """One line of a uid_map or gid_map: ``count`` ids from ``inside`` in the namespace are ``outside`` on the
    host."""

    inside: int
    outside: int
    count: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.count}"


@dataclass(frozen=True)
class IdMapping:
    """The user's namespace: 0 is the user, 1.. are the subordinate ranges in the order the files give them."""

    uid: int  # the user, outside
    gid: int
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]

    @property
    def full(self) -> bool:
        """More than the user's own id on both sides: an image's owners survive."""
        return len(self.uids) > 1 and len(self.gids) > 1

    @property
    def size(self) -> int:
        """How many uids (and gids, the smaller of the two) exist inside."""
        return min(sum(r.count for r in self.uids), sum(r.count for r in self.gids))



@dataclass(frozen=True)
class IdBlock:
    """A container's own ids under ``--userns=auto`` (:mod:`runner.isolation.idmap`): 0..size-1 inside are
    uid_base.. and gid_base.. on the host."""

    uid_base: int
    gid_base: int
    size: int = 65536

    def back(self, uid: int, gid: int) -> tuple[int, int]:
        """The ids inside of a file the container's root wrote as UID:GID on the host (commit packs these)."""
        if not (0 <= uid - self.uid_base < self.size and 0 <= gid - self.gid_base < self.size):
            raise StrataError(f"an entry owned by {uid}:{gid} on the host, outside the container's ids "
                              f"({self.uid_base}:{self.gid_base} and {self.size} on)", Kind.INTEGRITY)
        return uid - self.uid_base, gid - self.gid_base


def subordinate_ranges(text: str, name: str, uid: int) -> list[tuple[int, int]]:
    """The ``(start, count)`` ranges ``/etc/subuid`` or ``/etc/subgid`` (``subuid(5)``) grants the user, named by
    login name or by number; malformed lines are skipped, as newuidmap skips them."""
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (name, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append((start, count))
    return ranges


def _ranges(own: int, granted: list[tuple[int, int]]) -> tuple[IdRange, ...]:
    out = [IdRange(0, own, 1)]
    inside = 1
    for start, count in granted:
        out.append(IdRange(inside, start, count))
        inside += count
    return tuple(out)


def mapping_for(uid: int, gid: int, name: str, subuid: str, subgid: str) -> IdMapping:
    """The user's mapping from the texts of ``/etc/subuid`` and ``/etc/subgid``: full only when both grant a
    range (one without the other would map owners on one side only)."""
    uids, gids = subordinate_ranges(subuid, name, uid), subordinate_ranges(subgid, name, uid)
    if not uids or not gids:
        uids = gids = []
    return IdMapping(uid, gid, _ranges(uid, uids), _ranges(gid, gids))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise StrataError(f"cannot read {path}: {e.strerror}", Kind.SYSTEM) from None


def user_mapping() -> IdMapping:
    """This process's user's mapping, from the machine's files."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return mapping_for(uid, gid, name, _read(SUBUID), _read(SUBGID))


# -- this process -------------------------------------------------------------------------------------------------

_entered: IdMapping | None = None


def entered() -> IdMapping | None:
    """The mapping of the namespace this process entered, or None: run by root, nothing was entered."""
    return _entered


def host_uid() -> int:
    """Who runs the tool, as the host sees it: what decides root's or a user's paths, also once inside, and
    also in a process started inside by one that entered (``exec``'s stage), which sees its ids as root's."""
    if _entered is not None:
        return _entered.uid
    uid = os.geteuid()
    return _outside_of_root() if uid == 0 else uid


@functools.cache
def _outside_of_root() -> int:
    """Whom this user namespace's root is on the host: 0 in the host's own namespace (``0 0 4294967295``)."""
    try:
        ranges = _read_map("/proc/self/uid_map")
    except OSError:
        return 0
    return next((r.outside for r in ranges if r.inside == 0), 0)


def _read_map(path: str) -> tuple[IdRange, ...]:
    """A uid_map or gid_map as the kernel has it."""
    with open(path) as f:
        return tuple(IdRange(*(int(n) for n in line.split())) for line in f if line.strip())


def rootless() -> bool:
    return host_uid() != 0


def enter_once() -> None:
    """What a tool run without root does before its command: enter the user's namespace, once. Call while the
    process has one thread.

    One namespace for all of the user's commands, as podman's pause process keeps one: a container's namespaces
    belong to the user namespace that made them, and ``exec``, ``stop`` or ``kill`` from another (a sibling,
    however equal its mapping) may neither join them nor signal a process of a subordinate id. So the first
    command makes the namespace and leaves a keeper in it (``sleep infinity``, its pid, start time and boot in the
    run-time directory, :mod:`shared.rundir`); every later one joins the keeper's, under a lock."""
    global _entered
    if _entered is not None:
        return
    from shared.rundir import check_private, run_dir

    uid, gid = os.geteuid(), os.getegid()
    where = run_dir(uid)
    lock = os.open(where / "userns.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        check_private(where / "userns.lock", uid, is_dir=False, under=where)
        fcntl.flock(lock, fcntl.LOCK_EX)
        keeper = where / "userns.pid"
        if not _join(keeper, uid):
            _make(user_mapping())
            _start_keeper(keeper)
    finally:
        os.close(lock)
    _entered = _own_mapping(uid, gid)
    if _entered.full:
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _join(keeper: Path, uid: int) -> bool:
    """Join the user namespace of the recorded keeper, if it is still that process and the user's: True."""
    from shared.rundir import check_private

    try:
        check_private(keeper, uid, is_dir=False)
    except StrataError:
        if os.path.lexists(keeper):
            raise
        return False
    try:
        pid_text, started, boot = keeper.read_text().split()
        pid, start_time = int(pid_text), int(started)
        pidfd = os.pidfd_open(pid)
    except (ValueError, OSError):
        return False  # damaged, or gone: a new namespace replaces it
    try:
        if not alive(pid, start_time, boot) or os.stat(f"/proc/{pid}").st_uid != uid:
            return False  # the pid is another process's now (this boot's or a later one's)
        _setns(pidfd, CLONE_NEWUSER)
        return True
    finally:
        os.close(pidfd)


def _start_keeper(keeper: Path) -> None:
    """A process that only holds the namespace (:func:`shared.proc.start_keeper`); its pid, start time and boot
    written by rename, as the store writes."""
    pid, started = start_keeper()
    tmp = keeper.with_name(f"{keeper.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid} {started} {boot_id()}\n")
    os.rename(tmp, keeper)


def _own_mapping(uid: int, gid: int) -> IdMapping:
    """This process's namespace as the kernel has it (a joined namespace was mapped by whoever made it)."""
    return IdMapping(uid, gid, _read_map("/proc/self/uid_map"), _read_map("/proc/self/gid_map"))


def _make(mapping: IdMapping) -> None:
    """Make a new user namespace with ``mapping`` and enter it (credentials are set by the caller)."""
    if mapping.full:
        helpers = _helpers()
        word_r, word_w = os.pipe()
        writer = os.fork()
        if writer == 0:
            os.close(word_w)
            os._exit(_write_maps(os.getppid(), mapping, helpers, word_r))
        os.close(word_r)
        try:
            _unshare(CLONE_NEWUSER)
            os.write(word_w, b"x")
        finally:
            os.close(word_w)  # a helper whose parent could not unshare reads nothing and maps nothing
            _, status = os.waitpid(writer, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise StrataError("cannot map this user's subordinate ids with newuidmap/newgidmap (the line above "
                              "says why): check /etc/subuid and /etc/subgid", Kind.SYSTEM)
    else:
        _unshare(CLONE_NEWUSER)
        _map_self(mapping)


def _helpers() -> tuple[str, str]:
    import shutil  # here: bz2 and lzma with it, ~3 ms of every command that never maps ids

    found = shutil.which("newuidmap"), shutil.which("newgidmap")
    if found[0] is None or found[1] is None:
        raise StrataError("/etc/subuid grants this user ids, but newuidmap and newgidmap are not installed (Debian's "
                          "uidmap package) to map them", Kind.SYSTEM)
    return found[0], found[1]


def _write_maps(pid: int, mapping: IdMapping, helpers: tuple[str, str], word: int) -> int:
    """The helper outside: wait for the parent's unshare, then map it. Exit 0, or 1 with newuidmap's words on
    stderr (it names the line of /etc/subuid it refused)."""
    import subprocess

    try:
        if os.read(word, 1) != b"x":
            return 2  # the parent failed before unsharing: nothing to map
        for helper, ranges in zip(helpers, (mapping.uids, mapping.gids), strict=True):
            args = [helper, str(pid)] + [str(n) for r in ranges for n in (r.inside, r.outside, r.count)]
            done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode != 0:
                name = os.path.basename(helper)
                line = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                os.write(2, f"{line if line.startswith(name) else f'{name}: {line}'}\n".encode())
                return 1
        return 0
    except BaseException:
        return 1


def _map_self(mapping: IdMapping) -> None:
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(mapping.uids[0].line())
    Path("/proc/self/gid_map").write_text(mapping.gids[0].line())


def _unshare(flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise StrataError(f"cannot make a user namespace: {os.strerror(err)} (is kernel.unprivileged_userns_clone "
                          "or user.max_user_namespaces 0 here?)", Kind.SYSTEM)


def _setns(fd: int, flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, flags) != 0:
        err = ctypes.get_errno()
        raise StrataError(f"cannot join this user's namespace: {os.strerror(err)}", Kind.SYSTEM)
