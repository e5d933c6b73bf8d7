"""``puller copy SRC DEST``: any place to any place, with skopeo's transport names.

==============================  =================================================================================
``docker://REF``                 a registry (its mirrors too, as a source; credentials from ``puller login``)
``oci:DIR[:REF]``                an OCI image layout directory; REF is the ``org.opencontainers.image.ref.name``
``oci-archive:FILE[:REF]``       a tar of an OCI layout
``docker-archive:FILE[:REF]``    ``docker save``'s tar; REF a name in its ``RepoTags``
``REF`` (no transport)           the Strata store (as a sink: unpacked, ready to run)
==============================  =================================================================================

As in skopeo, the path ends at the first ``:`` after the transport, so a DIR or FILE cannot hold a colon. The
air-gap workflow is ``copy docker://IMG oci-archive:img.tar`` on the connected side, then ``copy
oci-archive:img.tar docker://internal:5000/IMG`` (or ``load``) inside: every document moves byte for byte, so
digests do not change. Only the whole index moves with ``--all-platforms``; without it one platform's image does
(the host's, or ``--platform``), and the destination names that image, as skopeo does.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from shared.cli import StoreOption
from shared.errors import Kind, StrataError, usage
from shared.store.layout import Store

# skopeo's transports (containers/image transports/alltransports) that Strata reads and writes
TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive")
# skopeo's other transports: named as such, not taken for a store reference that happens to hold a colon
FOREIGN = ("dir", "containers-storage", "docker-daemon", "ostree", "sif", "tarball")
STORE = "store"


@dataclass(frozen=True)
class Location:
    """One side of a copy, as the user wrote it."""

    transport: str  # one of TRANSPORTS, or STORE
    path: str  # docker and the store: the reference; the others: the directory or file
    name: str | None = None  # the reference inside an OCI layout or an archive

    def __str__(self) -> str:
        if self.transport == STORE:
            return self.path
        if self.transport == "docker":
            return f"docker://{self.path}"
        return f"{self.transport}:{self.path}" + (f":{self.name}" if self.name else "")


def parse_location(text: str) -> Location:
    """skopeo's ``TRANSPORT:DETAILS``; a bare reference is the store."""
    transport, colon, rest = text.partition(":")
    if colon and transport == "docker":
        if not rest.startswith("//") or len(rest) == 2:
            raise usage(f"invalid location {text!r}: docker needs docker://REFERENCE")
        return Location("docker", rest[2:])
    if colon and transport in TRANSPORTS:
        path, _, name = rest.partition(":")
        if not path:
            raise usage(f"invalid location {text!r}: {transport}: needs a path")
        return Location(transport, path, name or None)
    if colon and transport in FOREIGN:
        raise StrataError(f"transport {transport!r} is not supported (Strata copies {', '.join(TRANSPORTS)}, "
                          "and the store as a bare reference)", Kind.UNSUPPORTED)
    if not text or "://" in text:
        raise usage(f"invalid location {text!r}: expected TRANSPORT:DETAILS or an image reference")
    return Location(STORE, text)


def _reference(text: str) -> Any:
    from shared import reference

    return reference.parse(text)


def open_source(loc: Location, store: Store, settings: Any, notice: Any) -> Any:
    """The place to read from (a :class:`shared.transfer.model.Source`)."""
    if loc.transport == "docker":
        from puller.registry.source import RegistrySource, places_for

        ref = _reference(loc.path)
        return RegistrySource(ref, places_for(ref, settings, notice))
    if loc.transport == STORE:
        from shared.store.images import find
        from shared.store.transfer import StoreSource

        return StoreSource(store, find(store, loc.path))
    if loc.transport == "oci":
        from shared.transfer.layout import LayoutSource

        return LayoutSource(Path(loc.path), loc.name)
    from shared.transfer.archive import DockerArchiveSource, OciArchiveSource

    if loc.transport == "oci-archive":
        return OciArchiveSource(Path(loc.path), loc.name)
    return DockerArchiveSource(Path(loc.path), loc.name)


def _dest_name(loc: Location, source: Location, written: Any, also: Any = None) -> str | None:
    """The name the copy gets at the destination: the one given, else (layouts, archives) the source's reference
    when it has one. WRITTEN is the digest of what the name will name there (ALSO: the index it came from, which
    the store accepts in a name as pull does).

    A digest in a name must be that digest: ``copy X reg/y@sha256:1111...`` is refused, not stored under a
    name that lies. A source named by an index digest whose one platform is copied loses that digest (keeps its
    tag, if any), so that ``load`` does not find a name that does not match what the archive holds."""
    if loc.transport in ("docker", STORE):
        ref = _reference(loc.path)
        if ref.digest is not None and ref.digest not in (written, also):
            raise usage(f"{loc} names digest {ref.digest}, but what is copied there is {written} (a digest names "
                        "the manifest it is: give a tag, or that digest)")
        return ref.tag if loc.transport == "docker" else str(ref)  # (a registry sink knows its repository)
    if loc.name:
        return loc.name
    if source.transport not in ("docker", STORE):
        return None
    # the source's full reference: docker save names an image so, and a layout or oci-archive named so is loaded
    # (puller load, podman load) under the name it came from, the air-gap workflow's point
    ref = _reference(source.path)
    if ref.digest is None or ref.digest == written:
        return str(ref)
    return f"{ref.repository}:{ref.tag}" if ref.tag else None


