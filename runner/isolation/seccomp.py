"""Seccomp filters in Docker's profile format, built and loaded with libseccomp through ctypes.

Docker's format (moby ``profiles/seccomp``, the JSON that ``--security-opt seccomp=FILE`` takes) is runc's
``LinuxSeccomp`` plus conditions: a rule applies only when the container holds ``includes.caps`` (all of them)
and none of ``excludes.caps``, when this machine's arch is (not) among ``arches``, and when the kernel is (not)
at least ``minKernel``. :func:`load` evaluates them exactly as moby's ``setupSeccomp`` does, then builds the
filter as runc's ``InitSeccomp`` does: the native arch plus the ``archMap`` sub-arches (or the legacy
``architectures`` list), ``no_new_privs`` left alone (we still hold CAP_SYS_ADMIN, so the kernel does not need
it, and Docker does not set it unless asked), a rule whose action equals the default skipped, syscall names this
libseccomp does not know skipped (a profile names syscalls newer than the library), several conditions on one
argument added as separate rules (runc's OR, see runc#2735), everything else one rule with all its conditions.

Compiling and installing are apart. :func:`program` compiles with libseccomp and exports the BPF (the array of
``struct sock_filter`` seccomp_load would hand the kernel); :func:`install` hands it to seccomp(2) itself, with the
flags seccomp_load would pass. Compiling Docker's profile (~400 rules, three arches, binary tree) costs tens of
milliseconds and its result depends only on the profile, the capabilities, the arch, the kernel and the library, so
:func:`program` can keep it in a cache directory; and the container's process, already inside the image's root,
runs no libseccomp code at all, only the one syscall. :func:`load` is both at once, compiled on the spot.

We bind libseccomp.so.2 ourselves because Debian's python3-seccomp is built for Debian's interpreter, not ours.
The library is opened when this module is: :func:`load` may run in the container's first process after
pivot_root, where the dynamic linker and the import system would find the image's files (and run them as root with
every capability). Docker's default profile is data made of this module's classes, in
:mod:`runner.isolation.seccomp_default` (``PROFILE``), imported by whoever builds a spec, never inside a
container. A machine without the library can still run with ``seccomp=unconfined``: only :func:`program` (and so
:func:`load`) needs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import Kind, StrataError, usage
from shared.store.files import atomic_write

# seccomp.h (libseccomp 2.5): the action values; ERRNO and TRACE carry a 16-bit return value
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,  # KILL_THREAD, as runc maps it
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")  # the only actions that return errnoRet (EPERM if unset)
# enum scmp_compare
OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,  # (arg & value) == valueTwo
}
# The runtime spec's arch names -> libseccomp's
ARCHES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32", "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32", "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32", "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64", "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
}
# libseccomp's native arch -> the name moby matches ``includes.arches``/``excludes.arches`` against (its goToNative
# of GOARCH, spelling included: "amd64", "arm64", "mips3l64n32")
_MOBY_ARCH = {
    "x86": "x86", "x86_64": "amd64", "arm": "arm", "aarch64": "arm64", "loongarch64": "loongarch64",
    "mips64": "mips64", "mips64n32": "mips64n32", "mipsel64": "mipsel64", "mipsel64n32": "mips3l64n32",
    "mipsel": "mipsel", "ppc": "ppc", "ppc64": "ppc64", "ppc64le": "ppc64le", "riscv64": "riscv64",
    "s390": "s390", "s390x": "s390x",
}
# enum scmp_filter_attr
_ATTR_CTL_NNP = 3
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_OPTIMIZE = 8
# runc's flags: TSYNC needs nothing (we load in a single-threaded child), the others are filter attributes
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": None, "SECCOMP_FILTER_FLAG_LOG": _ATTR_CTL_LOG,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ATTR_CTL_SSB}
# linux/seccomp.h: what seccomp_load passes to seccomp(2) for those attributes (libseccomp's sys_filter_load)
_KERNEL_FLAGS = {"SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
_SECCOMP_SET_MODE_FILTER = 1
# linux/prctl.h, linux/seccomp.h: the pre-3.17 way, which libseccomp falls back to without seccomp(2)
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# asm/unistd.h: glibc has no seccomp() wrapper before 2.41 (keyed by uname's machine, as runner/linux.py does)
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348, "armv7l": 383}
BPF_MAXINSNS = 4096  # linux/bpf_common.h: the kernel refuses longer classic BPF programs
_INSN = 8  # sizeof(struct sock_filter): u16 code, u8 jt, u8 jf, u32 k
# Bump when how a filter is built changes (this module's code, not its inputs): old cache entries then miss.
_CACHE_FORMAT = 1
_NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: unknown to this libseccomp on every arch
_MAX_ARGS = 6
_CAP_NAME = re.compile(r"CAP_[A-Z0-9_]+")


@dataclass(frozen=True)
class Arg:
    """One argument condition: ``args[index] OP value`` (MASKED_EQ: ``args[index] & value == value_two``)."""

    index: int
    value: int
    op: str = "SCMP_CMP_EQ"
    value_two: int = 0


@dataclass(frozen=True)
class Filter:
    """When a rule applies (``includes``) or does not (``excludes``). Caps are spelled as in the JSON,
    ``CAP_SYS_ADMIN``; arches as moby spells the native one (``amd64``)."""

    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rule:
    """One entry of ``syscalls``: ``action`` for these syscalls when every arg condition holds (the
    conditions on one argument: when any holds), in a container that ``includes`` and ``excludes`` select."""

    names: tuple[str, ...]
    action: str = "SCMP_ACT_ALLOW"
    args: tuple[Arg, ...] = ()
    errno_ret: int | None = None
    includes: Filter = field(default_factory=Filter)
    excludes: Filter = field(default_factory=Filter)

    def applies(self, caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
        """moby's setupSeccomp, condition for condition: excludes first, then includes; caps are compared as
        strings with the container's bounding set (``CAP_`` names)."""
        ex, inc = self.excludes, self.includes
        if arch in ex.arches or any(c in caps for c in ex.caps):
            return False
        if ex.min_kernel is not None and kernel >= ex.min_kernel:
            return False
        if inc.arches and arch not in inc.arches:
            return False
        if not all(c in caps for c in inc.caps):
            return False
        return inc.min_kernel is None or kernel >= inc.min_kernel


