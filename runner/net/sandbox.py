"""A user's networks without root (issue 20): a network namespace of the store's, in the user's namespace, where
the networks' bridges, veths and nft tables live as root's live in the host's namespace.

podman's "rootless network namespace", in Strata's shape. A user may make no bridge, veth or NAT rule in the
host's namespace, but in a network namespace of its own user namespace it may make all of them. So:

* The sandbox is made with a store's first endpoint: a keeper (``sleep infinity``,
  :func:`shared.proc.start_keeper`) unshares it and brings ``lo`` up; pasta (:mod:`runner.net.pasta`, no ports)
  carries its traffic to the user's side, so a container on a user network reaches out as the user does, and
  (``--no-map-gw``, ``-T/-U none``) not the user's loopback.
* Every change of the store's networks that touches the kernel (attach, release, remove, prune) runs, through
  :func:`where_networks_live`, in a child that has entered the sandbox: :mod:`runner.net.core` then works there
  unchanged, its links, tables, ip_forward and lock being the sandbox's. A child, not the command itself: a user's
  process may enter the sandbox but never come back to the host's namespace, which the host's user namespace owns.
* The call that leaves the store without endpoints takes the sandbox down (keeper and pasta ended by pid, each
  checked by its start time), so nothing of a user's networks outlives its last container.

Published ports are not pasta's here (pasta's ports are fixed when it starts): a forwarder per container
(:mod:`runner.net.forward`) listens on the user's side and connects to the container inside the sandbox, as
podman's rootlessport does.

The record (``netns-TAG.json``: keeper and pasta, each pid and start time, and the boot) and its lock are in the
user's run-time directory (:mod:`shared.rundir`), one pair per store: two stores of one user have two sandboxes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from runner import linux
from shared.errors import Kind, StrataError
from shared.proc import alive, boot_id, end, start_keeper
from shared.rundir import check_private, run_dir
from shared.store.layout import Store
from shared.userns import host_uid, rootless

T = TypeVar("T")


@dataclass(frozen=True)
class Sandbox:
    """A user's network sandbox as its record says: the keeper holding the namespace and the pasta serving it,
    each with its start time (a pid alone may be reused), and the boot they belong to."""

    keeper: int
    keeper_started: int
    pasta: int
    pasta_started: int
    boot: str

    @property
    def alive(self) -> bool:
        return alive(self.keeper, self.keeper_started, self.boot)

    def open(self) -> int:
        """An fd of its network namespace, checked after the open to be the recorded keeper's."""
        try:
            fd = os.open(f"/proc/{self.keeper}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd < 0 or not self.alive:
            if fd >= 0:
                os.close(fd)
            raise StrataError("the network namespace of this store's networks is gone", Kind.STATE)
        return fd


def where_networks_live(store: Store, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` where the store's networks live: here, in the host's namespace, for root; for a user, in a
    child in the store's sandbox (made if missing, taken down after if no endpoint is left). FN's result and
    its :class:`StrataError` come back as if it had run here."""
    if not rootless():
        return fn(*args)
    from runner.net.records import Records

    record, lock = _paths(Records(store).table)
    with _locked(lock):
        box = _find(record) or _make(record)
        fd = box.open()
        try:
            return _in_child(fd, fn, args)
        finally:
            os.close(fd)
            if not Records(store).endpoints():
                _take_down(record, box)


def open_netns(store: Store) -> int:
    """An fd of the store's sandbox, which must exist (a container on a user network is in it)."""
    from runner.net.records import Records

    record, lock = _paths(Records(store).table)
    with _locked(lock):
        box = _find(record)
        if box is None:
            raise StrataError("the network namespace of this store's networks is gone", Kind.STATE)
        return box.open()


def _paths(table: str) -> tuple[Path, Path]:
    where = run_dir(host_uid(), owner=os.geteuid())
    return where / f"netns-{table}.json", where / f"netns-{table}.lock"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        check_private(path, os.geteuid(), is_dir=False)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _find(record: Path) -> Sandbox | None:
    """The recorded sandbox if its keeper lives; a dead one's pasta is ended and its record dropped. A record
    that is not the user's private file (planted in a shared /tmp) is refused, never followed or replaced."""
    if not os.path.lexists(record):
        return None
    check_private(record, os.geteuid(), is_dir=False)
    try:
        box = Sandbox(**json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        record.unlink(missing_ok=True)  # damaged (a crash mid-write is not one: it is written by rename)
        return None
    if box.alive:
        return box
    _take_down(record, box)
    return None


def _make(record: Path) -> Sandbox:
    from runner.net import pasta

    def prepare() -> None:
        linux.unshare(linux.CLONE_NEWNET)
        linux.loopback_up()

    keeper, keeper_started = start_keeper(prepare)
    try:
        fd = os.open(f"/proc/{keeper}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid, started = pasta.start(fd, record.with_suffix(".pasta"), ())
        finally:
            os.close(fd)
    except BaseException:
        _end(keeper, keeper_started, boot_id())
        raise
    box = Sandbox(keeper, keeper_started, pid, started, boot_id())
    tmp = record.with_name(f"{record.name}.{os.getpid()}")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as f:
        f.write(json.dumps(asdict(box)))
    os.rename(tmp, record)
    return box


def _take_down(record: Path, box: Sandbox) -> None:
    record.unlink(missing_ok=True)
    _end(box.pasta, box.pasta_started, box.boot)
    _end(box.keeper, box.keeper_started, box.boot)


def _end(pid: int, started: int, boot: str) -> None:
    end(pid, started, boot, signal.SIGKILL)


def _in_child(netns: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """FN run by a forked child that entered NETNS; its result (or error) pickled back over a pipe."""
    import pickle  # a user's networks only: root's run where they live, and import this module too

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            linux.setns(netns, linux.CLONE_NEWNET)
            said: tuple[Any, ...] = ("ok", fn(*args))
        except StrataError as e:
            said = ("error", str(e), e.kind.name, e.exit_code)
        except BaseException as e:  # its traceback would be lost: one line
            said = ("error", f"{type(e).__name__}: {e}", Kind.SYSTEM.name, None)
        with contextlib.suppress(BaseException), os.fdopen(write_end, "wb") as f:
            pickle.dump(said, f)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise StrataError("the process changing this store's networks died", Kind.SYSTEM)
    said = pickle.loads(data)  # our own child's, over a pipe of ours
    if said[0] == "ok":
        result: T = said[1]
        return result
    raise StrataError(said[1], Kind[said[2]], said[3])
