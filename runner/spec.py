"""A container's spec: everything ``create`` resolved from the image and the options, typed, and saved once as an
OCI runtime-spec ``config.json`` (runtime-spec config.md, config-linux.md).

The values here are typed: the run options were parsed and checked once, by
:func:`runner.container.options.resolve`, each by the value type it becomes (:class:`Volume`, :class:`Tmpfs` and
:class:`Rlimit` here, with their ``parse``); nothing downstream sees the CLI's strings again. :meth:`Spec.to_oci`
writes the runtime-spec document and :meth:`Spec.from_oci` reads it back, so the file is the container's one
record of what to run: our executor (:mod:`runner.executor.own`) runs it, and runc or crun could run the same
file.

What the runtime-spec has no field for is kept in annotations under ``io.strata.``: the container's name and
creation time, the image it came from, its layer stack (chain IDs, base first; the overlay plan is fixed by them:
lowerdir = ``init``, then ``l/0`` ... the layers top first, upperdir = ``upper``, workdir = ``work``, mounted at
``root.path``), the user as the image or ``-u`` named it (resolved inside the container at start, from its own
``/etc/passwd``, which a runtime-spec uid cannot express), ``-i``, ``--rm``, ``--init``, ``--privileged`` and the
network (``--network`` and its options; the network namespace itself is ``linux.namespaces``: absent for ``host``,
and its ``path`` is given at start, see :mod:`runner.container.network`).

How our executor reads the standard parts (see :mod:`runner.isolation.rootfs`): ``/proc``, ``/sys``, ``/sys/fs/cgroup``,
``/dev`` and its ``pts``, ``shm`` and ``mqueue``, the three network files and ``/dev/init`` are made by its own
hardened code (fd-relative targets, ``nodev`` everywhere writable); the entries here say what runc would mount for
them. The other mounts (``-v``, ``--tmpfs``) are read back as typed values and mounted in the order given;
``linux.devices``, ``maskedPaths``, ``readonlyPaths``, ``namespaces``, ``rlimits``, the resources, the capabilities'
bounding set and ``seccomp`` are taken as written; the device allow list (``resources.devices``) is derived from
``linux.devices`` and ``--privileged`` (:meth:`Spec.device_rules`).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runner import linux
from runner.isolation import cgroups, devcgroup, idmap, seccomp, seccomp_default, security
from runner.logs.writer import LogConfig
from runner.net.model import NetworkConfig
from shared.errors import integrity, usage
from shared.userns import IdBlock

OCI_VERSION = "1.0.2"  # what runc 1.1 and crun 1.8 (Debian 12's) implement
ROOT_PATH = "merged"  # root.path, relative to the container's directory (the bundle)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH = "/dev/init"
TINI = "/usr/bin/tini-static"

# annotations: what the runtime-spec has no field for
A_ID = "io.strata.container.id"
A_NAME = "io.strata.container.name"
A_CREATED = "io.strata.container.created"
A_IMAGE = "io.strata.image.name"
A_IMAGE_ID = "io.strata.image.id"
A_IMAGE_TYPED = "io.strata.image.typed"  # the image as the user typed it (ps's IMAGE, inspect's Config.Image)
A_LAYERS = "io.strata.rootfs.layers"  # JSON list of chain IDs, base first
A_USER = "io.strata.process.user"  # user[:group] as given; resolved inside the container at start
A_INTERACTIVE = "io.strata.process.interactive"
A_AUTO_REMOVE = "io.strata.auto-remove"
A_INIT = "io.strata.init"
A_PRIVILEGED = "io.strata.privileged"
A_ENTRYPOINT = "io.strata.config.entrypoint"  # JSON list: the entrypoint part of the command (inspect's Config)
A_RUNTIME = "io.strata.runtime"  # the OCI runtime that starts it (absolute path); absent: our executor
A_LOG = "io.strata.log-config"  # JSON of inspect's HostConfig.LogConfig; absent: the defaults
A_NETWORK = "io.strata.network"  # JSON of runner.net.model.NetworkConfig
A_RESTART = "io.strata.restart-policy"  # --restart as Docker writes it (on-failure:3); absent: no

NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
_NAMESPACE_FLAGS = {"mount": linux.CLONE_NEWNS, "uts": linux.CLONE_NEWUTS, "ipc": linux.CLONE_NEWIPC,
                    "network": linux.CLONE_NEWNET, "cgroup": linux.CLONE_NEWCGROUP, "pid": linux.CLONE_NEWPID}
# Docker's defaults for what the container sees in /dev (runtime-spec config-linux.md "Default Devices")
DEFAULT_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
                   "tty": (5, 0)}
NETWORK_FILES = ("hosts", "hostname", "resolv.conf")
# destinations our executor mounts with its own code (module doc)
STANDARD_DESTINATIONS = frozenset({"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
                                   INIT_PATH, *(f"/etc/{n}" for n in NETWORK_FILES)})
_FLAG_OPTIONS = {"ro": linux.MS_RDONLY, "noexec": linux.MS_NOEXEC, "nosuid": linux.MS_NOSUID, "nodev": linux.MS_NODEV}
_NEGATION = {"ro": "rw", "noexec": "exec", "nosuid": "suid", "nodev": "dev"}


@dataclass(frozen=True)
class Mount:
    """One runtime-spec mount."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()

    def to_oci(self) -> dict[str, Any]:
        return {"destination": self.destination, "type": self.type, "source": self.source,
                "options": list(self.options)}


