"""Published ports of a user's container on a user network (issue 20): a forwarder on the user's side.

Root publishes a port with a DNAT rule in the host's namespace; a user may write no rule there, and the
sandbox's pasta (:mod:`runner.net.sandbox`) forwards only the ports it was started with. So, as podman's
rootlessport does, a process of the user's listens on each published port of the host and, for each
connection (or UDP peer), connects to the container's address inside the sandbox, then copies bytes both ways.

The listening sockets are made by the runner, in the host's namespace, before the container is attached: a port
taken by someone else is refused then, in one line, and nothing is left. The forwarder gets them and an fd of the
sandbox; it enters the sandbox (sockets it makes from then on are there, the listening ones stay where they were
made) and serves until it is ended by its pid (checked by its start time) when the container is released. It is
no child of the runner's and keeps no other fd of the runner's (:func:`shared.proc.detached`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Sequence

from runner import linux
from runner.net.model import Published
from shared.errors import Kind, StrataError
from shared.proc import detached

UDP_IDLE = 60.0  # seconds after which a UDP peer's mapping is dropped, as conntrack's default stream timeout


def listen(ports: Sequence[Published]) -> list[socket.socket]:
    """A bound socket (listening, for TCP) on the host for each of PORTS."""
    out: list[socket.socket] = []
    try:
        for p in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM)
            out.append(s)
            if p.proto == "tcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((p.host_ip or "0.0.0.0", p.host_port))
            except OSError as e:
                raise StrataError(f"Bind for {p.host_ip or '0.0.0.0'}:{p.host_port} failed: {e.strerror}",
                                  Kind.STATE) from None
            if p.proto == "tcp":
                s.listen(128)
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def start(netns: int, target: str, ports: Sequence[Published], sockets: Sequence[socket.socket]) -> tuple[int, int]:
    """The forwarder of SOCKETS (made by :func:`listen` for PORTS) to TARGET's container ports inside NETNS;
    returns its pid and start time."""
    def body() -> None:
        linux.setns(netns, linux.CLONE_NEWNET)
        _serve(target, ports, sockets)

    return detached(body, keep={netns, *(s.fileno() for s in sockets)})


def _serve(target: str, ports: Sequence[Published], sockets: Sequence[socket.socket]) -> None:
    """Forever (until SIGTERM, whose default ends the process): a thread per listening socket."""
    for port, sock in zip(ports, sockets, strict=True):
        serve = _accept if port.proto == "tcp" else _datagrams
        threading.Thread(target=serve, args=(sock, (target, port.container_port)), daemon=True).start()
    threading.Event().wait()
    os._exit(0)


def _accept(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_connect, args=(client, target), daemon=True).start()


def _connect(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()  # the container does not listen: the client sees the connection closed
        return
    upstream.settimeout(None)
    done = threading.Semaphore(0)
    threading.Thread(target=_copy, args=(upstream, client, done), daemon=True).start()
    _copy(client, upstream, done)
    done.acquire()
    client.close()
    upstream.close()


def _copy(src: socket.socket, dst: socket.socket, done: threading.Semaphore | None = None) -> None:
    """SRC's bytes to DST until SRC's end of file, which DST's peer then sees (a half-close, as TCP has it)."""
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
    if done is not None:
        done.release()


def _datagrams(listener: socket.socket, target: tuple[str, int]) -> None:
    """Each UDP peer gets a socket of its own, connected to the container, whose replies go back to the peer
    from the published port; a peer silent for UDP_IDLE seconds is forgotten."""
    peers: dict[tuple[str, int], socket.socket] = {}
    lock = threading.Lock()

    def replies(peer: tuple[str, int], upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                listener.sendto(upstream.recv(65536), peer)
        with lock:
            peers.pop(peer, None)
        upstream.close()

    while True:
        data, peer = listener.recvfrom(65536)
        with lock:
            upstream = peers.get(peer)
            if upstream is None:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                upstream.settimeout(UDP_IDLE)
                upstream.connect(target)
                peers[peer] = upstream
                threading.Thread(target=replies, args=(peer, upstream), daemon=True).start()
        with contextlib.suppress(OSError):
            upstream.send(data)
