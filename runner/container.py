"""Containers on disk: ``containers/ID/`` holds config.json (what to run), state.json (what happened), the -init
layer, the rw layer (upper), overlay's work dir, the mount point and the container's own hosts/hostname/resolv.conf.

A container is found by full ID, unique ID prefix or name. Its state is trusted only as far as the process it
names is alive: a container whose runner was killed shows as exited.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shared.errors import Kind, StrataError, not_found, usage
from shared.store import Store, read_json, remove_tree, write_json

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # Docker's restrictedNamePattern


@dataclass(frozen=True)
class ContainerConfig:
    id: str
    name: str
    image: str  # reference it was created from
    image_id: str  # config digest
    chain_ids: tuple[str, ...]  # base first
    argv: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str
    user: str
    hostname: str
    interactive: bool = False
    tty: bool = False
    auto_remove: bool = False
    created: float = field(default_factory=time.time)
    # isolation and limits (runner/security.py, runner/cgroups.py)
    capabilities: tuple[str, ...] = ()
    no_new_privileges: bool = False
    privileged: bool = False
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    # mounts (runner/rootfs.py)
    read_only: bool = False
    volumes: tuple[str, ...] = ()
    tmpfs: tuple[str, ...] = ()
    init: bool = False


@dataclass(frozen=True)
class ContainerState:
    status: str = "created"  # created | running | exited
    pid: int = 0  # host pid of the container's PID 1
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    error: str = ""


class Container:
    def __init__(self, store: Store, config: ContainerConfig) -> None:
        self.store = store
        self.config = config
        self.dir = store.containers / config.id

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name

    def path(self, name: str) -> Path:
        return self.dir / name

    def state(self) -> ContainerState:
        try:
            state = ContainerState(**read_json(self.path("state.json")))
        except FileNotFoundError:
            return ContainerState()
        if state.status == "running" and not _alive(state.pid):
            # its runner (or monitor) died without recording the exit: PID 1 then got the parent-death SIGKILL
            return replace(state, status="exited", exit_code=128 + signal.SIGKILL, error="runner gone")
        return state

    def set_state(self, **changes: Any) -> ContainerState:
        state = replace(self.state(), **changes)
        write_json(self.path("state.json"), asdict(state))
        return state

    def kill(self, sig: int = signal.SIGKILL) -> None:
        state = self.state()
        if state.status != "running":
            raise StrataError(f"container {self.name} is not running", Kind.STATE)
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, sig)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Docker's stop: the stop signal to PID 1, then SIGKILL after ``timeout`` seconds; returns once the
        container has exited and its exit is recorded."""
        state = self.state()
        if state.status != "running":
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, sig)
        _wait_gone(state.pid, timeout)
        if _alive(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGKILL)
            _wait_gone(state.pid)
        deadline = time.monotonic() + 5  # whoever owns it (runner or monitor) records the exit
        while self.state().status == "running" and time.monotonic() < deadline:
            time.sleep(0.02)

    def remove(self, force: bool = False) -> None:
        """Kill (if forced), then remove the cgroup and the directory. A container whose runner was killed still
        has its cgroup; its processes died with the runner (parent-death signal), or are killed here."""
        from runner import cgroups

        state = self.state()
        if state.status == "running":
            if not force:
                raise StrataError(f"container {self.name} is running; stop it or use --force", Kind.STATE)
            os.kill(state.pid, 9)
            _wait_gone(state.pid)
        group = cgroups.for_container(self.id)
        if group.exists():
            cgroups.kill_all(group)
            group.remove()
        remove_tree(self.dir)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def new_id() -> str:
    return os.urandom(32).hex()


def create(store: Store, config: ContainerConfig) -> Container:
    """Reserve the name and the directory, atomically with respect to other runners."""
    if not NAME_RE.fullmatch(config.name):
        raise usage(f"invalid container name {config.name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    store.ensure()
    with store.lock():
        for other in all_containers(store):
            if other.name == config.name:
                raise StrataError(f"the container name {config.name!r} is already in use by {other.id[:12]}",
                                  Kind.STATE)
        tmp = store.temp_path("container")
        tmp.mkdir(mode=0o700)
        write_json(tmp / "config.json", asdict(config))
        write_json(tmp / "state.json", asdict(ContainerState()))
        os.rename(tmp, store.containers / config.id)
    return Container(store, config)


def _load(store: Store, cid: str) -> Container | None:
    try:
        raw = read_json(store.containers / cid / "config.json")
    except (FileNotFoundError, NotADirectoryError):
        return None
    known = {f.name for f in fields(ContainerConfig)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
    return Container(store, ContainerConfig(**values))


def all_containers(store: Store) -> list[Container]:
    if not store.containers.is_dir():
        return []
    found = (_load(store, d.name) for d in sorted(store.containers.iterdir()))
    return sorted((c for c in found if c is not None), key=lambda c: c.config.created, reverse=True)


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