@dataclass(frozen=True)
class Profile:
    """A seccomp profile in Docker's format. An empty one (no defaultAction, no syscalls) means no filter, as in
    Docker; ``architectures`` and ``arch_map`` are exclusive (moby refuses both)."""

    default_action: str = ""
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[Rule, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.default_action or self.syscalls)

    @classmethod
    def from_json(cls, text: str, source: str = "profile") -> Profile:
        """Parse and check everything that can be checked without the kernel: a profile that passes here only
        fails at load for this machine's reasons (a library without an arch it names)."""
        try:
            return _parse(text)
        except _Invalid as e:
            raise usage(f"seccomp {source}: {e}") from None

    def architectures_for(self, native: str) -> tuple[str, ...]:
        """Runtime-spec arch names to add beside the native one (``native`` is libseccomp's name)."""
        if self.architectures:
            return self.architectures
        for arch, subs in self.arch_map:
            if ARCHES[arch] == native:
                return (arch, *subs)
        return ()

    def rules_for(self, capabilities: Iterable[str], native: str, kernel: tuple[int, int]) -> tuple[Rule, ...]:
        """The rules that apply to a container with these capabilities (names without ``CAP_``) on this arch
        (libseccomp's name) and kernel."""
        caps = frozenset(f"CAP_{c}" for c in capabilities)
        arch = _MOBY_ARCH.get(native, native)
        return tuple(r for r in self.syscalls if r.applies(caps, arch, kernel))


# ---- parsing ----------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem in a profile, with where it is: turned into a usage error naming the profile."""


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{where}: expected an object, got {_type(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"{where}: expected a list, got {_type(value)}")
    return value


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{where}: expected a string, got {_type(value)}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _uint(value: Any, where: str, limit: int = 1 << 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{where}: expected an unsigned integer, got {_type(value)}")
    if not 0 <= value < limit:
        raise _Invalid(f"{where}: {value} is out of range (0 to {limit - 1})")
    return value


def _type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value)[:40]})"


