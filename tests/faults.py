"""A fault-injecting HTTP proxy for tests: it sits between a client (the puller) and one registry on 127.0.0.1,
passes everything through, and breaks the requests a test chose, each a given number of times.

    with FaultProxy(registry.address) as proxy:
        proxy.add(cut(r"/blobs/sha256:", at=0.5))               # half the body, then the connection closes
        proxy.add(status(r"/manifests/", 429, {"Retry-After": "1"}))
        proxy.add(alter(r"/blobs/" + layer))                    # one byte flipped, same length
        proxy.add(redirect(r"/blobs/"))                         # 307 to the "CDN" (see below)
        ... pull from proxy.address ...
        assert proxy.bytes_sent(layer) < 1.2 * size
        assert not proxy.cdn_saw_authorization

Faults (a Rule; build them with cut/status/alter/redirect/stall/flood):

* cut      forward, send the headers as the upstream sent them (Content-Length the full length) and only the first
           ``at`` bytes of the body, then close the connection (FIN; RST with reset=True).
* status   answer STATUS with HEADERS and a registry-style JSON error, without contacting the upstream.
* alter    forward, with the body byte at offset ``at`` XOR 0xFF (same length, so only a digest check can tell).
* redirect answer 307 with a Location on the CDN: a second server that serves the same path by fetching it from the
           upstream (with the Authorization the redirected request carried, as a presigned URL would), answers 400
           to any request that carries an Authorization header itself (as S3 does), keeps only S3-like headers.
* stall    forward, send ``at`` bytes of the body, then hold the connection ``seconds`` before closing it.
* flood    answer STATUS with HEADERS and a Content-Length of ``size`` bytes, without contacting the upstream;
           the body is generated as it is sent (never held), and sending stops when the client disconnects.

Faults on requests (uploads), for push:

* drop        read the request, then close the connection without forwarding it or answering (a buffering front
              end whose client connection broke: the upstream never sees that request).
* cut_request forward the request with its full Content-Length but only the first ``at`` bytes of its body, then
              close the upstream connection (what a registry sees of a connection cut mid-upload) and, once the
              upstream is done with it, the client's, without an answer.
* headers     forward, and add HEADERS to the answer (a registry asking for chunks: ``OCI-Chunk-Min-Length``).

``skip`` lets that many matching requests pass before a rule fires (drop the third PATCH).
Exchanges also count ``bytes_received``: the request body bytes the proxy got from the client.

``at`` is a byte offset (int) or a fraction of this response's body length (float in [0, 1)). Rules are matched
in the order added, on the server ("proxy" or "cdn"), the method (None: any; cut/alter/stall never match HEAD) and
a regex searched in the path (without the query). A rule fires ``times`` times (None: every time), then matching
requests pass through.

Everything else passes through: status, body, headers (Docker-Content-Digest, Content-Type, WWW-Authenticate,
Range / Content-Range / 206 ...) except hop-by-hop ones; a Location pointing at the upstream is rewritten to
point at the proxy; an upstream that does not answer gives 502. Both servers log every request (an Exchange:
peer, method, path, headers, range, authorization, fault, status, bytes_sent) in ``log`` / ``cdn_log``;
``requests(path_re)`` and ``bytes_sent(path_re)`` select and sum them, ``cdn_saw_authorization`` says it all.
Only 127.0.0.1: both servers bind it, and the only upstream allowed is on it.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import re
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal

Fault = Literal["cut", "status", "alter", "redirect", "stall", "flood", "drop", "cut_request", "headers"]
Server = Literal["proxy", "cdn"]

CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 60.0
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-connection", "expect"})  # fmt: skip
# what the CDN passes back from the upstream (S3 sends no Docker-* headers)
CDN_HEADERS = frozenset({"content-type", "content-range", "accept-ranges", "etag", "last-modified", "date"})
ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND", 408: "TIMEOUT",
               429: "TOOMANYREQUESTS", 500: "INTERNAL_ERROR", 502: "BAD_GATEWAY", 503: "UNAVAILABLE",
               504: "GATEWAY_TIMEOUT"}  # fmt: skip
S3_AUTH_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism'
    b" allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization"
    b" header should be specified</Message><ArgumentName>Authorization</ArgumentName></Error>"
)


@dataclass
class Rule:
    """One fault: what to match, what to do, how many times. ``fired`` counts the times it was applied."""

    fault: Fault
    path: str  # regex, searched in the request path without its query
    method: str | None = None  # None: any method
    times: int | None = 1  # None: every matching request
    at: int | float = 0.5  # cut/alter/stall: byte offset, or fraction of the body length
    status: int = 503  # status: the status to answer
    headers: dict[str, str] = field(default_factory=dict)  # status: headers to send (e.g. Retry-After)
    seconds: float = 5.0  # stall: how long to hold the connection
    reset: bool = False  # cut: close with RST instead of FIN
    size: int = 0  # flood: the body's length
    on: Server = "proxy"  # which server the rule applies to
    fired: int = 0
    skip: int = 0  # matching requests to let pass before the rule fires
    skipped: int = 0

    def matches(self, server: Server, method: str, path: str) -> bool:
        if self.on != server or (self.times is not None and self.fired >= self.times):
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.fault in ("cut", "alter", "stall") and method == "HEAD":
            return False
        if re.search(self.path, path) is None:
            return False
        if self.skipped < self.skip:  # (called under the proxy's lock, once per request until a rule matches)
            self.skipped += 1
            return False
        return True

    def offset(self, length: int) -> int:
        """``at`` resolved against a body of LENGTH bytes (clamped to it)."""
        pos = int(length * self.at) if isinstance(self.at, float) else self.at
        return max(0, min(pos, length))


def cut(path: str, at: int | float = 0.5, *, times: int | None = 1, method: str | None = None,
        reset: bool = False, on: Server = "proxy") -> Rule:  # fmt: skip
    """Send only the first AT bytes (or fraction AT) of the body, then close the connection."""
    return Rule("cut", path, method, times, at=at, reset=reset, on=on)


def status(path: str, code: int, headers: dict[str, str] | None = None, *, times: int | None = 1,
           method: str | None = None, on: Server = "proxy") -> Rule:  # fmt: skip
    """Answer CODE with HEADERS without contacting the upstream."""
    return Rule("status", path, method, times, status=code, headers=dict(headers or {}), on=on)


def alter(path: str, at: int | float = 0.5, *, times: int | None = 1, method: str | None = None,
          on: Server = "proxy") -> Rule:  # fmt: skip
    """Flip the body byte at offset AT (or fraction AT of the length)."""
    return Rule("alter", path, method, times, at=at, on=on)


def redirect(path: str, *, times: int | None = 1, method: str | None = None) -> Rule:
    """Answer 307 to the CDN, which serves the same content (and 400s requests with Authorization)."""
    return Rule("redirect", path, method, times)


def stall(path: str, at: int | float = 0.5, seconds: float = 5.0, *, times: int | None = 1,
          method: str | None = None, on: Server = "proxy") -> Rule:  # fmt: skip
    """Send AT bytes (or fraction AT) of the body, then hold the connection SECONDS before closing it."""
    return Rule("stall", path, method, times, at=at, seconds=seconds, on=on)


def flood(path: str, code: int, size: int, headers: dict[str, str] | None = None, *, times: int | None = 1,
          method: str | None = None, on: Server = "proxy") -> Rule:  # fmt: skip
    """Answer CODE with HEADERS and a SIZE-byte generated body (a registry that answers with gigabytes)."""
    return Rule("flood", path, method, times, status=code, headers=dict(headers or {}), size=size, on=on)


def drop(path: str, *, times: int | None = 1, method: str | None = None, skip: int = 0) -> Rule:
    """Read the request, then close the connection: no answer, and the upstream never sees it."""
    return Rule("drop", path, method, times, skip=skip)


def cut_request(path: str, at: int | float = 0.5, *, times: int | None = 1, method: str | None = None,
                skip: int = 0) -> Rule:  # fmt: skip
    """Forward only the first AT bytes (or fraction AT) of the request body upstream, then close both ends."""
    return Rule("cut_request", path, method, times, at=at, skip=skip)


def add_headers(path: str, headers: dict[str, str], *, times: int | None = None, method: str | None = None) -> Rule:
    """Forward, and add HEADERS to the upstream's answer."""
    return Rule("headers", path, method, times, headers=dict(headers))


