"""A container's cgroup, with memory, cpu and pids limits and the device allow list (:mod:`runner.isolation.devcgroup`),
on cgroup v1 and v2 behind one small interface.

v1 (and hybrid machines such as these, where the v2 hierarchy beside v1 holds no controller we need): one group
per controller, nested under the runner's own group in that controller, so a container stays inside whatever
limits its runner is under. v2: ``/sys/fs/cgroup/strata/ID``, since a group holding processes (the runner's) may
not hand controllers to children. The container's PID 1 is moved in before it unshares its cgroup namespace, so
the group is the root of what it sees; the group is removed once the container's processes are gone.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.isolation import devcgroup
from shared.errors import Kind, StrataError, usage
from shared.userns import rootless

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cpuacct and blkio hold no limit: a group of the container's own there is what ``runner stats`` reads (CPU time,
# block I/O), as Docker's containers have one in every hierarchy
V1_CONTROLLERS = ("memory", "cpu", "pids", "devices", "cpuacct", "blkio")
CPU_PERIOD_US = 100_000  # the kernel's default CFS period, as Docker uses


MIN_MEMORY = 6 * 1024 * 1024  # Docker's linuxMinMemory: below it a container cannot even start its runtime
MIN_CPUS = 0.01  # the kernel's smallest CFS quota (1 ms) in the 100 ms period Docker uses


def host_cpus() -> int:
    """The CPUs this process may run on (sched_getaffinity, as Go's runtime.NumCPU, which Docker's check uses)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Limits:
    """The resource limits a container asks for (--memory, --cpus, --pids-limit...); None: no limit."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # CPUs' worth of time per period
    pids: int | None = None
    swap: int | None = None  # --memory-swap: memory and swap together, bytes; -1: swap unlimited
    reservation: int | None = None  # --memory-reservation: the soft limit, bytes
    shares: int | None = None  # --cpu-shares: the relative weight (v1 cpu.shares; 1024 is the default)
    period: int | None = None  # the CFS period in microseconds that ``cpus`` is a share of; None: CPU_PERIOD_US
    # what only runner-oci's callers ask for (runtime-spec linux.resources); None/False: the kernel's default
    swappiness: int | None = None
    oom_kill_disable: bool = False
    kernel: int | None = None  # v1 memory.kmem.limit_in_bytes
    kernel_tcp: int | None = None  # v1 memory.kmem.tcp.limit_in_bytes
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None

    @classmethod
    def from_options(cls, memory: str | None, cpus: float | None, pids: int | None,
                     available_cpus: int | None = None, swap: str | None = None,
                     reservation: str | None = None, shares: int | None = None) -> Limits:
        """The limit options checked as Docker's daemon checks them (verifyPlatformContainerResources), so that
        a value Docker refuses fails ``create`` with Docker's words, not a cgroup write at ``start`` (or worse, is
        taken). 0 means no limit for each, as in Docker, and so does a negative ``--pids-limit``."""
        mem = cls.parse_memory(memory) if memory is not None else None
        total = None
        if swap is not None and swap.strip() != "-1":
            total = parse_size(swap, "--memory-swap")
        elif swap is not None:
            total = -1
        soft = parse_size(reservation, "--memory-reservation") if reservation is not None else None
        if total is not None and mem is None:
            raise usage("invalid --memory-swap: you should always set the memory limit when using memoryswap "
                        "limit, see usage")
        if total is not None and mem is not None and 0 < total < mem:
            raise usage(f"invalid --memory-swap {swap}: minimum memoryswap limit should be larger than memory "
                        "limit, see usage")
        if soft is not None and soft < MIN_MEMORY:
            raise usage(f"invalid --memory-reservation {reservation}: minimum memory reservation allowed is 6MB")
        if soft is not None and mem is not None and mem < soft:
            raise usage(f"invalid --memory-reservation {reservation}: minimum memory limit can not be less than "
                        "memory reservation limit, see usage")
        if shares is not None and shares < 0:
            raise usage(f"invalid --cpu-shares {shares}: a weight of 0 (the default, 1024) or more")
        return cls(mem, check_cpus(cpus, host_cpus() if available_cpus is None else available_cpus),
                   pids if pids is not None and pids > 0 else None, total, soft, shares or None)

    @staticmethod
    def parse_memory(text: str) -> int | None:
        """``--memory``: a size (:func:`parse_size`); 0 is no limit; anything else below 6MB is refused as
        Docker refuses it. Docker does not compare it with the host's memory, nor do we."""
        value = parse_size(text, "--memory")
        if value is None:
            return None
        if value < MIN_MEMORY:
            raise usage(f"invalid --memory {text!r}: minimum memory limit allowed is 6MB")
        return value