def _action(value: Any, errno_ret: Any, where: str, errno_where: str) -> tuple[str, int | None]:
    action = _str(value, where)
    if not action:
        raise _Invalid(f"{where}: missing")
    if action == "SCMP_ACT_NOTIFY":
        raise _Invalid(f"{where}: SCMP_ACT_NOTIFY is not supported (it needs a seccomp agent)")
    if action not in ACTIONS:
        raise _Invalid(f"{where}: unknown action {action!r}")
    if errno_ret is None:
        return action, None
    if action not in _WITH_ERRNO:  # runc ignores it, crun refuses: refusing tells the user it does nothing
        raise _Invalid(f"{errno_where}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE return it, not {action}")
    return action, _uint(errno_ret, errno_where, 4096)


def _kernel(value: Any, where: str) -> tuple[int, int] | None:
    """moby's KernelVersion: "<kernel>.<major>", each 0-255, not 0.0; "" means no condition."""
    text = _str(value, where)
    if not text:
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not m or int(m[1]) > 255 or int(m[2]) > 255 or (int(m[1]), int(m[2])) == (0, 0):
        raise _Invalid(f'{where}: invalid kernel version {text!r}, expected "<kernel>.<major>"')
    return int(m[1]), int(m[2])


def _filter(value: Any, where: str) -> Filter:
    doc = _obj(value, where)
    caps = _strings(doc.get("caps"), f"{where}.caps")
    for i, cap in enumerate(caps):
        if not _CAP_NAME.fullmatch(cap):  # moby compares strings: "SYS_ADMIN" would silently never match
            raise _Invalid(f"{where}.caps[{i}]: {cap!r} is not a capability name like CAP_SYS_ADMIN")
    return Filter(caps, _strings(doc.get("arches"), f"{where}.arches"), _kernel(doc.get("minKernel"),
                                                                              f"{where}.minKernel"))


def _arg(value: Any, where: str) -> Arg:
    doc = _obj(value, where)
    op = _str(doc.get("op"), f"{where}.op")
    if op not in OPERATORS:
        raise _Invalid(f"{where}.op: unknown operator {op!r}")
    return Arg(_uint(doc.get("index", 0), f"{where}.index", _MAX_ARGS), _uint(doc.get("value", 0), f"{where}.value"),
               op, _uint(doc.get("valueTwo", 0), f"{where}.valueTwo"))


def _rule(value: Any, where: str) -> Rule:
    doc = _obj(value, where)
    names = _strings(doc.get("names"), f"{where}.names")
    if doc.get("name") not in (None, ""):
        if names:
            raise _Invalid(f"{where}: both 'name' and 'names' are given, use one")
        names = (_str(doc["name"], f"{where}.name"),)
    for i, name in enumerate(names):
        if not name or "\0" in name:
            raise _Invalid(f"{where}.names[{i}]: {name!r} is not a syscall name")
    action, errno_ret = _action(doc.get("action"), doc.get("errnoRet"), f"{where}.action", f"{where}.errnoRet")
    args = tuple(_arg(a, f"{where}.args[{i}]") for i, a in enumerate(_list(doc.get("args"), f"{where}.args")))
    return Rule(names, action, args, errno_ret, _filter(doc.get("includes"), f"{where}.includes"),
                _filter(doc.get("excludes"), f"{where}.excludes"))


def _arch(value: Any, where: str) -> str:
    arch = _str(value, where)
    if arch not in ARCHES:
        raise _Invalid(f"{where}: unknown architecture {arch!r}")
    return arch


