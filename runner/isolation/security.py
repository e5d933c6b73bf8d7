"""Privileges a container keeps: Docker's defaults, and the options that change them.

* Capabilities: Docker's 14 (moby daemon/pkg/oci/caps/defaults.go) bound the container; ``--cap-add``,
  ``--cap-drop`` (names with or without ``CAP_``, or ALL) and ``--privileged`` change the set. The bounding set is cut
  to it, the ambient set emptied, the inheritable set empty (moby GHSA-2mm7-x5h6-5pvq); root keeps the set as
  effective and permitted, any other user has none (setuid binaries gain at most the bounding set).
* ``no_new_privs`` only with ``--security-opt no-new-privileges``: off by default, as in Docker, so setuid
  tools work.
* Seccomp: Docker's default profile (runner/isolation/seccomp.py), ``--security-opt seccomp=unconfined`` for none, or
  ``seccomp=FILE`` for a profile in Docker's JSON format, read and checked when the container is created (its
  text is kept, so a later change to the file does not change the container). ``--privileged``: none, as Docker.
* Masked and read-only paths: Docker's lists (moby daemon/pkg/oci/defaults.go, runc's specconv example.go).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass

from runner import linux
from runner.isolation.seccomp import Profile
from shared.errors import usage

# linux/capability.h, in number order
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
DOCKER_DEFAULT_CAPS = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})
MASKED_PATHS = (
    "proc/asound", "proc/acpi", "proc/interrupts", "proc/kcore", "proc/keys", "proc/latency_stats",
    "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi", "sys/firmware",
    "sys/devices/virtual/powercap",
)
READONLY_PATHS = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")

# linux/prctl.h
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_KEEPCAPS = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _cap_name(text: str) -> str:
    name = text.upper().removeprefix("CAP_")
    if name != "ALL" and name not in CAPABILITIES:
        raise usage(f"unknown capability {text!r}")
    return name


SECCOMP_UNCONFINED = "unconfined"
SECCOMP_PROFILE_MAX = 1 << 20  # characters; Docker's default profile is 17 KB


@dataclass(frozen=True)
class Privileges:
    """What a container's processes may do: capabilities, no_new_privs, --privileged, the seccomp choice."""

    capabilities: frozenset[str] = DOCKER_DEFAULT_CAPS
    no_new_privileges: bool = False
    privileged: bool = False
    seccomp: str | None = None  # None: Docker's default profile; "unconfined": none; else a profile's JSON text

    @classmethod
    def from_options(cls, cap_add: Iterable[str] = (), cap_drop: Iterable[str] = (), privileged: bool = False,
                     security_opts: Iterable[str] = ()) -> Privileges:
        """Docker's order: drops apply to the defaults, then adds; ALL in either means every capability."""
        adds = {_cap_name(c) for c in cap_add}
        drops = {_cap_name(c) for c in cap_drop}
        caps = set(CAPABILITIES) if privileged else set(DOCKER_DEFAULT_CAPS)
        caps = set() if "ALL" in drops else caps - drops
        caps |= set(CAPABILITIES) if "ALL" in adds else adds
        nnp = False
        profile: str | None = None
        for opt in security_opts:
            key, value = _split_option(opt)
            if key == "no-new-privileges" and value in ("", "true"):
                nnp = True
            elif key == "no-new-privileges" and value == "false":
                nnp = False
            elif key == "seccomp" and value:
                profile = _seccomp_option(value)
            else:
                raise usage(f"unsupported --security-opt {opt!r} (supported: no-new-privileges[=true|false], "
                            "seccomp=unconfined, seccomp=PROFILE.json)")
        if privileged:  # Docker: --privileged runs without a filter, whatever the profile
            profile = SECCOMP_UNCONFINED
        return cls(frozenset(caps), nnp, privileged, profile)

    def numbers(self) -> set[int]:
        return {CAPABILITIES.index(c) for c in self.capabilities}


def _split_option(opt: str) -> tuple[str, str]:
    """``KEY=VALUE`` or Docker's legacy ``KEY:VALUE``, split at the first of either (a path may hold both)."""
    i = min((opt.find(c) for c in "=:" if c in opt), default=len(opt))
    return opt[:i], opt[i + 1:]


def _seccomp_option(value: str) -> str | None:
    """``unconfined``, ``builtin`` (Docker's name for the default profile), or a profile's path: read and checked
    now, so a bad profile is refused by ``run``, not by the container's first process."""
    if value == SECCOMP_UNCONFINED:
        return SECCOMP_UNCONFINED
    if value == "builtin":
        return None
    try:
        with open(value, encoding="utf-8") as f:
            text = f.read(SECCOMP_PROFILE_MAX + 1)  # not all of /dev/zero
    except (OSError, UnicodeDecodeError) as e:
        reason = (e.strerror or str(e)) if isinstance(e, OSError) else "not UTF-8 text"
        raise usage(f"cannot read seccomp profile {value}: {reason}") from None
    if len(text) > SECCOMP_PROFILE_MAX:
        raise usage(f"seccomp profile {value} is larger than {SECCOMP_PROFILE_MAX >> 20} MiB")
    Profile.from_json(text, f"profile {value}")
    return text


@functools.cache
def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


@functools.cache
def own_bounding_set() -> frozenset[int]:
    """What the runner itself may hold: a container cannot be given more (podman intersects the same way). Read
    once: the exec stage asks before it joins the container's mount namespace, whose /proc has no /proc/self for
    a process outside the container's pid namespace."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return frozenset(n for n in range(64) if mask >> n & 1)
    return frozenset(range(_last_cap() + 1))


def limit_bounding_set(privileges: Privileges) -> None:
    """Before the user changes: dropping from the bounding set needs CAP_SETPCAP, which we still have."""
    keep_bounding(privileges.numbers())


def keep_bounding(keep: Iterable[int]) -> None:
    """Cut the bounding set to ``keep`` (and what we hold: no more can be kept) and empty the ambient set."""
    kept = set(keep) & own_bounding_set()
    for cap in range(_last_cap() + 1):
        if cap not in kept:
            linux.prctl(PR_CAPBSET_DROP, cap, what="PR_CAPBSET_DROP")
    linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="PR_CAP_AMBIENT")


def set_capabilities(privileges: Privileges, uid: int) -> None:
    """After the user changed: root keeps the set as effective and permitted; others have none. Inheritable:
    empty. Then no_new_privs if asked (last: it does not stop us, only what we exec)."""
    mine = privileges.numbers() & own_bounding_set() if uid == 0 else set()
    set_capability_sets(mine, mine, ())
    if privileges.no_new_privileges:
        linux.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")


def set_capability_sets(effective: Iterable[int], permitted: Iterable[int], inheritable: Iterable[int]) -> None:
    """One capset(2) of all three sets (numbers)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    masks = [sum(1 << n for n in set(s)) for s in (effective, permitted, inheritable)]
    for i in range(2):
        data[i].effective, data[i].permitted, data[i].inheritable = ((m >> (32 * i)) & 0xFFFFFFFF for m in masks)
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def raise_ambient(caps: Iterable[int]) -> None:
    """The runtime-spec's ambient set (each must be permitted and inheritable already)."""
    for cap in sorted(caps):
        linux.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, what="PR_CAP_AMBIENT_RAISE")


def set_no_new_privileges() -> None:
    linux.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
