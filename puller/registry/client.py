"""The distribution API client: manifests by tag or digest, blobs streamed to disk and verified on the way.

distribution-spec spec.md "Pulling manifests" / "Pulling blobs". Every byte is hashed as it arrives; a blob reaches
the store only under the digest it was verified against, whichever host served it. Failures that may pass (408,
429, 5xx, a dropped connection, a body shorter than announced) are retried a bounded number of times with backoff,
honouring ``Retry-After``; a blob cut off mid-way resumes with ``Range`` from the registry's URL again (so an
expired CDN redirect is renewed), accepting only a 206 whose Content-Range starts where we stopped; a manifest or
config cut off is fetched again whole (they are small). Failures that will not pass fail at once: a refused
connection, a host name that does not exist, a redirect loop or a redirect to anything but http(s). Bodies nobody
streams are read only up to a cap (puller/registry/transport.py).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from puller.registry.auth import RegistryAuth, TokenCache
from puller.registry.endpoint import (
    MANIFEST_ACCEPT,
    TIMEOUT,
    USER_AGENT,
    Credentials,
    Endpoint,
    rate_limit_notice,
)
from puller.registry.transport import (
    BoundedAdapter,
    UnusableRedirect,
    check_redirect,
    describe_break,
    failure,
    unreachable,
)
from shared.digest import Digest
from shared.errors import Cancelled, Kind, StrataError, integrity
from shared.image import MAX_MANIFEST_BYTES, Descriptor, media_type_of
from shared.transfer.model import Feed

CHUNK = 1 << 20
# go-containerregistry remote/options.go defaultRetryStatusCodes (less 499/522, which are Cloudflare's own)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
              urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)

Notice = Callable[[str], None]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    max_retry_after: float = 60.0  # a longer Retry-After is reported, not waited for

    def delay(self, attempt: int, retry_after: str | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``; None when the server asks for more than we wait."""
        if retry_after:
            wanted = _parse_retry_after(retry_after)
            if wanted is not None:
                return wanted if wanted <= self.max_retry_after else None
        return float(min(self.base_delay * 2.0 ** attempt, self.max_delay))


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        for prefix in ("https://", "http://"):
            self.mount(prefix, BoundedAdapter())

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """Refuse a redirect to ``file:`` and the like by name, before requests fails to find an adapter for it."""
        target = super().get_redirect_target(resp)
        check_redirect(resp, target)
        return target

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """requests strips Authorization on a cross-host redirect, then may add .netrc credentials for the new
        host; a registry's redirect target (a CDN, a foreign layer URL) must get no credentials at all."""
        old, new = response.request.url or "", prepared_request.url or ""
        if "Authorization" in prepared_request.headers and self.should_strip_auth(old, new):  # type: ignore[no-untyped-call]
            del prepared_request.headers["Authorization"]


@dataclass(frozen=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: Digest


def registry_error(resp: requests.Response, what: str) -> StrataError:
    detail = ""
    try:
        errors = resp.json().get("errors") or []
        if errors:
            first = errors[0]
            detail = f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, AttributeError):
        pass
    if resp.status_code == 404:
        return StrataError(f"{what} not found (404{detail})", Kind.NOT_FOUND)
    if resp.status_code in (401, 403):
        return StrataError(f"access to {what} denied ({resp.status_code}{detail})", Kind.REGISTRY)
    if resp.status_code == 429:
        retry = resp.headers.get("Retry-After")
        return StrataError(f"the registry's rate limit was reached fetching {what} (429{detail})"
                           + (f"; retry after {retry} s" if retry else ""), Kind.REGISTRY)
    return StrataError(f"registry answered {resp.status_code} for {what}{detail}", Kind.REGISTRY)


