"""Attaching to a detached container: the monitor's attach server and the client of ``runner attach`` and ``run
-it``.

A detached container is owned by its monitor (:mod:`runner.container.monitor`), which relays its terminal (with
-t) or its stdout and stderr to the log. With an attach server it relays them to attached clients too, and their
input to PID 1's terminal or stdin pipe (a container created with -i): Docker's attach, with several clients at
once (all see the output, any may type, the last resize wins). The server is a unix socket in the container's
directory, ``attach.sock``, mode 0600, and answers only a peer of its own uid (SO_PEERCRED: root, or, rootless,
the user, uid 0 of the user's namespace). It is bound through ``/proc/self/fd/N/`` of the directory, as a
container's directory is longer than a socket's 108-byte name allows.

The protocol is SOCK_SEQPACKET, one message a packet, its first byte its kind:

    server -> client  b"1" DATA   stdout (or the terminal)      b"2" DATA  stderr
                      b"x" CODE   PID 1 exited with CODE (decimal): the last message
    client -> server  b"0" DATA   input for PID 1                b"w" ROWS COLS (struct "HH")  resize its terminal
                      b"k" SIG    a signal (decimal) for PID 1 (``--sig-proxy``)

A client that cannot keep up is given up (its queue passes QUEUE_LIMIT): a slow terminal never stalls the
container nor the others. Detaching (Docker's Ctrl-P Ctrl-Q, or ``--detach-keys``) is the client's: it matches the
keys in what the user types, as Docker's escape proxy does, and leaves; the container goes on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

from runner.executor.process import Stdio, handling
from runner.isolation import tty
from runner.logs import writer as logs
from shared.errors import usage

SOCKET_NAME = "attach.sock"
PACKET = 1 << 16  # the most data in one message
QUEUE_LIMIT = 8 << 20  # bytes queued for one client before it is given up
DEFAULT_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q
# moby/term's names of the control characters, by code (ToBytes)
_CTRL = [f"ctrl-{c}" for c in "@abcdefghijklmnopqrstuvwxyz[\\]^_"]


def detach_keys(text: str | None) -> bytes:
    """Docker's ``--detach-keys``: comma-separated keys, each one character or ``ctrl-X`` (X in a-z, @, [, \\, ],
    ^, _); unset or empty: ctrl-p,ctrl-q. Refused in Docker's words."""
    if not text:
        return DEFAULT_KEYS
    codes = bytearray()
    for key in text.split(","):
        if len(key.encode()) == 1:
            codes += key.encode()
        elif key in _CTRL:
            codes.append(_CTRL.index(key))
        else:
            raise usage(f"Invalid detach keys ({text}) provided")
    return bytes(codes)


def _name(dirfd: int) -> str:
    """The socket's name through ``dirfd``, an O_PATH fd of its directory (short, whatever the directory)."""
    return f"/proc/self/fd/{dirfd}/{SOCKET_NAME}"


def _open_dir(directory: Path) -> int:
    return os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


