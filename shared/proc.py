"""A process told apart from a later one with the same pid: its start time in /proc/PID/stat, within one boot.

Used by the runner's container records (a PID 1 is the one recorded, not a process that got its pid later),
by the user namespace's keeper (:mod:`shared.userns`), a user's pasta (:mod:`runner.net.pasta`) and the
network namespace of a user's networks (:mod:`runner.net.sandbox`), whose keepers :func:`start_keeper` makes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass

from shared.errors import Kind, StrataError


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that tell a process apart from a later one with the same pid."""

    state: str  # R, S, D, Z (zombie), T, X, ...
    start_time: int  # clock ticks after boot


def parse_stat(data: bytes) -> ProcStat:
    """Field 2 (comm) is in parentheses and is whatever the process named itself, spaces and parentheses
    included, so the fields are counted from the last ')': field 3 (state) is the first after it, 22 the 20th."""
    head, paren, rest = data.rpartition(b")")
    after = rest.split()
    if not paren or b"(" not in head or len(after) < 20:
        raise ValueError(f"malformed /proc/PID/stat: {data[:200]!r}")
    return ProcStat(after[0].decode(), int(after[19]))


def read_stat(pid: int) -> ProcStat | None:
    """None when no process has that pid."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


@functools.cache
def boot_id() -> str:
    """This boot's random ID: start times count from boot, so they name a process only within one boot."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def start_keeper(prepare: Callable[[], None] | None = None) -> tuple[int, int]:
    """A process that only holds namespaces (``sleep infinity``), made by :func:`detached`."""
    return detached(lambda: os.execv("/bin/sleep", ["sleep", "infinity"]), prepare)


def detached(body: Callable[[], None], prepare: Callable[[], None] | None = None,
             keep: Collection[int] = ()) -> tuple[int, int]:
    """BODY run by a process that is no child of ours (forked twice, in a session of its own), with no fd of ours
    but KEEP (stdio on /dev/null: a lock held by an inherited fd would outlive the command that took it), after
    PREPARE has run in the first child (an ``unshare``: the process is then in the new namespaces). Returns its
    pid and start time; a failure of PREPARE is raised here, in one line."""
    said_r, said_w = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.close(said_r)
            os.setsid()
            if prepare is not None:
                prepare()
            pid = os.fork()
            if pid == 0:
                _detach(set(keep))
                body()
            os.write(said_w, str(pid).encode())
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(said_w, f"error: {e}".encode()[:400])
        finally:
            os._exit(0)
    os.close(said_w)
    os.waitpid(first, 0)
    with os.fdopen(said_r) as f:
        said = f.read()
    stat = read_stat(int(said)) if said.isdigit() else None
    if stat is None:
        raise StrataError(f"cannot start a process of ours: {said or 'it died'}", Kind.SYSTEM)
    return int(said), stat.start_time


def _detach(keep: set[int]) -> None:
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2 and int(name) not in keep:
            with contextlib.suppress(OSError):
                os.close(int(name))


def alive(pid: int, started: int, boot: str) -> bool:
    """Whether PID is still the process that started at STARTED in boot BOOT (not a later one with its pid)."""
    stat = read_stat(pid)
    return stat is not None and stat.start_time == started and boot == boot_id() and stat.state not in "ZX"


def end(pid: int, started: int, boot: str, sig: int = signal.SIGTERM) -> None:
    """Send SIG to PID if it is still the process that started at STARTED in boot BOOT: a record carried over a
    restart, or a pid reused since, is left alone. The pidfd is opened first and the start time read after, so
    the signal goes to the process that was checked, not to one that got the pid in between."""
    if boot != boot_id():
        return
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # gone
    try:
        if alive(pid, started, boot):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)
