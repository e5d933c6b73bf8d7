"""Containers on disk: ``containers/ID/`` holds config.json (the OCI runtime-spec: what to run, see
:mod:`runner.spec`), state.json (what happened), the -init layer, the rw layer (upper), overlay's work dir, the
mount point and the container's own hosts/hostname/resolv.conf.

A container is found by full ID, unique ID prefix or name. Its state is trusted only as far as the process it
names is provably still the one that was recorded: a pid alone is no identity, since after a runner dies the kernel
may hand its container's pid to any other process. So state.json records PID 1's start time (clock ticks after
boot, which a pid's next owner cannot share) and the boot it was in; a running record whose process does not match
all three, or that lacks them (written before they were recorded), shows as exited, and nothing is ever signalled or
joined through it. Signals (:mod:`runner.container.lifecycle`) and ``exec`` go through a pidfd that was verified after
it was opened (:meth:`Container.open_process`): it pins the process it names, so the check and the signal cannot be
about two different processes. The record holds data and that identity only: it calls no executor.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from runner.container.names import generate
from runner.spec import Spec
from shared.digest import Digest
from shared.errors import Kind, StrataError, not_found, usage
from shared.proc import alive, boot_id, read_stat
from shared.store.files import read_json, write_json
from shared.store.layout import Store

CONFIG_NAME = "config.json"  # the OCI runtime-spec document (runner/spec.py)
USER_STOP = "stopped-by-user"  # present after a stop or kill (Container.mark_stopped_by_user)
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # Docker's restrictedNamePattern


@dataclass(frozen=True)
class ContainerState:
    """state.json: what happened to the container, and who its PID 1 is (see the module doc)."""

    status: str = "created"  # created | running | restarting (its monitor waits to start it again) | exited
    pid: int = 0  # host pid of the container's PID 1
    # who that pid was: its start time (field 22 of /proc/PID/stat) in the boot named by boot_id (see module doc)
    pid_start_time: int | None = None
    boot_id: str = ""
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    error: str = ""
    paused: bool = False  # frozen by ``runner pause`` (status stays running: inspect's Status says "paused")
    oom_killed: bool = False  # the OOM killer killed a process of this run (release reads the cgroup's counter)
    restart_count: int = 0  # restarts by its --restart policy since it was last started by a user (inspect's)
    # the monitor that owns it (runner/container/monitor.py), in the boot of boot_id: "restarting" is true only
    # while that process lives
    monitor_pid: int = 0
    monitor_start_time: int | None = None

    @property
    def shown(self) -> str:
        """Docker's State.Status: "paused" for a running container that is paused."""
        return "paused" if self.status == "running" and self.paused else self.status


