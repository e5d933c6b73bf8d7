"""What a tag names now, by one HEAD over a socket: the warm pull's one request, without an HTTP library.

Importing requests and urllib3 costs more than the rest of a warm pull together, and even http.client (with the
email package it parses headers with) costs a warm pull a sixth of its time (docs/performance.md). A HEAD needs
neither: its answer is a status line and headers, never a body (RFC 9110 9.3.2). So the warm pull
(``puller/warm.py``) asks over a plain socket, by the rules the registry client follows too
(``puller/registry/endpoint.py``): for loopback and insecure registries HTTPS without certificate checks, then
plain HTTP (Docker's way); for every other registry checked HTTPS, against the bundle requests would use
(``$REQUESTS_CA_BUNDLE``, ``$CURL_CA_BUNDLE``, else certifi's); a 401 answered with a Bearer token from the
challenge's realm (asked over http.client, with the user's credentials only there) or with Basic credentials.

It knows only that plain way. Anything else (a redirect, a status to retry, a proxy in the environment, a
connection that fails, a token service that says no, an answer it cannot read) raises :class:`Unsure`, and the
caller asks again through the registry client, which knows every way and says in one line what went wrong: this
module never decides that a pull fails, only that nothing needs pulling.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from puller.registry.endpoint import (
    MANIFEST_ACCEPT,
    TIMEOUT,
    TOKEN_BODY_CAP,
    TOKEN_TIMEOUT,
    USER_AGENT,
    Challenge,
    Credentials,
    Endpoint,
    parse_token,
    rate_limit_notice,
    token_query,
)
from shared.digest import Digest
from shared.errors import Kind, StrataError

if TYPE_CHECKING:
    import ssl

# requests honours these (trust_env); the lean way does not speak through proxies, the registry client does
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
HEAD_CAP = 64 * 1024  # a status line and headers: a registry's are under 2 KiB


class Unsure(StrataError):
    """The lean way could not tell: ask through the registry client (never shown to the user)."""

    def __init__(self, why: str) -> None:
        super().__init__(why, Kind.REGISTRY)


def _context(verify: bool) -> ssl.SSLContext:
    """A client TLS context: checking certificates against requests' bundle, or (an insecure endpoint) none."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not bundle:
        import certifi  # requests' own default bundle

        bundle = certifi.where()
    if os.path.isdir(bundle):
        context.load_verify_locations(capath=bundle)
    else:
        context.load_verify_locations(cafile=bundle)
    return context


