"""What a tag names now, by one HEAD over http.client: the warm pull's one request, without requests.

Importing requests and urllib3 costs more than the rest of a warm pull together (about 60% of its imports, see
docs/performance.md), so the warm pull (``puller/warm.py``) asks over the standard library, by the rules the
registry client follows too (``puller/registry/endpoint.py``): for loopback and insecure registries HTTPS
without certificate checks, then plain HTTP (Docker's way); for every other registry checked HTTPS, against the
bundle requests would use (``$REQUESTS_CA_BUNDLE``, ``$CURL_CA_BUNDLE``, else certifi's); a 401 answered with a
Bearer token from the challenge's realm (the user's credentials sent there only) or with Basic credentials.

It knows only that plain way. Anything else (a redirect, a status to retry, a proxy in the environment, a
connection that fails, a token service that says no) raises :class:`Unsure`, and the caller asks again through
the registry client, which knows every way and says in one line what went wrong: this module never decides that
a pull fails, only that nothing needs pulling.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable, Mapping
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
BODY_CAP = 64 * 1024  # what is read of a 401's body (the connection is reused for the retry)
FAILURES = (OSError, http.client.HTTPException)  # a connection that fails, TLS that fails, an answer not HTTP


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


def _connection(scheme: str, host: str, verify: bool, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(host, timeout=timeout, context=_context(verify))
    if scheme == "http":
        return http.client.HTTPConnection(host, timeout=timeout)
    raise Unsure(f"scheme {scheme!r}")


class _Registry:
    """One connection to one endpoint, kept open across the HEAD, its 401 and the HEAD again."""

    def __init__(self, endpoint: Endpoint, notice: Callable[[str], None]) -> None:
        self.endpoint = endpoint
        self.scheme = endpoint.scheme
        self.notice = notice
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def head(self, path: str, headers: dict[str, str]) -> tuple[int, Mapping[str, str]]:
        try:
            return self._send(path, headers)
        except FAILURES:  # ssl.SSLError included: a plain HTTP registry answers a TLS hello with garbage
            self.close()
            if not (self.endpoint.http_fallback and self.scheme == "https"):
                raise Unsure("no answer") from None
        self.scheme = "http"  # Docker's way for insecure registries: plain HTTP after HTTPS failed
        try:
            return self._send(path, headers)
        except FAILURES:
            self.close()
            raise Unsure("no answer") from None

    def _send(self, path: str, headers: dict[str, str]) -> tuple[int, Mapping[str, str]]:
        if self.conn is None:
            self.conn = _connection(self.scheme, self.endpoint.host, self.endpoint.verify_tls, TIMEOUT[0])
        self.conn.request("HEAD", path, headers={"Accept": MANIFEST_ACCEPT, "User-Agent": USER_AGENT, **headers})
        resp = self.conn.getresponse()
        resp.read(BODY_CAP)  # a HEAD's answer has no body; read so that the connection serves the next request
        if resp.will_close:
            self.close()
        found = {name.lower(): value for name, value in resp.getheaders()}  # (names are case-insensitive)
        notice = rate_limit_notice(self.endpoint.host, found)
        if notice:
            self.notice(notice)
        return resp.status, found


def head_digest(endpoint: Endpoint, credentials: Credentials | None, repository: str, reference: str,
                notice: Callable[[str], None] = lambda message: None) -> Digest | None:
    """The digest ``repository:reference`` names at ``endpoint`` (None: the registry does not say); raises
    :class:`Unsure` for anything but the plain way there."""
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in PROXY_VARIABLES):
        raise Unsure("a proxy is set")
    noted: list[str] = []
    registry = _Registry(endpoint, lambda text: noted.append(text) if not noted else None)
    path = f"/v2/{repository}/manifests/{reference}"
    try:
        status, headers = registry.head(path, {})
        if status == 401:
            answer = _authorization(endpoint.host, headers.get("www-authenticate", ""), repository, credentials)
            status, headers = registry.head(path, {"Authorization": answer})
    finally:
        registry.close()
    if status != 200:
        raise Unsure(f"status {status}")
    for text in noted:
        notice(text)
    header = headers.get("docker-content-digest")
    try:
        return Digest.parse(header) if header else None
    except StrataError:
        raise Unsure("an invalid Docker-Content-Digest") from None


def _authorization(host: str, header: str, repository: str, credentials: Credentials | None) -> str:
    """The Authorization a 401's challenge asks for: a Bearer token for pulling ``repository``, or Basic."""
    challenge = Challenge.parse(header)
    if challenge.scheme == "basic" and credentials is not None:
        return credentials.basic_header()
    if challenge.scheme != "bearer":
        raise Unsure(f"challenge {challenge.scheme!r}")
    return "Bearer " + _token(challenge, f"repository:{repository}:pull", credentials)


def _token(challenge: Challenge, scope: str, credentials: Credentials | None) -> str:
    """A token from the challenge's realm (token.md), asked with the user's credentials when there are some; no
    redirect is followed."""
    realm = urlsplit(challenge.params.get("realm", ""))
    if realm.scheme not in ("https", "http") or not realm.netloc:
        raise Unsure("an unusable realm")
    query = "&".join(q for q in (realm.query, urlencode(token_query(challenge, scope))) if q)
    headers = {"User-Agent": USER_AGENT, **({"Authorization": credentials.basic_header()} if credentials else {})}
    conn = _connection(realm.scheme, realm.netloc, True, TOKEN_TIMEOUT[0])
    try:
        conn.request("GET", f"{realm.path or '/'}?{query}", headers=headers)
        resp = conn.getresponse()
        raw = resp.read(TOKEN_BODY_CAP + 1)
    except FAILURES:
        raise Unsure("no token") from None
    finally:
        conn.close()
    found = parse_token(raw) if resp.status == 200 and len(raw) <= TOKEN_BODY_CAP else None
    if found is None:
        raise Unsure("no token")
    return found[0]