class Container:
    def __init__(self, store: Store, spec: Spec) -> None:
        self.store = store
        self.dir = store.containers / spec.id
        self.spec = replace(spec, bundle=str(self.dir))

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def name(self) -> str:
        return self.spec.name

    def path(self, name: str) -> Path:
        return self.dir / name

    def state(self) -> ContainerState:
        state = self.as_written()
        if state.status == "running" and not _is_recorded_process(state):
            # its runner (or monitor) died without recording the exit: PID 1 then got the parent-death SIGKILL, and
            # its pid may since be another process's
            return replace(state, status="exited", exit_code=128 + signal.SIGKILL, error="runner gone", paused=False)
        if state.status == "restarting" and not monitor_alive(state):  # killed, or a record from an earlier boot
            return replace(state, status="exited", error=state.error or "monitor gone")
        if state.status == "exited" and self._restarted_next(state):
            return replace(state, status="restarting")
        return state

    def _restarted_next(self, state: ContainerState) -> bool:
        """An exit its live monitor restarts (PID 1's exit is recorded first, then "restarting"): Docker's
        container never shows exited in between."""
        policy = self.spec.restart
        return policy.name != "no" and monitor_alive(state) and not self.stopped_by_user() and \
            policy.restarts(state.exit_code or 0, state.restart_count, False)

    def as_written(self) -> ContainerState:
        """state.json as its owner wrote it, unchecked (``wait`` watches for the owner's next write)."""
        try:
            return ContainerState(**read_json(self.path("state.json")))
        except FileNotFoundError:
            return ContainerState()

    def set_state(self, **changes: Any) -> ContainerState:
        state = replace(self.state(), **changes)
        write_json(self.path("state.json"), asdict(state))
        return state

    def record_running(self, pid: int) -> ContainerState:
        """Record PID 1 as running, with the identity later commands check it by. Call it while ``pid`` is still
        the caller's unreaped child: only then is the start time read provably that process's own."""
        return self.set_state(status="running", pid=pid, started=time.time(), exit_code=None, finished=None, error="",
                              paused=False, oom_killed=False, **_identity_of(self.name, pid))

    def record_oom(self) -> None:
        """The OOM killer killed a process of this run (release reads it from the cgroup before the group goes):
        written into the record as it is, whatever the process check would say of it by now."""
        write_json(self.path("state.json"), asdict(replace(self.as_written(), oom_killed=True)))

    def record_monitor(self) -> ContainerState:
        """The calling process owns the container from now on (its monitor): "restarting" holds while it lives."""
        stat = read_stat(os.getpid())
        assert stat is not None  # our own
        return self.set_state(monitor_pid=os.getpid(), monitor_start_time=stat.start_time, boot_id=boot_id())

    def monitor_alive(self) -> bool:
        """Whether the monitor the record names still runs (it may restart the container)."""
        return monitor_alive(self.as_written())

    # Docker's HasBeenManuallyStopped: a file of its own, not a field of state.json, so that a ``stop`` and the
    # monitor writing the exit cannot overwrite each other's word (each writes state.json whole)
    def mark_stopped_by_user(self) -> None:
        """``stop``/``kill``: the exit this causes is not restarted, and an unless-stopped container stays down at
        the next boot; a later ``start`` clears it."""
        self.path(USER_STOP).touch()

    def stopped_by_user(self) -> bool:
        return self.path(USER_STOP).exists()

    def clear_stopped_by_user(self) -> None:
        self.path(USER_STOP).unlink(missing_ok=True)

    def open_process(self) -> int:
        """A pidfd (close-on-exec) for the container's PID 1, for signals and setns; the caller closes it.
        Raises StrataError if the container is not running, or its record names a process that is not its PID 1.
        Use it for everything that touches the process: /proc/PID paths may name another process by then."""
        fd = _verified_pidfd(self.state())
        if fd is None:
            raise StrataError(f"container {self.name} is not running", Kind.STATE)
        return fd

    def verified_pidfd(self) -> int | None:
        """A pidfd (close-on-exec) for PID 1 if the record says it runs and it provably is the recorded process;
        None when it is not running (any more). The caller closes it."""
        return _verified_pidfd(self.state())

    def await_recorded_exit(self, timeout: float = 5.0) -> None:
        """PID 1 has exited: give its owner (the runner or monitor that reaps it) a moment to record the exit, so
        that what the caller returns to, or removes, is the record with the command's exit code, not one still
        being written. (state() already reads an exited PID 1 as exited; the record is what this waits for.)"""
        deadline = time.monotonic() + timeout
        while self.as_written().status == "running" and time.monotonic() < deadline:
            time.sleep(0.02)


def monitor_alive(state: ContainerState) -> bool:
    return state.monitor_start_time is not None and alive(state.monitor_pid, state.monitor_start_time, state.boot_id)


def _identity_of(name: str, pid: int) -> dict[str, Any]:
    stat = read_stat(pid)
    if stat is None:
        raise StrataError(f"container {name}'s process {pid} is gone before it was recorded", Kind.SYSTEM)
    return {"pid_start_time": stat.start_time, "boot_id": boot_id()}


