"""``puller artifact push|pull``: OCI artifacts (charts, SBOMs, configuration) through oras-py.

The files that travel with images into air-gapped sites are pushed as one image-spec 1.1 artifact manifest:
``artifactType`` set, the empty config (``application/vnd.oci.empty.v1+json``, ``{}``), one layer per file titled
``org.opencontainers.image.title``. oras-py (imported here only, inside the commands, so that no other command
pays for it) builds that manifest and speaks the upload protocol; what it lacks is put around it, not patched in:

* HTTP: :class:`oras.provider.Registry.do_request` is overridden. oras-py's own retries every exception five
  times with sleeps of 3 to 83 s (a refused connection takes two minutes), sets no timeouts and answers a 401 with
  one token reused across scopes, reading only ``~/.docker/config.json``. Ours hands every request to pull's
  :class:`RegistryClient` (its ``send``): bounded error bodies, http(s)-only redirects, no credentials across
  hosts, auth for the command's scope with the credentials of :func:`credentials.lookup` (``$DOCKER_CONFIG``,
  helpers, ``puller login``), timeouts, bounded retries, Docker's HTTPS-then-HTTP rule for loopback and
  ``--insecure-registry``, every error one line.
* Manifest: oras-py 0.2 writes no ``artifactType`` and types the config ``application/vnd.unknown.config.v1+json``;
  :meth:`upload_manifest` sets both before oras-py PUTs it, then checks the registry's digest against the bytes sent.
* Pull: oras-py checks no digest and writes each blob straight to its final name (a corrupt or cut blob stays
  there); it untars layers of one media type with a weak path check. So pull uses oras-py for requests only: it
  fetches the manifest itself and checks it against its digest, streams every blob into a temp file next to its
  destination while hashing it, and renames the files into place only once every one matched its descriptor's
  size and digest. Titles must be relative paths without ``..``; every directory is opened with ``O_NOFOLLOW``
  from an fd of DIR, so nothing is written outside DIR or through a symlink in it.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from shared.cli import StoreOption
from shared.errors import Kind, StrataError, hostile, integrity, usage

if TYPE_CHECKING:
    import requests

    from shared.digest import Digest
    from shared.image import Descriptor
    from shared.reference import Reference

EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # of b"{}"
EMPTY_BLOB_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # of b""
TITLE = "org.opencontainers.image.title"
DEFAULT_ARTIFACT_TYPE = "application/vnd.unknown.artifact.v1"  # the ORAS CLI's default
# oras-py's monolithic upload reads a file whole into memory; above this, chunked PATCHes of this size
UPLOAD_CHUNK = 4 * 1024 * 1024
STREAM_CHUNK = 1 << 20
TEMP_PREFIX = ".puller-artifact"  # temp files beside the destination: .puller-artifact.PID.RANDOM
# RFC 6838 section 4.2 restricted-name, type "/" subtype (image-spec descriptor.md: mediaType)
# (patterns, not compiled here: this module is imported at every start-up; re caches them on first use)
_MEDIA_TYPE_RE = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_REPO_PATH_RE = r"/v2/(?P<repo>.+)/(?P<kind>blobs|manifests)/(?P<id>uploads/.*|[^/]+)$"


def register(app: typer.Typer, state: StoreOption) -> None:
    """``artifact push`` and ``artifact pull``: no store involved (``state`` is unused), only a registry and files."""
    sub = typer.Typer(no_args_is_help=True, help="Push and pull OCI artifacts (files: charts, SBOMs, "
                      "configuration) with oras-py; every pulled file is verified against its digest.")
    app.add_typer(sub, name="artifact")

    @sub.command("push")
    def push(ref: str = typer.Argument(..., help="HOST[:PORT]/NAME[:TAG] to push to"),
             files: list[Path] = typer.Argument(..., help="Regular files, one layer each, titled by file name"),
             artifact_type: str = typer.Option(DEFAULT_ARTIFACT_TYPE, "--artifact-type",
                                               help="The manifest's artifactType (a media type)"),
             insecure: list[str] = typer.Option([], "--insecure-registry", help="HOST[:PORT] to reach over plain "
                                                "HTTP or unchecked TLS (repeatable)")) -> None:
        """Upload FILEs as one OCI artifact (image-spec 1.1: artifactType, empty config, titled layers)."""
        from shared import reference

        target = reference.parse(ref)
        digest = push_artifact(target, files, artifact_type, insecure)
        print(f"Pushed {target}")
        print(f"Digest: {digest}")

    @sub.command("pull")
    def pull(ref: str = typer.Argument(..., help="NAME[:TAG] or NAME@DIGEST of an artifact"),
             output: Path = typer.Option(Path("."), "--output", "-o", help="Directory to write the files into "
                                         "(created if missing; files of the same name are replaced)"),
             insecure: list[str] = typer.Option([], "--insecure-registry", help="HOST[:PORT] to reach over plain "
                                                "HTTP or unchecked TLS (repeatable)")) -> None:
        """Download an artifact's files into DIR, each verified (size and sha256) before any appears there."""
        from shared import reference

        for path in pull_artifact(reference.parse(ref), output, insecure):
            print(path)


