"""What an executor is: the part that runs a container's spec (runner/spec.py), and nothing of the container's
record (runner/container/). Two implement it: our own (:mod:`runner.executor.own`) and an OCI runtime such as runc
or crun (:mod:`runner.executor.runtime`), as runc's ``parentProcess`` (init and setns) and crun's
create/start/kill/delete. The container's life cycle (runner/container/start.py, lifecycle.py, release.py) speaks
only this, and attends the :class:`~runner.executor.supervise.Started` process with the one supervise loop.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Protocol

from runner.executor.supervise import Started
from runner.isolation import cgroups
from shared.errors import StrataError


class StartFailed(StrataError):
    """The command never ran (it could not be exec'd, a volume could not be bound, the runtime refused it): the
    container is to be recorded as exited with this message and ``exit_code`` (Docker's 125, 126 or 127). The
    executor has freed what it made for the attempt."""


class Executor(Protocol):
    """One container's spec, run by one executor; made for it by :func:`runner.container.lifecycle.executor_of`."""

    def create(self, netns: int | None) -> Started:
        """Start PID 1 and return once its command was exec'd (the caller then records it as running and
        supervises it), or raise :class:`StartFailed`. ``netns``: the network namespace to join (None: its own
        per the spec); the caller keeps and closes that fd."""
        ...

    def kill(self, pidfd: int, sig: int) -> None:
        """Signal PID 1, which ``pidfd`` pins (the caller verified it is the recorded one)."""
        ...

    def pause(self) -> None:
        """Freeze every process of the container until :meth:`resume` (``commit --pause``): runc's and crun's
        ``pause``, our cgroup freezer."""
        ...

    def resume(self) -> None:
        """Thaw what :meth:`pause` froze, or what a ``commit`` killed mid-pause left frozen (a frozen process takes
        no signal, SIGKILL included, so stop, kill and rm call this first). Nothing frozen is no error."""
        ...

    def release(self) -> None:
        """Free what the executor holds on the host for the container (idempotent)."""
        ...


def release_cgroup(container_id: str) -> None:
    """The last step of every executor's release: kill whatever is still in the container's cgroup (a runner
    killed mid-way leaves PID 1's namespace to us), then remove the group."""
    group = cgroups.for_container(container_id)
    if group.exists():
        cgroups.kill_all(group)
        group.remove()


def signal_pidfd(pidfd: int, sig: int) -> None:
    """Signal the process ``pidfd`` pins; one that exited meanwhile is no error (the pidfd keeps its pid from
    reuse)."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, sig)