@contextlib.contextmanager
def open_sink(loc: Location, store: Store, settings: Any) -> Iterator[Any]:
    """The place to write to (a :class:`shared.transfer.model.Sink`), finished (an archive written) on a clean
    exit and left as it was on a failure."""
    if loc.transport == "docker":
        from puller.registry.client import RegistryClient
        from puller.registry.credentials import lookup
        from puller.registry.endpoint import Endpoint
        from puller.registry.sink import RegistrySink
        from puller.verbs.push import mount_candidates

        ref = _reference(loc.path)
        client = RegistryClient(Endpoint.for_registry(ref.registry_host, settings.insecure), lookup(ref.domain))
        candidates = mount_candidates(store, ref) if store.exists() else {}
        sink = RegistrySink(ref, client, lambda d: candidates.get(d, ()), lambda: store.temp_path("blob"))
        try:
            yield sink
        finally:
            sink.close()
    elif loc.transport == STORE:
        from shared.store.transfer import StoreSink

        yield StoreSink(store)
    elif loc.transport == "oci":
        from shared.transfer.layout import LayoutSink

        yield LayoutSink(Path(loc.path))
    else:
        from shared.transfer.archive import DockerArchiveSink, OciArchiveSink

        archive: OciArchiveSink | DockerArchiveSink = (OciArchiveSink if loc.transport == "oci-archive" else
                                                        DockerArchiveSink)(Path(loc.path), store.temp_path("copy"))
        with archive:
            yield archive


def do_copy(store: Store, src_text: str, dest_text: str, settings: Any, platform: Any, all_platforms: bool,
            jobs: int, quiet: bool) -> str:
    """Copy; return the digest of what the destination name now names."""
    from shared.image import Descriptor
    from shared.transfer.model import copy, resolve

    src, dest = parse_location(src_text), parse_location(dest_text)
    if dest.transport in ("oci-archive", "docker-archive") and not Path(dest.path).absolute().parent.is_dir():
        raise usage(f"cannot write {dest}: {Path(dest.path).absolute().parent} is not a directory")
    store.ensure()  # scratch space for blobs on their way (swept when a copy is killed)
    store.sweep_tmp()
    shown: set[Any] = set()

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    def progress(desc: Descriptor, status: str, done: int) -> None:
        if status in ("done", "already exists") and desc.digest not in shown:  # (the store says done twice)
            shown.add(desc.digest)
            say(f"{'Copied' if status == 'done' else 'Skipped'} blob {desc.digest} ({desc.size} bytes)"
                + (": the destination has it" if status != "done" else ""))

    with store.in_use():
        source = open_source(src, store, settings, say)
        resolved = resolve(source, platform, all_platforms)
        written = resolved.top.digest if resolved.whole_index else resolved.images[0].digest
        name = _dest_name(dest, src, written, resolved.top.digest if dest.transport == STORE else None)
        with open_sink(dest, store, settings) as sink:
            copy(source, sink, resolved, name, jobs, progress)
            say(f"Writing manifest to {dest}")
    return str(resolved.top.digest if dest.transport == STORE else written)


def register(app: typer.Typer, state: StoreOption) -> None:
    @app.command(name="copy")
    def copy_(source: str = typer.Argument(..., help="docker://REF, oci:DIR[:REF], oci-archive:FILE[:REF], "
                                           "docker-archive:FILE[:REF], or REF in the store"),
              destination: str = typer.Argument(..., help="Where to, in the same forms"),
              all_platforms: bool = typer.Option(False, "--all-platforms", "-a",
                                                 help="Copy a whole multi-platform index, every image of it"),
              platform: str | None = typer.Option(None, "--platform", help="OS/ARCH or OS/ARCH/VARIANT of an index to "
                                                  "copy (default: the host's)"),
              jobs: int = typer.Option(3, "--jobs", "-j", min=1, max=16, help="Blobs moved in parallel"),
              quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the digest"),
              insecure: list[str] = typer.Option([], "--insecure-registry", help="HOST[:PORT] over plain HTTP or "
                                                 "unchecked TLS (repeatable)")) -> None:
        """Copy an image (or with --all-platforms a whole index) between registries, OCI layouts, archives and
        the store, every digest unchanged."""
        from shared import settings as settings_mod
        from shared.image import Platform

        if all_platforms and platform:
            raise usage("--all-platforms and --platform exclude each other")
        digest = do_copy(state.store, source, destination, settings_mod.load().with_options(insecure),
                         Platform.parse(platform) if platform else None, all_platforms, jobs, quiet)
        print(digest)
