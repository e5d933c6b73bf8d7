"""A running container's life cycle as the CLI drives it: which executor runs a container (:func:`executor_of`),
``kill``, ``stop`` and the pause of ``commit``. Every signal goes to PID 1 through a pidfd the record verified
(runner/container/record.py: the pid alone is no identity), and through the executor that started it (an OCI
runtime's ``kill``, or the pidfd itself); what a killed ``commit --pause`` left frozen is thawed first, since a
frozen process takes no signal, SIGKILL included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

from runner.container.record import Container, ContainerState, wait_exited
from runner.executor.own import OwnExecutor
from runner.executor.protocol import Executor

STOP_TIMEOUT = 10.0  # Docker's default grace before SIGKILL


def executor_of(container: Container) -> Executor:
    """The executor the container was created for: the OCI runtime its spec names, else our own."""
    if container.spec.runtime:
        from runner.executor.runtime import RuntimeExecutor  # subprocess, tempfile...: not on our executor's path

        return RuntimeExecutor(container.spec, container.store.root)
    return OwnExecutor(container.spec, container.store.root)


def thaw(container: Container) -> None:
    """Thaw what a ``commit`` killed mid-pause left frozen, or what ``runner pause`` froze: as Docker's kill and
    stop of a paused container, the signal then reaches it (Docker signals, then resumes it)."""
    executor_of(container).resume()
    if container.state().paused:
        container.set_state(paused=False)


@contextlib.contextmanager
def paused(container: Container, pause: bool) -> Iterator[bool]:
    """Freeze the container for the block if it is running and ``pause`` (``commit``'s default), through the
    executor that started it; thaw it afterwards, on failure too. Yields whether it is running (its commit is then
    dated "now")."""
    state = container.state()
    running = state.status == "running"
    if not (running and pause) or state.paused:  # Docker's: a paused container stays paused, packed as it is
        yield running
        return
    executor = executor_of(container)
    try:
        executor.pause()
        yield True
    finally:
        executor.resume()


def kill(container: Container, sig: int = signal.SIGKILL) -> None:
    """``runner kill``: ``sig`` to PID 1; an error if the container is not running. As Docker's (for a container
    with no stop signal of its own): its restart policy does not restart the exit this causes, and a restarting
    one is only kept from starting again."""
    if container.state().status == "restarting":
        container.mark_stopped_by_user()
        if settled(container).status != "running":  # else its monitor had started it again: signal that run
            return
    thaw(container)
    fd = container.open_process()
    container.mark_stopped_by_user()
    try:
        executor_of(container).kill(fd, sig)
    finally:
        os.close(fd)


def settled(container: Container, timeout: float = 5.0) -> ContainerState:
    """The state once it is not "restarting": the monitor of a restarting container that was told to stop
    (:meth:`Container.mark_stopped_by_user`) records it exited within its next poll, or it was restarting already
    and records it running. Waits at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    state = container.state()
    while state.status == "restarting" and time.monotonic() < deadline:
        time.sleep(0.02)
        state = container.state()
    return state


def stop(container: Container, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> None:
    """Docker's stop: the stop signal to PID 1, then SIGKILL after ``timeout`` seconds; returns once the
    container has exited and its exit is recorded. A record naming a process that is not its PID 1 (its
    runner is gone) is an exited container: nothing to signal. Its restart policy does not restart it (Docker's
    manual stop), and a restarting one stays down."""
    if container.state().status in ("running", "restarting") or container.monitor_alive():
        container.mark_stopped_by_user()  # before the state is read again: its monitor checks it after each exit
    if settled(container).status != "running":
        return
    thaw(container)
    fd = container.verified_pidfd()
    if fd is None:  # it exited since its state was read
        return
    executor = executor_of(container)
    try:
        executor.kill(fd, sig)
        if not wait_exited(fd, timeout):
            executor.kill(fd, signal.SIGKILL)
            wait_exited(fd)
    finally:
        os.close(fd)
    container.await_recorded_exit()