def parse_size(text: str, option: str) -> int | None:
    """Docker's sizes (go-units RAMInBytes): a number with an optional unit b, k, m, g, t or p (powers of 1024,
    case-insensitive, an optional i and b after it: 512m, 1GiB, 8192 kb). 0 is None: no limit."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?) ?([bkmgtp])?i?b?", text.strip().lower())
    if not match:
        raise usage(f"invalid {option} {text!r}: invalid size: use a number with an optional unit "
                    "b, k, m, g, t or p")
    value = int(float(match[1]) * 1024 ** "bkmgtp".index(match[2] or "b"))
    return value or None


def check_cpus(cpus: float | None, available: int) -> float | None:
    """``--cpus``: 0 (or none) is no limit; otherwise from 0.01 to the CPUs there are, in Docker's words."""
    if cpus is None or cpus == 0:
        return None
    if not math.isfinite(cpus) or cpus < MIN_CPUS or cpus > available:
        raise usage(f"invalid --cpus {cpus:g}: range of CPUs is from 0.01 to {available}.00, as there are only "
                    f"{available} CPUs available")
    return cpus


@dataclass(frozen=True)
class Hierarchy:
    """A cgroup hierarchy as the container sees it under /sys/fs/cgroup: ``name`` is the host's directory name for
    it ("" for the v2 root), ``options`` the v1 mount options naming its controllers, ``aliases`` the symlinks
    Docker adds when several controllers share one hierarchy (cpu -> cpu,cpuacct)."""

    name: str
    fstype: str
    options: str | None = None
    aliases: tuple[str, ...] = ()


def _v1_hierarchies() -> list[tuple[Path, tuple[str, ...]]]:
    """(mount point, controllers and name= options) of every v1 hierarchy, from mountinfo."""
    found: list[tuple[Path, tuple[str, ...]]] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if rfields and rfields[0] == "cgroup":
                options = tuple(o for o in rfields[2].split(",") if o not in ("rw", "ro"))
                found.append((Path(fields[4]), options))
    return found


def _v1_mounts() -> dict[str, Path]:
    """controller -> mount point (a mount may carry several: cpu,cpuacct)."""
    found: dict[str, Path] = {}
    for mount_point, options in _v1_hierarchies():
        for option in options:
            if not option.startswith("name="):  # the freezer too: runner-oci's groups have one (at_path)
                found.setdefault(option, mount_point)
    return found


def v1_mount(controller: str) -> Path | None:
    """Where the v1 hierarchy holding CONTROLLER (any, freezer included) is mounted; None when none is."""
    return next((mount for mount, options in _v1_hierarchies() if controller in options), None)


