"""Images as values read from a source and written to a sink; every verb that moves an image is :func:`copy`.

go-containerregistry's shape (``pkg/v1``, ``remote``, ``layout``, ``tarball``): an immutable image value naming
both hashes of each layer, and places that are symmetric sources and sinks of it. The places Strata knows:

==================  ==========================================  =========================================
place               source (reads)                              sink (writes)
==================  ==========================================  =========================================
registry            ``puller/registry/source.py`` (mirrors)     ``puller/registry/sink.py`` (push)
the store           ``shared/store/transfer.py``                ``shared/store/transfer.py`` (+ unpack)
OCI layout dir      ``shared/transfer/layout.py``               ``shared/transfer/layout.py``
oci-archive tar     ``shared/transfer/archive.py``              ``shared/transfer/archive.py``
docker-archive tar  ``shared/transfer/archive.py``              ``shared/transfer/archive.py``
==================  ==========================================  =========================================

so that pull is registry -> store, push store -> registry, save store -> docker-archive, load archive -> store,
commit a container's rw layer (a one-image source) -> store, and ``copy`` any -> any.

Trust: a source hands over bytes and the digests they should have; :func:`copy` never passes a blob to a sink
without its digest and size having been checked on the bytes as they are (a source whose files are verified
already, the store, says so and is not re-read). Manifests and configs are verified when they are read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity
from shared.image import INDEX_TYPES, MANIFEST_TYPES, Descriptor, ImageConfig, Index, Manifest, Platform, chain_ids

ProgressFn = Callable[[Descriptor, str, int], None]  # (blob, status, bytes so far); statuses as pull prints them
MAX_INDEX_ENTRIES = 1024  # an index copied whole: Docker Hub's have ~20
MAX_DOCUMENT_BYTES = 64 << 20  # the manifests and configs one copy reads into memory, together


def quiet(desc: Descriptor, status: str, done: int) -> None:
    """A :data:`ProgressFn` that shows nothing."""


@dataclass(frozen=True)
class Document:
    """A manifest or an index as bytes, with the media type and digest it travels under. The digest is of
    ``raw`` exactly: re-serializing would change it, so documents are never rebuilt from their parse."""

    raw: bytes
    media_type: str
    digest: Digest

    @classmethod
    def of(cls, raw: bytes, media_type: str) -> Document:
        return cls(raw, media_type, Digest.of_bytes(raw))

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Layer:
    """One layer by both its hashes: the blob as it travels (compressed) and the tar it holds (diff_id)."""

    blob: Descriptor
    diff_id: Digest


@dataclass(frozen=True)
class Image:
    """One platform's image: its manifest (as bytes), its config (as bytes) and what both say.

    ``platform`` is the index entry's when the image was chosen from an index (else the config's)."""

    manifest_doc: Document
    manifest: Manifest
    config_raw: bytes
    config: ImageConfig
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, manifest_doc: Document, config_raw: bytes, what: str, platform: Platform | None = None,
              annotations: dict[str, str] | None = None) -> Image:
        """Parse and cross-check: the config is the manifest's (by digest) and lists one diff_id per layer."""
        manifest = Manifest.parse(manifest_doc.raw, manifest_doc.media_type, f"manifest of {what}")
        manifest.config.digest.verify_bytes(config_raw, f"config of {what}")
        config = ImageConfig.parse(config_raw, f"config of {what}")
        if len(config.diff_ids) != len(manifest.layers):
            raise integrity(f"{what}: the config lists {len(config.diff_ids)} layers, the manifest "
                            f"{len(manifest.layers)}")
        return cls(manifest_doc, manifest, config_raw, config, platform or config.platform, dict(annotations or {}))

    @property
    def digest(self) -> Digest:
        return self.manifest_doc.digest

    @property
    def image_id(self) -> Digest:
        """Docker's image ID: the config's digest."""
        return self.manifest.config.digest

    @property
    def chain_ids(self) -> tuple[Digest, ...]:
        """Each layer's chain ID, base first: what the store keys unpacked layers by."""
        return tuple(chain_ids(self.config.diff_ids))

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(Layer(b, d) for b, d in zip(self.manifest.layers, self.config.diff_ids, strict=True))

    @property
    def descriptor(self) -> Descriptor:
        """The manifest's descriptor as an index lists it (with the platform)."""
        return Descriptor(self.manifest_doc.media_type, self.digest, len(self.manifest_doc.raw), self.platform,
                          dict(self.annotations))


