"""The monitor: the process that owns a detached container (``run -d``, ``start`` without ``-a``). It runs in a
session of its own with no terminal, logs the container's output, records its exit, releases it and honours
``--rm``; the runner that made it returns once the command was exec'd (or with the error that stopped it), told
over a :class:`runner.executor.channel.Channel`.

It also restarts it as its ``--restart`` policy says (Docker's restart manager: :class:`runner.spec.RestartPolicy`),
recorded as "restarting" between runs, until the policy says no or a user's ``stop``/``kill`` marks it
(:meth:`runner.container.record.Container.mark_stopped_by_user`), which it checks after each exit and through the
back-off. A foreground ``run`` with a policy hands its container to a monitor at the first exit (:func:`carry_on`).
A monitor that is itself told to end (SIGTERM: the system shutting down) passes the signal on and restarts
nothing, as Docker's daemon at its shutdown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from runner.container.record import Container
from runner.container.release import release, remove
from runner.container.start import StartLock, start
from runner.executor import process
from runner.executor.channel import Channel, Failed, Running
from shared.errors import Kind, StrataError


def detach(container: Container, lock: StartLock, client: tuple[socket.socket, socket.socket] | None = None) \
        -> int:
    """Start ``container`` under a monitor; return the monitor's pid once it runs, or raise the error that kept it
    from running, with its exit code. ``lock`` is held (by us) until then. ``client``: an attach client of its
    from the start (``run -it``, :mod:`runner.executor.attach`): (the caller's end, the monitor's)."""
    ours, theirs = Channel.pair()
    monitor = os.fork()
    if monitor == 0:
        ours.close()
        lock.release()  # our copy: the runner's keeps it held until we answer
        if client is not None:
            client[0].close()  # the caller's: its end of file must be the caller's own going away
        _monitor(container, theirs, client[1] if client is not None else None)
    theirs.close()
    if client is not None:
        client[1].close()
    try:
        answer = ours.recv()
    finally:
        ours.close()
        lock.release()
    if not isinstance(answer, Running):
        os.waitpid(monitor, 0)
        if isinstance(answer, Failed):
            raise StrataError(answer.message, Kind.SYSTEM, exit_code=answer.code)
        raise StrataError("the container's monitor died before the container started", Kind.SYSTEM,
                          exit_code=process.EXIT_RUNNER_ERROR)
    return monitor


def _monitor(container: Container, chan: Channel, client: socket.socket | None = None) -> NoReturn:
    code = 0
    told = False

    def report(error: str, exit_code: int) -> None:
        """Once: a second message would find nobody reading."""
        nonlocal told
        if not told:
            told = True
            with contextlib.suppress(OSError):
                chan.send(Failed(error, exit_code) if error else Running())
            chan.close()

    try:
        ending = _take_over(container)
        began = time.monotonic()
        exited = start(container, echo=False, started=report, client=client, noted=ending.noted)
        _restarts(container, exited, time.monotonic() - began, ending)
    except BaseException as e:  # nothing of the monitor may reach the user's terminal
        report(str(e) or type(e).__name__, process.EXIT_RUNNER_ERROR)
        code = 1
    finally:
        if container.spec.auto_remove:
            with contextlib.suppress(BaseException):
                remove(container, force=True)
        os._exit(code)


def carry_on(container: Container, code: int, ran_for: float) -> None:
    """A container that ran in the foreground (``run`` or ``start -a`` with a restart policy) exited with
    ``code`` after ``ran_for`` seconds: if its policy restarts it, a monitor takes it over from here, in the
    background (as Docker's client returns at the first exit while its daemon restarts the container)."""
    if container.spec.restart.name == "no" or \
            not container.spec.restart.restarts(code, container.state().restart_count, container.stopped_by_user()):
        return
    if os.fork() == 0:
        try:
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the runner's terminal, pipes and locks are not ours
            _restarts(container, code, ran_for, _take_over(container))
        finally:
            os._exit(0)


def _take_over(container: Container) -> _Told:
    """Become the container's monitor: a session of our own with no terminal (nothing of ours may reach the
    user's), recorded as its owner, listening for our own end."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    ending = _Told()
    container.record_monitor()
    return ending


class _Told:
    """Whether the monitor itself was told to end (SIGTERM or SIGINT: the system shutting down, as systemd stops
    the unit that started it): the container it passed the signal to is then not restarted (Docker's daemon
    shutdown), and nothing marks it stopped by the user, so that the next boot brings it back."""

    def __init__(self) -> None:
        self.now = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, _sig: int, _frame: FrameType | None) -> None:
        self.now = True

    def noted(self, sig: int) -> None:
        """For :func:`start`: a signal came while PID 1 ran (the supervise loop forwarded it)."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.now = True


def _restarts(container: Container, code: int, ran_for: float, told: _Told) -> None:
    """After PID 1 exited with ``code`` after ``ran_for`` seconds: restart it as its policy says (Docker's
    restart manager, :class:`runner.spec.RestartPolicy`), recorded as "restarting" with the exit code and the
    count meanwhile, until the policy says no, a user stops it (or starts it: then that start owns it) or a start
    fails. Each decision is taken under the :class:`StartLock`, as every start's is."""
    policy, delay = container.spec.restart, 0.0
    while True:
        lock = StartLock(container)
        try:
            state = container.as_written()  # state() already reads an exit we are about to restart as restarting
            if state.status != "exited" or told.now or container.stopped_by_user() or \
                    not policy.restarts(code, state.restart_count, False):
                return
            delay = policy.delay(delay, ran_for)
            container.set_state(status="restarting", restart_count=state.restart_count + 1)
        finally:
            lock.release()
        waited = _back_off(container, delay, told)
        lock = StartLock(container)
        try:
            if container.state().status != "restarting":  # a user's stop or start took it over
                return
            if not waited or told.now or container.stopped_by_user():
                container.set_state(status="exited")
                return
            release(container)  # what the last run left (idempotent)
            began = time.monotonic()
            code = start(container, echo=False, started=_releasing(lock), noted=told.noted)
            ran_for = time.monotonic() - began
        except StrataError:  # it did not start: recorded with the cause (start), and not retried (Docker's)
            if container.as_written().status == "restarting":  # it failed before PID 1 was made
                container.set_state(status="exited")
            return
        finally:
            lock.release()


def _releasing(lock: StartLock) -> Callable[[str, int], None]:
    """A ``started`` that lets the next start in once this one's PID 1 runs (or failed)."""
    return lambda error, code: lock.release()


def _back_off(container: Container, delay: float, told: _Told) -> bool:
    """Wait ``delay`` seconds; False as soon as a user stopped it (or removed it) or we were told to end."""
    deadline = time.monotonic() + delay
    while (left := deadline - time.monotonic()) > 0:
        if told.now or container.stopped_by_user() or not container.dir.exists():
            return False
        time.sleep(min(left, 0.05))
    return not (told.now or container.stopped_by_user())
