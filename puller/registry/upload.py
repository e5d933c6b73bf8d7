"""Pushing blobs and manifests to one repository: distribution-spec spec.md "Pushing blobs" / "Pushing manifests".

A blob the repository has already is skipped (HEAD). One that another repository of the same registry holds is
mounted (``POST uploads/?mount=DIGEST&from=REPO``: 201 is done; 202 is an ordinary upload session, used instead).
Otherwise a session is opened (``POST uploads/``) and the blob streamed from its file: one ``PUT ?digest=`` with
the whole body (monolithic), or ``PATCH`` chunks when the registry asks for them (``OCI-Chunk-Min-Length``) and
when resuming. Bodies are never held whole in memory: a :class:`FileBody` reads the file a block at a time as the
socket takes it, and can be sent again from its start (a 401 answered, a redirect followed).

A body is never sent blindly twice: when an upload request fails (the connection breaks, a 5xx, the session is
gone), the registry is asked what it holds: HEAD on the blob (the last PUT may have completed, its answer lost),
then GET on the session, whose ``Range`` says how many bytes it kept, and the upload goes on from there with
PATCH. A registry that forgot the session (docker-registry 2.8 does as soon as a request body was cut mid-way: its
signed ``_state`` no longer matches the bytes it wrote, and it answers ``BLOB_UPLOAD_INVALID``) gets a new one, and
the blob again from its start. Failures are bounded by the client's retry policy, with its backoff.

Manifests go last, each with its media type; the registry's ``Docker-Content-Digest`` must be ours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from puller.registry.client import RegistryClient, registry_error
from puller.registry.endpoint import merge_scopes
from shared.digest import Digest
from shared.errors import Cancelled, Kind, StrataError, integrity
from shared.image import Descriptor
from shared.transfer.model import Document

BLOCK = 1 << 20  # bytes read from the file per write to the socket
CHUNK_MIN_HEADER = "OCI-Chunk-Min-Length"
MAX_MOUNT_TRIES = 3  # Docker's maxMountAttempts: candidates tried before uploading
# Answers to an upload request that mean "ask the registry what it holds, then go on": the session is unknown or
# was invalidated (404), the range is not what it holds (416), or a passing failure.
_BROKEN_STATUSES = frozenset({404, 408, 416, 429, 500, 502, 503, 504})
_BROKEN_CODES = frozenset({"BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "SIZE_INVALID",
                           "RANGE_INVALID"})

Sent = Callable[[int], None]  # bytes of the blob the registry has taken so far


class FileBody:
    """``length`` bytes of ``path`` from ``offset`` as a request body: a Content-Length (``len``), read a block at a
    time as it is sent, and sent again from its start if requests has to send it again."""

    def __init__(self, path: Path, offset: int, length: int, sent: Sent, cancelled: Callable[[], bool]) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self.sent = sent
        self.cancelled = cancelled

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        left = self.length
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while left > 0:
                if self.cancelled():
                    raise Cancelled("upload cancelled")
                block = f.read(min(BLOCK, left))
                if not block:
                    raise StrataError(f"{self.path} ended {left} bytes early (changed while being pushed?)",
                                      Kind.INTEGRITY)
                yield block
                left -= len(block)
                self.sent(self.offset + self.length - left)


@dataclass
class Session:
    """An upload in progress: where to send the next request, and how many bytes the registry holds."""

    location: str  # absolute URL (each answer may move it: distribution signs its state into the query)
    offset: int = 0
    chunk_min: int | None = None  # the registry wants PATCH chunks of at least this size

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        if not query:
            return self.location
        return self.location + ("&" if "?" in self.location else "?") + query


class _Broken(Exception):
    """An upload request failed in a way that asking the registry what it holds may get past."""


def _error_code(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        return str(errors[0].get("code", "")) if errors else ""
    except (ValueError, AttributeError, IndexError):
        return ""


def _location(resp: requests.Response, fallback: str | None = None) -> str:
    header = resp.headers.get("Location")
    if not header:
        if fallback is not None:
            return fallback
        raise StrataError(f"registry answered {resp.status_code} to an upload request without a Location",
                          Kind.REGISTRY)
    return urljoin(resp.url, header)


def _held(resp: requests.Response) -> int | None:
    """Bytes the registry holds by its ``Range: 0-LAST`` (inclusive). distribution writes ``0-0`` for both no
    byte and one byte; it is read as none (a wrong guess costs one 416 and a fresh session, never wrong bytes)."""
    first, sep, last = resp.headers.get("Range", "").removeprefix("bytes=").partition("-")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) != 0:
        return None
    return int(last) + 1 if int(last) > 0 else 0


class Uploader:
    """Blobs and manifests into ``repository`` at ``client``'s registry, with ``pull,push`` on it."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.scope = f"repository:{repository}:pull,push"
        self.place = f"{client.host}/{repository}"

    # -- what the repository has ---------------------------------------------------------------------------------

    def has_blob(self, digest: Digest) -> bool:
        what = f"blob {digest} at {self.place}"
        with self.client.send("HEAD", f"{self.repository}/blobs/{digest}", self.repository, what,
                               scope=self.scope) as resp:
            if resp.status_code == 200:
                return True
            if resp.status_code == 404:
                return False
            raise registry_error(resp, what)

    # -- sessions ------------------------------------------------------------------------------------------------

    def _session(self, resp: requests.Response) -> Session:
        declared = resp.headers.get(CHUNK_MIN_HEADER, "")
        return Session(_location(resp), 0, int(declared) if declared.isdigit() and int(declared) > 0 else None)

    def start(self, what: str) -> Session:
        """POST uploads/: a new session."""
        with self.client.send("POST", f"{self.repository}/blobs/uploads/", self.repository, what,
                               scope=self.scope) as resp:
            if resp.status_code != 202:
                raise registry_error(resp, f"upload of {what} to {self.place}")
            return self._session(resp)

    def mount(self, desc: Descriptor, source: str, what: str) -> Session | None:
        """Mount DESC from repository SOURCE of the same registry: None when mounted, else the upload session the
        registry opened instead (it does not have the blob there, or does not mount), or None and a fresh session
        when it refused the mount's scope."""
        scope = merge_scopes(self.scope, f"repository:{source}:pull")
        path = f"{self.repository}/blobs/uploads/?mount={desc.digest}&from={source}"
        with self.client.send("POST", path, self.repository, what, scope=scope) as resp:
            if resp.status_code == 201:
                self._check_digest(resp, desc.digest, what)
                return None
            if resp.status_code == 202:
                return self._session(resp)
            if resp.status_code in (401, 403):  # no pull on the source for us: upload instead
                return self.start(what)
            raise registry_error(resp, f"mount of {what} into {self.place}")

    def cancel(self, session: Session) -> None:
        """DELETE a session we will not finish (best effort: the registry purges stale ones itself)."""
        with contextlib.suppress(StrataError, requests.RequestException):
            self.client.send("DELETE", session.location, self.repository, "an abandoned upload", scope=self.scope,
                              attempts=1).close()

    def status(self, session: Session, what: str) -> bool:
        """Ask the registry how much of SESSION it holds; False when it no longer knows the session."""
        try:
            resp = self.client.send("GET", session.location, self.repository, what, scope=self.scope)
        except Cancelled:
            raise
        except StrataError:
            return False
        with resp:
            if resp.status_code in (401, 403):
                raise registry_error(resp, f"upload of {what} to {self.place}")
            held = _held(resp) if resp.status_code in (200, 204) else None
            if held is None:
                return False
            session.location = _location(resp, session.location)
            session.offset = held
            return True

    # -- blobs ---------------------------------------------------------------------------------------------------

    def upload(self, desc: Descriptor, path: Path, what: str, sent: Sent = lambda n: None,
               session: Session | None = None) -> None:
        """Stream the verified file PATH as blob DESC, into SESSION (or a new one), resuming as described above."""
        session = session or self.start(what)
        failures = 0
        while True:
            try:
                self._send_rest(session, desc, path, what, sent)
                return
            except _Broken as e:
                failures += 1
                if failures >= self.client.retry.attempts:
                    self.cancel(session)
                    raise StrataError(f"upload of {what} to {self.place} failed {failures} times, last: {e}",
                                      Kind.REGISTRY) from None
                self.client.sleep(self.client.retry.delay(failures - 1) or 0)
                if self.has_blob(desc.digest):  # the last PUT completed; only its answer was lost
                    return
                if not self.status(session, what) or session.offset > desc.size:
                    self.cancel(session)
                    session = self.start(what)
            except BaseException:
                if self.client.cancel.is_set():
                    self.cancel(session)
                raise

    def _send_rest(self, session: Session, desc: Descriptor, path: Path, what: str, sent: Sent) -> None:
        """From what SESSION holds to the end: one PUT with the body, or PATCH chunks then an empty PUT."""
        if session.offset == 0 and session.chunk_min is None:
            self._finish(session, desc, what, FileBody(path, 0, desc.size, sent, self.client.cancel.is_set))
            return
        # the registry's minimum (a larger chunk is allowed, but the minimum is what it surely takes), else the
        # rest in one PATCH: more requests would only add round trips
        chunk = max(session.chunk_min, BLOCK) if session.chunk_min else desc.size
        while session.offset < desc.size:
            length = min(chunk, desc.size - session.offset)
            body = FileBody(path, session.offset, length, sent, self.client.cancel.is_set)
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Range": f"{session.offset}-{session.offset + length - 1}"}
            with self._body_request("PATCH", session.location, what, body, headers) as resp:
                if resp.status_code != 202:
                    self._refused(resp, what)
                session.location = _location(resp, session.location)
                held = _held(resp)
                session.offset = held if held is not None and held > session.offset else session.offset + length
        self._finish(session, desc, what, None)

    def _finish(self, session: Session, desc: Descriptor, what: str, body: FileBody | None) -> None:
        """PUT ?digest=, with the whole body (monolithic) or none (after PATCH chunks)."""
        headers = {"Content-Type": "application/octet-stream"}
        with self._body_request("PUT", session.url(digest=str(desc.digest)), what, body, headers) as resp:
            if resp.status_code not in (201, 204):
                self._refused(resp, what)
            self._check_digest(resp, desc.digest, what)

    def _body_request(self, method: str, url: str, what: str, body: FileBody | None,
                      headers: dict[str, str]) -> requests.Response:
        """One try (a failure is for :meth:`upload` to look into, not to repeat blindly)."""
        try:
            return self.client.send(method, url, self.repository, what, scope=self.scope, attempts=1,
                                     data=body, headers=headers)
        except Cancelled:
            raise
        except StrataError as e:
            if e.kind is not Kind.REGISTRY:
                raise
            raise _Broken(str(e).removeprefix(f"cannot reach registry {self.client.host} for {what}: ")) from None

    def _refused(self, resp: requests.Response, what: str) -> None:
        """Raise for an upload request's unexpected answer: _Broken when looking at the session may get past it."""
        code = _error_code(resp)
        if resp.status_code in _BROKEN_STATUSES or code in _BROKEN_CODES:
            raise _Broken(f"{resp.status_code} {code}".strip())
        raise registry_error(resp, f"upload of {what} to {self.place}")

    @staticmethod
    def _check_digest(resp: requests.Response, digest: Digest, what: str) -> None:
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.strip() != str(digest):
            raise integrity(f"the registry stored {what} as {header.strip()}, not {digest}")

    # -- manifests -----------------------------------------------------------------------------------------------

    def put_manifest(self, reference: str, doc: Document, what: str) -> None:
        """PUT a manifest or index under REFERENCE (a tag or its digest), with its media type; the registry must
        say it stored the bytes we hold."""
        with self.client.send("PUT", f"{self.repository}/manifests/{reference}", self.repository, what,
                               scope=self.scope, data=doc.raw,
                               headers={"Content-Type": doc.media_type}) as resp:
            if resp.status_code not in (200, 201, 202, 204):
                raise registry_error(resp, f"{what} at {self.place}")
            self._check_digest(resp, doc.digest, what)
