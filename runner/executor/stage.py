"""The exec stage: the processes that join a running container for ``runner exec`` (see :mod:`runner.container.exec`).

It runs from a sealed memfd copy of the interpreter with an empty environment, so that neither it nor the child
it forks into the container's pid namespace names a host file in ``/proc/PID/exe`` or carries the host's
environment in ``/proc/PID/environ``; it is non-dumpable, so those and ``/proc/PID/fd`` need CAP_SYS_PTRACE even to
look at; it dies with the runner, and its children die with it.

Three processes, each holding only what it must:

    stage   holds the channel to the runner (:mod:`runner.executor.channel`); forks the inner stage, waits for it, reads
            the command's fixed-size failure record (if any) and reports it on the channel as Failed; exits with the
            command's status. Never in the container's pid namespace, so nothing there can see or trace it.
    inner   joins the container (cgroup, then every namespace at once through a pidfd of its PID 1) and does every
            privileged step there (:func:`runner.executor.process.become`: user, working directory, keyring, limits,
            bounding set, seccomp, credentials, capabilities; the pty, whose master goes to the runner as Pty; a
            failure goes as Failed), closes every fd the command must not hold (the channel among them), and only
            then forks the command. setns() of a pid namespace applies to children only: it is not visible there.
    command the one process of ours the container can see: from its first moment what the command will be (a
            tracer with CAP_SYS_PTRACE gains nothing the container did not have). It holds stdio, its terminal
            and the write end of the record pipe (close-on-exec) and execs; if it cannot, it writes one
            RECORD (which step, errno) and exits with Docker's code.

A container may steal the record pipe (pidfd_getfd on the stopped child) and hold or write it: the stage reads it
only after the inner stage has exited (the command is gone), without blocking, one record; it builds the message
itself from its own table and the command's name, and only when the exit status is the one that record means. The
runner reads only the channel, which no process in the container ever held (the third review, issue 18).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from runner import linux
from runner.executor import process
from runner.executor.channel import Channel, Failed, Pty
from runner.executor.supervise import exit_code
from runner.isolation import cgroups, rootfs, security, tty
from runner.spec import Spec

NAMESPACES = (linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP
              | linux.CLONE_NEWPID | linux.CLONE_NEWNS)
WHAT = "exec in the container"

# The command's failure record: which step failed, and its errno (0: not an OSError)
RECORD = struct.Struct("=ii")
STEP_SETUP, STEP_EXEC = 1, 2


def main(job: dict[str, Any]) -> NoReturn:
    chan = Channel(socket.socket(fileno=job["chan"]))  # the inner stage closes every fd before the command's fork
    try:
        linux.set_name("strata-exec")
        linux.die_with_parent(job["runner"])  # a pidfd of the runner
        linux.set_undumpable()
        for fd in (job["exe"], job["job"]):  # what the command must never hold, even for a moment
            os.close(fd)
        record_r, record_w = os.pipe2(os.O_CLOEXEC)
        me = os.pidfd_open(os.getpid())
        inner = os.fork()
        if inner == 0:
            os.close(record_r)
            _inner(job, chan, me, record_w)
        for fd in (record_w, me, job["pidfd"]):
            os.close(fd)
        code = exit_code(os.waitpid(inner, 0)[1])
        failed = _read_record(record_r, job["command"][0], code)
        if failed is not None:
            _send(chan, failed)
    except BaseException as e:
        message, code = process.failure(e, WHAT)
        _send(chan, Failed(message, code))
    os._exit(code)


def _inner(job: dict[str, Any], chan: Channel, stage: int, record_w: int) -> NoReturn:
    """Join the container and become its process (module doc); fork the command; exit with its status."""
    try:
        linux.die_with_parent(stage)
        spec = replace(Spec.from_oci(job["spec"]), bundle=job["bundle"])
        program = process.seccomp_program(spec, Path(job["seccomp_cache"]))
        # before the cgroup namespace: its root is the group. Without root a container has none (a runtime's
        # PID 1 stays in the user's groups, where the stage already is; ours adds to a NoCgroup: nothing)
        if spec.runtime and cgroups.usable():
            cgroups.join_groups_of(job["pid1"], os.getpid())
        elif not spec.runtime:
            cgroups.for_container(spec.id).add(os.getpid())
        security.own_bounding_set()  # read now, from the host's /proc: the container's has no /proc/self for us
        rootfs.forbid_imports()
        # all at once, into the process the pidfd names, or none; its user namespace first, if it has its own
        linux.setns(job["pidfd"], NAMESPACES | (linux.CLONE_NEWUSER if spec.id_block is not None else 0))
        os.close(job["pidfd"])
        slave = tty.open_terminal(lambda master: chan.send(Pty(master))) if job["tty"] else -1
        env = process.become(spec, program, job["user"], job["workdir"], job["env"], job["tty"])
        linux.set_undumpable()  # a change of credentials resets it to fs.suid_dumpable, which may be 1
        linux.die_with_parent(stage)  # and cleared this
        process.close_fds(record_w, slave)  # the channel and every pidfd among them: the command holds none
        child = os.fork()
        if child == 0:
            _command(job["command"], env, record_w, slave)
        os.close(record_w)
        if slave >= 0:
            os.close(slave)
        os._exit(exit_code(os.waitpid(child, 0)[1]))
    except BaseException as e:
        message, code = process.failure(e, WHAT)
        _send(chan, Failed(message, code))  # closed already if the fork failed: the stage exits with the code
        os._exit(code)


def _command(argv: list[str], env: dict[str, str], record_w: int, slave: int) -> NoReturn:
    """The only process of ours in the container's pid namespace: it already is what the command will be, holds
    only stdio, its terminal and the record pipe, and execs; or writes one record and exits."""
    try:
        linux.die_with_parent(None)  # not inherited across fork; its parent is outside our pid ns
        os.setsid()  # no controlling terminal unless it gets a pty of its own
        if slave >= 0:
            tty.take_terminal(slave)
        process.exec_command(argv, env)
    except BaseException as e:
        step = STEP_EXEC if isinstance(e, process.ExecFailed) else STEP_SETUP
        cause = e.args[1] if isinstance(e, process.ExecFailed) else e
        number = (cause.errno or 0) if isinstance(cause, OSError) else 0
        try:
            os.write(record_w, RECORD.pack(step, number))
        finally:
            os._exit(_decode(step, number, argv[0])[1])


def _decode(step: int, number: int, name: str) -> tuple[str, int]:
    """A record as Docker's message and exit code, from our table: nothing of the record's but two numbers."""
    cause = OSError(number, os.strerror(number)) if 0 < number < 4096 else None
    if step == STEP_EXEC and cause is not None:
        return process.failure(process.ExecFailed(name, cause), WHAT)
    return process.failure(cause or RuntimeError("the command failed before its exec"), WHAT)


def _read_record(fd: int, name: str, code: int) -> Failed | None:
    """After the command is gone: at most one record, without waiting (a copy the container stole and holds
    must not stall us, and what it wrote is never more than RECORD.size bytes to us); believed only if the
    command exited with the code it means (a forged record cannot turn a success into a failure)."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, RECORD.size)
    except BlockingIOError:
        data = b""
    finally:
        os.close(fd)
    if len(data) != RECORD.size:
        return None
    step, number = RECORD.unpack(data)
    message, meant = _decode(step, number, name)
    return Failed(message, code) if meant == code else None


def _send(chan: Channel, message: Failed) -> None:
    """Best effort: the runner may be gone, or this process closed the channel already; the exit code remains."""
    with contextlib.suppress(OSError):
        chan.send(message)