def _parse(text: str) -> Profile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Invalid(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # a number of 4300 digits, nesting deeper than Python's stack
        raise _Invalid(f"not valid JSON ({type(e).__name__}: {e})") from None
    doc = _obj(doc, "the profile")  # null is an empty profile, as Go decodes it
    rules = tuple(_rule(r, f"syscalls[{i}]") for i, r in enumerate(_list(doc.get("syscalls"), "syscalls")))
    default, default_errno = "", None
    if doc.get("defaultAction") not in (None, "") or rules:
        default, default_errno = _action(doc.get("defaultAction"), doc.get("defaultErrnoRet"), "defaultAction",
                                         "defaultErrnoRet")
    architectures = tuple(_arch(a, f"architectures[{i}]")
                          for i, a in enumerate(_list(doc.get("architectures"), "architectures")))
    arch_map = []
    for i, entry in enumerate(_list(doc.get("archMap"), "archMap")):
        where = f"archMap[{i}]"
        entry = _obj(entry, where)
        subs = tuple(_arch(s, f"{where}.subArchitectures[{j}]")
                     for j, s in enumerate(_list(entry.get("subArchitectures"), f"{where}.subArchitectures")))
        arch_map.append((_arch(entry.get("architecture"), f"{where}.architecture"), subs))
    if architectures and arch_map:
        raise _Invalid("both 'architectures' and 'archMap' are given, use one")
    flags = _strings(doc.get("flags"), "flags")
    for i, flag in enumerate(flags):
        if flag not in FLAGS:
            raise _Invalid(f"flags[{i}]: unknown flag {flag!r} (known: {', '.join(FLAGS)})")
    return Profile(default, default_errno, architectures, tuple(arch_map), flags, rules)


# ---- libseccomp -------------------------------------------------------------------------------------------


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


class _SockFprog(ctypes.Structure):
    """linux/filter.h ``struct sock_fprog``: what seccomp(2) and prctl(PR_SET_SECCOMP) take."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _open() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return None
    ctx, u32 = ctypes.c_void_p, ctypes.c_uint32
    for name, restype, argtypes in (
            ("seccomp_init", ctx, [u32]),
            ("seccomp_release", None, [ctx]),
            ("seccomp_version", ctypes.POINTER(_Version), []),
            ("seccomp_arch_native", u32, []),
            ("seccomp_arch_resolve_name", u32, [ctypes.c_char_p]),
            ("seccomp_arch_add", ctypes.c_int, [ctx, u32]),
            ("seccomp_attr_set", ctypes.c_int, [ctx, ctypes.c_int, u32]),
            ("seccomp_syscall_resolve_name", ctypes.c_int, [ctypes.c_char_p]),
            ("seccomp_rule_add_array", ctypes.c_int, [ctx, u32, ctypes.c_int, ctypes.c_uint,
                                                      ctypes.POINTER(_ArgCmp)]),
            ("seccomp_export_bpf", ctypes.c_int, [ctx, ctypes.c_int])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


_LIB = _open()  # now, on the host's root: see the module's docstring


def library() -> ctypes.CDLL:
    """libseccomp, opened when this module was (module doc); a one-line error where it is missing."""
    if _LIB is None:
        raise StrataError("seccomp: libseccomp.so.2 is missing (apt-get install libseccomp2)", Kind.SYSTEM)
    return _LIB


def native_arch() -> str:
    """This machine's arch, in libseccomp's name (``x86_64``)."""
    lib = library()
    token = lib.seccomp_arch_native()
    for name in ARCHES.values():
        if lib.seccomp_arch_resolve_name(name.encode()) == token:
            return name
    raise StrataError(f"seccomp: unknown native architecture {token:#x}", Kind.SYSTEM)


def _library_identity(lib: ctypes.CDLL | None) -> tuple[object, ...] | None:
    """What, besides the profile, capabilities and kernel, decides the BPF libseccomp writes: the native arch, the
    library's version, and its file (dev, inode, size, mtime). The file because a distribution patches a release
    without changing its version (new syscall names, and names it does not know are skipped); a package update
    replaces the file, and so changes the key. Taken once, here, so that a cache hit calls no library function.
    None (no cache) when there is no library or no arch we know: importing this module must not fail for it."""
    if lib is None:
        return None
    try:
        native = native_arch()
    except StrataError:
        return None
    version = lib.seccomp_version().contents
    where = _DlInfo()
    file: tuple[int, ...] | None = None
    with contextlib.suppress(AttributeError, OSError):  # dladdr is in libdl before glibc 2.34
        if _libc.dladdr(ctypes.cast(lib.seccomp_init, ctypes.c_void_p), ctypes.byref(where)) and where.dli_fname:
            st = os.stat(os.fsdecode(where.dli_fname))
            file = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return native, (version.major, version.minor, version.micro), file


_LIBRARY_IDENTITY = _library_identity(_LIB)


def kernel_version() -> tuple[int, int]:
    """moby's parseRelease: the first two numbers of the release ("6.1.0-18-amd64" is 6.1)."""
    release = os.uname().release
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise StrataError(f"seccomp: cannot parse the kernel version {release!r}", Kind.SYSTEM)
    return int(m[1]), int(m[2])


def _value(action: str, errno_ret: int | None) -> int:
    if action in _WITH_ERRNO:
        return ACTIONS[action] | (errno.EPERM if errno_ret is None else errno_ret)
    return ACTIONS[action]


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise StrataError(f"seccomp: cannot {what}: {os.strerror(-rc)}", Kind.SYSTEM)


def _conditions(args: Sequence[Arg]) -> list[list[Arg]]:
    """runc: conditions on distinct arguments are ANDed in one rule; two on the same argument make one rule
    each (libseccomp cannot AND them, and runc's answer is OR)."""
    if len({a.index for a in args}) == len(args):
        return [list(args)]
    return [[a] for a in args]


@contextlib.contextmanager
def filter_context(profile: Profile, capabilities: frozenset[str]) -> Iterator[int]:
    """libseccomp's filter context for this machine, built as runc builds it (see the module's docstring), released
    on leaving. It is the one seccomp_load would load: the tests load it that way as the reference for
    :func:`install`."""
    lib = library()
    native = native_arch()
    rules = profile.rules_for(capabilities, native, kernel_version())
    default = _value(profile.default_action, profile.default_errno_ret)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise StrataError("seccomp: cannot create a filter (seccomp_init failed)", Kind.SYSTEM)
    try:
        for arch in profile.architectures_for(native):
            token = lib.seccomp_arch_resolve_name(ARCHES[arch].encode())
            if not token:
                raise StrataError(f"seccomp: this libseccomp does not know architecture {arch}", Kind.SYSTEM)
            rc = lib.seccomp_arch_add(ctx, token)
            if rc != -errno.EEXIST:  # the native arch is in every new filter
                _check(rc, f"add architecture {arch}")
        # Not in the BPF, only in what seccomp_load would do with it: install() never sets no_new_privs either
        _check(lib.seccomp_attr_set(ctx, _ATTR_CTL_NNP, 0), "leave no_new_privs alone")
        for flag in profile.flags:
            attr = FLAGS[flag]
            if attr is not None:  # not in the BPF either (Program.flags), but libseccomp checks the kernel has it
                _check(lib.seccomp_attr_set(ctx, attr, 1), f"set {flag}")
        if sum(len(r.names) for r in rules) > 32:  # runc: binary tree for long rule sets (not below: libseccomp bug)
            lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2)  # an optimisation: a library without it still works
        for rule in rules:
            action = _value(rule.action, rule.errno_ret)
            if action == default:  # libseccomp refuses these (EACCES); runc skips them
                continue
            for name in rule.names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == _NR_SCMP_ERROR:  # newer than this libseccomp: skipped, as runc does
                    continue
                for conds in _conditions(rule.args):
                    array = (_ArgCmp * max(len(conds), 1))(
                        *(_ArgCmp(a.index, OPERATORS[a.op], a.value, a.value_two) for a in conds))
                    _check(lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array), f"add the rule for {name}")
        yield ctx
    finally:
        lib.seccomp_release(ctx)