def _is_recorded_process(state: ContainerState) -> bool:
    """Whether the process state.pid names now is the one recorded, and has not exited (a zombie has)."""
    return state.pid > 0 and state.pid_start_time is not None and alive(state.pid, state.pid_start_time, state.boot_id)


def _verified_pidfd(state: ContainerState) -> int | None:
    """A pidfd for the process STATE records, or None if that process is gone. The pidfd is opened first and
    checked after: it pins the process that had the pid when it was opened, and that process is still running
    after its /proc/PID/stat was read (its pidfd is not readable), so the start time read was its own."""
    if state.status != "running" or not _is_recorded_process(state):
        return None
    try:
        fd = os.pidfd_open(state.pid)
    except OSError as e:
        if e.errno in (errno.ESRCH, errno.EINVAL):  # gone, or the pid is now a thread's (no pidfd for those)
            return None
        raise
    try:
        if _is_recorded_process(state) and not wait_exited(fd, 0):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def wait_exited(pidfd: int, timeout: float = 10.0) -> bool:
    """Whether the process has exited (a pidfd polls readable then), waiting up to ``timeout`` seconds."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def new_id() -> str:
    return os.urandom(32).hex()


def record(store: Store, spec: Spec) -> Container:
    """Reserve the name (a generated one when the spec has none: :mod:`runner.container.names`) and the
    directory, atomically with respect to other runners: the container's hold on its layers first (GC, which
    waits for the caller's ``in_use``, then keeps them), then the directory with the spec (config.json) and a
    "created" state, by one rename."""
    if spec.name and not NAME_RE.fullmatch(spec.name):
        raise usage(f"invalid container name {spec.name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    store.ensure()
    with store.lock():
        names = {other.name: other for other in all_containers(store)}
        if not spec.name:  # no --name: Docker's adjective_surname, free under this lock
            spec = replace(spec, name=generate(names))
        elif spec.name in names:
            raise StrataError(f"the container name {spec.name!r} is already in use by {names[spec.name].id[:12]}",
                              Kind.STATE)
        store.hold(spec.id, "container", spec.name, [Digest.parse(c) for c in spec.chain_ids])
        try:
            tmp = store.temp_path("container")
            tmp.mkdir(mode=0o700)
            write_json(tmp / CONFIG_NAME, replace(spec, bundle=str(store.containers / spec.id)).to_oci(), indent=None)
            write_json(tmp / "state.json", asdict(ContainerState()))
            os.rename(tmp, store.containers / spec.id)
        except BaseException:
            store.release_hold(spec.id)  # nothing rests on the layers: tmp/ litter at most
            raise
    saved = _load(store, spec.id)  # what start runs is what was saved, for run too: never the in-memory value
    differ = [f.name for f in fields(Spec) if f.name != "bundle" and
              (saved is None or getattr(saved.spec, f.name) != getattr(spec, f.name))]
    if differ:
        raise StrataError(f"container {spec.name}: config.json does not read back as written ({', '.join(differ)})",
                          Kind.SYSTEM)
    assert saved is not None
    return saved


def _load(store: Store, cid: str) -> Container | None:
    try:
        raw = read_json(store.containers / cid / CONFIG_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Container(store, Spec.from_oci(raw))


def all_containers(store: Store) -> list[Container]:
    if not store.containers.is_dir():
        return []
    found = (_load(store, d.name) for d in sorted(store.containers.iterdir()))
    return sorted((c for c in found if c is not None), key=lambda c: c.spec.created, reverse=True)


def find(store: Store, key: str) -> Container:
    """By name, full ID or unique ID prefix, as Docker resolves them."""
    containers = all_containers(store)
    for c in containers:
        if key in (c.name, c.id):
            return c
    matches = [c for c in containers if c.id.startswith(key)] if re.fullmatch(r"[a-f0-9]+", key) else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise usage(f"container ID prefix {key!r} is ambiguous")
    raise not_found(f"no such container: {key}")