@dataclass(frozen=True)
class Volume:
    """A ``-v`` bind mount: host SOURCE at TARGET inside, read-only or not."""

    source: str
    target: str
    read_only: bool

    @classmethod
    def parse(cls, text: str) -> Volume:
        """``-v SRC:DST[:ro|rw]``: SRC an absolute host path (named volumes need a volume store we do not have)."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in
                                                                          ("ro", "rw")):
            raise usage(f"invalid volume {text!r}: expected /HOST/PATH:/CONTAINER/PATH[:ro]")
        if not parts[0].startswith("/"):
            raise usage(f"invalid volume {text!r}: named volumes are not supported; give an absolute host path")
        if not parts[1].startswith("/") or parts[1] == "/":
            raise usage(f"invalid volume {text!r}: the destination must be an absolute path other than /")
        return cls(parts[0], parts[1], len(parts) == 3 and parts[2] == "ro")

    def mount(self, privileged: bool) -> Mount:
        """runc's bind: ``rbind``, then the flags on the top mount and, with the recursive options runc and crun
        take (``rro``, ``rnodev``, ``rnosuid``: mount_setattr), on every submount too: read-only if ``:ro``,
        nodev and nosuid unless --privileged, as our executor mounts it."""
        flags = ("ro", "rro") if self.read_only else ("rw",)
        return Mount(self.target, "bind", self.source,
                     ("rbind", *flags, *(() if privileged else ("nodev", "rnodev", "nosuid", "rnosuid"))))


@dataclass(frozen=True)
class Tmpfs:
    """A ``--tmpfs`` mount: TARGET, its mount flags and data (size, mode...)."""

    target: str
    flags: int
    data: str

    @classmethod
    def parse(cls, text: str) -> Tmpfs:
        """``--tmpfs DST[:OPTS]``, Docker's default options noexec,nosuid,nodev; OPTS may add size=, mode=, ..."""
        target, _, opts = text.partition(":")
        if not target.startswith("/") or target == "/":
            raise usage(f"invalid --tmpfs {text!r}: the destination must be an absolute path other than /")
        return cls.from_options(target, opts.split(","), "--tmpfs")

    @classmethod
    def from_options(cls, target: str, options: Sequence[str], where: str) -> Tmpfs:
        opposite = {v: k for k, v in _NEGATION.items()}
        chosen = {"noexec", "nosuid", "nodev"}
        data = []
        for opt in filter(None, options):
            if opt in _FLAG_OPTIONS:
                chosen.add(opt)
            elif opt in opposite:
                chosen.discard(opposite[opt])
            elif "=" in opt and opt.split("=")[0] in ("size", "mode", "uid", "gid", "nr_inodes"):
                data.append(opt)
            else:
                raise usage(f"invalid {where} option {opt!r}")
        return cls(target, sum(_FLAG_OPTIONS[c] for c in chosen), ",".join(data))

    def mount(self) -> Mount:
        """Every flag spelled out both ways (``exec`` as well as ``noexec``): reading it back must not fall back
        to Docker's defaults for a flag the user turned off."""
        names = [n if self.flags & flag else _NEGATION[n] for n, flag in _FLAG_OPTIONS.items()]
        return Mount(self.target, "tmpfs", "tmpfs", (*names, *filter(None, self.data.split(","))))


