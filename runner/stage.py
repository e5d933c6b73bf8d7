"""The exec stage: the process that joins a running container for ``runner exec`` (see :mod:`runner.exec`).

It runs from a sealed memfd copy of the interpreter with an empty environment, so that neither it nor the child
it forks into the container's pid namespace names a host file in ``/proc/PID/exe`` or carries the host's
environment in ``/proc/PID/environ``; it is non-dumpable, so those and ``/proc/PID/fd`` need CAP_SYS_PTRACE even to
look at; it dies with the runner, and its child dies with it.

setns() of a pid namespace applies to children only: the stage itself is never visible in the container's pid
namespace, and it does every privileged step there, before it forks (:func:`runner.process.become`: user lookup,
working directory, keyring, limits, bounding set, seccomp, credentials, capabilities; the pty; closing every fd
the command must not hold). So the child, the one process of ours the container can see, is from its first moment
what the command will be: a tracer with CAP_SYS_PTRACE gains nothing the container did not have. It holds no
pidfd (its parent's death is checked with getppid(), 0 while a parent outside its pid namespace lives).

The job comes as JSON from the runner (fd numbers it passed, the container, the command); errors go back as one
line on the ``err`` pipe with Docker's exit code; the stage exits with the command's status.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, NoReturn

from runner import cgroups, linux, process, security, tty
from runner.container import find
from shared.store import Store

NAMESPACES = (linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP
              | linux.CLONE_NEWPID | linux.CLONE_NEWNS)


def main(job: dict[str, Any]) -> NoReturn:
    err_w: int = job["err"]
    for fd in (err_w, job["pidfd"], job["tty_sock"]):
        if fd >= 0:  # pass_fds made them inheritable: the command's exec must close them (err_w tells it exec'd)
            os.set_inheritable(fd, False)
    try:
        linux.set_name("strata-exec")
        linux.die_with_parent(job["runner"])  # a pidfd of the runner
        linux.set_undumpable()
        for fd in (job["exe"], job["job"]):  # what the command must never hold, even for a moment
            os.close(fd)
        container = find(Store(Path(job["root"])), job["id"])
        program = process.seccomp_program(container)
        if container.spec.runtime:  # before the cgroup namespace: its root is the group
            cgroups.join_groups_of(container.state().pid, os.getpid())
        else:
            cgroups.for_container(container.id).add(os.getpid())
        security.own_bounding_set()  # read now, from the host's /proc: the container's has no /proc/self for us
        process.forbid_imports()
        linux.setns(job["pidfd"], NAMESPACES)  # all at once, into the process the pidfd names, or none
        os.close(job["pidfd"])
        slave = _terminal(job["tty_sock"]) if job["tty_sock"] >= 0 else -1
        env = process.become(container.spec, program, job["user"], job["workdir"], job["env"], job["tty"])
        linux.set_undumpable()  # a change of credentials resets it to fs.suid_dumpable, which may be 1
        linux.die_with_parent(job["runner"])  # and cleared this
        process.close_fds(err_w, slave)  # the runner's pidfd among them: the command holds no host process's
        child = os.fork()
        if child == 0:
            _command(job["command"], env, err_w, slave)
        os.close(err_w)  # only the command may hold it: the runner reads it to EOF before relaying a terminal
        if slave >= 0:
            os.close(slave)
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except BaseException as e:
        process.fail(err_w, e, "exec in the container")


def _terminal(sock_fd: int) -> int:
    """-t: a pty in the container's devpts, opened here (root, before :func:`process.become`, as PID 1 opens its
    own), its master sent to the runner; the slave, for the command to take."""
    with socket.socket(fileno=sock_fd) as sock:
        return tty.open_terminal(lambda master: _send_master(sock, master))


def _send_master(sock: socket.socket, master: int) -> None:
    socket.send_fds(sock, [b"m"], [master])


def _command(argv: list[str], env: dict[str, str], err_w: int, slave: int) -> NoReturn:
    """The only process of ours in the container's pid namespace: it already is what the command will be
    (:func:`process.become` ran in the stage), holds only stdio, the error pipe and its terminal, and execs."""
    try:
        linux.die_with_parent(None)  # not inherited across fork; its parent, the stage, is outside our pid ns
        os.setsid()  # no controlling terminal unless it gets a pty of its own
        if slave >= 0:
            tty.take_terminal(slave)
        process.exec_command(argv, env)
    except BaseException as e:
        process.fail(err_w, e, "exec in the container")
