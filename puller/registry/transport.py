"""What every HTTP exchange with a registry, a CDN or a token service shares: bounded bodies, redirects only to
http(s), and telling an unreachable host (fail now) from a passing failure (retry).

Bounded bodies: a registry (or anything between) may answer an error, a redirect or a 401 with a body of any size,
and requests reads whole bodies into memory (``Response.content``, ``json()``, the drain before following a
redirect or answering a challenge). :class:`BoundedAdapter` is the one place every response passes through, so it
reads those bodies itself, at most :data:`ERROR_BODY_CAP` bytes, and hangs up on the rest instead of draining it.
Bodies the client wants whole (manifests, configs, blobs, tokens) are streamed and read with their own bounds.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

ERROR_BODY_CAP = 64 * 1024  # an error document, a redirect's or a 401's page: enough for any real one
_READ_FAILURES = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
# getaddrinfo's "this name has no address" (EAI_AGAIN, a resolver that did not answer, stays transient)
_NO_SUCH_HOST = frozenset(getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))


def read_capped(raw: urllib3.BaseHTTPResponse, cap: int, decode_content: bool = True) -> tuple[bytes, bool]:
    """At most CAP bytes of a streamed body, and whether that was all of it. When it was not, the connection is
    closed: draining the rest could mean reading gigabytes for nothing."""
    data = raw.read(cap + 1, decode_content=decode_content)
    if len(data) <= cap:
        return data, True
    raw.close()
    return data[:cap], False


class BoundedAdapter(HTTPAdapter):
    """requests' adapter, reading any body nobody asked to stream, and every non-2xx body, only up to
    :data:`ERROR_BODY_CAP` (the rest is not read: the connection is closed instead)."""

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float, float] | tuple[float, None] | None = None,
             verify: bool | str = True, cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        resp = super().send(request, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        if stream and 200 <= resp.status_code < 300:
            return resp
        try:
            content, _ = read_capped(resp.raw, ERROR_BODY_CAP)
        except _READ_FAILURES:  # an error page that broke off is still the error it announced
            content = b""
            resp.raw.close()
        resp._content = content
        resp._content_consumed = True  # type: ignore[attr-defined]  # (untyped in types-requests)
        resp.raw.release_conn()
        return resp


class UnusableRedirect(requests.exceptions.InvalidSchema):
    """A redirect to a URL that is not http(s) (``file:``, ``ftp:``...), refused before requests looks for an
    adapter for it (which would raise with the target buried in its message)."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"{source} redirected to {target!r}")
        self.source = source
        self.target = target


def check_redirect(resp: requests.Response, target: str | None) -> None:
    """Raise :class:`UnusableRedirect` unless TARGET (a Location, maybe relative) resolves to an http(s) URL."""
    if target is None:
        return
    absolute = urljoin(resp.url, target)
    if urlsplit(absolute).scheme.lower() not in ("http", "https"):
        raise UnusableRedirect(urlsplit(resp.url).netloc, target)


def _chain(exc: BaseException) -> list[BaseException]:
    """EXC and every exception it wraps: requests wraps urllib3's, which wraps the socket's, by cause, context,
    ``reason`` (MaxRetryError) or argument."""
    out: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if any(e is seen for seen in out):
            continue
        out.append(e)
        wrapped: list[Any] = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        stack.extend(w for w in wrapped if isinstance(w, BaseException))
    return out


# errnos a connection meets, in the words strerror(3) and Docker use; those in _FINAL will not pass in a second (the
# kernel has no route, the port refuses whatever the scheme): the pull fails at once instead of retrying
_ERRNO_WORDS = {
    errno.ENETUNREACH: "network is unreachable", errno.EHOSTUNREACH: "no route to host",
    errno.ECONNREFUSED: "connection refused", errno.ENETDOWN: "network is down", errno.EHOSTDOWN: "host is down",
    errno.ETIMEDOUT: "connection timed out", errno.ECONNRESET: "connection reset by peer",
    errno.ECONNABORTED: "connection aborted", errno.EPIPE: "the connection closed (broken pipe)",
    errno.EADDRNOTAVAIL: "no local address to connect from",
}
_ERRNO_OF = {ConnectionRefusedError: errno.ECONNREFUSED, ConnectionResetError: errno.ECONNRESET,
             ConnectionAbortedError: errno.ECONNABORTED, BrokenPipeError: errno.EPIPE}  # raised without an errno
_FINAL = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ENETDOWN})


def _tls_words(e: ssl.SSLError) -> str:
    """An SSL error as words: the certificate check's reason, else OpenSSL's reason code (``WRONG_VERSION_NUMBER``:
    a plain HTTP server answered the handshake)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed: {e.verify_message or e.reason or 'not trusted'}"
    reason = (e.reason or "").lower().replace("_", " ")
    return f"TLS handshake failed: {reason or ' '.join(str(e).split())}"


def failure(exc: BaseException) -> tuple[str, bool]:
    """Why a connection to a registry failed, in a user's words (never a class name), and whether it is final
    (nothing a retry would change). The answer is the chain's deepest cause: requests wraps urllib3's
    MaxRetryError, which wraps NewConnectionError, which wraps the socket's OSError with its errno."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return _tls_words(e), True
    for e in chain:
        if isinstance(e, socket.gaierror):
            if e.errno in _NO_SUCH_HOST:
                return "no such host", True
            return f"the host name could not be resolved: {(e.strerror or 'no answer').lower()}", False
    for e in chain:
        code = e.errno if isinstance(e, OSError) else None
        code = code or next((c for kind, c in _ERRNO_OF.items() if isinstance(e, kind)), None)
        if code is not None:
            words = _ERRNO_WORDS.get(code) or (getattr(e, "strerror", None) or os.strerror(code)).lower()
            return words, code in _FINAL
    for e in chain:
        if isinstance(e, (urllib3.exceptions.ReadTimeoutError, requests.exceptions.ReadTimeout)):
            return "the registry stopped answering (timed out)", False
        if isinstance(e, (urllib3.exceptions.ConnectTimeoutError, requests.exceptions.ConnectTimeout,
                          TimeoutError, socket.timeout)):
            return "connection timed out", False
    for e in chain:
        if isinstance(e, (http.client.RemoteDisconnected, urllib3.exceptions.ProtocolError)):
            return "the connection closed before an answer", False
    return "the connection failed", False


def unreachable(exc: BaseException) -> str | None:
    """:func:`failure`'s words when it is final (the network or host has no route, the port refuses, the name does
    not exist): nothing a retry would change; None for the rest (resets, timeouts), which may pass."""
    words, final = failure(exc)
    return words if final and not words.startswith("TLS") else None


def describe_break(exc: BaseException) -> str:
    """Why a body stopped coming, in a few words (the exception chain's text is a paragraph)."""
    for e in _chain(exc):
        if isinstance(e, (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)):
            return "the connection closed mid-body"
        if isinstance(e, ConnectionResetError):
            return "the connection was reset mid-body"
        if isinstance(e, (TimeoutError, socket.timeout, urllib3.exceptions.TimeoutError)):
            return "the body stopped coming (timed out)"
    return f"the body broke off ({failure(exc)[0]})"
