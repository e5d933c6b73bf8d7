"""Which device nodes a container may use: Docker's allow list, applied by the devices cgroup (v1) or a BPF device
program (v2), so that a node the container makes (CAP_MKNOD is Docker's default) or finds on a mount that allows
devices cannot be opened unless the list has it, whatever the mount flags say.

The list is the runtime-spec's ``linux.resources.devices`` (runc and crun get the same one from config.json):
everything denied, then what runc adds to every container (libcontainer/specconv ``AllowedDevices``, which Docker's
containers get): mknod of any node, the default devices, the pty master and slaves, /dev/console, /dev/net/tun;
then the spec's own ``linux.devices``. ``--privileged`` allows all, as Docker.

v1 writes the rules into the group's ``devices.deny`` / ``devices.allow``. v2 has no devices controller: a
BPF_PROG_TYPE_CGROUP_DEVICE program, hand-assembled here (the shape of runc's devicefilter.go: load the access
type, major and minor from ``struct bpf_cgroup_dev_ctx``, one block per rule that returns its verdict when it
matches, else the default), is attached to the group with BPF_F_ALLOW_MULTI (so programs of the groups above
still apply). The attachment holds the program: it goes when the group is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One runtime-spec LinuxDeviceCgroup entry. ``type`` "a" is every device; a None major or minor is any."""

    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allow": self.allow}
        if self.type != "a":
            out["type"] = self.type
            if self.major is not None:
                out["major"] = self.major
            if self.minor is not None:
                out["minor"] = self.minor
        out["access"] = self.access
        return out

    def v1_line(self) -> str:
        """What devices.allow / devices.deny take: ``c 1:3 rwm``, ``b *:* m``, ``a``."""
        if self.type == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


ALLOW_ALL = (Rule(True),)
# runc's AllowedDevices (libcontainer/specconv/example.go), which Docker's containers get: any node may be made, and
# these used
DOCKER_ALLOWED = (
    Rule(True, "c", None, None, "m"), Rule(True, "b", None, None, "m"),
    *(Rule(True, "c", 1, minor) for minor in (3, 5, 7, 8, 9)),  # null zero full random urandom
    Rule(True, "c", 5, 0), Rule(True, "c", 5, 1), Rule(True, "c", 5, 2),  # tty console ptmx
    Rule(True, "c", 136, None),  # the pty slaves (/dev/pts/N)
    Rule(True, "c", 10, 200),  # /dev/net/tun
)


def default_rules(privileged: bool, devices: Iterable[tuple[str, int, int]] = ()) -> tuple[Rule, ...]:
    """Docker's list: deny all, then DOCKER_ALLOWED and each of the spec's devices (type, major, minor)."""
    if privileged:
        return ALLOW_ALL
    extra = tuple(Rule(True, kind, major, minor) for kind, major, minor in devices)
    return (Rule(False), *DOCKER_ALLOWED, *(r for r in extra if r not in DOCKER_ALLOWED))


def allows_all(rules: Sequence[Rule]) -> bool:
    return tuple(rules) == ALLOW_ALL


def _shape(rules: Sequence[Rule]) -> tuple[bool, Sequence[Rule]]:
    """(default verdict, the exceptions): the shapes :func:`default_rules` makes, one "a" rule first and then
    rules of the other verdict. Anything else would need v1's subtle merge semantics (runc's emulator) to mean
    the same on v1 and v2, so it is refused."""
    if not rules or rules[0].type != "a":
        raise ValueError("a device list must start with a rule for all devices")
    default, rest = rules[0].allow, rules[1:]
    if any(r.type == "a" or r.allow == default for r in rest):
        raise ValueError("device rules after the first must be exceptions to it")
    if any(r.type not in ("b", "c") or not r.access or set(r.access) - set("rwm") for r in rest):
        raise ValueError("device rule: type b or c, access of r, w and m")
    return default, rest


def v1_writes(rules: Sequence[Rule]) -> list[tuple[str, str]]:
    """(file, line) to write in order into a fresh v1 devices group; none for allow-all (a fresh group already has
    its parent's list, the most it may have)."""
    if allows_all(rules):
        return []
    default, rest = _shape(rules)
    first = ("devices.allow" if default else "devices.deny", "a")
    return [first, *(("devices.allow" if r.allow else "devices.deny", r.v1_line()) for r in rest)]


# -- the BPF program ---------------------------------------------------------------------------------------------