# -- oras-py, wrapped -------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _describe(method: str, url: str) -> str:
    """What a request is about, for an error message: ``blob sha256:... of HOST/REPO``, ``HOST/REPO:TAG``."""
    parts = urlsplit(url)
    m = re.search(_REPO_PATH_RE, parts.path)
    if not m:
        return f"{method} {parts.netloc}{parts.path}"
    repo = f"{parts.netloc}/{m['repo']}"
    if m["kind"] == "manifests":
        return f"{repo}{'@' if ':' in m['id'] else ':'}{m['id']}"
    if m["id"].startswith("uploads/"):
        return f"an upload to {repo}"
    return f"blob {m['id']} of {repo}"


class _NoConfigAuth:
    """Stands in for oras-py's auth backend, whose ``load_configs`` would read ``~/.docker/config.json`` only (not
    ``$DOCKER_CONFIG``) and run credential helpers: our session's :class:`RegistryAuth` already has what Docker's
    config says."""

    def load_configs(self, *args: Any, **kwargs: Any) -> None:
        pass


@functools.cache
def _registry_class() -> type[Any]:
    """The oras-py Registry with our HTTP, auth and manifest (see the module docstring). Built on first use, so
    that importing this module (every ``puller`` start) does not import oras."""
    import logging

    import oras.provider

    from puller.registry.client import RegistryClient, registry_error

    logging.getLogger("oras.logger").setLevel(logging.CRITICAL + 1)  # its errors are ours to word, on one line

    class Registry(oras.provider.Registry):  # type: ignore[misc]  # oras-py ships no type information
        def __init__(self, client: RegistryClient, scope: str, artifact_type: str = DEFAULT_ARTIFACT_TYPE) -> None:
            endpoint = client.endpoint
            super().__init__(hostname=endpoint.host, insecure=endpoint.scheme == "http",
                             tls_verify=endpoint.verify_tls)
            self.client = client
            self.scope = scope
            self.auth = _NoConfigAuth()
            self.artifact_type = artifact_type
            self.manifest_digest: str | None = None

        def do_request(self, url: str, method: str = "GET", data: dict[str, Any] | bytes | None = None,
                       headers: dict[str, str] | None = None, json: dict[str, Any] | None = None,
                       stream: bool = False) -> requests.Response:
            """Every request oras-py makes goes through pull's client (RegistryClient.send: auth for SCOPE,
            timeouts, bounded retries, HTTPS then HTTP where Docker allows it, bounded error bodies). oras-py
            builds URLs on its own idea of the scheme: those on this registry are passed as paths under /v2/,
            so the client's scheme (after a fallback) is the one used. Any answer >= 400 but a HEAD's 404
            (oras asks "does this blob exist?") ends the command, in one line."""
            what = _describe(method, url)
            resp = self.client.send(method, _target(self.client.host, url), None, what, scope=self.scope,
                                    data=data, json=json, headers=dict(headers or {}), stream=stream)
            if resp.status_code >= 400 and not (method == "HEAD" and resp.status_code == 404):
                raise registry_error(resp, what)
            return resp

        def upload_blob(self, blob: str, container: Any, layer: dict[str, Any], do_chunked: bool = False,
                        chunk_size: int = UPLOAD_CHUNK) -> requests.Response:
            """Chunked above UPLOAD_CHUNK: oras-py's monolithic PUT holds the whole file in memory."""
            resp: requests.Response = super().upload_blob(blob, container, layer, chunk_size=UPLOAD_CHUNK,
                                                          do_chunked=layer["size"] > UPLOAD_CHUNK)
            return resp

        def upload_manifest(self, manifest: dict[str, Any], container: Any) -> requests.Response:
            """Make oras-py's manifest an image-spec 1.1 artifact, PUT it, check the registry's digest of it."""
            _as_artifact(manifest, self.artifact_type)
            resp: requests.Response = super().upload_manifest(manifest, container)
            self.manifest_digest = _filed_digest(resp, self.hostname)
            return resp

    return Registry