def _compile(profile: Profile, capabilities: frozenset[str]) -> bytes:
    """The BPF seccomp_load would generate, as seccomp_export_bpf writes it (the same generator), into a memfd: a
    pipe would block on a filter larger than its buffer, a file would need a place to put it."""
    with filter_context(profile, capabilities) as ctx:
        fd = os.memfd_create("strata-seccomp", os.MFD_CLOEXEC)
        try:
            _check(library().seccomp_export_bpf(ctx, fd), "export the filter")
            size = os.fstat(fd).st_size
            bpf = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    if len(bpf) != size or not size or size % _INSN:
        raise StrataError(f"seccomp: libseccomp exported a filter of {size} bytes, not whole instructions",
                          Kind.SYSTEM)
    if size > BPF_MAXINSNS * _INSN:
        raise StrataError(f"seccomp: the filter has {len(bpf) // _INSN} instructions, the kernel takes at most "
                          f"{BPF_MAXINSNS}", Kind.SYSTEM)
    return bpf


def _sane(bpf: bytes) -> bool:
    return 0 < len(bpf) <= BPF_MAXINSNS * _INSN and len(bpf) % _INSN == 0


@dataclass(frozen=True)
class Program:
    """A compiled filter, ready for seccomp(2): ``filter`` is the ``struct sock_filter`` array in this machine's byte
    order, ``flags`` the SECCOMP_FILTER_FLAG_* seccomp_load would have passed with it (the profile's LOG and
    SPEC_ALLOW)."""

    filter: bytes
    flags: int