@dataclass
class Exchange:
    """One request a server received and what it answered. Filled in as the answer goes out: ``bytes_sent`` is
    counted before each write, so once the client has read a body the log already says so."""

    server: Server
    peer: str  # the client's 127.0.0.1:PORT: one per connection, so a test can count connections
    method: str
    path: str  # without the query
    query: str
    headers: dict[str, str]  # the request's headers, names lower-cased
    range: str | None  # the Range header
    authorization: bool  # whether an Authorization header came
    fault: Fault | None = None  # the fault applied, if any
    status: int = 0  # the status sent (0: none yet)
    bytes_sent: int = 0  # body bytes written to the client
    bytes_received: int = 0  # request body bytes read from the client


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, proxy: FaultProxy, role: Server) -> None:
        self.proxy = proxy
        self.role: Server = role
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.conn_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _dispatch(self) -> None:
        self.server.proxy._handle(self, self.server.role)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ClientGone(Exception):
    """The client closed its end while we were writing."""


class FaultProxy:
    """The proxy (``address``) and its CDN (``cdn_address``), both on 127.0.0.1, in front of UPSTREAM."""

    def __init__(self, upstream: str, *, cdn_host: str = "127.0.0.1") -> None:
        host, _, port = upstream.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            raise ValueError(f"upstream must be 127.0.0.1:PORT, not {upstream!r}")
        self.upstream = upstream
        self.cdn_host = cdn_host
        self._rules: list[Rule] = []
        self._log: list[Exchange] = []
        self._cdn_log: list[Exchange] = []
        self._tokens: dict[str, tuple[str, str | None]] = {}  # CDN token -> (upstream path, Authorization)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._servers = {"proxy": _HTTPServer(self, "proxy"), "cdn": _HTTPServer(self, "cdn")}
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True,
                                          name=f"faultproxy-{role}") for role, s in self._servers.items()]  # fmt: skip
        for t in self._threads:
            t.start()

    # -- what a test uses ------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """127.0.0.1:PORT of the proxy: what the client is pointed at."""
        return f"127.0.0.1:{self._servers['proxy'].server_address[1]}"

    @property
    def cdn_address(self) -> str:
        return f"{self.cdn_host}:{self._servers['cdn'].server_address[1]}"

    @property
    def log(self) -> list[Exchange]:
        """Every request the proxy received, in order (a snapshot)."""
        with self._lock:
            return list(self._log)

    @property
    def cdn_log(self) -> list[Exchange]:
        """Every request the CDN received, in order (a snapshot)."""
        with self._lock:
            return list(self._cdn_log)

    @property
    def cdn_saw_authorization(self) -> bool:
        return any(e.authorization for e in self.cdn_log)

    def add(self, rule: Rule) -> Rule:
        """Add RULE (after the ones already there); returns it, so a test can read ``fired`` later."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop all rules and both logs."""
        with self._lock:
            self._rules.clear()
            self._log.clear()
            self._cdn_log.clear()

    def requests(self, path: str, server: Server | None = None, method: str | None = None) -> list[Exchange]:
        """The logged exchanges whose path matches regex PATH (on SERVER, or both), in order."""
        logs = self.log if server == "proxy" else self.cdn_log if server == "cdn" else self.log + self.cdn_log
        return [e for e in logs if re.search(path, e.path) and (method is None or e.method == method.upper())]

    def bytes_sent(self, path: str, server: Server | None = None) -> int:
        """Body bytes sent, over all requests whose path matches regex PATH, by SERVER (or both)."""
        return sum(e.bytes_sent for e in self.requests(path, server))

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for srv in self._servers.values():
            srv.shutdown()
            with srv.conn_lock:
                conns = list(srv.connections)
            for conn in conns:  # idle keep-alive connections: their threads are blocked reading
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- the servers' work -----------------------------------------------------------------------------------------

    def _take(self, server: Server, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(server, method, path):
                    rule.fired += 1
                    return rule
        return None

    def _handle(self, h: _Handler, server: Server) -> None:
        body = _read_request_body(h)
        path, _, query = h.path.partition("?")
        headers: dict[str, str] = {}
        for k, v in h.headers.items():  # repeated headers joined, as HTTP allows
            headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
        peer = f"{h.client_address[0]}:{h.client_address[1]}"
        entry = Exchange(server, peer, h.command, path, query, headers, headers.get("range"),
                         "authorization" in headers)  # fmt: skip
        entry.bytes_received = len(body)
        with self._lock:
            (self._log if server == "proxy" else self._cdn_log).append(entry)
        try:
            self._answer(h, server, entry, body)
        except _ClientGone:
            h.close_connection = True

    def _answer(self, h: _Handler, server: Server, entry: Exchange, body: bytes) -> None:
        upstream_path = h.path
        auth = entry.headers.get("authorization")
        if server == "cdn":
            if entry.authorization:
                _send_simple(h, entry, 400, S3_AUTH_ERROR, {"Content-Type": "application/xml"})
                return
            token = dict(p.partition("=")[::2] for p in entry.query.split("&")).get("X-Amz-Signature", "")
            with self._lock:
                target = self._tokens.get(token)
            if target is None or target[0].partition("?")[0] != entry.path:
                _send_simple(h, entry, 403, b"<Error><Code>AccessDenied</Code></Error>",
                             {"Content-Type": "application/xml"})  # fmt: skip
                return
            upstream_path, auth = target
        rule = self._take(server, h.command, entry.path)
        if rule is not None:
            entry.fault = rule.fault
        if rule is not None and rule.fault == "status":
            code = ERROR_CODES.get(rule.status, "UNKNOWN")
            msg = f'{{"errors":[{{"code":"{code}","message":"injected {rule.status}","detail":null}}]}}\n'
            _send_simple(h, entry, rule.status, msg.encode(), {"Content-Type": "application/json", **rule.headers})
            return
        if rule is not None and rule.fault == "flood":
            _send_flood(h, entry, rule)
            return
        if rule is not None and rule.fault == "drop":
            _close_abruptly(h, reset=rule.reset)
            return
        if rule is not None and rule.fault == "cut_request":
            self._forward_cut(h, entry, rule, upstream_path, body)
            return
        if rule is not None and rule.fault == "redirect":
            token = secrets.token_hex(16)
            with self._lock:
                self._tokens[token] = (h.path, auth)
            location = (f"http://{self.cdn_address}{entry.path}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                        f"&X-Amz-Expires=1200&X-Amz-Signature={token}")  # fmt: skip
            _send_simple(h, entry, 307, b"", {"Location": location})
            return
        self._forward(h, server, entry, rule, upstream_path, auth, body)

    def _forward(self, h: _Handler, server: Server, entry: Exchange, rule: Rule | None, upstream_path: str,
                 auth: str | None, body: bytes) -> None:  # fmt: skip
        out_headers: list[tuple[str, str]] = []  # a list: a header may come more than once (Accept does)
        if server == "proxy":
            for k, v in h.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length"):
                    out_headers.append((k, v))
        else:  # the CDN fetches as a presigned URL would let it: the redirected request's credentials
            out_headers = [(k, v) for k, v in h.headers.items() if k.lower() in ("range", "accept", "user-agent")]
            if auth is not None:
                out_headers.append(("Authorization", auth))
        host, _, port = self.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(h.command, upstream_path, skip_accept_encoding=True)
            for k, v in out_headers:
                conn.putheader(k, v)
            if body or h.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            try:
                conn.endheaders(body or None)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:  # the upstream is down: say so, as a gateway does
                _send_simple(h, entry, 502, f"upstream {self.upstream}: {exc}\n".encode(),
                             {"Content-Type": "text/plain"})  # fmt: skip
                return
            self._relay(h, server, entry, rule, resp)
        finally:
            conn.close()

    def _forward_cut(self, h: _Handler, entry: Exchange, rule: Rule, upstream_path: str, body: bytes) -> None:
        """The request upstream with its full Content-Length and only the first part of its body, then closed;
        the client's connection closed too, without an answer, once the upstream has seen the end."""
        host, _, port = self.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(h.command, upstream_path, skip_accept_encoding=True)
            for k, v in h.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length"):
                    conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body[: rule.offset(len(body))])
            assert conn.sock is not None
            conn.sock.shutdown(socket.SHUT_WR)  # the upstream reads the part, then the end of the stream
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn.getresponse().read()  # whatever it answers (or its closing): it is done with the request
        except OSError:
            pass
        finally:
            conn.close()
        _close_abruptly(h, reset=rule.reset)

    def _relay(self, h: _Handler, server: Server, entry: Exchange, rule: Rule | None,
               resp: http.client.HTTPResponse) -> None:  # fmt: skip
        no_body = h.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        declared = resp.getheader("Content-Length")
        buffered: bytes | None = None
        if declared is None and not no_body:  # chunked or until-close: pass it on with a length
            buffered = resp.read()
            declared = str(len(buffered))
        headers: list[tuple[str, str]] = []
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk == "content-length":
                continue
            if server == "cdn" and lk not in CDN_HEADERS:
                continue
            if lk == "location":
                v = _rewrite_location(v, self.upstream, self.address)
            headers.append((k, v))
        if declared is not None:
            headers.append(("Content-Length", declared))
        if rule is not None and rule.fault == "headers":
            headers.extend(rule.headers.items())
        entry.status = resp.status
        _send_head(h, resp.status, headers)
        if no_body:
            return
        length = int(declared or 0)
        limit = rule.offset(length) if rule is not None and rule.fault in ("cut", "stall") else length
        flip = min(rule.offset(length), length - 1) if rule is not None and rule.fault == "alter" else -1
        pos = 0
        source = iter(lambda: _read_some(resp), b"") if buffered is None else iter([buffered])
        short = False
        while pos < limit:
            chunk = next(source, b"")
            if not chunk:
                short = True  # the upstream sent less than it declared: pass that on (see distribution's 416)
                break
            chunk = chunk[: limit - pos]
            if pos <= flip < pos + len(chunk):
                b = bytearray(chunk)
                b[flip - pos] ^= 0xFF
                chunk = bytes(b)
            _write(h, entry, chunk)
            pos += len(chunk)
        if rule is not None and rule.fault == "stall":
            self._closed.wait(rule.seconds)
        if short or pos < length:
            _close_abruptly(h, reset=rule is not None and rule.reset)


def _read_some(resp: http.client.HTTPResponse) -> bytes:
    try:
        return resp.read1(CHUNK)
    except (http.client.IncompleteRead, OSError):
        return b""


def _read_request_body(h: _Handler) -> bytes:
    if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _rewrite_location(location: str, upstream: str, proxy: str) -> str:
    for prefix in (f"http://{upstream}", f"//{upstream}"):
        if location.startswith(prefix):
            return location.replace(upstream, proxy, 1)
    return location


def _send_head(h: _Handler, code: int, headers: list[tuple[str, str]]) -> None:
    try:
        h.send_response_only(code)
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
    except OSError as exc:
        raise _ClientGone from exc


def _write(h: _Handler, entry: Exchange, data: bytes) -> None:
    entry.bytes_sent += len(data)  # before the write: the client cannot have it before the log does
    try:
        h.wfile.write(data)
    except OSError as exc:
        raise _ClientGone from exc


def _send_simple(h: _Handler, entry: Exchange, code: int, body: bytes, headers: dict[str, str]) -> None:
    entry.status = code
    _send_head(h, code, [*headers.items(), ("Content-Length", str(len(body)))])
    if h.command != "HEAD" and body:
        _write(h, entry, body)


def _send_flood(h: _Handler, entry: Exchange, rule: Rule) -> None:
    """RULE's status and a body of ``rule.size`` bytes made as they go out: a repeated JSON-ish filler block, so
    the test process never holds more than one block however large the body is."""
    entry.status = rule.status
    _send_head(h, rule.status, [("Content-Type", "application/json"), *rule.headers.items(),
                                ("Content-Length", str(rule.size))])  # fmt: skip
    if h.command == "HEAD":
        return
    block = b'{"errors":[{"code":"FLOOD","message":"' + b"x" * (CHUNK - 64)
    block = block.ljust(CHUNK, b"x")
    sent = 0
    while sent < rule.size:
        piece = block[: rule.size - sent]
        _write(h, entry, piece)  # raises _ClientGone once the client has closed its end
        sent += len(piece)


def _close_abruptly(h: _Handler, reset: bool) -> None:
    h.close_connection = True
    try:
        h.wfile.flush()
        if reset:  # linger 0, then the last reference closed: the kernel sends RST instead of FIN
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.rfile.close()  # makefile()'s reference: without it the close below would not close the socket
            h.connection.close()
            h.wfile = io.BytesIO()  # the server flushes and closes it after us
        else:
            h.connection.shutdown(socket.SHUT_WR)
    except OSError:
        pass
