"""``start``: run a container's saved spec (config.json, :mod:`runner.spec`) with the executor it was created for
(:func:`runner.container.lifecycle.executor_of`: our own, or an OCI runtime) and wait for it, recording what
happens in its record: running once PID 1's command was exec'd (with the identity later commands check it by),
exited with its code (or with the error that kept it from running) once it is gone and released
(:mod:`runner.container.release`). Nothing here parses an option, everything is read from the spec; the network
namespace PID 1 joins is made first (:mod:`runner.container.network`). While it runs, the one supervise loop
(:mod:`runner.executor.supervise`) forwards our signals to it and relays its output.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner.container import lifecycle, network
from runner.container.record import Container
from runner.container.release import release
from runner.executor import process
from runner.executor.protocol import StartFailed
from runner.executor.supervise import supervise
from runner.logs import writer as logs
from shared.errors import StrataError

if TYPE_CHECKING:
    from runner.executor.attach import Server

START_LOCK = "start.lock"


class StartLock:
    """Held from the decision to start a container until its PID 1 is recorded as running, or failed: two
    ``start``s of one container never both run it; the second waits, then finds it running. An flock(2), so a
    killed runner cannot leave it held; a forked monitor shares it until it closes its copy."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.fd = os.open(container.path(START_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def running(self) -> bool:
        """Running, or restarting (its monitor starts it again): Docker's ``start`` leaves both alone."""
        return self.container.state().status in ("running", "restarting")

    def release(self) -> None:
        """Idempotent; in a forked monitor, drops only its copy."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def start(container: Container, echo: bool = True, attach_stdin: bool | None = None,
          started: Callable[[str, int], None] = lambda error, code: None, client: socket.socket | None = None,
          noted: Callable[[int], None] | None = None) -> int:
    """Run the container and wait for it; return its exit code (Docker's convention for ours). Its output goes
    to its log and, with ``echo``, to our stdout/stderr (or terminal); our stdin goes to it when it was created
    with -i and ``attach_stdin`` (default: ``echo``). ``started`` is told ("", 0) once the command was exec'd, or
    the error that kept it from starting and the exit code that goes with it. The caller holds a
    :class:`StartLock` until then. Without ``echo`` (the monitor) clients may attach to it
    (:mod:`runner.executor.attach`); ``client`` is one already connected (``run -it``)."""
    spec = container.spec
    feed = spec.interactive and (echo if attach_stdin is None else attach_stdin)
    try:
        netns = network.setup(container)
    except StrataError as e:
        container.set_state(error=str(e))  # as Docker's State.Error: it stays created (or exited), with the cause
        raise
    try:
        return _run(container, netns, feed, echo, started, client, noted)
    except BaseException:
        network.release(container)  # idempotent: a start that failed before PID 1 ran has nothing else to free
        raise
    finally:
        network.close(netns)


def _run(container: Container, netns: int | None, feed: bool, echo: bool, started: Callable[[str, int], None],
         client: socket.socket | None, noted: Callable[[int], None] | None) -> int:
    """:func:`start` once the network is there: create PID 1, supervise it, release and record its exit."""
    log = logs.LogWriter(container.path(logs.LOG_NAME), container.spec.log)
    server: Server | None = None
    try:
        if not echo:  # the monitor's: a foreground run imports none
            from runner.executor.attach import Server

            server = Server(container.dir, container.spec.interactive, client)
        try:
            pid1 = lifecycle.executor_of(container).create(netns)
        except StartFailed as e:  # the command never ran: recorded as exited with the cause, as Docker's
            code = e.exit_code or process.EXIT_RUNNER_ERROR
            release(container)
            container.set_state(status="exited", exit_code=code, finished=time.time(), error=str(e))
            started(str(e), code)
            raise

        def running() -> None:
            """Exec'd: only now may anything join it (exec, kill), and it is the command, not us."""
            container.record_running(pid1.pid)
            started("", 0)

        code = supervise(pid1, feed, log, echo, running, server=server, noted=noted)
        log.close()
        release(container)  # nothing outlives PID 1 in its pid namespace, but be sure before the cgroup goes
        container.set_state(status="exited", exit_code=code, finished=time.time(), error="")
        if server is not None:  # once recorded: a client that exits with the code finds the container exited
            server.finish(code)
        return code
    finally:
        log.close()
        if server is not None:
            server.close()