def program(profile: Profile, capabilities: frozenset[str], cache_dir: Path | None = None) -> Program | None:
    """The filter for ``profile`` in a container with ``capabilities`` (names without ``CAP_``) on this machine; None
    for a disabled profile (``{}``). Call it before entering the container: it needs libseccomp, unless ``cache_dir``
    already holds the program for exactly these inputs (see :func:`_cache_key`).

    The cache is only an optimisation, so it never makes a start fail and never weakens a filter: an entry is taken
    only when its checksum matches (a file cut at an instruction boundary would still pass the kernel's checks, and
    be a shorter, different filter); a bad one is compiled again and replaced; a cache directory we cannot create,
    or that is not ours alone (not owned by us, or writable by group or others: whoever can write it chooses the
    filter), is not used; a failed write leaves no entry."""
    if not profile.enabled:
        return None
    flags = 0
    for flag in profile.flags:
        flags |= _KERNEL_FLAGS.get(flag, 0)
    if cache_dir is None or _LIBRARY_IDENTITY is None or not _private_dir(cache_dir):
        return Program(_compile(profile, capabilities), flags)
    key = _cache_key(profile, capabilities)
    path = cache_dir / f"{key}.bpf"
    cached = _read_cached(path, key)
    if cached is not None:
        return Program(cached, flags)
    bpf = _compile(profile, capabilities)
    with contextlib.suppress(OSError):
        atomic_write(path, _checksum(key, bpf) + bpf, 0o600)
    return Program(bpf, flags)


def program_for_text(text: str, capabilities: frozenset[str], cache_dir: Path, source: str = "profile") \
        -> Program | None:
    """:func:`program` of the profile ``text`` (JSON), taken from a cache keyed by the text itself: a hit parses
    nothing (parsing Docker's profile into its classes was ~1-2 ms of every start and exec). The entry holds the
    flags beside the BPF, as a hit does not read the profile they come from; it is kept, checked and never trusted
    as :func:`program`'s is (same directory, same checks: a miss costs the parse, and :func:`program`)."""
    usable = _LIBRARY_IDENTITY is not None and _private_dir(cache_dir)
    key = _text_key(text, capabilities) if usable else ""
    path = cache_dir / f"{key}.bpf"
    if usable:
        cached = _read_cached(path, key, head=_FLAGS_SIZE)
        if cached is not None:
            return Program(cached[_FLAGS_SIZE:], int.from_bytes(cached[:_FLAGS_SIZE], "little"))
    prog = program(Profile.from_json(text, source), capabilities, cache_dir)
    if usable and prog is not None:
        payload = prog.flags.to_bytes(_FLAGS_SIZE, "little") + prog.filter
        with contextlib.suppress(OSError):
            atomic_write(path, _checksum(key, payload) + payload, 0o600)
    return prog


def _text_key(text: str, capabilities: frozenset[str]) -> str:
    """:func:`_cache_key` with the profile's text in place of the profile (which it determines: parsing is a
    function of the text); "text" keeps the two kinds of entry apart."""
    inputs = (_CACHE_FORMAT, "text", text, tuple(sorted(capabilities)), kernel_version(), _LIBRARY_IDENTITY)
    return hashlib.sha256(repr(inputs).encode()).hexdigest()


def _cache_key(profile: Profile, capabilities: frozenset[str]) -> str:
    """sha256 over everything the BPF depends on: the profile (a frozen dataclass of tuples: its repr is
    deterministic and complete), the capabilities, the kernel's version (the rules' minKernel), libseccomp and the
    native arch (:func:`_library_identity`), and our format number."""
    inputs = (_CACHE_FORMAT, profile, tuple(sorted(capabilities)), kernel_version(), _LIBRARY_IDENTITY)
    return hashlib.sha256(repr(inputs).encode()).hexdigest()


def _checksum(key: str, bpf: bytes) -> bytes:
    """Stored before the BPF; over the key too, so that an entry renamed to another key is not taken either."""
    return hashlib.sha256(key.encode() + b"\0" + bpf).digest()


_CHECKSUM_SIZE = hashlib.sha256().digest_size
_FLAGS_SIZE = 4  # a text-keyed entry's flags, before its BPF (little-endian)


