"""The one message protocol between the runner and the processes it starts: a SOCK_SEQPACKET socketpair carrying
typed messages, one per packet (so none is ever read half or two at once), and the pty's master fd with its
message. Three conversations use it, with these messages and no others:

``start``, our executor (:mod:`runner.executor.own`), between the runner and the container's PID 1:

    runner -> PID 1   Go                    PID 1 is in the container's cgroup: unshare, build the root, exec
    PID 1 -> runner   Pty (+ the fd)        -t: the pty opened inside the container; the runner relays it
    PID 1 -> runner   Failed(message, code) it could not exec; it _exits with ``code`` (Docker's 125/126/127)
    PID 1 -> runner   (end of file)         it exec'd: its end is close-on-exec, and nothing else holds it

The end of file is what tells "the command runs" from "we are still setting up", and it cannot come early: the
child's end is its only copy (every other fd is closed before exec), and it closes exactly at a successful exec.

A detached container's monitor (:mod:`runner.container.monitor`) to the runner that waits for it: Running once
the command was exec'd, or Failed; an end of file before either means the monitor died first.

``exec``'s stage (stage.c, :mod:`runner.executor.stage`) and ``runner exec``:

    runner -> stage   Go                    the stage is in the container's cgroups: join its namespaces, go on
    stage -> runner   Pty (+ the fd)        -t: the pty opened in the container; the runner relays it
    stage -> runner   SetupFailed(step, errno, at)  a step before the command's fork failed (numbers only: the
                                            runner's table says it in words); the stage exits with 125
    stage -> runner   (end of file)         it closed every fd before forking the command (there the command's
                                            exec is not the signal: the stage outlives it)

``runner-oci create`` (:mod:`runner.oci.init`) and the init of a caller's bundle:

    runner-oci -> init   Go                 in its cgroup: make the namespaces (then again: hooks ran, build the root)
    init -> runner-oci   Step("namespaces") they are made: the prestart and createRuntime hooks may run
    init -> runner-oci   Pty (+ the fd)     process.terminal: the pty, for the caller's console socket
    init -> runner-oci   Step("created")    set up; it waits on exec.fifo for ``start``
    init -> runner-oci   Failed(message, code)  it could not; it exits

Every packet is at most MAX_MESSAGE bytes, read with one bounded recv; a Failed message arrives as one line with
no control characters, whoever wrote it, its text cut to fit.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Go:
    """Runner to PID 1: go on (PID 1 was put in its cgroup)."""


@dataclass(frozen=True)
class Running:
    """Monitor to runner (``run -d``, ``start``): the command was exec'd; the runner may print and exit."""


@dataclass(frozen=True)
class Pty:
    """PID 1 or exec's stage to the runner: the master end of the container's terminal (``fd`` is the receiver's
    copy)."""

    fd: int = -1


@dataclass(frozen=True)
class Failed:
    """PID 1, the monitor or exec's stage to the runner: why the command could not run, on one line, and the exit
    code that goes with it."""

    message: str
    code: int


@dataclass(frozen=True)
class SetupFailed:
    """exec's stage to the runner: which of its steps failed before the command's fork, the errno, and for the
    working directory's making how much of its path it had reached. Numbers only: the stage is a small C program
    that says nothing in words (runner.executor.stage's table does)."""

    step: int
    errno: int
    at: int = 0


@dataclass(frozen=True)
class Step:
    """A caller's init to ``runner-oci create``: how far it got (``namespaces``, ``created``)."""

    name: str


Message = Go | Running | Pty | Failed | SetupFailed | Step


class Channel:
    """One end of the pair. Both ends are close-on-exec."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        """(the parent's end, the child's end)."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Message) -> None:
        if isinstance(message, Go | Running):
            self.sock.send(json.dumps({"type": "go" if isinstance(message, Go) else "running"}).encode())
        elif isinstance(message, Pty):
            socket.send_fds(self.sock, [b'{"type": "pty"}'], [message.fd])
        elif isinstance(message, Step):
            self.sock.send(json.dumps({"type": "step", "name": message.name[:100]}).encode())
        elif isinstance(message, SetupFailed):  # as stage.c writes it
            self.sock.send(json.dumps({"type": "setup-failed", "step": message.step, "errno": message.errno,
                                       "at": message.at}).encode())
        else:
            text = message.message
            while len(data := json.dumps({"type": "failed", "message": text, "code": message.code}).encode()) \
                    > MAX_MESSAGE:
                text = text[:len(text) // 2]
            self.sock.send(data)

    def recv(self) -> Message | None:
        """The next message, or None at end of file (the other end exec'd, exited or closed)."""
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        doc = json.loads(data)
        kind = doc.get("type")
        if kind == "pty" and fds:
            return Pty(fds[0])
        for fd in fds:
            os.close(fd)
        if kind == "go":
            return Go()
        if kind == "running":
            return Running()
        if kind == "failed":
            return Failed(_one_line(str(doc.get("message", ""))), int(doc.get("code", 125)))
        if kind == "step":
            return Step(str(doc.get("name", "")))
        if kind == "setup-failed":
            return SetupFailed(int(doc.get("step", 0)), int(doc.get("errno", 0)), int(doc.get("at", 0)))
        raise ValueError(f"unexpected message on the channel: {data[:200]!r}")

    def close(self) -> None:
        self.sock.close()


def _one_line(text: str) -> str:
    """What a terminal shows as it is: every control character (newline, escape) becomes ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)
