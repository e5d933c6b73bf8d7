"""A bundle's ``config.json`` (runtime-spec config.md, config-linux.md), read into typed values once, every field
checked: what our executor can do is taken, what it cannot is refused in one line naming the field, never ignored.

A field counts as asked for only when it asks for something: callers write zero values for what they leave at the
kernel's default (Docker 20.10 writes ``"blockIO": {"weight": 0}``, ``"memory": {"disableOOMKiller": false}``), and
runc treats those as unset, so do we. A key the runtime-spec does not define at all is refused too: a caller that
writes one means something by it, and a typo must not pass for a setting.

The values are the runtime-spec's own, not the runner's container model (:mod:`runner.spec`): a caller's bundle has
no layer stack, no image user to resolve, and mounts of any type in any order, so ``runner-oci`` runs them as
listed (:mod:`runner.oci.mounts`), with the same isolation mechanisms the runner uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.isolation import cgroups, devcgroup
from runner.isolation.security import CAPABILITIES
from runner.oci import hooks
from runner.oci.hooks import Hook
from runner.spec import Mount  # the runtime-spec mount, as the runner writes it
from shared.errors import Kind, StrataError

# any 1.x: the releases add fields, never change one, and a field we do not know is refused by name anyway
SUPPORTED_VERSIONS = ("1.",)
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "cgroup", "user", "time")
RLIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
           "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_RSS",
           "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK")
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable")


class ConfigError(StrataError):
    """A config.json we cannot run as written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Kind.USAGE)


def unsupported(where: str, why: str = "") -> ConfigError:
    return ConfigError(f"config.json: {where} is not supported by runner-oci" + (f" ({why})" if why else ""))


def malformed(where: str, what: str) -> ConfigError:
    return ConfigError(f"config.json: {where}: {what}")