def _target(host: str, url: str) -> str:
    """Where oras-py's URL goes through our client: a path under /v2/ when it is on the registry's own host (so the
    client's scheme, after a fallback, is the one used), else the URL as it is."""
    parts = urlsplit(url)
    if parts.netloc == host and parts.path.startswith("/v2/"):
        return parts.path.removeprefix("/v2/") + (f"?{parts.query}" if parts.query else "")
    return url


def _as_artifact(manifest: dict[str, Any], artifact_type: str) -> None:
    """Make oras-py's manifest an image-spec 1.1 artifact: the empty config's own media type, the artifact type,
    no empty annotations."""
    config = manifest["config"]
    if config.get("digest") != EMPTY_CONFIG_DIGEST or config.get("size") != 2:
        raise StrataError(f"oras-py wrote an unexpected config descriptor {config}", Kind.UNSUPPORTED)
    config["mediaType"] = EMPTY_CONFIG_TYPE
    manifest["artifactType"] = artifact_type
    if not manifest.get("annotations"):
        manifest.pop("annotations", None)


def _filed_digest(resp: requests.Response, hostname: str) -> str:
    """The digest of the manifest a PUT sent, checked against the one the registry says it filed it under."""
    from shared.digest import Digest

    body = resp.request.body
    sent = Digest.of_bytes(body if isinstance(body, bytes) else str(body or "").encode())
    header = resp.headers.get("Docker-Content-Digest")
    if header and header != str(sent):
        raise integrity(f"registry {hostname} filed the manifest under {header}, but its sha256 is {sent}")
    return str(sent)


def _container(ref: Reference) -> Any:
    """oras-py's reference, built field by field: its parser takes ``localhost/x`` or ``my.org/x`` for a registry
    host where Docker's rules (shared.reference) do not."""
    import oras.container

    c = oras.container.Container(ref.path, registry=ref.registry_host)
    c.registry = ref.registry_host
    namespace, _, repository = ref.path.rpartition("/")
    c.namespace, c.repository = namespace or None, repository
    c.tag = ref.tag or "latest"
    c.digest = str(ref.digest) if ref.digest else None
    return c


def _open_registry(ref: Reference, insecure: list[str], action: str, artifact_type: str = DEFAULT_ARTIFACT_TYPE
                   ) -> Any:
    from puller.registry import credentials
    from puller.registry.client import RegistryClient
    from puller.registry.endpoint import Endpoint
    from shared import settings

    endpoint = Endpoint.for_registry(ref.registry_host, settings.load().with_options(insecure).insecure)
    client = RegistryClient(endpoint, credentials.lookup(ref.domain))
    return _registry_class()(client, f"repository:{ref.path}:{action}", artifact_type)


