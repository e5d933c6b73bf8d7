"""The distribution API client: manifests by tag or digest, blobs streamed to disk and verified on the way.

distribution-spec spec.md "Pulling manifests" / "Pulling blobs". Every byte is hashed as it arrives; a blob reaches
the store only under the digest it was verified against.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from puller.registry.auth import Credentials, RegistryAuth, TokenCache
from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity
from shared.image import INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST_BYTES, Descriptor, media_type_of

# Sent as one header so no server falls back to schema1 conversion or to picking linux/amd64 from a list for us
# (distribution registry/handlers/manifests.go; notes/reference.md 3.3).
MANIFEST_ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
USER_AGENT = "strata-puller/0.1"
TIMEOUT = (15, 60)  # (connect, between bytes)
CHUNK = 1 << 20


def is_loopback_host(host: str) -> bool:
    """``localhost`` and 127.0.0.0/8 (and ::1) speak plain HTTP without flags, as Docker allows."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Session(requests.Session):
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


def _registry_error(resp: requests.Response, what: str) -> StrataError:
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
        return StrataError(f"registry rate limit reached for {what} (429{detail})"
                           + (f"; retry after {retry} s" if retry else ""), Kind.REGISTRY)
    return StrataError(f"registry answered {resp.status_code} for {what}{detail}", Kind.REGISTRY)


class RegistryClient:
    """One registry host. Thread-safe: each thread gets its own requests session; tokens are shared."""

    def __init__(self, host: str, credentials: Credentials | None = None) -> None:
        self.host = host
        self.scheme = "http" if is_loopback_host(host) else "https"
        self.base = f"{self.scheme}://{host}/v2/"
        self.credentials = credentials
        self.tokens = TokenCache()
        self.cancel = threading.Event()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = _Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    def _auth(self, repository: str) -> RegistryAuth:
        return RegistryAuth(self._session(), self.host, f"repository:{repository}:pull", self.tokens,
                            self.credentials)

    def _get(self, url: str, repository: str, what: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session().get(url, auth=self._auth(repository), timeout=TIMEOUT, **kwargs)
        except StrataError:
            raise
        except requests.exceptions.SSLError as e:
            raise StrataError(f"TLS error talking to {self.host} for {what}: {e}", Kind.REGISTRY) from None
        except requests.RequestException as e:
            raise StrataError(f"cannot reach registry {self.host} for {what}: {type(e).__name__}",
                              Kind.REGISTRY) from None

    def get_manifest(self, repository: str, reference: str, what: str) -> FetchedManifest:
        """GET a manifest or index; check its sha256 against the digest asked for and Docker-Content-Digest."""
        url = f"{self.base}{repository}/manifests/{reference}"
        resp = self._get(url, repository, what, headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise _registry_error(resp, what)
            length = int(resp.headers.get("Content-Length") or 0)
            if length > MAX_MANIFEST_BYTES:
                raise integrity(f"{what} is {length} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
            raw = resp.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise integrity(f"{what} is over the {MAX_MANIFEST_BYTES}-byte limit")
            content_type = resp.headers.get("Content-Type")
            header_digest = resp.headers.get("Docker-Content-Digest")
        if reference.startswith("sha"):
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
        resp = self._get(f"{self.base}{repository}/blobs/{desc.digest}", repository, what, stream=True)
        with resp:
            if resp.status_code != 200:
                raise _registry_error(resp, what)
            raw = resp.raw.read(desc.size + 1, decode_content=False)
        desc.digest.verify_bytes(raw, what)
        return raw

    def fetch_blob(self, repository: str, desc: Descriptor, dest: Path, what: str) -> None:
        """Stream a blob into the new file ``dest`` while hashing; raise (leaving ``dest`` to the caller) unless
        both its size and its digest match the descriptor."""
        resp = self._get(f"{self.base}{repository}/blobs/{desc.digest}", repository, what, stream=True)
        hasher = desc.digest.hasher()
        received = 0
        with resp:
            if resp.status_code != 200:
                raise _registry_error(resp, what)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                for chunk in resp.raw.stream(CHUNK, decode_content=False):
                    if self.cancel.is_set():
                        raise StrataError(f"download of {what} cancelled", Kind.SYSTEM)
                    hasher.update(chunk)
                    received += len(chunk)
                    if received > desc.size:
                        raise integrity(f"{what}: the registry sent more than the {desc.size} bytes declared")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            except (urllib3.exceptions.HTTPError, requests.RequestException) as e:
                raise StrataError(f"download of {what} broke off after {received} bytes: {type(e).__name__}",
                                  Kind.REGISTRY) from None
            except OSError as e:
                raise StrataError(f"cannot write {what} to {dest.parent}: {e.strerror}", Kind.SYSTEM) from None
            finally:
                os.close(fd)
        if received != desc.size:
            raise integrity(f"{what}: received {received} bytes, the manifest says {desc.size}")
        actual = Digest(desc.digest.algorithm, hasher.hexdigest())
        if actual != desc.digest:
            raise integrity(f"digest mismatch for {what}: expected {desc.digest}, got {actual}")
