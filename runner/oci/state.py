"""What ``runner-oci`` keeps of a container, under the caller's ``--root``: one directory per ID holding
``state.json`` (the runtime-spec state plus the init process's identity), a copy of the ``config.json`` it was
created from (the caller may remove the bundle before ``delete``), and while the container is created but not
started, ``exec.fifo``, on which its init waits.

The init process is named by its pid *and* its start time and this boot's ID (:mod:`shared.proc`), as the runner's
own records name PID 1: a pid reused after the init exited is a stopped container, never a process to signal. No
process of ours stays behind: the caller (containerd's shim, conmon, Docker through containerd) is the init's
parent, so the state survives any restart of ours or theirs and is read afresh by every command.

Status, as runc derives it: the init gone (or a zombie) is ``stopped``; alive with ``exec.fifo`` still there is
``created``; alive and frozen is ``paused``; else ``running``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.isolation import cgroups
from shared import proc
from shared.errors import Kind, StrataError
from shared.store.files import atomic_write

STATE = "state.json"
CONFIG = "config.json"
FIFO = "exec.fifo"
LOCK = ".lock"
ID_RE = re.compile(r"[\w+.-]{1,1024}")


def default_root() -> Path:
    """runc's: /run/runc for root, $XDG_RUNTIME_DIR/runc for a user; ours is named after us."""
    if os.geteuid() == 0:
        return Path("/run/runner-oci")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime, "runner-oci") if runtime else Path(f"/tmp/runner-oci-{os.geteuid()}")


def check_id(container_id: str) -> str:
    if not ID_RE.fullmatch(container_id) or container_id in (".", ".."):
        raise StrataError(f"invalid container ID format: {container_id!r}", Kind.USAGE)
    return container_id


def not_found(container_id: str) -> StrataError:
    return StrataError(f"container does not exist: {container_id}", Kind.NOT_FOUND)


@dataclass
class State:
    """One container's record (module doc). Mutable: ``start`` and ``pause`` rewrite it."""

    dir: Path
    id: str
    bundle: str
    pid: int
    start_time: int
    boot_id: str
    cgroup: str  # the cgroupsPath as created (made absolute or relative as the config gave it)
    created: str  # RFC 3339, as runc's state
    owner: str
    annotations: dict[str, str]
    config_hash: str = ""

    @property
    def status(self) -> str:
        if not proc.alive(self.pid, self.start_time, self.boot_id):
            return "stopped"
        if (self.dir / FIFO).exists():
            return "created"
        return "paused" if frozen(self.group()) else "running"

    def group(self) -> cgroups.Cgroup:
        return cgroups.at_path(self.cgroup)

    def spec_state(self, status: str | None = None) -> dict[str, Any]:
        """The runtime-spec state (runtime.md "State"), as hooks get it on stdin and ``state`` prints it."""
        status = self.status if status is None else status
        return {"ociVersion": "1.0.2", "id": self.id, "status": status,
                "pid": self.pid if status != "stopped" else 0, "bundle": self.bundle,
                "annotations": self.annotations}

    def runc_state(self) -> dict[str, Any]:
        """``runc state``'s document: the spec's plus rootfs, created and owner (what containerd and podman read)."""
        doc = self.spec_state()
        config = self.config_doc()
        root = (config.get("root") or {}).get("path", "")
        doc["rootfs"] = root if root.startswith("/") else os.path.join(self.bundle, root)
        doc["created"], doc["owner"] = self.created, self.owner
        return doc

    def config_doc(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.dir / CONFIG).read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def save(self) -> None:
        doc = {"id": self.id, "bundle": self.bundle, "pid": self.pid, "start_time": self.start_time,
               "boot_id": self.boot_id, "cgroup": self.cgroup, "created": self.created, "owner": self.owner,
               "annotations": self.annotations}
        atomic_write(self.dir / STATE, json.dumps(doc).encode(), 0o600)

    @classmethod
    def read(cls, root: Path, container_id: str) -> State:
        d = root / check_id(container_id)
        try:
            doc = json.loads((d / STATE).read_bytes())
            return cls(d, doc["id"], doc["bundle"], int(doc["pid"]), int(doc["start_time"]), doc["boot_id"],
                       doc["cgroup"], doc["created"], doc.get("owner", ""), dict(doc.get("annotations") or {}))
        except FileNotFoundError:
            raise not_found(container_id) from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StrataError(f"the state of container {container_id} is unreadable ({d / STATE}): {e}",
                              Kind.INTEGRITY) from None

    def open_init(self) -> int:
        """A pidfd of the init, checked to be the recorded process after it was opened (so the fd pins it)."""
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            raise StrataError(f"container {self.id} is not running", Kind.STATE) from None
        if not proc.alive(self.pid, self.start_time, self.boot_id):
            os.close(fd)
            raise StrataError(f"container {self.id} is not running", Kind.STATE)
        return fd


def frozen(group: cgroups.Cgroup) -> bool:
    """Whether the container's group is frozen (v1's freezer.state, v2's cgroup.freeze)."""
    path = group.file("freezer", "freezer.state") if isinstance(group, cgroups.CgroupV1) else \
        group.file("", "cgroup.freeze")
    try:
        text = path.read_text().strip() if path is not None else ""
    except OSError:
        return False
    return text in ("FROZEN", "FREEZING", "1")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def owner() -> str:
    """runc's ``owner``: the user name of the state's owner."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def make_dir(root: Path, container_id: str) -> Path:
    """The container's directory, new (runc's words when the ID is taken)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    d = root / check_id(container_id)
    try:
        d.mkdir(mode=0o711)
    except FileExistsError:
        raise StrataError(f"container with id exists: {container_id}", Kind.STATE) from None
    return d


def remove_dir(d: Path) -> None:
    import shutil  # delete's alone (shutil imports bz2 and lzma: ~30 ms of every other call)

    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def locked(root: Path, container_id: str) -> Iterator[None]:
    """One command at a time on a container (create, start, delete, pause); a lock file per ID beside the dirs,
    so that ``delete`` can remove the directory while holding it. The lock file goes too once the container's
    directory is gone (deleted, or a create that failed), as runc leaves nothing of a deleted container under
    --root; a command that waited on a lock file unlinked meanwhile takes the lock afresh."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = root / f"{LOCK}-{check_id(container_id)}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    try:
        yield
    finally:
        if not (root / container_id).exists():
            path.unlink(missing_ok=True)
        os.close(fd)


def all_states(root: Path) -> list[State]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(root)):
            if entry.startswith(".") or not (root / entry / STATE).exists():
                continue
            with contextlib.suppress(StrataError):
                out.append(State.read(root, entry))
    return out