@contextmanager
def _oras_errors(doing: str) -> Iterator[None]:
    """What oras-py raises (ValueError for an answer it did not expect, jsonschema's errors, requests') becomes one
    line. Our own StrataErrors pass through."""
    import jsonschema
    import requests

    try:
        yield
    except StrataError:
        raise
    except (ValueError, RuntimeError, jsonschema.exceptions.ValidationError,
            requests.RequestException) as e:
        raise StrataError(f"{doing} failed: {_one_line(e)}", Kind.REGISTRY) from None


# -- push -------------------------------------------------------------------------------------------------------


def push_artifact(ref: Reference, files: list[Path], artifact_type: str, insecure: list[str]) -> str:
    """Push FILES as one artifact under REF; the manifest's digest, as the registry confirmed it."""
    if ref.digest is not None:
        raise usage(f"push to a tag, not a digest: {ref} (the digest is the manifest's, known once pushed)")
    if not re.fullmatch(_MEDIA_TYPE_RE, artifact_type):
        raise usage(f"--artifact-type {artifact_type!r} is not a media type (TYPE/SUBTYPE)")
    titles: dict[str, Path] = {}
    for path in files:
        try:
            mode = path.stat().st_mode
        except OSError as e:
            raise usage(f"cannot read {path}: {e.strerror}") from None
        if not stat.S_ISREG(mode):
            raise usage(f"{path} is not a regular file (push files; a directory: tar it first)")
        if not os.access(path, os.R_OK):
            raise usage(f"cannot read {path}: permission denied")
        title = path.name
        if title in titles:
            raise usage(f"{titles[title]} and {path} would both be titled {title!r} in the artifact")
        titles[title] = path
    registry = _open_registry(ref, insecure, "pull,push", artifact_type)
    with _oras_errors(f"push of {ref}"):
        try:
            registry.push(target=_container(ref), files=[str(p.absolute()) for p in files],
                          disable_path_validation=True, quiet=True)
        except FileNotFoundError as e:  # a file that went away since we looked
            raise usage(f"cannot read {e.filename or e}: it went away during the push") from None
    assert registry.manifest_digest is not None  # upload_manifest ran, or raised
    return str(registry.manifest_digest)


# -- pull -------------------------------------------------------------------------------------------------------


