"""Pausing a container with the cgroup freezer: ``commit --pause`` freezes it while its rw layer is packed, and
stop, kill and rm thaw what a killed commit left frozen (a frozen process takes no signal, SIGKILL included).

Our executor's pause and resume (:meth:`runner.executor.own.OwnExecutor.pause`); an OCI runtime pauses the groups
it made itself. It knows a container by its ID (its cgroup's name) and name (for messages), not by its record.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import time
from pathlib import Path
from typing import Any

from runner.isolation import cgroups
from shared.errors import Kind, StrataError

FREEZE_TIMEOUT = 10.0


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        if e.errno in (errno.ESRCH, errno.ENOENT):  # a process that exited meanwhile
            return
        raise StrataError(f"cannot pause the container: {path}: {e.strerror}", Kind.SYSTEM) from None


# without root a container has no cgroup (runner.isolation.cgroups.NoCgroup), under any executor
NO_CGROUP = ("cannot pause the container: without root it has no cgroup to freeze (commit with --pause=false to pack "
             "it live, as podman commits by default)")


class Freezer:
    """Freeze and thaw every process of a container. cgroup v2: the container's own group's ``cgroup.freeze``.
    cgroup v1, where the runner puts containers in no freezer group: a ``strata-ID`` freezer group made for the
    pause, next to the group the container's processes are in, which they go back to when thawed (so nothing is
    left behind). A pause cut short by a crash is undone by committing again (freezing is idempotent)."""

    def __init__(self, container_id: str, name: str) -> None:
        self.container_id = container_id
        self.name = name
        self.group = cgroups.for_container(container_id)
        self.v2 = isinstance(self.group, cgroups.CgroupV2)
        self.home: Path | None = None  # v1: the freezer group the processes came from
        self.freezer: Path | None = None  # v1: ours

    def freeze(self) -> None:
        if isinstance(self.group, cgroups.NoCgroup):
            raise StrataError(NO_CGROUP, Kind.SYSTEM)
        if self.v2:
            d = self.group.dirs[0]
            _write(d / "cgroup.freeze", "1")
            self._wait(lambda: "frozen 1" in (d / "cgroup.events").read_text().splitlines())
            return
        mount = cgroups.v1_mount("freezer")
        procs = self.group.procs()
        if mount is None:
            raise StrataError("cannot pause the container: the freezer cgroup controller is not mounted (commit "
                              "with --pause=false to pack it live)", Kind.SYSTEM)
        if not procs:
            return
        name = f"strata-{self.container_id}"
        origin = cgroups.v1_paths(procs[0]).get("freezer") or "/"
        if origin.rstrip("/").endswith("/" + name):  # frozen by a commit that was killed: home is its parent
            origin = posixpath.dirname(origin.rstrip("/"))
        self.home = mount / origin.lstrip("/")
        self.freezer = self.home / name
        self.freezer.mkdir(exist_ok=True)
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while True:
            inside = self._members(self.freezer)
            missing = [p for p in self.group.procs() if p not in inside]
            for pid in missing:  # a process moved into a frozen group is frozen on arrival
                _write(self.freezer / "cgroup.procs", str(pid))
            _write(self.freezer / "freezer.state", "FROZEN")
            if not missing and (self.freezer / "freezer.state").read_text().strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                raise StrataError(f"cannot pause container {self.name}: its processes did not freeze "
                                  f"within {FREEZE_TIMEOUT:.0f} s (commit with --pause=false)", Kind.SYSTEM)
            time.sleep(0.005)

    def recover(self) -> None:
        """Thaw a container a killed commit left frozen (its processes in our ``strata-ID`` group, or v2's
        ``cgroup.freeze`` set): stop, kill and rm call this first, as a frozen process cannot even die."""
        if self.v2:
            with contextlib.suppress(OSError, IndexError):
                if (self.group.dirs[0] / "cgroup.freeze").read_text().strip() == "1":
                    self.thaw()
            return
        mount = cgroups.v1_mount("freezer")
        procs = self.group.procs() if self.group.exists() else []
        if mount is None or not procs:
            return
        origin = (cgroups.v1_paths(procs[0]).get("freezer") or "/").rstrip("/")
        if not origin.endswith(f"/strata-{self.container_id}"):
            return
        self.freezer = mount / origin.lstrip("/")
        self.home = self.freezer.parent
        self.thaw()

    def thaw(self) -> None:
        """Thaw first (the container runs on whatever else fails), then, on v1, move the processes home and
        remove our group. New children of a thawed process land in our group too: moved until it is empty."""
        if self.v2:
            _write(self.group.dirs[0] / "cgroup.freeze", "0")
            return
        if self.freezer is None or self.home is None:
            return
        _write(self.freezer / "freezer.state", "THAWED")
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while time.monotonic() < deadline:
            for pid in self._members(self.freezer):
                _write(self.home / "cgroup.procs", str(pid))
            try:
                self.freezer.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise StrataError(f"cannot remove {self.freezer}: {e.strerror}", Kind.SYSTEM) from None
                time.sleep(0.01)

    @staticmethod
    def _members(group: Path) -> set[int]:
        try:
            return {int(p) for p in (group / "cgroup.procs").read_text().split()}
        except FileNotFoundError:
            return set()

    def _wait(self, done: Any) -> None:
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while not done():
            if time.monotonic() > deadline:
                raise StrataError(f"cannot pause container {self.name}: it did not freeze within "
                                  f"{FREEZE_TIMEOUT:.0f} s (commit with --pause=false)", Kind.SYSTEM)
            time.sleep(0.005)

    @property
    def state(self) -> str:
        """FROZEN, FREEZING or THAWED (for tests and messages)."""
        if self.v2:
            events = (self.group.dirs[0] / "cgroup.events").read_text().splitlines()
            return "FROZEN" if "frozen 1" in events else "THAWED"
        if self.freezer is None:
            return "THAWED"
        return (self.freezer / "freezer.state").read_text().strip()
