"""``exec``: run another command in a running container: its namespaces, its cgroup, its user, environment,
capabilities and limits (by being in its cgroup), optionally with a terminal of its own.

setns(CLONE_NEWPID) applies to children only, so an intermediate process joins everything and forks the
command; the intermediate passes the command's exit status back.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from runner import cgroups, linux, process, tty
from runner.container import Container
from shared.errors import Kind, StrataError, usage

# setns order: the mount namespace last, since /proc/PID/ns of the host is out of reach after it
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")


@dataclass(frozen=True)
class ExecOptions:
    command: Sequence[str]
    interactive: bool = False
    tty: bool = False
    user: str | None = None
    env: Sequence[str] = ()
    workdir: str | None = None


def exec_in(container: Container, opts: ExecOptions) -> int:
    if not opts.command:
        raise usage("exec needs a command")
    state = container.state()
    if state.status != "running":
        raise StrataError(f"container {container.name} is not running", Kind.STATE)
    try:
        ns_fds = [os.open(f"/proc/{state.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
    except FileNotFoundError:
        raise StrataError(f"container {container.name} is not running", Kind.STATE) from None
    group = cgroups.for_container(container.id)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX) if opts.tty else (None, None)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        if parent_sock is not None:
            parent_sock.close()
        _intermediate(container, opts, group, ns_fds, err_w, child_sock)
    for fd in (*ns_fds, err_w):
        os.close(fd)
    if child_sock is not None:
        child_sock.close()
    try:
        master = tty.receive_master(parent_sock) if parent_sock is not None else None
        message = process.read_all(err_r)
        if master is not None:
            try:
                tty.relay(master, opts.interactive)
            finally:
                os.close(master)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(err_r)
        if parent_sock is not None:
            parent_sock.close()
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    if message:
        raise StrataError(message, Kind.SYSTEM, exit_code=code)
    return code


def _intermediate(container: Container, opts: ExecOptions, group: cgroups.Cgroup, ns_fds: list[int], err_w: int,
                  tty_sock: socket.socket | None) -> None:
    try:
        group.add(os.getpid())
        for fd in ns_fds:
            linux.setns(fd)
            os.close(fd)
        child = os.fork()
        if child == 0:
            _command(container, opts, err_w, tty_sock)
        os.close(err_w)  # only the command may hold it: the runner reads it to EOF before relaying a terminal
        if tty_sock is not None:
            tty_sock.close()
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except BaseException as e:
        process.fail(err_w, e, "exec in the container")


def _command(container: Container, opts: ExecOptions, err_w: int, tty_sock: socket.socket | None) -> None:
    try:
        linux.set_parent_death_signal(signal.SIGKILL)
        if tty_sock is not None:
            tty.become_terminal_child(tty_sock)
        elif not opts.interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        process.become_and_exec(container.config, opts.command, err_w, opts.user, opts.workdir, opts.env, opts.tty)
    except BaseException as e:
        process.fail(err_w, e, "exec in the container")