def _parts(title: str, what: str) -> list[str]:
    """A title as the path components it names under DIR; refuse what would land anywhere else."""
    if not title or "\0" in title:
        raise hostile(f"{what}: empty or NUL in its title {title!r}")
    if title.startswith("/"):
        raise hostile(f"{what}: title {title!r} is an absolute path; refusing to write outside the output directory")
    parts = [p for p in title.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise hostile(f"{what}: title {title!r} climbs out of the output directory; refused")
    if not parts:
        raise hostile(f"{what}: title {title!r} names no file")
    if any(len(p.encode()) > 255 for p in parts):
        raise integrity(f"{what}: title {title[:80]!r}... has a name too long for a file")
    return parts


class _Planned:
    """One file to write: its layer, its path under DIR, and once opened its directory's fd and temp name.
    (Plain classes, not dataclasses, here: building those costs a millisecond each at every start-up.)"""

    def __init__(self, desc: Descriptor, title: str, parts: list[str]) -> None:
        self.desc, self.title, self.parts = desc, title, parts
        self.dir_fd = -1
        self.temp: str | None = None


class _Output:
    """DIR, entered only by fds: every directory below it opened with O_NOFOLLOW, so a symlink planted there
    (by the artifact or anyone) is refused, never followed. Undoes what it created unless committed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_fd = -1
        self.fds: dict[tuple[str, ...], int] = {}
        self.created: list[tuple[int, str]] = []  # (parent fd, name) of directories we made
        self.temps: list[tuple[int, str]] = []
        self.swept: set[int] = set()

    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileExistsError:
            raise usage(f"output {self.root} exists and is not a directory") from None
        except NotADirectoryError:
            raise usage(f"output {self.root} is not a directory") from None
        self.fds[()] = self.root_fd

    def directory(self, parts: list[str]) -> int:
        """The fd of DIR/PARTS, made as needed; a symlink or a non-directory on the way is refused."""
        fd = self.root_fd
        for i, name in enumerate(parts):
            key = tuple(parts[: i + 1])
            if key in self.fds:
                fd = self.fds[key]
                continue
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
                self.created.append((fd, name))
            except FileExistsError:
                pass
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:  # ELOOP (a symlink), ENOTDIR
                raise hostile(f"{self.root / '/'.join(key)} is not a directory (a symlink?); refusing to write "
                              "through it") from None
            self.fds[key] = fd
        return fd

    def check_free(self, dir_fd: int, name: str, title: str) -> None:
        """Refuse, before downloading anything, a destination that a rename could not replace (a directory)."""
        with suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
                raise StrataError(f"cannot write {self.root / title}: a directory is in the way", Kind.STATE)

    def temp_file(self, dir_fd: int) -> tuple[int, str]:
        """A new ``.puller-artifact.PID.RANDOM`` beside the destination; the first in a directory also removes
        the ones a killed pull left there (their PID is gone)."""
        from shared.transfer.layout import pid_temp_name, sweep_dead_temps

        if dir_fd not in self.swept:
            self.swept.add(dir_fd)
            sweep_dead_temps(dir_fd, TEMP_PREFIX)
        temp = pid_temp_name(TEMP_PREFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dir_fd)
        self.temps.append((dir_fd, temp))
        return fd, temp

    def commit(self, planned: list[_Planned]) -> list[Path]:
        written = []
        for p in planned:
            assert p.temp is not None
            try:  # a rename replaces a symlink of that name itself, never what it points to
                os.rename(p.temp, p.parts[-1], src_dir_fd=p.dir_fd, dst_dir_fd=p.dir_fd)
            except OSError as e:
                if e.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise StrataError(f"cannot write {self.root / p.title}: {e.strerror}", Kind.STATE) from None
            self.temps.remove((p.dir_fd, p.temp))
            written.append(self.root / p.title)
        self.created.clear()
        return written

    def close(self) -> None:
        for dir_fd, temp in self.temps:
            with suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        for parent, name in reversed(self.created):
            with suppress(OSError):
                os.rmdir(name, dir_fd=parent)
        for fd in set(self.fds.values()):
            with suppress(OSError):
                os.close(fd)


def _fetch_manifest(registry: Any, container: Any, ref: Reference) -> tuple[bytes, Digest, str]:
    from puller.registry.endpoint import MANIFEST_ACCEPT
    from puller.registry.transport import describe_break, read_capped
    from shared.digest import Digest
    from shared.image import MAX_MANIFEST_BYTES, media_type_of

    what = f"artifact {ref}"
    url = f"{registry.prefix}://{container.manifest_url()}"
    with registry.do_request(url, "GET", headers={"Accept": MANIFEST_ACCEPT}, stream=True) as resp:
        try:
            raw, whole = read_capped(resp.raw, MAX_MANIFEST_BYTES)
        except OSError as e:
            raise StrataError(f"download of {what} broke off: {describe_break(e)}", Kind.REGISTRY) from None
        content_type = resp.headers.get("Content-Type")
        header = resp.headers.get("Docker-Content-Digest")
    if not whole:
        raise integrity(f"{what}: manifest over the {MAX_MANIFEST_BYTES}-byte limit")
    expected = ref.digest or (Digest.parse(header) if header else Digest.of_bytes(raw))
    expected.verify_bytes(raw, f"the manifest of {what}")
    if header and Digest.parse(header) != expected:
        raise integrity(f"{what}: Docker-Content-Digest {header} does not match {expected}")
    return raw, expected, media_type_of(raw, content_type, f"the manifest of {what}")


def _download(registry: Any, container: Any, p: _Planned, fd: int, what: str) -> None:
    """Stream one blob into FD while hashing; raise unless its size and digest are the descriptor's."""
    import urllib3

    from puller.registry.client import TRANSIENT
    from puller.registry.transport import describe_break

    desc = p.desc
    for attempt in range(registry.client.retry.attempts):
        hasher, received = desc.digest.hasher(), 0
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            with registry.get_blob(container, str(desc.digest), stream=True) as resp:
                for chunk in resp.raw.stream(STREAM_CHUNK, decode_content=False):
                    received += len(chunk)
                    if received > desc.size:
                        raise integrity(f"{what}: the registry sent more than the {desc.size} bytes declared")
                    hasher.update(chunk)
                    os.write(fd, chunk)  # a regular file: short writes only on a full disk, which raises
        except (*TRANSIENT, urllib3.exceptions.HTTPError) as e:
            if attempt == registry.client.retry.attempts - 1:
                raise StrataError(f"download of {what} broke off {attempt + 1} times: {describe_break(e)}",
                                  Kind.REGISTRY) from None
            registry.client.sleep(registry.client.retry.delay(attempt) or 0)
            continue
        break
    if received != desc.size:
        raise integrity(f"{what}: got {received} bytes, the manifest says {desc.size}")
    if hasher.hexdigest() != desc.digest.hex:
        raise integrity(f"{what}: digest mismatch: expected {desc.digest}, got {desc.digest.algorithm}:"
                        f"{hasher.hexdigest()}")
    os.fsync(fd)


def pull_artifact(ref: Reference, output: Path, insecure: list[str]) -> list[Path]:
    """Fetch REF's manifest (verified), plan each titled layer's path under OUTPUT (refusing escapes), download
    every blob to a temp file beside its destination (verified), then rename them all into place."""
    from shared.image import INDEX_TYPES, Manifest

    registry = _open_registry(ref, insecure, "pull")
    container = _container(ref)
    with _oras_errors(f"pull of {ref}"):
        raw, _digest, media_type = _fetch_manifest(registry, container, ref)
    if media_type in INDEX_TYPES:
        raise StrataError(f"{ref} is an image index, not an artifact manifest; name one of its manifests by "
                          "digest", Kind.UNSUPPORTED)
    manifest = Manifest.parse(raw, media_type, f"the manifest of {ref}", strict_layers=False)
    planned: list[_Planned] = []
    seen: set[tuple[str, ...]] = set()
    skipped: list[Descriptor] = []
    for desc in manifest.layers:
        what = f"layer {desc.digest} of {ref}"
        title = desc.annotations.get(TITLE)
        if title is None:  # as the ORAS CLI: a layer without a file name is not a file to write
            skipped.append(desc)
            continue
        parts = _parts(title, what)
        key = tuple(parts)
        if key in seen or any(key[: len(s)] == s or s[: len(key)] == key for s in seen):
            raise integrity(f"{what}: title {title!r} collides with another layer's")
        seen.add(key)
        planned.append(_Planned(desc, "/".join(parts), parts))
    if not planned:
        raise StrataError(f"{ref} has no file to write: none of its layers has an {TITLE} annotation (an image? "
                          "that is `puller pull`)", Kind.UNSUPPORTED)
    for desc in skipped:
        print(f"Skipped {desc.digest}: no {TITLE} annotation", file=sys.stderr)
    out = _Output(output)
    try:
        out.open()
        for p in planned:
            p.dir_fd = out.directory(p.parts[:-1])
            out.check_free(p.dir_fd, p.parts[-1], p.title)
            fd, p.temp = out.temp_file(p.dir_fd)
            try:
                if not (p.desc.size == 0 and str(p.desc.digest) == EMPTY_BLOB_DIGEST):  # nothing to fetch
                    with _oras_errors(f"pull of {ref}"):
                        _download(registry, container, p, fd, f"{p.title} (blob {p.desc.digest}) of {ref}")
            finally:
                os.close(fd)
        return out.commit(planned)
    finally:
        out.close()
