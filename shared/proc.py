"""A process told apart from a later one with the same pid: its start time in /proc/PID/stat, within one boot.

Used by the runner's container records (a PID 1 is the one recorded, not a process that got its pid later),
by the user namespace's keeper (:mod:`shared.userns`) and by a user's pasta (:mod:`runner.net.pasta`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


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