def _address(host: str, scheme: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as a socket address, the scheme's port by default."""
    name, sep, port = host.rpartition(":")
    if not sep or name.endswith(":") or (name.startswith("[") and not name.endswith("]")):
        name, port = host, ""  # no port (an IPv6 address without brackets has colons of its own)
    if port and not port.isdigit():
        raise Unsure(f"port {port!r}")
    return name.strip("[]"), int(port) if port else (443 if scheme == "https" else 80)


def _exchange(scheme: str, endpoint: Endpoint, request: bytes) -> tuple[int, dict[str, str]]:
    """Send a HEAD request on a new connection; the status and the headers (names lower case; a repeated one
    joined with ", ", as urllib3 joins them)."""
    if scheme not in ("https", "http"):
        raise Unsure(f"scheme {scheme!r}")
    name, port = _address(endpoint.host, scheme)
    try:  # as bytes: a str would be encoded by the idna codec, which costs imports (a registry's name is ASCII)
        host = name.encode("ascii")
    except UnicodeEncodeError:
        raise Unsure("a host name that is not ASCII") from None
    sock = socket.create_connection((host, port), timeout=TIMEOUT[0])  # type: ignore[arg-type]  # bytes: fine
    try:
        if scheme == "https":
            sock = _context(endpoint.verify_tls).wrap_socket(sock, server_hostname=host)  # (bytes: taken as they are)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            if len(head) > HEAD_CAP:
                raise Unsure("headers too long")
            data = sock.recv(HEAD_CAP)
            if not data:
                raise Unsure("the connection closed")
            head += data
    finally:
        sock.close()
    return _parse(head.split(b"\r\n\r\n", 1)[0])


def _parse(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise Unsure("not HTTP/1.x")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if not sep or key != key.strip() or not key:
            raise Unsure("a malformed header")  # (obsolete line folding included: registries do not send it)
        key, value = key.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(code), headers


class _Registry:
    """HEADs to one endpoint, each on its own connection: HTTPS first, then, where Docker allows it, plain HTTP
    for this and every later one."""

    def __init__(self, endpoint: Endpoint, notice: Callable[[str], None]) -> None:
        self.endpoint = endpoint
        self.scheme = endpoint.scheme
        self.notice = notice

    def head(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        fields = {"Host": self.endpoint.host, "Accept": MANIFEST_ACCEPT, "User-Agent": USER_AGENT, **headers}
        if any(c in "\r\n" for text in (path, *fields.values()) for c in text):
            raise Unsure("a line break in the request")  # (a token from the realm, a host from the settings)
        request = "".join([f"HEAD {path} HTTP/1.1\r\n", *(f"{k}: {v}\r\n" for k, v in fields.items()),
                           "Connection: close\r\n\r\n"]).encode("latin-1")
        try:
            status, found = _exchange(self.scheme, self.endpoint, request)
        except OSError:  # ssl.SSLError included: a plain HTTP registry answers a TLS hello with garbage
            if not (self.endpoint.http_fallback and self.scheme == "https"):
                raise Unsure("no answer") from None
            self.scheme = "http"  # Docker's way for insecure registries: plain HTTP after HTTPS failed
            try:
                status, found = _exchange(self.scheme, self.endpoint, request)
            except OSError:
                raise Unsure("no answer") from None
        notice = rate_limit_notice(self.endpoint.host, found)
        if notice:
            self.notice(notice)
        return status, found


def head_digest(endpoint: Endpoint, credentials: Credentials | None, repository: str, reference: str,
                notice: Callable[[str], None] = lambda message: None) -> Digest | None:
    """The digest ``repository:reference`` names at ``endpoint`` (None: the registry does not say); raises
    :class:`Unsure` for anything but the plain way there."""
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in PROXY_VARIABLES):
        raise Unsure("a proxy is set")
    noted: list[str] = []
    registry = _Registry(endpoint, lambda text: noted.append(text) if not noted else None)
    path = f"/v2/{repository}/manifests/{reference}"
    status, headers = registry.head(path, {})
    if status == 401:
        answer = _authorization(headers.get("www-authenticate", ""), repository, credentials)
        status, headers = registry.head(path, {"Authorization": answer})
    if status != 200:
        raise Unsure(f"status {status}")
    for text in noted:
        notice(text)
    header = headers.get("docker-content-digest")
    try:
        return Digest.parse(header) if header else None
    except StrataError:
        raise Unsure("an invalid Docker-Content-Digest") from None


def _authorization(header: str, repository: str, credentials: Credentials | None) -> str:
    """The Authorization a 401's challenge asks for: a Bearer token for pulling ``repository``, or Basic."""
    challenge = Challenge.parse(header)
    if challenge.scheme == "basic" and credentials is not None:
        return credentials.basic_header()
    if challenge.scheme != "bearer":
        raise Unsure(f"challenge {challenge.scheme!r}")
    return "Bearer " + _token(challenge, f"repository:{repository}:pull", credentials)


def _token(challenge: Challenge, scope: str, credentials: Credentials | None) -> str:
    """A token from the challenge's realm (token.md), asked with the user's credentials when there are some; no
    redirect is followed. Over http.client, imported only here: its answer has a body."""
    import http.client

    realm = urlsplit(challenge.params.get("realm", ""))
    if realm.scheme not in ("https", "http") or not realm.netloc:
        raise Unsure("an unusable realm")
    query = "&".join(q for q in (realm.query, urlencode(token_query(challenge, scope))) if q)
    headers = {"User-Agent": USER_AGENT, **({"Authorization": credentials.basic_header()} if credentials else {})}
    conn: http.client.HTTPConnection
    if realm.scheme == "https":
        conn = http.client.HTTPSConnection(realm.netloc, timeout=TOKEN_TIMEOUT[0], context=_context(True))
    else:
        conn = http.client.HTTPConnection(realm.netloc, timeout=TOKEN_TIMEOUT[0])
    try:
        conn.request("GET", f"{realm.path or '/'}?{query}", headers=headers)
        resp = conn.getresponse()
        raw = resp.read(TOKEN_BODY_CAP + 1)
    except (OSError, http.client.HTTPException):
        raise Unsure("no token") from None
    finally:
        conn.close()
    found = parse_token(raw) if resp.status == 200 and len(raw) <= TOKEN_BODY_CAP else None
    if found is None:
        raise Unsure("no token")
    return found[0]