def v1_paths(pid: int | str = "self") -> dict[str, str]:
    """controller -> the v1 group PID is in, from /proc/PID/cgroup (empty when the process is gone)."""
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    out[controller] = path
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _read_int(path: Path) -> int:
    """A cgroup file's number (0 when it cannot be read: the caller's order then is the fresh group's)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise StrataError(f"cannot set {path}: {e.strerror}", Kind.SYSTEM) from None


class Cgroup:
    """The container's group(s): ``dirs`` are where to write; subclasses know the file names."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    def create(self, limits: Limits, devices: Sequence[devcgroup.Rule] = devcgroup.ALLOW_ALL) -> None:
        """Make the group(s) with LIMITS and the device allow list DEVICES (before any process is in them)."""
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)  # a runner-oci caller's path may be nested: /docker/ID
        try:
            self.apply(limits)
            self.allow_devices(devices)
        except BaseException:
            self.remove()
            raise

    def apply(self, limits: Limits) -> None:
        raise NotImplementedError

    def allow_devices(self, rules: Sequence[devcgroup.Rule]) -> None:
        raise NotImplementedError

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        return sorted(pids)

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir each group; processes that are exiting may hold it for a moment."""
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise StrataError(f"cannot remove cgroup {d}: {e.strerror}", Kind.SYSTEM) from None
                    time.sleep(0.02)

    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs)

    def file(self, controller: str, name: str) -> Path | None:
        """Where the group's NAME file of CONTROLLER is (None: the container has no group there)."""
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in the group since it was made (see :func:`oom_kills`)."""
        return _oom_count(self.file("memory", "memory.events" if isinstance(self, CgroupV2) else
                                    "memory.oom_control"))

    def hierarchies(self) -> list[Hierarchy]:
        """What the container mounts at /sys/fs/cgroup (read-only, in its cgroup namespace, where its own group is
        the root): so ``memory.max`` or ``memory.limit_in_bytes`` there is its own limit, as JVMs, Go and Node
        expect."""
        raise NotImplementedError


class CgroupV1(Cgroup):
    def __init__(self, name: str, controllers: Sequence[str] = V1_CONTROLLERS) -> None:
        """NAME relative to the runner's own group in each hierarchy; an absolute NAME (a runtime-spec
        ``cgroupsPath`` of ``runner-oci``'s caller) from each hierarchy's root."""
        mounts, own = _v1_mounts(), v1_paths()
        self.by_controller = {c: mounts[c] / ("" if name.startswith("/") else own.get(c, "/").lstrip("/")) /
                              name.lstrip("/") for c in controllers if c in mounts}
        super().__init__(list(dict.fromkeys(self.by_controller.values())))  # cpu,cpuacct may be one mount

    def file(self, controller: str, name: str) -> Path | None:
        d = self.by_controller.get(controller)
        return None if d is None else d / name

    def hierarchies(self) -> list[Hierarchy]:
        """The hierarchies the container has a group of its own in (memory, cpu, pids): mounting the others would
        show the runner's groups, where the container was never put."""
        out = []
        for mount_point, options in _v1_hierarchies():
            if any(c in self.by_controller for c in options):
                controllers = [o for o in options if not o.startswith("name=")]
                aliases = tuple(c for c in controllers if c != mount_point.name) if len(controllers) > 1 else ()
                out.append(Hierarchy(mount_point.name, "cgroup", ",".join(options), aliases))
        return out

    def apply(self, limits: Limits) -> None:
        def need(controller: str) -> Path:
            if controller not in self.by_controller:
                raise StrataError(f"the {controller} cgroup controller is not mounted", Kind.SYSTEM)
            return self.by_controller[controller]

        # the kernel wants memsw >= limit at every write: a limit raised above the present memsw (runner-oci's
        # update: docker update --memory 256m --memory-swap 512m after 64m/128m) goes after the memsw, as runc's
        writes = [("memory.limit_in_bytes", limits.memory), ("memory.memsw.limit_in_bytes", limits.swap)]
        if limits.memory is not None and limits.swap is not None and limits.memory > _read_int(
                need("memory") / "memory.memsw.limit_in_bytes"):
            writes.reverse()
        for name, value in writes:
            if value is not None:
                _write(need("memory") / name, str(value))
        if limits.reservation is not None:
            _write(need("memory") / "memory.soft_limit_in_bytes", str(limits.reservation))
        if limits.cpus is not None:
            d, period = need("cpu"), limits.period or CPU_PERIOD_US
            _write(d / "cpu.cfs_period_us", str(period))
            _write(d / "cpu.cfs_quota_us", str(round(limits.cpus * period)))
        if limits.shares is not None:  # the kernel takes 2 to 262144 and clamps the rest, as under Docker
            _write(need("cpu") / "cpu.shares", str(limits.shares))
        if limits.pids is not None:
            _write(need("pids") / "pids.max", str(limits.pids) if limits.pids > 0 else "max")
        self._apply_more(limits, need)

    def _apply_more(self, limits: Limits, need: Callable[[str], Path]) -> None:
        """What only runner-oci's callers set: swappiness, the OOM killer, kernel memory, the cpuset."""
        memory = {"memory.swappiness": limits.swappiness, "memory.kmem.limit_in_bytes": limits.kernel,
                  "memory.kmem.tcp.limit_in_bytes": limits.kernel_tcp,
                  "memory.oom_control": 1 if limits.oom_kill_disable else None}
        for name, value in memory.items():
            if value is not None:
                _write(need("memory") / name, str(value))
        for name, text in (("cpuset.cpus", limits.cpuset_cpus), ("cpuset.mems", limits.cpuset_mems)):
            if text is not None:
                _write(need("cpuset") / name, text)

    def create(self, limits: Limits, devices: Sequence[devcgroup.Rule] = devcgroup.ALLOW_ALL) -> None:
        """A new cpuset group has no CPUs or memory nodes, and takes no process until it has: each one made here
        (the group and any parent made for it) gets its parent's, as runc's do."""
        cpuset = self.by_controller.get("cpuset")
        fresh = [] if cpuset is None else [d for d in (cpuset, *cpuset.parents) if not d.exists()][::-1]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        try:
            for d in fresh:
                for name in ("cpuset.cpus", "cpuset.mems"):
                    if not (d / name).read_text().strip():
                        _write(d / name, (d.parent / name).read_text().strip())
        except BaseException:
            self.remove()
            raise
        super().create(limits, devices)

    def allow_devices(self, rules: Sequence[devcgroup.Rule]) -> None:
        """devices.deny / devices.allow, one rule per write, into the fresh group (its parent's list is the
        most it can have: a runner in a restricted group cannot widen it)."""
        try:
            writes = devcgroup.v1_writes(rules)
        except ValueError as e:
            raise StrataError(f"cannot set the device allow list: {e}", Kind.SYSTEM) from None
        if "devices" not in self.by_controller:
            return  # no devices hierarchy mounted (e.g. under `ip netns exec`): nodev stands alone (can_limit_devices)
        for name, line in writes:
            _write(self.by_controller["devices"] / name, line)