@dataclass(frozen=True)
class Device:
    """A device node the container's /dev gets (``linux.devices``)."""

    path: str
    major: int
    minor: int
    file_mode: int = 0o666
    type: str = "c"

    def to_oci(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "major": self.major, "minor": self.minor,
                "fileMode": self.file_mode, "uid": 0, "gid": 0}


ULIMITS = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack")  # the names Docker's --ulimit takes (go-units)


@dataclass(frozen=True)
class Rlimit:
    """A ``--ulimit`` (or the runner's own): the RLIMIT_* name and its soft and hard values."""

    type: str  # RLIMIT_NOFILE
    soft: int
    hard: int

    @classmethod
    def parse(cls, text: str) -> Rlimit:
        """``--ulimit NAME=SOFT[:HARD]`` as Docker's (go-units ParseUlimit): HARD defaults to SOFT, -1 is
        unlimited, and the soft limit may not exceed the hard one."""
        name, sep, values = text.partition("=")
        if not sep or not values:
            raise usage(f"invalid --ulimit {text!r}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
        if name not in ULIMITS:
            raise usage(f"invalid --ulimit {text!r}: invalid ulimit type: {name}")
        soft_text, _, hard_text = values.partition(":")
        try:
            soft, hard = int(soft_text), int(hard_text or soft_text)
        except ValueError:
            raise usage(f"invalid --ulimit {text!r}: the limits must be numbers") from None
        if min(soft, hard) < -1:
            raise usage(f"invalid --ulimit {text!r}: a limit is a number of 0 or more, or -1 (unlimited)")
        if hard != -1 and (soft == -1 or soft > hard):
            raise usage(f"invalid --ulimit {text!r}: ulimit soft limit must be less than or equal to hard limit: "
                        f"{soft} > {hard}")
        return cls(f"RLIMIT_{name.upper()}", _unlimited_or(soft), _unlimited_or(hard))


def _unlimited_or(value: int) -> int:
    return (1 << 64) - 1 if value == -1 else value


def _unlimited(value: int) -> int:
    return (1 << 64) - 1 if value == resource.RLIM_INFINITY else value


@dataclass(frozen=True)
class RestartPolicy:
    """``--restart``: what the monitor does when PID 1 exits (:mod:`runner.container.monitor`), and what ``start
    --all-restart`` brings back after a reboot. Docker's restart manager, as pure logic: its policies, its errors
    for a bad one, its decision (:meth:`restarts`) and its back-off (:meth:`delay`)."""

    name: str = "no"  # no | on-failure | always | unless-stopped
    max_retries: int = 0  # on-failure's :N; 0 is no limit, as Docker's MaximumRetryCount

    BACKOFF_FIRST = 0.1  # seconds before the first restart; doubled at each, up to BACKOFF_MAX
    BACKOFF_MAX = 60.0
    BACKOFF_RESET = 10.0  # a run at least this long starts the back-off again from BACKOFF_FIRST

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """Docker's ParseRestartPolicy and ValidateRestartPolicy, with their words."""
        name, colon, count = text.partition(":")
        if colon and not name:
            raise usage("invalid restart policy format: no policy provided before colon")
        try:
            retries = int(count) if count else 0
        except ValueError:
            raise usage("invalid restart policy format: maximum retry count must be an integer") from None
        if name in ("", "no", "always", "unless-stopped"):
            if retries:
                raise usage("invalid restart policy: maximum retry count can only be used with 'on-failure'" +
                            (" and cannot be negative" if retries < 0 else ""))
        elif name == "on-failure":
            if retries < 0:
                raise usage("invalid restart policy: maximum retry count cannot be negative")
        else:
            raise usage(f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
                        "'on-failure', or 'unless-stopped'")
        return cls(name or "no", retries)

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    def restarts(self, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
        """Docker's ShouldRestart: after an exit with ``exit_code``, restarted ``restart_count`` times so far;
        ``stopped_by_user`` (stop or kill) keeps an unless-stopped container down. (A stop also cancels the
        restart of the exit it causes, for every policy: the monitor checks that before asking this.)"""
        if self.name == "always":
            return True
        if self.name == "unless-stopped":
            return not stopped_by_user
        if self.name == "on-failure":
            return exit_code != 0 and (self.max_retries == 0 or restart_count < self.max_retries)
        return False

    @classmethod
    def delay(cls, previous: float, ran_for: float) -> float:
        """The wait before the next restart, after one of ``previous`` seconds (0: none yet) and a run of
        ``ran_for`` seconds: Docker's 100 ms, doubled each time up to a minute, from 100 ms again after a run of
        10 s or more."""
        if ran_for >= cls.BACKOFF_RESET or previous <= 0:
            return cls.BACKOFF_FIRST
        return min(previous * 2, cls.BACKOFF_MAX)


@dataclass(frozen=True)
class Spec:
    """The container, resolved: what runs (process), on what (the layer stack, mounts), with what (privileges,
    limits, namespaces). Frozen: it is made once by ``create`` and only read after."""

    id: str
    name: str
    image: str  # the reference it was created from
    image_id: str  # config digest
    chain_ids: tuple[str, ...]  # base first
    args: tuple[str, ...]  # the command as exec'd (behind /dev/init -- with --init)
    env: tuple[str, ...]
    cwd: str
    user: str  # user[:group] as given (or the image's USER), resolved at start
    hostname: str
    bundle: str  # the container's directory: root.path and the network files are in it
    terminal: bool = False
    interactive: bool = False
    auto_remove: bool = False
    init: bool = False
    created: float = field(default_factory=time.time)
    privileges: security.Privileges = field(default_factory=security.Privileges)
    seccomp: dict[str, Any] | None = None  # the runtime-spec LinuxSeccomp object; None: no filter
    limits: cgroups.Limits = field(default_factory=cgroups.Limits)
    read_only: bool = False
    volumes: tuple[Volume, ...] = ()
    tmpfs: tuple[Tmpfs, ...] = ()
    rlimits: tuple[Rlimit, ...] = ()
    namespaces: tuple[str, ...] = NAMESPACES
    devices: tuple[Device, ...] = tuple(Device(f"/dev/{n}", *mm) for n, mm in DEFAULT_DEVICES.items())
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    runtime: str = ""  # an OCI runtime binary that starts this spec (runner/executor/runtime.py); "": our executor
    entrypoint: tuple[str, ...] = ()  # the first part of argv that was the entrypoint; the rest was Cmd
    # --network and friends. The namespace is in ``namespaces`` (absent for host); a bridge or user network's
    # namespace is made and attached by the start path, which then joins it (runner/container/network.py)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    log: LogConfig = field(default_factory=LogConfig)  # --log-driver, --log-opt
    restart: RestartPolicy = field(default_factory=RestartPolicy)  # --restart
    # --userns=auto: the container's own block of ids (runner/isolation/idmap.py); None: the runner's namespace
    id_block: IdBlock | None = None
    typed_image: str = ""  # the image as typed (``busybox``), which Docker shows; "": as ``image`` names it

    # -- views the executor and the commands use ------------------------------------------------------------

    @property
    def argv(self) -> tuple[str, ...]:
        """The command the user asked for (without --init's ``/dev/init --``)."""
        return self.args[2:] if self.init and self.args[:2] == (INIT_PATH, "--") else self.args

    @property
    def privileged(self) -> bool:
        return self.privileges.privileged

    @property
    def capabilities(self) -> frozenset[str]:
        return self.privileges.capabilities

    @property
    def no_new_privileges(self) -> bool:
        return self.privileges.no_new_privileges

    def device_rules(self) -> tuple[devcgroup.Rule, ...]:
        """The devices cgroup's allow list (``linux.resources.devices``): Docker's, with the spec's devices; all
        for --privileged. Derived, never stored apart, so it always matches ``linux.devices``."""
        return devcgroup.default_rules(self.privileged, ((d.type, d.major, d.minor) for d in self.devices))

    def unshare_flags(self) -> int:
        """The namespaces PID 1 makes for itself (pid is made by the parent: it applies to children only)."""
        return sum(_NAMESPACE_FLAGS[n] for n in self.namespaces if n != "pid")

    # -- the runtime-spec document --------------------------------------------------------------------------

    def mounts(self) -> list[Mount]:
        """What runc would mount, in order: the standard filesystems (Docker's set and options), the network
        files, --init's tini, then -v and --tmpfs as given."""
        nodev = () if self.privileged else ("nodev",)
        ro = () if self.privileged else ("ro",)
        out = [
            Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
            Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
            Mount("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                                                    "gid=5")),
            Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", *ro)),
            Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", *ro)),
            Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
            Mount("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
        ]
        out += [Mount(f"/etc/{n}", "bind", os.path.join(self.bundle, n), ("rbind", "rprivate", *nodev))
                for n in NETWORK_FILES]
        if self.init:
            out.append(Mount(INIT_PATH, "bind", TINI, ("bind", "ro")))
        out += [v.mount(self.privileged) for v in self.volumes]
        out += [t.mount() for t in self.tmpfs]
        return out

    def to_oci(self) -> dict[str, Any]:
        caps = sorted(f"CAP_{c}" for c in self.capabilities)
        numeric = _numeric_user(self.user)
        process: dict[str, Any] = {
            "terminal": self.terminal,
            "user": {"uid": numeric[0], "gid": numeric[1]} if numeric else {"uid": 0, "gid": 0},
            "args": list(self.args),
            "env": list(self.env),
            "cwd": self.cwd,
            # root holds the set; another uid holds none (the executor decides once it has resolved the user)
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [],
                             "ambient": []},
            "rlimits": [{"type": r.type, "soft": r.soft, "hard": r.hard} for r in self.rlimits],
            "noNewPrivileges": self.no_new_privileges,
        }
        # the devices cgroup (v1) or BPF device program (v2): runc and crun apply it, and so does our executor
        resources: dict[str, Any] = {"devices": [r.to_oci() for r in self.device_rules()]}
        memory = {k: v for k, v in (("limit", self.limits.memory), ("swap", self.limits.swap),
                                    ("reservation", self.limits.reservation)) if v is not None}
        if memory:
            resources["memory"] = memory
        cpu: dict[str, int] = {}
        if self.limits.cpus is not None:
            cpu = {"quota": round(self.limits.cpus * cgroups.CPU_PERIOD_US), "period": cgroups.CPU_PERIOD_US}
        if self.limits.shares is not None:
            cpu["shares"] = self.limits.shares
        if cpu:
            resources["cpu"] = cpu
        if self.limits.pids is not None:
            resources["pids"] = {"limit": self.limits.pids}
        linux_doc: dict[str, Any] = {
            "namespaces": [{"type": n} for n in self.namespaces] + ([{"type": "user"}] if self.id_block else []),
            "devices": [d.to_oci() for d in self.devices],
            "resources": resources,
            "cgroupsPath": cgroups.spec_path(self.id),
            "maskedPaths": list(self.masked_paths),
            "readonlyPaths": list(self.readonly_paths),
        }
        if self.seccomp is not None:
            linux_doc["seccomp"] = self.seccomp
        if self.id_block is not None:
            linux_doc.update(idmap.to_oci(self.id_block))
        annotations = {
            A_ID: self.id, A_NAME: self.name, A_CREATED: repr(self.created), A_IMAGE: self.image,
            A_IMAGE_ID: self.image_id, A_LAYERS: json.dumps(list(self.chain_ids)), A_USER: self.user,
            A_INTERACTIVE: _flag(self.interactive), A_AUTO_REMOVE: _flag(self.auto_remove), A_INIT: _flag(self.init),
            A_PRIVILEGED: _flag(self.privileged),
        }
        if self.runtime:
            annotations[A_RUNTIME] = self.runtime
        if self.entrypoint:
            annotations[A_ENTRYPOINT] = json.dumps(list(self.entrypoint))
        annotations[A_NETWORK] = json.dumps(self.network.to_json(), sort_keys=True)
        annotations[A_LOG] = json.dumps(self.log.to_json())
        if self.typed_image:
            annotations[A_IMAGE_TYPED] = self.typed_image
        annotations |= {A_RESTART: str(self.restart)} if self.restart.name != "no" else {}
        return {"ociVersion": OCI_VERSION, "process": process,
                "root": {"path": ROOT_PATH, "readonly": self.read_only}, "hostname": self.hostname,
                "mounts": [m.to_oci() for m in self.mounts()], "linux": linux_doc, "annotations": annotations}

    @classmethod
    def from_oci(cls, doc: Any) -> Spec:
        """Read a document :meth:`to_oci` wrote. A malformed one is an integrity error naming what is wrong."""
        try:
            return cls._from_oci(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise integrity(f"container config.json is malformed: {type(e).__name__}: {e}") from None

    @classmethod
    def _from_oci(cls, doc: dict[str, Any]) -> Spec:
        notes: dict[str, str] = doc["annotations"]
        process, linux_doc = doc["process"], doc["linux"]
        privileged = notes[A_PRIVILEGED] == "true"
        caps = frozenset(c.removeprefix("CAP_") for c in process["capabilities"]["bounding"])
        resources = linux_doc.get("resources") or {}
        cpu = resources.get("cpu") or {}
        memory = resources.get("memory") or {}
        limits = cgroups.Limits(
            memory.get("limit"),
            cpu["quota"] / cpu["period"] if "quota" in cpu else None,
            (resources.get("pids") or {}).get("limit"), memory.get("swap"), memory.get("reservation"),
            cpu.get("shares"))
        volumes, tmpfs = [], []
        for m in doc.get("mounts") or ():
            if m["destination"] in STANDARD_DESTINATIONS:
                continue
            options = tuple(m.get("options") or ())
            if m["type"] == "bind":
                volumes.append(Volume(m["source"], m["destination"], "ro" in options))
            elif m["type"] == "tmpfs":
                tmpfs.append(Tmpfs.from_options(m["destination"], options, f"mount {m['destination']}"))
            else:
                raise ValueError(f"mount {m['destination']}: type {m['type']!r} is not one the runner makes")
        seccomp_doc = linux_doc.get("seccomp")
        return cls(
            id=notes[A_ID], name=notes[A_NAME], image=notes[A_IMAGE], image_id=notes[A_IMAGE_ID],
            chain_ids=tuple(json.loads(notes[A_LAYERS])), args=tuple(process["args"]), env=tuple(process["env"]),
            cwd=process["cwd"], user=notes[A_USER], hostname=doc["hostname"], bundle="",
            terminal=bool(process.get("terminal")), interactive=notes[A_INTERACTIVE] == "true",
            auto_remove=notes[A_AUTO_REMOVE] == "true", init=notes[A_INIT] == "true",
            created=float(notes[A_CREATED]),
            privileges=security.Privileges(caps, bool(process.get("noNewPrivileges")), privileged,
                                           seccomp_text(seccomp_doc)),
            seccomp=seccomp_doc, limits=limits, read_only=bool(doc["root"].get("readonly")),
            volumes=tuple(volumes), tmpfs=tuple(tmpfs),
            rlimits=tuple(Rlimit(r["type"], r["soft"], r["hard"]) for r in process.get("rlimits") or ()),
            namespaces=tuple(n["type"] for n in linux_doc["namespaces"] if n["type"] != "user"),
            devices=tuple(Device(d["path"], d["major"], d["minor"], d.get("fileMode", 0o666), d["type"])
                          for d in linux_doc.get("devices") or ()),
            masked_paths=tuple(linux_doc.get("maskedPaths") or ()),
            readonly_paths=tuple(linux_doc.get("readonlyPaths") or ()), runtime=notes.get(A_RUNTIME, ""),
            entrypoint=tuple(json.loads(notes.get(A_ENTRYPOINT, "[]"))),
            network=NetworkConfig.from_json(json.loads(notes[A_NETWORK])),
            log=LogConfig.from_json(json.loads(notes[A_LOG])), id_block=idmap.from_oci(linux_doc),
            typed_image=notes.get(A_IMAGE_TYPED, ""), restart=RestartPolicy.parse(notes.get(A_RESTART, "no")))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _numeric_user(text: str) -> tuple[int, int] | None:
    """``UID[:GID]`` in numbers (the gid defaults to the uid's primary group, unknown here: 0 then, as runc's
    ``-u UID`` with no passwd entry); None for a name, which only the image's /etc/passwd can resolve."""
    user, _, group = text.partition(":")
    if not user:
        return 0, 0
    if not user.isdigit() or (group and not group.isdigit()):
        return None
    return int(user), int(group or 0)


def own_rlimits() -> tuple[Rlimit, ...]:
    """The open-files limit the container gets: the runner's own, which it would inherit anyway; written down so
    that whoever starts the container later (or runc) gives it the same."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (Rlimit("RLIMIT_NOFILE", _unlimited(soft), _unlimited(hard)),)


def seccomp_text(doc: dict[str, Any] | None) -> str:
    """Privileges.seccomp for a spec's LinuxSeccomp object: "unconfined", or the profile's JSON (canonical, so that
    the value read back from config.json equals the one it was made from)."""
    return security.SECCOMP_UNCONFINED if doc is None else json.dumps(doc, sort_keys=True)


def seccomp_for(privileges: security.Privileges) -> dict[str, Any] | None:
    """The LinuxSeccomp object for these privileges: Docker's rule, the default profile unless unconfined or
    --privileged; a custom profile's text was read and checked by Privileges.from_options."""
    if privileges.privileged or privileges.seccomp == security.SECCOMP_UNCONFINED:
        return None
    profile = seccomp_default.PROFILE if privileges.seccomp is None else \
        seccomp.Profile.from_json(privileges.seccomp)
    return seccomp.to_oci(profile, privileges.capabilities)