# linux/bpf.h, linux/bpf_common.h
_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54
_ALU32_RSH_K = 0x74
_ALU32_MOV_K = 0xB4
_ALU32_MOV_X = 0xBC
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D
_EXIT = 0x95
_DEV_BLOCK, _DEV_CHAR = 1, 2  # BPF_DEVCG_DEV_*
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_*
R0, R1, R2, R3, R4, R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _verdict(allow: bool) -> list[bytes]:
    return [_insn(_ALU32_MOV_K, R0, imm=int(allow)), _insn(_EXIT)]


def _block(rule: Rule) -> list[bytes]:
    """The rule's test: each check jumps past the block when it fails; the block ends with the rule's verdict.
    Registers (set by the prologue): R2 the device type, R3 the access asked, R4 major, R5 minor."""
    access = sum(_ACCESS[a] for a in set(rule.access))
    checks: list[tuple[int, int, int, int]] = [(_JNE_K, R2, 0, _DEV_BLOCK if rule.type == "b" else _DEV_CHAR)]
    if access != 7:  # every access asked must be in the rule's: (R3 & access) == R3
        checks += [(_ALU32_MOV_X, R1, R3, 0), (_ALU32_AND_K, R1, 0, access), (_JNE_X, R1, R3, 0)]
    if rule.major is not None:
        checks.append((_JNE_K, R4, 0, rule.major))
    if rule.minor is not None:
        checks.append((_JNE_K, R5, 0, rule.minor))
    length = len(checks) + 2
    out = []
    for i, (code, dst, src, imm) in enumerate(checks):
        jump = length - i - 1 if code in (_JNE_K, _JNE_X) else 0
        out.append(_insn(code, dst, src, jump, imm))
    return out + _verdict(rule.allow)


def program(rules: Sequence[Rule]) -> bytes:
    """The BPF_PROG_TYPE_CGROUP_DEVICE program for RULES: 1 allows the access, 0 refuses it (EPERM)."""
    default, rest = _shape(rules)
    prologue = [
        _insn(_LDX_MEM_W, R2, R1, 0), _insn(_ALU32_AND_K, R2, imm=0xFFFF),  # access_type: type in the low half
        _insn(_LDX_MEM_W, R3, R1, 0), _insn(_ALU32_RSH_K, R3, imm=16),  # the access in the high half
        _insn(_LDX_MEM_W, R4, R1, 4), _insn(_LDX_MEM_W, R5, R1, 8),  # major, minor
    ]
    return b"".join(prologue + [i for r in rest for i in _block(r)] + _verdict(default))


_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351, "armv7l": 386}
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_LICENSE = b"Apache-2.0\0"


def _bpf(command: int, attr: bytes, what: str) -> int:
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"bpf: unknown syscall number on {os.uname().machine}")
    buf = ctypes.create_string_buffer(attr.ljust(128, b"\0"), 128)
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.syscall(ctypes.c_long(number), ctypes.c_int(command), buf, ctypes.c_uint(128)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _load(insns: bytes) -> int:
    """BPF_PROG_LOAD; on a refusal, loaded again with the verifier's log to say why (a log too small for a
    successful load's output would itself fail the load with ENOSPC, so none is asked for at first)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(_LICENSE)

    def attr(log_level: int, log: ctypes.Array[ctypes.c_char] | None) -> bytes:
        # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
        return struct.pack("<IIQQIIQ", BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8, ctypes.addressof(code),
                           ctypes.addressof(license_), log_level, len(log) if log else 0,
                           ctypes.addressof(log) if log else 0)

    try:
        return _bpf(BPF_PROG_LOAD, attr(0, None), "load the device program")
    except OSError as e:
        log = ctypes.create_string_buffer(1 << 20)
        with contextlib.suppress(OSError):
            os.close(_bpf(BPF_PROG_LOAD, attr(1, log), "load the device program"))
        verifier = log.value.decode(errors="replace").strip().splitlines()
        raise OSError(e.errno, f"{e.strerror}{': ' + verifier[-1] if verifier else ''}") from None


def attach(cgroup_dir: str, rules: Sequence[Rule]) -> None:
    """Load the program for RULES and attach it to the v2 group at CGROUP_DIR (nothing for allow-all)."""
    if allows_all(rules):
        return
    prog = _load(program(rules))
    try:
        group = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # target_fd, attach_bpf_fd, attach_type, attach_flags
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", group, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI),
                 f"attach the device program to {cgroup_dir}")
        finally:
            os.close(group)
    finally:
        os.close(prog)