def _private_dir(path: Path) -> bool:
    """Create ``path`` (0700) if missing; True when it is a directory of ours that no one else can write."""
    try:
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _read_cached(path: Path, key: str, head: int = 0) -> bytes | None:
    """The BPF kept at ``path`` for ``key`` (after ``head`` bytes of the entry's own, returned with it); None when
    it is missing, unreadable or not exactly what was written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(_CHECKSUM_SIZE + head + BPF_MAXINSNS * _INSN + 1)
    except OSError:
        return None
    checksum, payload = data[:_CHECKSUM_SIZE], data[_CHECKSUM_SIZE:]
    if len(payload) < head or not _sane(payload[head:]) or checksum != _checksum(key, payload):
        return None
    return payload


def install(prog: Program) -> None:
    """Install ``prog`` in the calling thread, as seccomp_load would have: seccomp(SECCOMP_SET_MODE_FILTER) with
    the profile's flags, no_new_privs left alone (so the caller must hold CAP_SYS_ADMIN, or have set it), and, as
    libseccomp does on a kernel or arch without seccomp(2), prctl(PR_SET_SECCOMP) when the program needs no flags.
    Only libc's syscall() and prctl(): nothing is loaded, imported or read from the filesystem, so it is safe in a
    process already inside the container's root."""
    if not _sane(prog.filter):  # sock_fprog counts whole instructions in 16 bits: the kernel would get a prefix
        raise StrataError(f"seccomp: cannot install the filter: {len(prog.filter)} bytes are not 1 to "
                          f"{BPF_MAXINSNS} instructions", Kind.SYSTEM)
    buffer = ctypes.create_string_buffer(prog.filter, len(prog.filter))
    fprog = _SockFprog(len(prog.filter) // _INSN, ctypes.cast(buffer, ctypes.c_void_p))
    number = _SYS_SECCOMP.get(os.uname().machine)
    err = errno.ENOSYS
    if number is not None:
        ctypes.set_errno(0)
        if _libc.syscall(ctypes.c_long(number), ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER), ctypes.c_ulong(prog.flags),
                         ctypes.byref(fprog)) == 0:
            return
        err = ctypes.get_errno()
    if err == errno.ENOSYS and not prog.flags:
        ctypes.set_errno(0)
        if _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0:
            return
        err = ctypes.get_errno()
    raise StrataError(f"seccomp: cannot install the filter: {os.strerror(err)}", Kind.SYSTEM)


def load(profile: Profile, capabilities: frozenset[str]) -> None:
    """Compile the filter for this machine and install it into the calling thread: :func:`program` and
    :func:`install` at once, without a cache. ``capabilities`` (names without ``CAP_``) are the container's set,
    which decide the conditional rules. Must run while we still hold CAP_SYS_ADMIN: no_new_privs is left as the
    caller set it."""
    prog = program(profile, capabilities)
    if prog is not None:
        install(prog)



def to_oci(profile: Profile, capabilities: frozenset[str]) -> dict[str, Any] | None:
    """The runtime-spec ``linux.seccomp`` object (LinuxSeccomp) of ``profile`` for a container with ``capabilities``
    on this machine: Docker's conditions (``includes``/``excludes``: caps, arches, minKernel) evaluated now, as
    moby's setupSeccomp does before it hands runc the spec, and ``archMap`` narrowed to the native arch's entry.
    What is left is plain runtime-spec, which :meth:`Profile.from_json` reads back and runc or crun load as it is.
    None for a disabled profile (``{}``)."""
    if not profile.enabled:
        return None
    try:
        native = native_arch()
    except StrataError:  # no libseccomp: name the arch as uname does (only compiling needs the library)
        native = os.uname().machine
    doc: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno_ret is not None:
        doc["defaultErrnoRet"] = profile.default_errno_ret
    arches = profile.architectures_for(native)
    if arches:
        doc["architectures"] = list(arches)
    if profile.flags:
        doc["flags"] = list(profile.flags)
    syscalls = []
    for rule in profile.rules_for(capabilities, native, kernel_version()):
        entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.errno_ret is not None:
            entry["errnoRet"] = rule.errno_ret
        if rule.args:
            entry["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                             for a in rule.args]
        syscalls.append(entry)
    doc["syscalls"] = syscalls
    return doc