class CgroupV2(Cgroup):
    def __init__(self, name: str, root: Path = CGROUP_ROOT) -> None:
        """``ROOT/strata/NAME``; an absolute NAME (``runner-oci``'s caller's ``cgroupsPath``) is ``ROOT/NAME``."""
        path = root / name.lstrip("/") if name.startswith("/") else root / "strata" / name
        self.root, self.parent = root, path.parent
        super().__init__([path])

    def create(self, limits: Limits, devices: Sequence[devcgroup.Rule] = devcgroup.ALLOW_ALL) -> None:
        wanted = {"memory": limits.memory or limits.reservation, "cpu": limits.cpus or limits.shares,
                  "pids": limits.pids}
        available = set((self.root / "cgroup.controllers").read_text().split())
        for controller, value in wanted.items():
            if value is not None and controller not in available:
                raise StrataError(f"the {controller} controller is not available in {self.root}", Kind.SYSTEM)
        enable = " ".join(f"+{c}" for c in ("memory", "cpu", "pids") if c in available)
        self.parent.mkdir(parents=True, exist_ok=True)
        if enable:  # from the root down to the group's parent: each level hands the controllers on
            below = self.parent.relative_to(self.root)
            for level in [*reversed(below.parents), below]:
                _write(self.root / level / "cgroup.subtree_control", enable)
        super().create(limits, devices)

    def hierarchies(self) -> list[Hierarchy]:
        return [Hierarchy("", "cgroup2")]

    def file(self, controller: str, name: str) -> Path | None:
        return self.dirs[0] / name

    def apply(self, limits: Limits) -> None:
        d = self.dirs[0]
        if limits.memory is not None:
            _write(d / "memory.max", str(limits.memory))
        if limits.swap is not None and limits.memory is not None:  # v2 counts swap alone
            _write(d / "memory.swap.max", "max" if limits.swap < 0 else str(limits.swap - limits.memory))
        if limits.reservation is not None:
            _write(d / "memory.low", str(limits.reservation))
        if limits.cpus is not None:
            period = limits.period or CPU_PERIOD_US
            _write(d / "cpu.max", f"{round(limits.cpus * period)} {period}")
        if limits.shares is not None:  # runc's conversion of shares (2..262144) to a weight (1..10000)
            shares = min(max(limits.shares, 2), 262144)
            _write(d / "cpu.weight", str(1 + (shares - 2) * 9999 // 262142))
        if limits.pids is not None:
            _write(d / "pids.max", str(limits.pids) if limits.pids > 0 else "max")
        for what, value in (("swappiness", limits.swappiness), ("kernel memory", limits.kernel),
                            ("kernel TCP memory", limits.kernel_tcp), ("disabling the OOM killer",
                                                                       limits.oom_kill_disable or None)):
            if value is not None:
                raise StrataError(f"cgroup v2 has no {what}", Kind.UNSUPPORTED)
        for name, text in (("cpuset.cpus", limits.cpuset_cpus), ("cpuset.mems", limits.cpuset_mems)):
            if text is not None:
                _write(d / name, text)

    def allow_devices(self, rules: Sequence[devcgroup.Rule]) -> None:
        """v2 has no devices controller: a BPF device program on the group (:func:`devcgroup.attach`)."""
        try:
            devcgroup.attach(str(self.dirs[0]), rules)
        except (OSError, ValueError) as e:
            raise StrataError(f"cannot set the device allow list of {self.dirs[0]}: {e}", Kind.SYSTEM) from None


class NoCgroup(Cgroup):
    """Without root (issue 20) and without a delegated cgroup v2 subtree, a container gets no group of its own,
    as podman's rootless containers on cgroup v1: nothing to make, write or remove. A limit asked for was refused
    before this (:func:`check_usable`); the container's processes are still ended with it, as they all live
    in its pid namespace."""

    def __init__(self) -> None:
        super().__init__([])

    def apply(self, limits: Limits) -> None:
        pass

    def allow_devices(self, rules: Sequence[devcgroup.Rule]) -> None:
        pass

    def hierarchies(self) -> list[Hierarchy]:
        return []

    def file(self, controller: str, name: str) -> Path | None:
        return None


def usable() -> bool:
    """Can this process make a container's group? Root can; a user in its namespace cannot here (no delegated
    cgroup v2 subtree is looked for yet)."""
    return not rootless()


def check_usable(limits: Limits) -> None:
    """A limit asked for where no group can be made is refused, never ignored in silence."""
    if usable() or limits == Limits():
        return
    raise StrataError("resource limits (-m, --cpus, --pids-limit, ...) need a cgroup this user can write: without "
                      "root a container gets none here (a delegated cgroup v2 subtree, systemd's Delegate=yes, is "
                      "not used yet); run as root for limits", Kind.UNSUPPORTED)


def can_limit_devices() -> bool:
    """Whether a container's group gets the device allow list: on v2 always (a BPF program), on v1 when the
    devices hierarchy is mounted. Without it, every mount the container can write is nodev (runner.isolation.rootfs) and
    a ``--tmpfs ...:dev`` is refused, so a device node is still only usable if it is one of /dev's own."""
    return is_v2() or v1_mount("devices") is not None


def is_v2(root: Path = CGROUP_ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def for_container(container_id: str) -> Cgroup:
    if not usable():
        return NoCgroup()
    name = f"strata-{container_id}"
    return CgroupV2(name) if is_v2() else CgroupV1(name)


def at_path(path: str, controllers: Sequence[str] = (*V1_CONTROLLERS, "freezer", "cpuset")) -> Cgroup:
    """The group a runtime-spec ``cgroupsPath`` names, as runc reads it on cgroupfs (``runner-oci``): absolute from
    each hierarchy's root, relative under the caller's own group; on v1 in every hierarchy named (the freezer
    too: ``pause`` freezes it)."""
    if not usable():
        return NoCgroup()
    return CgroupV2(path) if is_v2() else CgroupV1(path, controllers)


def spec_path(container_id: str) -> str:
    """The runtime-spec ``linux.cgroupsPath`` naming the group :func:`for_container` makes, as runc reads it: on
    v1 a relative path, which runc (as we) nests under its own group in each controller; on v2 the absolute one."""
    name = f"strata-{container_id}"
    return f"/strata/{name}" if is_v2() else name


def controller_mounts() -> dict[str, Path]:
    """Where each hierarchy is mounted, by the names /proc/PID/cgroup gives it: a v1 controller (or
    ``name=systemd``), and "" for v2; the first mount of each."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if rfields and rfields[0] == "cgroup2":
                mounts.setdefault("", Path(fields[4]))
            elif rfields and rfields[0] == "cgroup":
                for option in rfields[2].split(","):
                    mounts.setdefault(option, Path(fields[4]))
    return mounts


def _oom_count(path: Path | None) -> int:
    """``oom_kill`` of v2's memory.events or v1's memory.oom_control (Linux >= 4.13); 0 without the file."""
    try:
        text = path.read_text() if path is not None else ""
    except OSError:
        return 0
    return next((int(v) for k, v in (line.split() for line in text.splitlines() if line.count(" ") == 1)
                 if k == "oom_kill"), 0)


def oom_kills(container_id: str) -> int:
    """The OOM kills the container's memory group counted, read before the group is removed (inspect's
    OOMKilled): the group is made anew at each start, so a count above 0 is an OOM kill of this run. Ours, or
    runc's, nested under the runner's group; on v1 crun puts its relative cgroupsPath at the hierarchy's root."""
    group = for_container(container_id)
    count = group.oom_kills()
    mount = v1_mount("memory") if isinstance(group, CgroupV1) and not count else None
    return _oom_count(mount / f"strata-{container_id}" / "memory.oom_control") if mount else count


def join_groups_of(pid: int, joiner: int) -> None:
    """Put ``joiner`` in every group ``pid`` is in, hierarchy by hierarchy (/proc/PID/cgroup). For ``exec`` into a
    container an OCI runtime started: runc puts PID 1 in every v1 hierarchy and v2, crun nests its group under one
    base path for all controllers; either way the container's groups are where PID 1 is, not necessarily where
    :func:`for_container` would make them."""
    mounts = controller_mounts()
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        mount = mounts.get(controllers.split(",")[0])
        if mount is None or (not controllers and path == "/"):
            continue
        _write(mount / path.lstrip("/") / "cgroup.procs", str(joiner))


def kill_all(cgroup: Cgroup, sig: int = 9) -> None:
    """Whatever is left in the group (a runner killed mid-way leaves PID 1's namespace to us)."""
    for pid in cgroup.procs():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
