"""The exec stage: the process that joins a running container for ``runner exec`` (see :mod:`runner.exec`).

It runs from a sealed memfd copy of the interpreter with an empty environment, so that neither it nor the child
it forks into the container's pid namespace names a host file in ``/proc/PID/exe`` or carries the host's
environment in ``/proc/PID/environ``; it is non-dumpable, so those and ``/proc/PID/fd`` need CAP_SYS_PTRACE even to
look at; it dies with the runner, and its child dies with it.

The job comes as JSON from the runner (fd numbers it passed, the container, the command); errors go back as one
line on the ``err`` pipe with Docker's exit code; the stage exits with the command's status.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, NoReturn

from runner import cgroups, linux, process, seccomp, tty
from runner.container import Container, find
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
        for fd in (job["runner"], job["exe"], job["job"]):  # what the command must never hold, even for a moment
            os.close(fd)
        container = find(Store(Path(job["root"])), job["id"])
        program = process.seccomp_program(container)
        if container.spec.runtime:  # before the cgroup namespace: its root is the group
            cgroups.join_groups_of(container.state().pid, os.getpid())
        else:
            cgroups.for_container(container.id).add(os.getpid())
        process.forbid_imports()
        linux.setns(job["pidfd"], NAMESPACES)  # all at once, into the process the pidfd names, or none
        os.close(job["pidfd"])
        sock = socket.socket(fileno=job["tty_sock"]) if job["tty_sock"] >= 0 else None
        me = os.pidfd_open(os.getpid())
        child = os.fork()
        if child == 0:
            _command(container, job, me, err_w, sock, program)
        os.close(me)
        os.close(err_w)  # only the command may hold it: the runner reads it to EOF before relaying a terminal
        if sock is not None:
            sock.close()
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    except BaseException as e:
        process.fail(err_w, e, "exec in the container")


def _command(container: Container, job: dict[str, Any], parent_fd: int, err_w: int, sock: socket.socket | None,
             program: seccomp.Program | None) -> NoReturn:
    try:
        os.setsid()  # no controlling terminal unless it gets a pty of its own
        if sock is not None:
            tty.become_terminal_child(lambda master: _send_master(sock, master))
            sock.close()
        process.become_and_exec(container.spec, job["command"], err_w, parent_fd, program, job["user"],
                                job["workdir"], job["env"], job["tty"])
    except BaseException as e:
        process.fail(err_w, e, "exec in the container")


def _send_master(sock: socket.socket, master: int) -> None:
    socket.send_fds(sock, [b"m"], [master])