@dataclass(frozen=True)
class Device:
    path: str
    type: str  # c, b, u, p
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # rows, columns
    capabilities: Mapping[str, frozenset[int]] = field(default_factory=dict)  # set name -> numbers
    rlimits: tuple[tuple[str, int, int], ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None

    def caps(self, kind: str) -> frozenset[int]:
        return self.capabilities.get(kind, frozenset())


@dataclass(frozen=True)
class Config:
    """The bundle's config.json, checked. ``root`` is absolute (the bundle's own directory joined)."""

    bundle: Path
    oci_version: str
    root: Path
    root_readonly: bool
    process: Process | None
    hostname: str | None
    domainname: str | None
    mounts: tuple[Mount, ...]
    namespaces: tuple[tuple[str, str], ...]  # (type, path); path "" makes a new one
    devices: tuple[Device, ...]
    device_rules: tuple[devcgroup.Rule, ...]
    limits: cgroups.Limits
    cgroups_path: str
    sysctl: Mapping[str, str]
    seccomp: dict[str, Any] | None
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    rootfs_propagation: str
    hooks: Mapping[str, tuple[Hook, ...]]
    annotations: Mapping[str, str]
    uid_map: tuple[tuple[int, int, int], ...] = ()  # a user namespace of its own: (container, host, size)
    gid_map: tuple[tuple[int, int, int], ...] = ()

    def namespace(self, kind: str) -> str | None:
        """None: the runtime's own (not listed); "": a new one; else the path to join."""
        return next((path for t, path in self.namespaces if t == kind), None)


def load(bundle: Path) -> Config:
    """``BUNDLE/config.json``, read and checked; a failure is one line naming the field."""
    path = bundle / "config.json"
    try:
        with open(path, "rb") as f:
            data = f.read(16 << 20)
        doc = json.loads(data)
    except FileNotFoundError:
        raise ConfigError(f"cannot read {path}: no such file (is --bundle the bundle's directory?)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not JSON: {e}") from None
    config = parse(doc, bundle)
    # runc's rule: the root is the directory itself, never a path through a symlink (which could name the host's /)
    if os.path.realpath(config.root) != os.path.normpath(config.root) or not config.root.is_dir():
        raise ConfigError(f"config.json: root.path: invalid rootfs {config.root}: not a directory, or a path "
                          "through a symlink")
    return config


# -- readers of one JSON value each: ``where`` names the field in errors --------------------------------------------


def _obj(value: Any, where: str, known: tuple[str, ...] = ()) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(where, "expected an object")
    if known:  # config.md "Extensibility": a property the spec does not define MUST be ignored (a field it
        # defines that we cannot do is refused by name, where it is read)
        return {k: v for k, v in value.items() if k in known}
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(where, "expected an array")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise malformed(where, "expected a string")
    return value


def _strs(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _int(value: Any, where: str, low: int = -(1 << 63), high: int = (1 << 64) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise malformed(where, f"expected an integer from {low} to {high}")
    return value


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise malformed(where, "expected true or false")
    return value


def _refuse_set(doc: dict[str, Any], where: str, keys: tuple[str, ...]) -> None:
    """Keys the runtime-spec defines that we do not do: refused when they ask for something (module doc)."""
    for key in keys:
        if doc.get(key) not in (None, "", 0, False, [], {}):
            raise unsupported(f"{where}.{key}")


# -- the document ----------------------------------------------------------------------------------------------------

TOP = ("ociVersion", "root", "mounts", "process", "hostname", "domainname", "hooks", "annotations", "linux",
       "solaris", "windows", "vm", "zos", "freebsd")
LINUX = ("namespaces", "uidMappings", "gidMappings", "timeOffsets", "devices", "cgroupsPath", "resources",
         "rootfsPropagation", "seccomp", "sysctl", "maskedPaths", "readonlyPaths", "mountLabel",
         "intelRdt", "personality", "memoryPolicy", "netDevices")


def parse(doc: Any, bundle: Path) -> Config:
    top = _obj(doc, "config.json", TOP)
    version = _str(top.get("ociVersion"), "ociVersion")
    if not version.startswith(SUPPORTED_VERSIONS):
        raise unsupported(f"ociVersion {version!r}", "runner-oci reads runtime-spec 1.x")
    for key in ("solaris", "windows", "vm", "zos", "freebsd"):
        if key in top:
            raise unsupported(key)
    root_doc = _obj(top.get("root"), "root", ("path", "readonly"))
    root_path = _str(root_doc.get("path"), "root.path")
    linux_doc = _obj(top.get("linux"), "linux", LINUX)
    _refuse_set(linux_doc, "linux", ("timeOffsets", "mountLabel", "intelRdt", "personality", "memoryPolicy",
                                     "netDevices"))
    namespaces = _namespaces(linux_doc.get("namespaces"))
    uid_map, gid_map = (_mappings(linux_doc.get(key), f"linux.{key}") for key in ("uidMappings", "gidMappings"))
    if dict(namespaces).get("user") == "" and not (uid_map and gid_map):
        raise malformed("linux.namespaces", "a user namespace of its own needs linux.uidMappings and gidMappings")
    if (uid_map or gid_map) and dict(namespaces).get("user") != "":
        raise malformed("linux.uidMappings" if uid_map else "linux.gidMappings",
                        "mappings are for a user namespace of the container's own")
    _check_namespaces(namespaces, top)
    devices = tuple(_device(d, f"linux.devices[{i}]") for i, d in enumerate(_list(linux_doc.get("devices"),
                                                                                   "linux.devices")))
    resources = _obj(linux_doc.get("resources"), "linux.resources",
                     ("devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified"))
    propagation = _str(linux_doc.get("rootfsPropagation") or "", "linux.rootfsPropagation")
    if propagation and propagation not in PROPAGATIONS:
        raise malformed("linux.rootfsPropagation", f"{propagation!r} is not one of {', '.join(PROPAGATIONS)}")
    seccomp = linux_doc.get("seccomp")
    if seccomp is not None:
        _check_seccomp(_obj(seccomp, "linux.seccomp"))
    hostname = top.get("hostname")
    return Config(
        bundle=bundle, oci_version=version, root=(bundle / root_path) if not root_path.startswith("/")
        else Path(root_path), root_readonly=_bool(root_doc.get("readonly"), "root.readonly"),
        process=_process(top["process"]) if top.get("process") is not None else None,
        hostname=_str(hostname, "hostname") if hostname is not None else None,
        domainname=_str(top["domainname"], "domainname") if top.get("domainname") is not None else None,
        mounts=tuple(_mount(m, f"mounts[{i}]") for i, m in enumerate(_list(top.get("mounts"), "mounts"))),
        namespaces=namespaces, devices=devices,
        device_rules=tuple(_rule(r, f"linux.resources.devices[{i}]")
                           for i, r in enumerate(_list(resources.get("devices"), "linux.resources.devices"))),
        limits=_limits(resources), cgroups_path=_str(linux_doc.get("cgroupsPath") or "", "linux.cgroupsPath"),
        sysctl=_sysctl(linux_doc.get("sysctl"), namespaces), seccomp=seccomp,
        masked_paths=_strs(linux_doc.get("maskedPaths"), "linux.maskedPaths"),
        readonly_paths=_strs(linux_doc.get("readonlyPaths"), "linux.readonlyPaths"),
        rootfs_propagation=propagation, hooks=hooks.parse(top.get("hooks")), uid_map=uid_map, gid_map=gid_map,
        annotations={k: _str(v, f"annotations.{k}") for k, v in _obj(top.get("annotations"), "annotations").items()})


def _namespaces(value: Any) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for i, item in enumerate(_list(value, "linux.namespaces")):
        where = f"linux.namespaces[{i}]"
        ns = _obj(item, where, ("type", "path"))
        kind = _str(ns.get("type"), f"{where}.type")
        if kind not in NAMESPACE_TYPES:
            raise malformed(f"{where}.type", f"{kind!r} is not a namespace type")
        if kind in (t for t, _ in out):
            raise malformed(where, f"the {kind} namespace is listed twice")
        path = _str(ns.get("path") or "", f"{where}.path")
        if kind == "time":
            raise unsupported(f"{where} (time)")
        out.append((kind, path))
    return tuple(out)


def _check_namespaces(namespaces: tuple[tuple[str, str], ...], top: dict[str, Any]) -> None:
    """The root is built and pivoted into in a mount namespace of the container's own: without one (or in a
    joined one) the mounts, pivot_root and masked paths would act on the host's or another container's. A
    hostname or domainname is set in a new UTS namespace only (runc's words; crun's rule for a joined one)."""
    kinds = dict(namespaces)
    if kinds.get("mount") != "":
        raise unsupported("linux.namespaces without a mount namespace of the container's own" if "mount" not in
                          kinds else "linux.namespaces: joining a mount namespace by path",
                          "runner-oci builds the root in a new one")
    for key in ("hostname", "domainname"):
        if top.get(key) and kinds.get("uts") != "":
            raise ConfigError(f"config.json: {key}: unable to set {key} without a private UTS namespace")


def _mappings(value: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    """uid_map's or gid_map's lines: (container ID, host ID, size), at most 340 as the kernel takes."""
    out = []
    for i, item in enumerate(_list(value, where)):
        m = _obj(item, f"{where}[{i}]", ("containerID", "hostID", "size"))
        out.append(tuple(_int(m.get(k), f"{where}[{i}].{k}", 0 if k != "size" else 1, 0xFFFFFFFF)
                         for k in ("containerID", "hostID", "size")))
    if len(out) > 340:
        raise malformed(where, "more than 340 ranges")
    return tuple(out)  # type: ignore[arg-type]


def _device(value: Any, where: str) -> Device:
    d = _obj(value, where, ("path", "type", "major", "minor", "fileMode", "uid", "gid"))
    kind = _str(d.get("type"), f"{where}.type")
    if kind not in ("c", "b", "u", "p"):
        raise malformed(f"{where}.type", f"{kind!r} is not c, b, u or p")
    path = _str(d.get("path"), f"{where}.path")
    if not os.path.normpath(path).startswith("/dev/"):  # /dev/../etc/x is not
        raise malformed(f"{where}.path", f"{path!r} is not under /dev")
    return Device(path, "c" if kind == "u" else kind,
                  _int(d.get("major", 0), f"{where}.major", 0, 0xFFFFFFFF),
                  _int(d.get("minor", 0), f"{where}.minor", 0, 0xFFFFFFFF),
                  _int(d.get("fileMode", 0o666), f"{where}.fileMode", 0, 0o7777),
                  _int(d.get("uid", 0), f"{where}.uid", 0, 0xFFFFFFFF), _int(d.get("gid", 0), f"{where}.gid", 0,
                                                                            0xFFFFFFFF))


def _rule(value: Any, where: str) -> devcgroup.Rule:
    r = _obj(value, where, ("allow", "type", "major", "minor", "access"))
    kind = _str(r.get("type") or "a", f"{where}.type")
    if kind not in ("a", "c", "b"):
        raise malformed(f"{where}.type", f"{kind!r} is not a, c or b")
    access = _str(r.get("access") or "rwm", f"{where}.access")
    if not access or set(access) - set("rwm"):
        raise malformed(f"{where}.access", f"{access!r} is not made of r, w and m")

    def number(key: str) -> int | None:
        v = r.get(key)
        return None if v is None or v == -1 else _int(v, f"{where}.{key}", 0, 0xFFFFFFFF)

    return devcgroup.Rule(_bool(r.get("allow"), f"{where}.allow"), kind, number("major"), number("minor"), access)


def _limits(resources: dict[str, Any]) -> cgroups.Limits:
    memory = _obj(resources.get("memory"), "linux.resources.memory",
                  ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
                   "useHierarchy", "checkBeforeUpdate"))
    _refuse_set(memory, "linux.resources.memory", ("checkBeforeUpdate",))
    cpu = _obj(resources.get("cpu"), "linux.resources.cpu",
               ("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle"))
    _refuse_set(cpu, "linux.resources.cpu", ("burst", "realtimeRuntime", "realtimePeriod", "idle"))
    block = _obj(resources.get("blockIO"), "linux.resources.blockIO",
                 ("weight", "leafWeight", "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
                  "throttleReadIOPSDevice", "throttleWriteIOPSDevice"))
    _refuse_set(block, "linux.resources.blockIO", tuple(block))
    _refuse_set(resources, "linux.resources", ("hugepageLimits", "network", "rdma", "unified"))
    swappiness = memory.get("swappiness")
    if swappiness is not None:  # runc: above 100 is an error; the Go zero value of an unset uint64 pointer is none
        swappiness = _int(swappiness, "linux.resources.memory.swappiness", -1)
        if swappiness > 100 and swappiness != (1 << 64) - 1:
            raise malformed("linux.resources.memory.swappiness", f"{swappiness} is above 100")

    def positive(doc: dict[str, Any], key: str, where: str) -> int | None:
        v = doc.get(key)
        return None if v is None or v == 0 else _int(v, f"{where}.{key}", -1)

    quota = positive(cpu, "quota", "linux.resources.cpu")
    period = positive(cpu, "period", "linux.resources.cpu") or cgroups.CPU_PERIOD_US
    pids = _obj(resources.get("pids"), "linux.resources.pids", ("limit",))
    limit = positive(memory, "limit", "linux.resources.memory")
    return cgroups.Limits(
        memory=limit if limit is not None and limit > 0 else None,
        cpus=quota / period if quota is not None and quota > 0 else None,
        pids=positive(pids, "limit", "linux.resources.pids"),
        swap=positive(memory, "swap", "linux.resources.memory"),
        reservation=positive(memory, "reservation", "linux.resources.memory"),
        shares=positive(cpu, "shares", "linux.resources.cpu"), period=period if quota else None,
        swappiness=swappiness if swappiness is not None and 0 <= swappiness <= 100 else None,
        oom_kill_disable=_bool(memory.get("disableOOMKiller"), "linux.resources.memory.disableOOMKiller"),
        kernel=positive(memory, "kernel", "linux.resources.memory"),
        kernel_tcp=positive(memory, "kernelTCP", "linux.resources.memory"),
        cpuset_cpus=_str(cpu["cpus"], "linux.resources.cpu.cpus") if cpu.get("cpus") else None,
        cpuset_mems=_str(cpu["mems"], "linux.resources.cpu.mems") if cpu.get("mems") else None)


def _sysctl(value: Any, namespaces: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """runc's rule: only what the container's own namespaces hold (ipc's kernel.msg*, sem, shm*, fs.mqueue.*;
    net.* with a network namespace of its own; kernel.hostname and domainname with its own uts)."""
    have = {t for t, _ in namespaces}
    out = {}
    for key, v in _obj(value, "linux.sysctl").items():
        where = f"linux.sysctl.{key}"
        text = _str(v, where)
        ipc = key in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                      "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced") or key.startswith("fs.mqueue.")
        if (ipc and "ipc" in have) or (key.startswith("net.") and "network" in have) or \
                (key in ("kernel.hostname", "kernel.domainname") and "uts" in have):
            if "/" in key or ".." in key or not key.strip("."):
                raise malformed(where, "not a sysctl name")
            out[key] = text
        else:
            raise unsupported(where, "not namespaced in this container: it would change the host")
    return out


def _check_seccomp(doc: dict[str, Any]) -> None:
    for key in ("listenerPath", "listenerMetadata"):
        if doc.get(key):
            raise unsupported(f"linux.seccomp.{key}", "seccomp notify")
    for i, rule in enumerate(_list(doc.get("syscalls"), "linux.seccomp.syscalls")):
        if isinstance(rule, dict) and rule.get("action") == "SCMP_ACT_NOTIFY":
            raise unsupported(f"linux.seccomp.syscalls[{i}].action SCMP_ACT_NOTIFY")


def _mount(value: Any, where: str) -> Mount:
    m = _obj(value, where, ("destination", "type", "source", "options", "uidMappings", "gidMappings"))
    _refuse_set(m, where, ("uidMappings", "gidMappings"))
    dest = _str(m.get("destination"), f"{where}.destination")
    if not dest.startswith("/"):
        raise malformed(f"{where}.destination", f"{dest!r} is not absolute")
    return Mount(dest, _str(m.get("type") or "bind", f"{where}.type"), _str(m.get("source") or "", f"{where}.source"),
                 _strs(m.get("options"), f"{where}.options"))


def _capabilities(value: Any) -> dict[str, frozenset[int]]:
    caps = _obj(value, "process.capabilities", CAP_SETS)
    out = {}
    for kind in CAP_SETS:
        numbers = set()
        for name in _strs(caps.get(kind), f"process.capabilities.{kind}"):
            short = name.removeprefix("CAP_")
            if short not in CAPABILITIES:
                raise malformed(f"process.capabilities.{kind}", f"unknown capability {name!r}")
            numbers.add(CAPABILITIES.index(short))
        out[kind] = frozenset(numbers)
    return out


def _process(value: Any) -> Process:
    p = _obj(value, "process", ("terminal", "consoleSize", "cwd", "env", "args", "commandLine", "capabilities",
                                "rlimits", "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "selinuxLabel",
                                "user", "ioPriority", "scheduler", "execCPUAffinity"))
    _refuse_set(p, "process", ("commandLine", "apparmorProfile", "selinuxLabel", "ioPriority", "scheduler",
                               "execCPUAffinity"))
    user = _obj(p.get("user"), "process.user", ("uid", "gid", "umask", "additionalGids", "username"))
    _refuse_set(user, "process.user", ("username",))
    args = _strs(p.get("args"), "process.args")
    if not args:
        raise malformed("process.args", "the command is empty")
    cwd = _str(p.get("cwd"), "process.cwd")
    if not cwd.startswith("/"):
        raise malformed("process.cwd", f"{cwd!r} is not absolute")
    size = _obj(p.get("consoleSize"), "process.consoleSize", ("height", "width"))
    rlimits = []
    for i, r in enumerate(_list(p.get("rlimits"), "process.rlimits")):
        where = f"process.rlimits[{i}]"
        rl = _obj(r, where, ("type", "soft", "hard"))
        kind = _str(rl.get("type"), f"{where}.type")
        if kind not in RLIMITS:
            raise malformed(f"{where}.type", f"unknown rlimit {kind!r}")
        rlimits.append((kind, _int(rl.get("soft"), f"{where}.soft", 0), _int(rl.get("hard"), f"{where}.hard", 0)))
    umask = user.get("umask")
    oom = p.get("oomScoreAdj")
    return Process(
        args=args, env=_strs(p.get("env"), "process.env"), cwd=cwd,
        uid=_int(user.get("uid", 0), "process.user.uid", 0, 0xFFFFFFFE),
        gid=_int(user.get("gid", 0), "process.user.gid", 0, 0xFFFFFFFE),
        additional_gids=tuple(_int(g, "process.user.additionalGids", 0, 0xFFFFFFFE)
                              for g in _list(user.get("additionalGids"), "process.user.additionalGids")),
        umask=None if umask is None else _int(umask, "process.user.umask", 0, 0o777),
        terminal=_bool(p.get("terminal"), "process.terminal"),
        console_size=(_int(size.get("height", 0), "process.consoleSize.height", 0, 65535),
                      _int(size.get("width", 0), "process.consoleSize.width", 0, 65535)) if size else None,
        capabilities=_capabilities(p.get("capabilities")), rlimits=tuple(rlimits),
        no_new_privileges=_bool(p.get("noNewPrivileges"), "process.noNewPrivileges"),
        oom_score_adj=None if oom is None else _int(oom, "process.oomScoreAdj", -1000, 1000))


def process_from_file(path: str) -> Process:
    """``exec --process FILE``: a runtime-spec process object (containerd's and Docker's way to exec)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(4 << 20))
    except OSError as e:
        raise ConfigError(f"cannot read --process {path}: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--process {path} is not JSON: {e}") from None
    return _process(doc)

