"""The verbs that run a container: ``run`` = ``create`` + ``start``, as Docker's: in the foreground (exit with the
command's code, ``--rm`` honoured here), or with ``-d`` under a monitor (print the ID once the command runs); and
``start`` of containers already created (or exited)."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Sequence

from runner.container.create import create
from runner.container.monitor import carry_on, detach
from runner.container.options import RunOptions
from runner.container.record import Container, find
from runner.container.release import release, remove
from runner.container.start import StartLock, start
from shared.errors import Kind, StrataError, usage
from shared.store.layout import Store


def run(store: Store, opts: RunOptions, missing: Callable[[StrataError], None] | None = None) -> int:
    """``missing``: what to do when the store lacks the image (:func:`~runner.container.create.create`). As
    Docker's, ``-it`` in the foreground needs a terminal on stdin (``-t`` alone, or ``-d``, does not)."""
    if opts.tty and opts.interactive and not opts.detach and not os.isatty(0):
        raise StrataError("the input device is not a TTY", Kind.USAGE, exit_code=1)
    container = create(store, opts, missing)
    lock = StartLock(container)
    try:
        if opts.detach:
            detach(container, lock)
            print(container.id)
            return 0
        if opts.tty and opts.interactive:
            return _attached(container, lock, opts.detach_keys)
        try:
            return _foreground(container, lambda: start(container, started=_releasing(lock)))
        finally:
            if opts.remove:
                remove(container, force=True)
    finally:
        lock.release()


def _foreground(container: Container, run_it: Callable[[], int]) -> int:
    """Run it in the foreground and return its exit code; a restart policy then carries on in the background
    (:func:`runner.container.monitor.carry_on`), as Docker's client returns at the first exit."""
    began = time.monotonic()
    code = run_it()
    carry_on(container, code, time.monotonic() - began)
    return code


def start_command(store: Store, keys: Sequence[str], attach: bool, interactive: bool) -> int:
    """``runner start``, as Docker's: a created (or exited) container starts again with its spec and rw layer;
    one already running is left as it is (Docker's "not modified": its name is printed, no error). Without
    ``attach`` each starts under a monitor and its name is printed once it runs; with it (one container only,
    Docker's rule) its output is ours and so is its exit code, and ``interactive`` gives it our stdin."""
    if attach and len(keys) > 1:
        raise usage("you cannot start and attach multiple containers at once")
    code = 0
    for key in keys:
        container = find(store, key)
        lock = StartLock(container)
        try:
            if lock.running():
                if attach:
                    raise StrataError(f"container {container.name} is already running: runner attach "
                                      f"{container.name} attaches to it", Kind.STATE)
                print(key)
                continue
            release(container)  # what a runner killed before it released may have left (idempotent)
            container.clear_stopped_by_user()  # Docker's start: the policy applies again, counted from 0
            container.set_state(restart_count=0)
            if not attach:
                detach(container, lock)
                print(key)
                continue
            try:
                code = _foreground(container, functools.partial(
                    start, container, echo=True, attach_stdin=interactive, started=_releasing(lock)))
            finally:
                if container.spec.auto_remove:
                    remove(container, force=True)
        finally:
            lock.release()
    return code


def _attached(container: Container, lock: StartLock, detach_keys: str | None) -> int:
    """``run -it``: the container under a monitor (so that it can outlive us: Ctrl-P Ctrl-Q detaches, leaving
    it running, and ``run`` exits 0), we its first attach client from before its PID 1 runs; its exit code is
    ours, and with ``--rm`` we return once the monitor has removed it (Docker's ``run --rm`` waits for that)."""
    from runner.executor import attach
    from runner.executor.supervise import FORWARDED_SIGNALS

    keys = attach.detach_keys(detach_keys)
    ours, theirs = attach.pair()
    try:
        attach.resize(ours)  # the terminal's size is the first thing the monitor reads
        monitor = detach(container, lock, (ours, theirs))
        code = attached(container, ours, True, keys, FORWARDED_SIGNALS)
    finally:
        ours.close()
    if code is None:
        return 0
    if container.spec.auto_remove:
        os.waitpid(monitor, 0)
    return code


def attached(container: Container, sock: socket.socket, stdin: bool, keys: bytes, signals: tuple[int, ...]) \
        -> int | None:
    """Be ``container``'s attach client on ``sock`` (:func:`runner.executor.attach.client`) until it exits (its
    code) or we detach (None). A monitor that went away without a word leaves its record to say the code."""
    from runner.executor import attach

    try:
        return attach.client(sock, container.spec.terminal, stdin, keys, signals)
    except attach.Lost:
        try:
            state = container.state()
        except (OSError, StrataError):  # removed (--rm) meanwhile
            state = None
        if state is not None and state.status == "exited" and state.exit_code is not None:
            return state.exit_code
        raise StrataError(f"container {container.name}: its monitor went away before it exited", Kind.SYSTEM) \
            from None


def _releasing(lock: StartLock) -> Callable[[str, int], None]:
    """A ``started`` callback that lets the next ``start`` in once this one's PID 1 runs (or failed)."""
    return lambda error, code: lock.release()