class RegistryClient:
    """One endpoint. Thread-safe: each thread has its own requests session; tokens are shared."""

    def __init__(self, endpoint: Endpoint | str, credentials: Credentials | None = None,
                 retry: RetryPolicy | None = None, notice: Notice = lambda message: None) -> None:
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint.for_registry(endpoint)
        self.host = self.endpoint.host
        self.scheme = self.endpoint.scheme
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.notice = notice
        self.tokens = TokenCache()
        self.cancel = threading.Event()
        self._local = threading.local()
        self._streaming: set[requests.Response] = set()
        self._streaming_lock = threading.Lock()
        self._rate_noted = False

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}/v2/"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = HttpSession()
            session.headers["User-Agent"] = USER_AGENT
            if not self.endpoint.verify_tls:  # chosen by the user (or loopback): no warning on every request
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            self._local.session = session
        return session

    def _auth(self, repository: str | None, scope: str | None = None) -> RegistryAuth:
        """SCOPE: the token scope(s) the request needs, space-separated (a push needs ``pull,push``, a mount also
        the source's ``pull``); by default ``pull`` on REPOSITORY, which is all a pull needs."""
        if scope is None:
            scope = f"repository:{repository}:pull" if repository else ""
        return RegistryAuth(self._session(), self.host, scope, self.tokens, self.credentials)

    def abort(self) -> None:
        """Stop every transfer now (Ctrl-C): the flag stops waits and loops; shutting the sockets down wakes the
        threads blocked in a read, which would otherwise wait out a stalled server."""
        self.cancel.set()
        with self._streaming_lock:
            for resp in self._streaming:
                sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise Cancelled("cancelled")

    def send(self, method: str, path: str, repository: str | None, what: str, *, scope: str | None = None,
              attempts: int | None = None, **kwargs: Any) -> requests.Response:
        """One request with auth, bounded retries of transient failures, and the insecure HTTP fallback.

        PATH is under ``/v2/``, or an absolute URL (an upload's Location), which gets credentials only when it is
        on this registry's host. SCOPE: see :meth:`_auth`. ATTEMPTS (default the retry policy's): 1 for a request
        whose body must not be sent blindly again (an upload chunk: its caller asks the registry what it kept)."""
        absolute = "://" in path
        auth = self._auth(repository, scope) if not absolute or urlsplit(path).netloc == self.host else None
        attempts = attempts or self.retry.attempts
        for attempt in range(attempts):
            last = attempt == attempts - 1
            tried_https = self.scheme == "https" and not absolute  # (another thread may flip it meanwhile)
            try:
                # verify per request: requests lets $REQUESTS_CA_BUNDLE override Session.verify=False
                resp = self._session().request(method, path if absolute else self.base + path, auth=auth,
                                               timeout=TIMEOUT, verify=self.endpoint.verify_tls, **kwargs)
            except requests.exceptions.SSLError as e:
                if self.endpoint.http_fallback and tried_https:
                    self.scheme = "http"
                    continue
                raise StrataError(f"cannot reach registry {self.host} for {what}: {failure(e)[0]}",
                                  Kind.REGISTRY) from None
            except requests.TooManyRedirects:
                raise StrataError(f"registry {self.host} redirected {what} more than "
                                  f"{self._session().max_redirects} times (a redirect loop)", Kind.REGISTRY) from None
            except UnusableRedirect as e:
                raise StrataError(f"registry {self.host} redirected {what} to {e.target!r}, which is not an "
                                  "http(s) URL", Kind.REGISTRY) from None
            except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                    requests.exceptions.InvalidURL) as e:
                raise StrataError(f"registry {self.host} redirected {what} to an unusable URL ({e})",
                                  Kind.REGISTRY) from None
            except TRANSIENT as e:
                reason = unreachable(e)
                if reason is not None:  # the same host:port refuses (or does not exist) over HTTP as over HTTPS
                    raise StrataError(f"cannot reach registry {self.host} for {what}: {reason}",
                                      Kind.REGISTRY) from None
                if self.endpoint.http_fallback and tried_https and attempt == 0:
                    self.scheme = "http"
                    continue
                if last:
                    raise StrataError(f"cannot reach registry {self.host} for {what}: {failure(e)[0]} "
                                      f"({attempts} attempts)", Kind.REGISTRY) from None
                self.sleep(self.retry.delay(attempt) or 0)
                continue
            self._note_rate_limit(resp)
            if resp.status_code in RETRY_STATUSES and not last:
                delay = self.retry.delay(attempt, resp.headers.get("Retry-After"))
                if delay is not None:
                    resp.close()
                    self.sleep(delay)
                    continue
            return resp
        raise StrataError(f"cannot reach registry {self.host} for {what}", Kind.REGISTRY)  # every try fell back

    def _note_rate_limit(self, resp: requests.Response) -> None:
        """Docker Hub's pull limit, said once (:func:`rate_limit_notice`)."""
        notice = rate_limit_notice(self.host, resp.headers)
        if notice and not self._rate_noted:
            self._rate_noted = True
            self.notice(notice)

    @contextlib.contextmanager
    def _tracked(self, resp: requests.Response) -> Iterator[None]:
        try:
            yield
        finally:
            with self._streaming_lock:
                self._streaming.discard(resp)

    def ping(self) -> None:
        """GET /v2/ with credentials: does this registry accept us? (``login`` uses it.)"""
        with self.send("GET", "", None, f"registry {self.host}") as resp:
            if resp.status_code != 200:
                raise registry_error(resp, f"registry {self.host}")

    def head_manifest(self, repository: str, reference: str, what: str) -> Digest | None:
        """The digest a tag points to now, without a GET: HEAD does not count against Docker Hub's limit."""
        with self.send("HEAD", f"{repository}/manifests/{reference}", repository, what,
                        headers={"Accept": MANIFEST_ACCEPT}) as resp:
            if resp.status_code != 200:
                raise registry_error(resp, what)
            header = resp.headers.get("Docker-Content-Digest")
        return Digest.parse(header) if header else None

    def _get_document(self, path: str, repository: str, what: str, limit: int, decode_content: bool,
                      headers: dict[str, str] | None = None,
                      refuse_length: Callable[[int], None] = lambda length: None) -> tuple[bytes, Any]:
        """GET a small document whole: (at most LIMIT + 1 bytes of its body, the response headers). A body that
        breaks off, or ends before its Content-Length, is a passing failure like a dropped connection: fetched
        again under the retry policy, so that only a complete body can fail its digest check. REFUSE_LENGTH may
        raise on the Content-Length before anything is read."""
        breaks = 0
        while True:
            resp = self.send("GET", path, repository, what, stream=True, headers=headers or {})
            with resp:
                if resp.status_code != 200:
                    raise registry_error(resp, what)
                declared = resp.headers.get("Content-Length", "")
                length = int(declared) if declared.isdigit() else None
                if length is not None:
                    refuse_length(length)
                try:
                    raw = resp.raw.read(limit + 1, decode_content=decode_content)
                    cause = None
                    if len(raw) <= limit and length is not None and resp.raw.tell() < length:
                        cause = f"the connection closed after {resp.raw.tell()} of {length} bytes"
                except TRANSIENT as e:
                    cause = describe_break(e)
                if cause is None:
                    return raw, resp.headers
            breaks += 1
            if breaks >= self.retry.attempts:
                raise StrataError(f"download of {what} from {self.host} broke off {breaks} times: {cause}",
                                  Kind.REGISTRY)
            self.sleep(self.retry.delay(breaks - 1) or 0)

    def get_manifest(self, repository: str, reference: str, what: str) -> FetchedManifest:
        """GET a manifest or index; check its sha256 against the digest asked for and Docker-Content-Digest."""
        def refuse(length: int) -> None:
            if length > MAX_MANIFEST_BYTES:
                raise integrity(f"{what} is {length} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")

        raw, headers = self._get_document(f"{repository}/manifests/{reference}", repository, what,
                                          MAX_MANIFEST_BYTES, True, {"Accept": MANIFEST_ACCEPT}, refuse)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise integrity(f"{what} is over the {MAX_MANIFEST_BYTES}-byte limit")
        content_type = headers.get("Content-Type")
        header_digest = headers.get("Docker-Content-Digest")
        if ":" in reference:  # a digest (a tag never holds a colon)
            expected = Digest.parse(reference)
        elif header_digest:
            expected = Digest.parse(header_digest)
        else:
            expected = Digest.of_bytes(raw)
        expected.verify_bytes(raw, what)
        if header_digest and Digest.parse(header_digest) != expected:
            raise integrity(f"{what}: Docker-Content-Digest {header_digest} does not match {expected}")
        return FetchedManifest(raw, media_type_of(raw, content_type, what), expected)

    def get_small_blob(self, repository: str, desc: Descriptor, what: str) -> bytes:
        """A config blob: small enough to hold, verified before anything reads it."""
        if desc.size > MAX_MANIFEST_BYTES:
            raise integrity(f"{what} claims {desc.size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
        raw, _ = self._get_document(f"{repository}/blobs/{desc.digest}", repository, what, desc.size, False)
        desc.digest.verify_bytes(raw, what)  # longer than described (LIMIT + 1 bytes) fails here too
        return raw

    def fetch_blob(self, repository: str, desc: Descriptor, dest: Path, what: str,
                   progress: Progress = lambda n: None, feed: Feed | None = None,
                   resuming: Progress = lambda n: None) -> None:
        """Stream a blob into ``dest`` while hashing, resuming where a connection broke, and where an earlier
        download into ``dest`` stopped (its bytes are hashed first, after RESUMING is told how many there are);
        raise (leaving ``dest`` to the caller) unless both its size and its digest match the descriptor. FEED, if
        given, gets every piece too, at its offset, as it arrives (those an earlier download left in ``dest``
        first)."""
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        part = _Partial(fd, desc.digest.hasher(), feed=feed)
        try:
            kept = os.fstat(fd).st_size
            if 0 < kept <= desc.size:
                resuming(kept)
            part.received = _hash_prefix(fd, part.hasher, desc.size, feed)
            if part.received:
                progress(part.received)
            self._download(repository, desc, what, part, progress)
            os.fsync(fd)
        except OSError as e:
            raise StrataError(f"cannot write {what} to {dest.parent}: {e.strerror}", Kind.SYSTEM) from None
        finally:
            os.close(fd)
        if part.received != desc.size:
            raise integrity(f"{what}: received {part.received} bytes, the manifest says {desc.size}")
        actual = Digest(desc.digest.algorithm, part.hasher.hexdigest())
        if actual != desc.digest:
            raise integrity(f"digest mismatch for {what}: expected {desc.digest}, got {actual}")

    def _download(self, repository: str, desc: Descriptor, what: str, part: _Partial, progress: Progress) -> None:
        """GET the blob into ``part`` until it holds ``desc.size`` bytes: from where it stops (``Range``), again
        after a break (bounded by the retry policy), from the start when the registry will not resume."""
        breaks = 0
        while not (part.received and part.received == desc.size):  # (all there already: killed at the end)
            if self.cancel.is_set():  # (an aborted read may look like a short body: not a reason to retry)
                raise Cancelled(f"download of {what} cancelled")
            headers = {"Range": f"bytes={part.received}-"} if part.received else {}
            resp = self.send("GET", f"{repository}/blobs/{desc.digest}", repository, what, stream=True,
                             headers=headers)
            with self._streaming_lock:
                self._streaming.add(resp)
            if self.cancel.is_set():
                self.abort()
            with resp, self._tracked(resp):
                if part.received and not _resumes_at(resp, part.received):
                    if resp.status_code not in (200, 206):
                        raise registry_error(resp, what)
                    part.restart(desc)  # the registry sent the whole blob (or another range): start over
                    if resp.status_code == 206:
                        continue
                elif not part.received and resp.status_code != 200:
                    raise registry_error(resp, what)
                try:
                    self._read_body(resp, part, desc, what, progress)
                except TRANSIENT as e:
                    breaks += 1
                    if breaks >= self.retry.attempts:
                        raise StrataError(f"download of {what} broke off {breaks} times, last after "
                                          f"{part.received} bytes: {describe_break(e)}", Kind.REGISTRY) from None
                    self.sleep(self.retry.delay(breaks - 1) or 0)
                    continue
            if part.received >= desc.size:
                break
            if self.cancel.is_set():
                raise Cancelled(f"download of {what} cancelled")
            breaks += 1  # a body shorter than announced, without an error: resume as well
            if breaks >= self.retry.attempts:
                break

    def _read_body(self, resp: requests.Response, part: _Partial, desc: Descriptor, what: str,
                   progress: Progress) -> None:
        """Hash and write what the response brings. read1: what has arrived, at once (read(CHUNK) would wait for a
        whole MiB), so that a download killed or stalled midway keeps every byte it got, for the next pull to
        resume."""
        while chunk := resp.raw.read1(CHUNK, decode_content=False):
            if self.cancel.is_set():
                raise Cancelled(f"download of {what} cancelled")
            part.hasher.update(chunk)
            part.received += len(chunk)
            if part.received > desc.size:
                raise integrity(f"{what}: the registry sent more than the {desc.size} bytes declared")
            _write_all(part.fd, chunk)
            if part.feed is not None:
                part.feed.feed(part.received - len(chunk), chunk)
            progress(part.received)


@dataclass
class _Partial:
    """A blob download in progress: the file, the hash of what it holds so far, and how many bytes that is."""

    fd: int
    hasher: Any
    received: int = 0
    feed: Feed | None = None

    def restart(self, desc: Descriptor) -> None:
        self.received = 0
        self.hasher = desc.digest.hasher()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)


def _hash_prefix(fd: int, hasher: Any, limit: int, feed: Feed | None = None) -> int:
    """Feed what ``fd`` holds already (an interrupted download) to HASHER (and FEED); leave the offset at its end.
    More than LIMIT bytes cannot be a prefix of the blob: start over."""
    size = os.fstat(fd).st_size
    if size > limit:
        os.ftruncate(fd, 0)
        return 0
    os.lseek(fd, 0, os.SEEK_SET)
    done = 0
    while done < size:
        block = os.read(fd, min(CHUNK, size - done))
        if not block:
            break
        hasher.update(block)
        if feed is not None:
            feed.feed(done, block)
        done += len(block)
    os.lseek(fd, done, os.SEEK_SET)
    return done


def _resumes_at(resp: requests.Response, offset: int) -> bool:
    """RFC 9110 14.4: a 206 whose Content-Range is ``bytes OFFSET-LAST/TOTAL`` continues where we stopped."""
    if resp.status_code != 206:
        return False
    unit, _, rest = resp.headers.get("Content-Range", "").partition(" ")
    first = rest.split("-", 1)[0]
    return unit == "bytes" and first.isdigit() and int(first) == offset


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
