"""``start``: the executor. It runs a container's saved spec (config.json, :mod:`runner.spec`) as PID 1 in new
namespaces and waits for it; nothing here parses an option, everything is read from the spec.

Process model: the runner unshares only CLONE_NEWPID (which affects its children, not itself) and forks once; the
child is PID 1 of the new pid namespace. The two talk over one socketpair (:mod:`runner.executor.channel`): the parent
puts the child in the container's cgroup and says Go (a bridge or user network's namespace was made and attached by the
runner before the fork, :mod:`runner.container.network`, and the child joins it); the child unshares the spec's other
namespaces, builds the root (:mod:`runner.isolation.rootfs`), sends the pty's master with -t, drops to the spec's user
and execs; a failure comes back as one typed message with Docker's exit code (125, 126, 127), and the end of file says
the command runs. Signals the runner receives are forwarded to PID 1. When PID 1 has exited, the container is
released (:mod:`runner.container.release`) and its exit recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from runner import linux
from runner.container import network
from runner.container.record import Container, find
from runner.container.release import release
from runner.executor import process
from runner.executor.channel import Channel, Failed, Go, Pty
from runner.isolation import cgroups, rootfs, seccomp, tty
from runner.logs import writer as logs
from shared.errors import Kind, StrataError, usage
from shared.store.layout import Store

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
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
        return self.container.state().status == "running"

    def release(self) -> None:
        """Idempotent; in a forked monitor, drops only its copy."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _child(container: Container, chan: Channel, parent_fd: int, stdio: tuple[int, int, int],
           program: seccomp.Program | None, netns: int | None) -> NoReturn:
    """PID 1 of the new pid namespace. Never returns: execs the command or _exits with Docker's code."""
    try:
        spec = container.spec
        process.private_stdio(*stdio)  # first of all: the runner's fds may be the user's terminal
        linux.die_with_parent(parent_fd)  # a killed runner takes its container along
        linux.set_undumpable()
        os.setsid()  # no controlling terminal: /dev/tty answers ENXIO, and TIOCSTI has no terminal to type into
        if not isinstance(chan.recv(), Go):  # the runner has put us in the container's cgroup (or gave up)
            os._exit(process.EXIT_RUNNER_ERROR)
        flags = spec.unshare_flags()
        if netns is not None:  # the network's namespace, attached by the runner (runner/container/network.py)
            linux.setns(netns, linux.CLONE_NEWNET)
            os.close(netns)
            flags &= ~linux.CLONE_NEWNET
        linux.unshare(flags)
        socket.sethostname(spec.hostname)
        if flags & linux.CLONE_NEWNET:  # --network none: a namespace of its own, only lo
            network.loopback_up()
        rootfs.mount_and_pivot(container, len(spec.chain_ids))
        if spec.terminal:
            tty.take_terminal(tty.open_terminal(lambda master: chan.send(Pty(master)), console=True))
        process.become_and_exec(spec, spec.args, chan.fileno(), parent_fd, program, tty=spec.terminal,
                                init=spec.init)
    except BaseException as e:
        message, code = process.failure(e)
        with contextlib.suppress(OSError):
            chan.send(Failed(message, code))
        os._exit(code)


def start(container: Container, echo: bool = True, attach_stdin: bool | None = None,
          started: Callable[[str, int], None] = lambda error, code: None) -> int:
    """Run the container and wait for it; return its exit code (Docker's convention for ours). Its output goes
    to its log and, with ``echo``, to our stdout/stderr (or terminal); our stdin goes to it when it was created
    with -i and ``attach_stdin`` (default: ``echo``). ``started`` is told ("", 0) once the command was exec'd, or
    the error that kept it from starting and the exit code that goes with it. The caller holds a
    :class:`StartLock` until then."""
    spec = container.spec
    feed = spec.interactive and (echo if attach_stdin is None else attach_stdin)
    try:
        netns = network.setup(container)
    except StrataError as e:
        container.set_state(error=str(e))  # as Docker's State.Error: it stays created (or exited), with the cause
        raise
    try:
        if spec.runtime:
            from runner.executor import runtime

            return runtime.start(container, echo, feed, started, netns)
        return _start(container, echo, feed, started, netns)
    except BaseException:
        network.release(container)  # idempotent: a start that failed before PID 1 ran has nothing else to free
        raise
    finally:
        network.close(netns)


def _start(container: Container, echo: bool, feed: bool, started: Callable[[str, int], None],
           netns: int | None) -> int:
    """Our executor's start (:func:`start`); ``netns``: the network namespace PID 1 joins (None: its own)."""
    spec = container.spec
    program = process.seccomp_program(container)
    group = cgroups.for_container(container.id)
    group.create(spec.limits, spec.device_rules())
    parent, child = Channel.pair()
    stdio = process.Stdio(spec.terminal)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    me = os.pidfd_open(os.getpid())  # close-on-exec, like every fd Python opens
    try:
        linux.unshare(linux.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                parent.close()
                stdio.close()
                _child(container, child, me, stdio.child, program, netns)
        finally:
            if os.getpid() != 1:
                linux.setns(own_pidns, linux.CLONE_NEWPID)  # our later children stay in our namespace
        try:
            group.add(pid)
            parent.send(Go())
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            group.remove()
            stdio.close()
            parent.close()
            raise
    finally:
        for fd in (own_pidns, me):
            os.close(fd)
        stdio.close_child_ends()
        child.close()
    previous = {sig: signal.signal(sig, lambda s, _f: _forward(pid, s)) for sig in FORWARDED_SIGNALS}
    log = logs.LogWriter(container.path(logs.LOG_NAME), container.spec.log)
    master, failed = None, None
    try:
        while (message := parent.recv()) is not None:
            if isinstance(message, Pty):
                master = message.fd
            elif isinstance(message, Failed):
                failed = message
        if failed is None:  # exec'd: only now may anything join it (exec, kill), and it is the command, not us
            container.record_running(pid)
            started("", 0)
        if master is not None:
            try:
                tty.relay(master, feed, log, echo)
            finally:
                os.close(master)
        else:
            stdio.feed(feed)
            logs.pump({stdio.stdout: "stdout", stdio.stderr: "stderr"}, log, echo)
        _, status = os.waitpid(pid, 0)
    finally:
        parent.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stdio.close()
        log.close()
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    release(container)  # nothing outlives PID 1 in its pid namespace, but be sure before the cgroup goes
    container.set_state(status="exited", exit_code=code, finished=time.time(), error=failed.message if failed else "")
    if failed is not None:
        started(failed.message, code)
        raise StrataError(failed.message, Kind.SYSTEM, exit_code=code)
    return code


def _forward(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


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
                    raise StrataError(f"container {container.name} is already running; attaching to a running "
                                      "container is not supported", Kind.STATE)
                print(key)
                continue
            release(container)  # what a runner killed before it released may have left (idempotent)
            if not attach:
                from runner.container.monitor import detach

                detach(container, lock)
                print(key)
                continue
            try:
                code = start(container, echo=True, attach_stdin=interactive, started=_releasing(lock))
            finally:
                if container.spec.auto_remove:
                    from runner.container.release import remove

                    remove(container, force=True)
        finally:
            lock.release()
    return code


def _releasing(lock: StartLock) -> Callable[[str, int], None]:
    """A ``started`` callback that lets the next ``start`` in once this one's PID 1 runs (or failed)."""
    return lambda error, code: lock.release()
