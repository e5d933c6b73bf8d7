"""The monitor: the process that owns a detached container (``run -d``, ``start`` without ``-a``). It runs in a
session of its own with no terminal, logs the container's output, records its exit, releases it and honours
``--rm``; the runner that made it returns once the command was exec'd (or with the error that stopped it), told
over a :class:`runner.executor.channel.Channel`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import NoReturn

from runner.container.record import Container
from runner.container.release import remove
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
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        start(container, echo=False, started=report, client=client)
    except BaseException as e:  # nothing of the monitor may reach the user's terminal
        report(str(e) or type(e).__name__, process.EXIT_RUNNER_ERROR)
        code = 1
    finally:
        if container.spec.auto_remove:
            with contextlib.suppress(BaseException):
                remove(container, force=True)
        os._exit(code)
