"""The one supervise loop: what the runner does while a container process runs, whichever executor started it
(:mod:`runner.executor.own`, :mod:`runner.executor.runtime`) and for ``exec``'s stage: forward the signals the
runner receives to it, relay its terminal or its output (to the log and, with ``echo``, to ours), wait for it and
turn its wait status into Docker's exit code. runc's ``parentProcess.wait`` and crun's monitor loop do the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.executor.process import Stdio, handling
from runner.isolation import tty
from runner.logs import writer as logs
from shared.errors import Kind, StrataError

if TYPE_CHECKING:  # a foreground run imports no attach server
    from runner.executor.attach import Server

# what the runner passes on to the container's PID 1 (``run`` in the foreground, the monitor); the rest is ours
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
SWITCH = 0.0005  # s: the interpreter's switch interval while the bookkeeping runs beside the relay (_meanwhile)
FIRST = 0.001  # s: how long the command may be quiet before the relay's first moments end (supervise)
REPARENT_GRACE = 5.0  # seconds a runtime's PID 1 may take to become our child once its ``create`` has exited


def from_returncode(code: int) -> int:
    """Docker's exit code from a returncode (-N: killed by signal N, which Docker reports as 128+N)."""
    return 128 - code if code < 0 else code


def exit_code(status: int) -> int:
    """Docker's exit code from a wait status: the process's own, or 128+N when signal N killed it."""
    return from_returncode(os.waitstatus_to_exitcode(status))


def wait_status(pid: int, grace: float = REPARENT_GRACE) -> int:
    """``pid``'s wait status. A runtime's PID 1 is ours (we are a subreaper) only once ``RUNTIME create`` has
    exited, and the reparenting may lag by a moment, during which waitpid answers ECHILD: retried for ``grace``."""
    deadline = time.monotonic() + grace
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            if time.monotonic() > deadline:
                raise StrataError(f"container process {pid} is not ours to wait for", Kind.SYSTEM) from None
            time.sleep(0.01)


@dataclass
class Started:
    """A process that runs the command (PID 1 of a container, or exec's stage): its pid, the runner's ends of its
    stdio (pipes) and, with -t, its pty's master. The runner owns the fds until :meth:`close`."""

    pid: int
    stdio: Stdio
    master: int | None = None

    def wait(self) -> int:
        """Its exit code, once it has exited (Docker's convention)."""
        return exit_code(wait_status(self.pid))

    def close(self) -> None:
        """Idempotent."""
        if self.master is not None:
            os.close(self.master)
            self.master = None
        self.stdio.close()


def forward(pid: int, sig: int) -> None:
    """Signal ``pid``; one that has exited meanwhile is no error (it is ours to reap: its pid is not reused)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@contextlib.contextmanager
def forwarding(pid: int, noted: Callable[[int], None] | None = None) -> Iterator[None]:
    """While the block runs, :data:`FORWARDED_SIGNALS` go to ``pid`` instead of to us (``noted`` told of each,
    after); the handlers that were there before come back after it, however it ends."""
    def passing(sig: int, _frame: object) -> None:
        forward(pid, sig)
        if noted is not None:
            noted(sig)

    with handling(FORWARDED_SIGNALS, passing):
        yield


def relay(started: Started, feed: bool, log: logs.LogWriter | None, echo: bool, server: Server | None = None) \
        -> None:
    """Until the process's side closes: its terminal (with -t) or its stdout and stderr, to ``log`` and, with
    ``echo``, to ours, or with ``server`` to its clients; with ``feed``, our stdin to it (with ``server``, its
    clients' input). The pty's master is closed afterwards."""
    if server is not None:
        try:
            server.relay(started.pid, started.master, started.stdio, log)
        finally:
            if started.master is not None:
                os.close(started.master)
                started.master = None
    elif started.master is not None:
        try:
            tty.relay(started.master, feed, log, echo)
        finally:
            os.close(started.master)
            started.master = None
    else:
        started.stdio.feed(feed)
        logs.pump({started.stdio.stdout: "stdout", started.stdio.stderr: "stderr"}, log, echo)


@contextlib.contextmanager
def _meanwhile(running: Callable[[], None], pid: int) -> Iterator[None]:
    """Run ``running`` in a thread while the block (the relay) runs. The caller's bookkeeping once the command
    was exec'd (a record written, the runner told) takes 5-50 ms on a loaded machine: a relay that started only
    after it found both pipes full, and showed all of a quick writer's stdout before all its stderr; reading
    from the first moment, each stream is read as soon as it is ready, in the order written. The interpreter
    switches threads more often meanwhile (SWITCH), so that the relay waits for the bookkeeping's Python no
    longer than that. Should ``running`` fail, the process is killed (nothing may run unrecorded), and its error
    raised once the relay has ended."""
    failed: list[BaseException] = []

    def bookkeeping() -> None:
        try:
            running()
        except BaseException as e:
            failed.append(e)
            forward(pid, signal.SIGKILL)
        finally:
            sys.setswitchinterval(interval)

    import threading  # a command whose output outlasts the first moment only (not /bin/true's)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH)
    thread = threading.Thread(target=bookkeeping, name="running", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


def supervise(started: Started, feed: bool, log: logs.LogWriter | None, echo: bool,
              running: Callable[[], None] = lambda: None, forward_signals: bool = True,
              server: Server | None = None, noted: Callable[[int], None] | None = None) -> int:
    """Attend ``started`` to its end and return its exit code: signals forwarded to it (unless not
    ``forward_signals``, as for ``exec``), ``running`` called once they are (the caller records it), its output
    relayed (with ``server``, to attached clients too: the caller tells them the exit code), its exit waited
    for. Its fds are closed however it ends. The relay starts at once: ``running`` goes beside it
    (:func:`_meanwhile`)."""
    with forwarding(started.pid, noted) if forward_signals else contextlib.nullcontext():
        try:
            streams = {started.stdio.stdout: "stdout", started.stdio.stderr: "stderr"}
            if started.master is None and (echo or log is not None) and not logs.pump(streams, log, echo, FIRST):
                running()  # its output came and went before a thread would have started (/bin/true)
                relay(started, feed, log, echo, server)
            else:
                with _meanwhile(running, started.pid):
                    relay(started, feed, log, echo, server)
            return started.wait()
        finally:
            started.close()
