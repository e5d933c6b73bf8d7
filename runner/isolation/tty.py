"""``-t``: the container's terminal, and the runner's relay between it and the user's.

As runc does, the pty is opened inside the container (in its own devpts instance, after pivot_root), so programs
see a real ``/dev/pts/0``; the master end comes back to the runner over a unix socket (SCM_RIGHTS). The runner
puts its own terminal in raw mode, copies bytes both ways, and passes window size changes on (SIGWINCH).

What the user typed before the container's shell was up (while the runner started, with its terminal still in
cooked mode) is kept: the switch to raw mode waits for output to drain but discards no input (TCSADRAIN, not the
TCSAFLUSH ``tty.setraw`` uses by default), so those bytes are the first the relay reads and passes on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import sys
import termios
from collections.abc import Callable, Iterator

from runner import linux
from runner.logs.writer import LogWriter

CHUNK = 1 << 16


def open_terminal(send_master: Callable[[int], None], console: bool = False) -> int:
    """In the container's mount namespace (after pivot_root, or setns for exec): open a pty in its devpts, hand
    the master to the runner through ``send_master``; return the slave, for :func:`take_terminal`."""
    master, slave = os.openpty()
    try:
        if console:  # run -t: the container's console is its terminal (exec -t must not rebind it)
            linux.mount(f"/proc/self/fd/{slave}", "/dev/console", None, linux.MS_BIND)
        send_master(master)
    except BaseException:
        os.close(slave)
        raise
    finally:
        os.close(master)
    return slave


def take_terminal(slave: int) -> None:
    """Make ``slave`` this process's controlling terminal and stdio (it needs no privilege: the process that
    runs the command does it, in a session of its own)."""
    if os.getsid(0) != os.getpid():  # the caller usually made its own session already
        os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)


def _copy_winsize(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    import tty  # -t from a terminal only

    tty.setraw(fd, termios.TCSADRAIN)  # keep typeahead (module doc)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(master: int, interactive: bool, log: LogWriter | None = None, echo: bool = True) -> None:
    """Copy until the container side closes (every process holding the pty is gone: EIO on the master); the
    output also goes to the container's log."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    if echo and os.isatty(stdin):
        _copy_winsize(stdin, master)
    previous = signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(stdin, master))
    readers = [master, stdin] if interactive else [master]
    try:
        with raw(stdin) if interactive else contextlib.nullcontext():
            while True:
                ready, _, _ = select.select(readers, [], [])
                if master in ready:
                    try:
                        data = os.read(master, CHUNK)
                    except OSError as e:
                        if e.errno == errno.EIO:
                            return
                        raise
                    if not data:
                        return
                    if log is not None:
                        log.write("stdout", data)
                    if echo:
                        write_all(stdout, data)
                if stdin in ready:
                    data = os.read(stdin, CHUNK)
                    if data:
                        write_all(master, data)
                    else:
                        readers.remove(stdin)  # end of input; keep reading the container's output
    finally:
        signal.signal(signal.SIGWINCH, previous)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