@dataclass(frozen=True)
class Resolved:
    """What a reference names at a source, and which of it to move.

    ``top`` is the document the reference names (an index or a manifest). ``images`` are the images to move:
    the one chosen for a platform, or every platform's when the whole index travels (``whole_index``; then
    ``top`` is written too and the reference names it; else the reference names the one image, and ``top``
    is kept only as the index it came from)."""

    top: Document
    images: tuple[Image, ...]
    whole_index: bool = False

    @property
    def index(self) -> Index | None:
        return Index.parse(self.top.raw, self.top.media_type) if self.top.is_index else None

    @property
    def image(self) -> Image:
        """The one image (refused for a whole index: a place that holds one image per name cannot take it)."""
        if len(self.images) != 1 or self.whole_index:
            raise StrataError("this destination holds one image per name; a whole multi-platform index cannot "
                              "go there (drop --all-platforms)", Kind.UNSUPPORTED)
        return self.images[0]

    @property
    def digest(self) -> Digest:
        """What the user sees as the image's digest: the top document's (the index's, when from an index)."""
        return self.top.digest


class Source(Protocol):
    """Where images are read from. Implementations verify documents as they read them."""

    def describe(self) -> str:
        """The place and the name, as the user wrote them (for messages)."""
        ...

    def top(self) -> Document:
        """The document the source's reference names (an index or a manifest), verified."""
        ...

    def manifest(self, desc: Descriptor) -> Document:
        """An index entry's document, by digest, verified."""
        ...

    def config(self, desc: Descriptor) -> bytes:
        """A config blob (small), verified."""
        ...

    def blob(self, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
        """A file holding the blob, its size and digest verified: the source's own file when it has one it can
        vouch for, else ``scratch`` (a fresh path on the sink's side, which the caller removes afterwards). A
        source with ``resumes = True`` may be handed a scratch holding the first bytes of an interrupted earlier
        download of the same blob, and continues from there."""
        ...


class Feed(Protocol):
    """Where a blob's bytes go as they arrive, besides its file (the store unpacks a layer while it downloads): a
    streaming source calls :meth:`feed` with each piece at its offset, in order (a piece sent again, as a resumed
    download may, is skipped); :func:`copy` calls :meth:`end` once the download is over, however it ended."""

    def feed(self, offset: int, data: bytes) -> None:
        ...

    def end(self) -> None:
        ...


class Sink(Protocol):
    """Where images are written. :func:`copy` calls, in this order: ``has_blob``/``put_blob`` for every blob
    (from several threads at once), ``put_layer`` for each layer in order once its blob is in, then
    ``put_image`` once; ``abort`` instead of ``put_image`` when anything failed. ``close`` ends the sink (an
    archive is complete only then); :func:`copy` does not call it, as several images may go into one sink.

    Optional, for a source that streams (``blob_streamed``: the registry): ``begin(resolved)``, called before any
    thread starts, and ``feed_for(desc)``, called as a blob's download starts, a :class:`Feed` for its bytes or
    None (the store unpacks a layer as it arrives: shared/store/transfer.py)."""

    def describe(self) -> str:
        ...

    def scratch(self) -> Path:
        """A fresh path where a source may write a blob for this sink (same filesystem, swept if we crash)."""
        ...

    def has_blob(self, desc: Descriptor) -> bool:
        ...

    def put_blob(self, desc: Descriptor, path: Path, progress: ProgressFn) -> None:
        """Take a verified blob. ``path`` is the caller's: copy it, or hard-link it, never move it."""
        ...

    def put_layer(self, image: Image, i: int, progress: ProgressFn) -> None:
        """Layer ``i`` of ``image`` and every layer below it are in (the store unpacks here)."""
        ...

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        """Every blob is in: write the documents, then (last) point ``name`` at them."""
        ...

    def abort(self) -> None:
        """Undo what this sink made that nothing references."""
        ...


def resolve(source: Source, platform: Platform | None, all_platforms: bool = False,
            on_index: Callable[[Document, Descriptor], None] | None = None) -> Resolved:
    """Read what ``source`` names; for an index, the ``platform`` entry (default: the host's) or, with
    ``all_platforms``, every image entry. A plain manifest asked for another ``--platform`` is refused, as
    Docker refuses it: it is not what the user asked for."""
    what = source.describe()
    top = source.top()
    if not top.is_index:
        image = Image.build(top, source.config(Manifest.parse(top.raw, top.media_type, f"manifest of {what}").config),
                            what)
        if platform is not None and not platform.matches(image.config.platform):
            raise StrataError(f"image with reference {what} was found but does not match the specified platform: "
                              f"wanted {platform}, actual: {image.config.platform} (a single-platform image: no "
                              "index to choose from)", Kind.NOT_FOUND)
        return Resolved(top, (image,))
    index = Index.parse(top.raw, top.media_type, f"index of {what}")
    if all_platforms:
        if len(index.manifests) > MAX_INDEX_ENTRIES:
            raise integrity(f"index of {what} lists {len(index.manifests)} entries, over the {MAX_INDEX_ENTRIES} "
                            "this copies (no real index comes near)")
        for entry in index.manifests:
            if entry.media_type not in MANIFEST_TYPES:
                # the index is written as it is, so every entry must come along: refuse what we cannot move
                raise StrataError(f"index of {what}: entry {entry.digest} is {entry.media_type or 'untyped'}; "
                                  "only image manifests are copied (nested indexes are not followed), so the "
                                  "whole index cannot be", Kind.UNSUPPORTED)
        entries = list(index.manifests)
    else:
        entries = [index.select(platform or Platform.host())]
        if on_index is not None:
            on_index(top, entries[0])
    read = _Documents(source, what)
    images = []
    for entry in entries:
        doc = read.manifest(entry)
        label = f"{entry.platform or entry.digest} image of {what}"
        manifest = Manifest.parse(doc.raw, doc.media_type, f"manifest of {label}", strict_layers=not all_platforms)
        config_raw = read.config(manifest.config)
        images.append(Image.build(doc, config_raw, label, entry.platform, dict(entry.annotations))
                      if not all_platforms else _lenient_image(doc, manifest, config_raw, entry))
    return Resolved(top, tuple(images), whole_index=all_platforms)


class _Documents:
    """The manifests and configs one resolve reads, each once (an index may name one manifest many times), and
    at most :data:`MAX_DOCUMENT_BYTES` of them in all: a hostile index of 4 MiB could otherwise name 20,000
    distinct 4 MiB documents, each read into memory."""

    def __init__(self, source: Source, what: str) -> None:
        self.source = source
        self.what = what
        self.seen: dict[Digest, Document | bytes] = {}
        self.total = 0

    def _count(self, size: int) -> None:
        self.total += size
        if self.total > MAX_DOCUMENT_BYTES:
            raise integrity(f"{self.what}: its manifests and configs are over {MAX_DOCUMENT_BYTES >> 20} MiB in "
                            "all (no real image comes near)")

    def manifest(self, desc: Descriptor) -> Document:
        found = self.seen.get(desc.digest)
        if isinstance(found, Document):
            return found
        doc = self.source.manifest(desc)
        self._count(len(doc.raw))
        self.seen[desc.digest] = doc
        return doc

    def config(self, desc: Descriptor) -> bytes:
        found = self.seen.get(desc.digest)
        if isinstance(found, bytes):
            return found
        raw = self.source.config(desc)
        self._count(len(raw))
        self.seen[desc.digest] = raw
        return raw


def _lenient_image(doc: Document, manifest: Manifest, config_raw: bytes, entry: Descriptor) -> Image:
    """An index entry moved as it is (an attestation, a platform we would never run): blobs are copied and
    verified by digest, and the config is read only as far as it is an image config."""
    try:
        config = ImageConfig.parse(config_raw, "config")
    except StrataError:
        config = ImageConfig((), entry.platform or Platform("unknown", "unknown"))
    return Image(doc, manifest, config_raw, config, entry.platform, dict(entry.annotations))


def copy(source: Source, sink: Sink, resolved: Resolved, name: str | None, jobs: int = 3,
         progress: ProgressFn = quiet) -> int:
    """Move ``resolved`` from ``source`` to ``sink`` and point ``name`` at it there; return how many blobs were
    moved (those the sink had are skipped). Blobs move in parallel; each image's layers reach ``put_layer`` in
    order as soon as they and those below are in, so a store unpacks while later layers still download.
    On any failure (Ctrl-C included) the transfers stop and the sink undoes what nothing references."""
    import concurrent.futures  # here: a warm pull reads stored images through this module and moves nothing

    if resolved.whole_index and getattr(sink, "one_image_per_name", False):
        resolved.image  # noqa: B018 - refused before anything moves
    begin = getattr(sink, "begin", None)
    if callable(begin) and callable(getattr(source, "blob_streamed", None)):
        begin(resolved)  # before the pool's threads: the store forks its unpackers here
    moved = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending: dict[Digest, concurrent.futures.Future[bool]] = {}
        try:
            for image in resolved.images:
                for desc in image.manifest.layers:
                    if desc.digest not in pending:
                        pending[desc.digest] = pool.submit(_move_blob, source, sink, desc, progress)
                if image.image_id not in pending:  # read already (resolve verified it): not fetched again
                    pending[image.image_id] = pool.submit(_move_blob, source, sink, image.manifest.config, progress,
                                                          image.config_raw)
            for image in resolved.images:
                for i, layer in enumerate(image.manifest.layers):
                    pending[layer.digest].result()
                    sink.put_layer(image, i, progress)
                pending[image.manifest.config.digest].result()
            moved = sum(f.result() for f in pending.values())
        except BaseException:
            for f in pending.values():
                f.cancel()
            _cancel(source)
            with contextlib.suppress(StrataError):
                sink.abort()
            raise
    sink.put_image(resolved, name)
    return moved


def _cancel(source: Source) -> None:
    cancel = getattr(source, "cancel", None)
    if callable(cancel):
        cancel()


def _move_blob(source: Source, sink: Sink, desc: Descriptor, progress: ProgressFn, data: bytes | None = None) -> bool:
    """One blob from source to sink, unless the sink has it; DATA: its bytes, when they were read already.

    A source that can resume (a registry) and a sink that keeps partial downloads (the store) meet in the sink's
    ``partial(desc)``: one file per blob, locked, that an interrupted download leaves for the next to resume."""
    if sink.has_blob(desc):
        progress(desc, "already exists", desc.size)
        return False
    partial = getattr(sink, "partial", None)
    if data is None and partial is not None and getattr(source, "resumes", False):
        with partial(desc, lambda: progress(desc, "waiting for another download", 0)) as path:
            if sink.has_blob(desc):  # another process fetched it while we waited for its lock
                progress(desc, "already exists", desc.size)
                return False
            sink.put_blob(desc, _fetch(source, sink, desc, path, progress), progress)
        progress(desc, "done", desc.size)
        return True
    scratch = sink.scratch()
    try:
        if data is not None:
            with open(scratch, "xb") as f:
                f.write(data)
            path = scratch
        else:
            path = source.blob(desc, scratch, progress)
        sink.put_blob(desc, path, progress)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    progress(desc, "done", desc.size)
    return True


def _fetch(source: Source, sink: Sink, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
    """``source.blob``, or, when the source streams and the sink wants the bytes as they arrive, the streamed
    download, whose feed ends with it."""
    streamed = getattr(source, "blob_streamed", None)
    feed_for = getattr(sink, "feed_for", None)
    feed = feed_for(desc) if callable(streamed) and callable(feed_for) else None
    if feed is None or not callable(streamed):
        return source.blob(desc, scratch, progress)
    try:
        return Path(streamed(desc, scratch, progress, feed))
    finally:
        feed.end()


def verify_file(path: Path, desc: Descriptor, what: str, chunk: int = 1 << 20) -> None:
    """Hash a file a source holds (an OCI layout's, an archive member extracted) against its descriptor."""
    hasher = desc.digest.hasher()
    size = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                hasher.update(block)
                size += len(block)
    except FileNotFoundError:
        raise StrataError(f"{what}: blob {desc.digest} is missing", Kind.NOT_FOUND) from None
    if size != desc.size:
        raise integrity(f"{what}: blob {desc.digest} is {size} bytes, its descriptor says {desc.size}")
    actual = Digest(desc.digest.algorithm, hasher.hexdigest())
    if actual != desc.digest:
        raise integrity(f"{what}: blob {desc.digest} hashes to {actual}")


def copy_file(src: Path, dest: Path) -> None:
    """Put ``src``'s bytes at the new path ``dest``, a file of its own. Never a hard link: a blob linked out of
    the store into a user's layout (or from a layout into the store) would be one inode that either side can
    change in place (a ``chown -R``, an editor), and the store trusts its blobs once verified."""
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        while block := fin.read(1 << 20):
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