class _Client:
    """A connected client: its socket (non-blocking) and what it has not taken yet."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.queue: list[bytes] = []
        self.queued = 0

    def send(self, packet: bytes) -> bool:
        """Send or queue; False when the client is gone or too far behind."""
        if not self.queue:
            try:
                self.sock.send(packet)
                return True
            except BlockingIOError:
                pass
            except OSError:
                return False
        self.queue.append(packet)
        self.queued += len(packet)
        return self.queued <= QUEUE_LIMIT

    def flush(self) -> bool:
        while self.queue:
            try:
                self.sock.send(self.queue[0])
            except BlockingIOError:
                return True
            except OSError:
                return False
            self.queued -= len(self.queue.pop(0))
        return True


class Server:
    """The monitor's attach server for one run of a container's PID 1 (see the module doc). ``first``, if given,
    is a client connected before PID 1 ran (``run -it``): it sees every byte from the first."""

    def __init__(self, directory: Path, interactive: bool, first: socket.socket | None = None) -> None:
        self.interactive = interactive
        self.dirfd = _open_dir(directory)
        self.path = _name(self.dirfd)
        self.clients: dict[int, _Client] = {}
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # a killed monitor's
            mask = os.umask(0o177)  # born 0600: no moment when another user could connect
            try:
                self.listener.bind(self.path)
            finally:
                os.umask(mask)
            self.listener.listen(16)
            self.listener.setblocking(False)
        except BaseException:
            self.close()
            raise
        if first is not None and first.fileno() >= 0:  # a start again (a restart) finds it closed: gone
            self._add(first)
        self.pid = 0
        self.into = -1
        self.terminal = -1
        self.pending = bytearray()

    def _add(self, sock: socket.socket) -> None:
        self.clients[sock.fileno()] = _Client(sock)

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionAbortedError):
            sock, _ = self.listener.accept()
            _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.geteuid():  # mode 0600 already says so; the kernel's word is checked too
                sock.close()
                return
            self._add(sock)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            client.sock.close()

    def _broadcast(self, packet: bytes) -> None:
        for fd, client in list(self.clients.items()):
            if not client.send(packet):
                self._drop(fd)

    def relay(self, pid: int, master: int | None, stdio: Stdio, log: logs.LogWriter | None) -> None:
        """Until PID 1's side closes: its terminal, or its stdout and stderr, to ``log`` and to the clients; the
        clients' input to it. The pipes' ends stay the caller's to close (the master too)."""
        self.pid = pid
        if master is not None:
            outputs = {master: "stdout"}
            self.terminal = master
            self.into = master if self.interactive else -1
        else:
            outputs = {stdio.stdout: "stdout", stdio.stderr: "stderr"}
            if self.interactive and stdio.stdin >= 0:
                self.into = stdio.stdin
            else:
                stdio.feed(False)
        for fd in (*outputs, self.into):
            if fd >= 0:
                os.set_blocking(fd, False)
        for fd in outputs:
            with contextlib.suppress(OSError):  # as logs.pump: fewer wakeups for a busy writer
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, logs.BATCH)
        pacer = logs.Pacer()
        while outputs:
            readers = [*outputs, self.listener.fileno(), *self.clients]
            writers = [fd for fd, c in self.clients.items() if c.queue]
            if self.pending and self.into >= 0:
                writers.append(self.into)
            ready, writable, _ = select.select(readers, writers, [])
            got: set[str] = set()
            for fd in ready:
                if fd in outputs:
                    got.update(self._output(fd, outputs, log))
                elif fd == self.listener.fileno():
                    self._accept()
                elif fd in self.clients:
                    self._from_client(fd)
            self._flush(writable)
            pacer.wait(got, bool(outputs))  # as logs.pump: a stream that keeps writing is read in batches

    def _output(self, fd: int, outputs: dict[int, str], log: logs.LogWriter | None) -> tuple[str, ...]:
        """Read what ``fd`` has: its stream's name, or none (and ``fd`` forgotten at its end)."""
        try:
            data = os.read(fd, logs.BATCH)
        except BlockingIOError:
            return ()
        except OSError as e:
            if e.errno != errno.EIO:  # a pty's master once every process holding its slave is gone
                raise
            data = b""
        if not data:
            del outputs[fd]
            return ()
        stream = outputs[fd]
        if log is not None:
            log.write(stream, data)
        tag = b"1" if stream == "stdout" else b"2"
        for at in range(0, len(data), PACKET):
            self._broadcast(tag + data[at:at + PACKET])
        return (stream,)

    def _from_client(self, fd: int) -> None:
        try:
            packet = self.clients[fd].sock.recv(PACKET + 1)
        except BlockingIOError:
            return
        except OSError:
            packet = b""
        if not packet:
            self._drop(fd)
            return
        kind, body = packet[:1], packet[1:]
        if kind == b"0" and self.into >= 0:
            self.pending += body
        elif kind == b"w" and self.terminal >= 0 and len(body) == 4:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.terminal, termios.TIOCSWINSZ, body + b"\0\0\0\0")
        elif kind == b"k" and body.isdigit() and 0 < int(body) < signal.NSIG:
            with contextlib.suppress(ProcessLookupError):  # exited: ours to reap, its pid not reused meanwhile
                os.kill(self.pid, int(body))

    def _flush(self, writable: list[int]) -> None:
        for fd in writable:
            if fd == self.into and self.pending:
                try:
                    del self.pending[:os.write(fd, self.pending)]
                except BlockingIOError:
                    pass
                except OSError:  # it closed its stdin: what comes is dropped
                    self.pending.clear()
                    self.into = -1
            elif fd in self.clients and not self.clients[fd].flush():
                self._drop(fd)

    def finish(self, code: int) -> None:
        """PID 1 exited with ``code``: each client is told, after what it has not taken yet (a second at most).
        What a client typed that nobody will read is taken first: closing on unread input would reset the
        client's end, which reports that before the code."""
        for fd, client in list(self.clients.items()):
            with contextlib.suppress(OSError):
                while client.sock.recv(PACKET + 1):
                    pass
            client.sock.settimeout(1.0)
            try:
                for packet in [*client.queue, b"x%d" % code]:
                    client.sock.send(packet)
            except OSError:
                pass
            self._drop(fd)

    def close(self) -> None:
        """Idempotent: the clients, the socket and its name."""
        for fd in list(self.clients):
            self._drop(fd)
        if self.listener.fileno() >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.listener.close()
        if self.dirfd >= 0:
            os.close(self.dirfd)
            self.dirfd = -1


