"""Our own executor: it runs a container's spec (config.json, :mod:`runner.spec`) as PID 1 in new namespaces;
nothing here parses an option or reads the container's record, everything comes from the spec.

Process model: a helper child of the runner unshares CLONE_NEWPID, forks PID 1 of the new pid namespace and
exits; the runner, a child subreaper, inherits PID 1 (:meth:`OwnExecutor._fork` says why). The two talk over one
socketpair (:mod:`runner.executor.channel`): the parent puts the child in the container's cgroup and says Go (a
bridge or user network's namespace was made and attached by the runner before the fork,
:mod:`runner.container.network`, and the child joins it); the child unshares the spec's other namespaces, builds
the root (:mod:`runner.isolation.rootfs`), sends the pty's master with -t, drops to the spec's user and execs; a
failure comes back as one typed message with Docker's exit code (125, 126, 127), and the end of file says the
command runs. The runner then supervises it (:mod:`runner.executor.supervise`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from typing import NoReturn

from runner import linux
from runner.executor import process
from runner.executor.channel import Channel, Failed, Go, Pty
from runner.executor.protocol import StartFailed, release_cgroup, signal_pidfd
from runner.executor.supervise import Started, exit_code, wait_status
from runner.isolation import cgroups, rootfs, seccomp, tty
from runner.isolation.freezer import Freezer
from runner.spec import Spec
from shared.errors import Kind, StrataError


class OwnExecutor:
    """:class:`runner.executor.protocol.Executor` for our own executor."""

    def __init__(self, spec: Spec, store_root: Path) -> None:
        self.spec = spec
        self.seccomp_cache = store_root / "cache" / "seccomp"
        self.freezer: Freezer | None = None  # while paused

    def create(self, netns: int | None) -> Started:
        program = process.seccomp_program(self.spec, self.seccomp_cache)
        if self.spec.id_block is not None:  # made here, before the fork, so that the helper can enter it
            from runner.isolation import idmap

            idmap.userns_of(self.spec.id_block)
        group = cgroups.for_container(self.spec.id)  # one look at mountinfo and /proc/self/cgroup for both uses
        group.create(self.spec.limits, self.spec.device_rules())
        parent, child = Channel.pair()
        stdio = process.Stdio(self.spec.terminal)
        try:
            pid = self._fork(parent, child, stdio, program, netns, group)
        finally:
            stdio.close_child_ends()
            child.close()
        started = Started(pid, stdio)
        failed = None
        try:
            while (message := parent.recv()) is not None:  # until it exec'd, or exited
                if isinstance(message, Pty):
                    started.master = message.fd
                elif isinstance(message, Failed):
                    failed = message
        except BaseException:
            started.close()
            raise
        finally:
            parent.close()
        if failed is not None:  # it _exits with the code it sent; its wait status says so
            started.close()
            raise StartFailed(failed.message, Kind.SYSTEM, exit_code=exit_code(wait_status(pid)))
        return started

    def pause(self) -> None:
        """The cgroup freezer (runner/isolation/freezer.py); a failure part-way is undone by :meth:`resume`."""
        self.freezer = Freezer(self.spec.id, self.spec.name)
        self.freezer.freeze()

    def resume(self) -> None:
        if self.freezer is None:
            Freezer(self.spec.id, self.spec.name).recover()
        else:
            self.freezer.thaw()
            self.freezer = None

    def _fork(self, parent: Channel, child: Channel, stdio: process.Stdio, program: seccomp.Program | None,
              netns: int | None, group: cgroups.Cgroup) -> int:
        """PID 1, forked into a new pid namespace, put in the container's cgroup and told Go.

        A helper child unshares CLONE_NEWPID, forks PID 1 and exits; the runner, a child subreaper, inherits PID 1
        (as it inherits an OCI runtime's, :mod:`runner.executor.runtime`). Unsharing here and setns()ing back
        after the fork would cost no helper, but a user namespace may not setns() into the host's pid namespace
        (issue 20), and one shape serves root and users alike."""
        linux.set_child_subreaper()
        me = os.pidfd_open(os.getpid())  # close-on-exec, like every fd Python opens
        said_r, said_w = os.pipe()
        try:
            helper = os.fork()
            if helper == 0:
                os.close(said_r)
                _pid_namespace_helper(self.spec, parent, child, me, stdio, program, netns, said_w)
            os.close(said_w)
            said_w = -1
            os.waitpid(helper, 0)
            said = os.read(said_r, 4096).decode(errors="replace")
        finally:
            for fd in (me, said_r, said_w):
                if fd >= 0:
                    os.close(fd)
        if not said.startswith("pid "):
            raise StrataError(f"cannot make the container's pid namespace: {said or 'the helper died'}",
                              Kind.SYSTEM)
        pid = int(said.split()[1])
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
        return pid

    def kill(self, pidfd: int, sig: int) -> None:
        signal_pidfd(pidfd, sig)

    def release(self) -> None:
        """Its cgroup: nothing outlives PID 1 in its pid namespace, but be sure before the group goes. Mounts
        live in the container's own mount namespace and vanish with its last process."""
        release_cgroup(self.spec.id)


def _pid_namespace_helper(spec: Spec, parent: Channel, child: Channel, runner: int, stdio: process.Stdio,
                          program: seccomp.Program | None, netns: int | None, said: int) -> NoReturn:
    """The helper of :meth:`OwnExecutor._fork`: says ``pid N`` (N as the runner's namespace numbers it) or why
    not, and exits at once, which hands PID 1 to the runner."""
    try:
        if spec.id_block is not None:  # --userns=auto: the overlay, then the user namespace (idmap's doc)
            from runner.isolation import idmap

            idmap.enter(spec.bundle, lambda userns: rootfs.mount_overlay(spec, userns), spec.id_block)
        linux.unshare(linux.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            os.close(said)
            parent.close()
            stdio.close()
            _child(spec, child, runner, stdio.child, program, netns)
        os.write(said, f"pid {pid}".encode())
        os._exit(0)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(said, process.failure(e)[0].encode())
        os._exit(1)


def _child(spec: Spec, chan: Channel, parent_fd: int, stdio: tuple[int, int, int], program: seccomp.Program | None,
           netns: int | None) -> NoReturn:
    """PID 1 of the new pid namespace. Never returns: execs the command or _exits with Docker's code."""
    try:
        process.private_stdio(*stdio)  # first of all: the runner's fds may be the user's terminal
        linux.set_undumpable()
        os.setsid()  # no controlling terminal: /dev/tty answers ENXIO, and TIOCSTI has no terminal to type into
        if not isinstance(chan.recv(), Go):  # the runner has put us in the container's cgroup (or gave up)
            os._exit(process.EXIT_RUNNER_ERROR)
        # only now: the helper that forked us has exited and the runner is our parent; a runner killed before
        # Go closed the channel, and recv() said so
        linux.die_with_parent(parent_fd)  # a killed runner takes its container along
        flags = spec.unshare_flags()
        if netns is not None:  # the network's namespace, attached by the runner (runner/container/network.py)
            linux.setns(netns, linux.CLONE_NEWNET)
            os.close(netns)
            flags &= ~linux.CLONE_NEWNET
        linux.unshare(flags)
        socket.sethostname(spec.hostname)
        if flags & linux.CLONE_NEWNET:  # --network none: a namespace of its own, only lo
            linux.loopback_up()
        rootfs.mount_and_pivot(spec)
        if spec.terminal:
            tty.take_terminal(tty.open_terminal(lambda master: chan.send(Pty(master)), console=True))
        process.become_and_exec(spec, spec.args, chan.fileno(), parent_fd, program, tty=spec.terminal,
                                init=spec.init)
    except BaseException as e:
        message, code = process.failure(e)
        with contextlib.suppress(OSError):
            chan.send(Failed(message, code))
        os._exit(code)