class Lost(Exception):
    """The monitor went away without telling the exit code."""


def connect(directory: Path) -> socket.socket:
    """A client's connection to the container's attach server; OSError when there is none."""
    dirfd = _open_dir(directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(_name(dirfd))
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dirfd)
    return sock


def pair() -> tuple[socket.socket, socket.socket]:
    """(the client's end, the server's first client) for ``run -it``, connected before PID 1 runs."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def resize(sock: socket.socket) -> None:
    """Tell the server our terminal's size (a no-op when stdin is no terminal)."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(sys.stdin.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
        sock.send(b"w" + size[:4])


class Escape:
    """Docker's escape proxy: the detach keys, matched in what is typed; the bytes of a partial match are held
    and passed on as soon as it fails."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(what goes on to the container, whether the keys were typed: then nothing after them goes)."""
        out = bytearray()
        for byte in data:
            if byte == self.keys[self.held]:
                self.held += 1
                if self.held == len(self.keys):
                    return bytes(out), True
                continue
            out += self.keys[:self.held]
            self.held = 0
            if byte == self.keys[0]:
                self.held = 1
            else:
                out.append(byte)
        return bytes(out), False


@contextlib.contextmanager
def _proxying(sock: socket.socket, signals: tuple[int, ...]) -> Iterator[None]:
    """While the block runs, ``signals`` go to PID 1 through the server (``--sig-proxy``) instead of to us."""
    def send(sig: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            sock.send(b"k%d" % sig)

    with handling(signals, send):
        yield


def client(sock: socket.socket, terminal: bool, stdin: bool, keys: bytes, signals: tuple[int, ...]) -> int | None:
    """Relay until PID 1 exits (its code) or the user types the detach keys (None): the server's output to ours,
    with ``stdin`` our input to it (our terminal raw when it has one, with ``terminal``), ``signals`` passed on.
    :class:`Lost` when the server went away first."""
    infd = sys.stdin.fileno()
    escape = Escape(keys) if terminal and stdin else None
    previous = signal.signal(signal.SIGWINCH, lambda *_: resize(sock)) if terminal else None
    try:
        if terminal:
            resize(sock)
        with tty.raw(infd) if terminal and stdin else contextlib.nullcontext(), _proxying(sock, signals):
            return _relay(sock, infd if stdin else -1, escape)
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)


def _relay(sock: socket.socket, infd: int, escape: Escape | None) -> int | None:
    targets = {b"1": sys.stdout.fileno(), b"2": sys.stderr.fileno()}
    readers = [sock.fileno(), infd] if infd >= 0 else [sock.fileno()]
    while True:
        ready, _, _ = select.select(readers, [], [])
        if sock.fileno() in ready:
            try:
                packet = sock.recv(PACKET + 1)
            except ConnectionResetError:  # the server closed before reading what we typed last: the kernel
                continue  # says so once, ahead of the packets it sent before (its exit code); read those next
            if not packet:
                raise Lost
            if packet[:1] == b"x":
                return int(packet[1:])
            if packet[:1] in targets:
                with contextlib.suppress(OSError):  # our terminal went away: keep going, as logs.pump does
                    tty.write_all(targets[packet[:1]], packet[1:])
        if infd in ready:
            data = os.read(infd, PACKET)
            if not data:
                readers.remove(infd)  # end of our input; the container's goes on (Docker's, without StdinOnce)
                continue
            detached = False
            if escape is not None:
                data, detached = escape.feed(data)
            if data:
                sock.sendall(b"0" + data)
            if detached:
                return None

