"""Garbage collection and ``rmi``: what the references and holds reach stays, the blobs and layers nothing reaches go.

Marking reads only index.json, the images it names and holds/ (never a container's own files); sweeping removes a
layer as the store removes anything, one rename into tmp/ then removal there. Every collection holds the store's
``in_use`` lock exclusive, so no pull or container creation is between committing a layer and holding or
referencing it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError
from shared.store.files import read_json, remove_tree
from shared.store.images import StoredImage, index_digest, load, lookup, no_such_image, repository
from shared.store.layout import Holds, LayerRecord, Store


def read_holds(store: Store, warn: Callable[[str], None]) -> Holds:
    """The store's holds; each unreadable one is reported through ``warn`` (loudly: it makes GC keep every
    layer, and only a person can tell why the file is broken)."""
    holds = store.holds()
    for line in holds.unreadable:
        warn(f"WARNING: unreadable hold {line}; keeping every layer until it is fixed or removed")
    return holds


@dataclass(frozen=True)
class Freed:
    """One thing ``rmi`` deleted: a blob (by digest) or an unpacked layer (by chain ID), what it was to the
    image, and the bytes it took (a blob's file size; a layer's uncompressed tar size, as layer.json has it)."""

    digest: str
    what: str  # "manifest", "config", "index", "layer 2 blob", "layer 2"
    size: int


@dataclass(frozen=True)
class Removal:
    """What one ``rmi`` argument did: the references it untagged, then what that made unreferenced and so freed,
    in the image's order (its documents, its layer blobs base first, its unpacked layers top first)."""

    untagged: tuple[str, ...]
    deleted: tuple[Freed, ...]

    @property
    def reclaimed(self) -> int:
        return sum(f.size for f in self.deleted)


def _digest_reference(text: str) -> reference.Reference | None:
    try:
        ref = reference.parse(text)
    except StrataError:
        return None
    return ref if ref.digest is not None else None


def _single_reference(names: list[str]) -> bool:
    """Docker's isSingleReference: all in one repository, and at most one of them a tag (digest references are
    not tags). Then removing by ID removes them all without -f."""
    return len({repository(n) for n in names}) == 1 and sum("@" not in n for n in names) <= 1


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def remove_image(store: Store, text: str, force: bool = False, warn: Callable[[str], None] = _stderr) -> Removal:
    """``rmi TEXT``: untag the reference TEXT names, or, for an image ID, every reference to that image (refused
    unless ``force`` when they are not one repository's single tag, as Docker refuses); then delete what that
    made unreferenced. Garbage no image referenced before (left by earlier forced removals, failed pulls) is
    swept too, so the store does not keep it, but it is not reported: it is not what this rmi freed.
    Refused while a container uses the image, unless ``force`` (which keeps that container's layers)."""
    if not store.exists():
        raise no_such_image(text)
    with store.in_use(exclusive=True), store.lock():
        image, by_id = lookup(store, text)
        names = [image.name]
        digest_ref = _digest_reference(text)
        if digest_ref is not None and image.name != str(digest_ref):  # found by digest under its tags: untag those
            names = sorted(n for n, d in store.refs() if repository(n) == digest_ref.repository
                           and digest_ref.digest in (d.digest, index_digest(d)))
        if by_id:
            names = sorted(n for n, d in store.refs() if load(store, n, d).image_id == image.image_id)
            if not force and not _single_reference(names):
                short = text.removeprefix("sha256:")[:12]
                raise StrataError(f"conflict: unable to delete {short} (must be forced) - image is referenced in "
                                  f"multiple repositories", Kind.STATE)
        holds = read_holds(store, warn)
        users = holds.users({str(x) for x in image.chain_ids})
        if users and not force:
            raise StrataError(f"image {image.name} is in use by {', '.join(users)}; remove it "
                              "first, or use --force", Kind.STATE)
        images = [load(store, n, d) for n, d in store.refs() if n in names]
        before = garbage(store, holds)
        for name in names:
            store.drop_ref(name)
        after = garbage(store, holds)
        own = _describe_freed(store, images, after - before)
        _sweep(store, after)
        return Removal(tuple(names), tuple(own))


def reachable(images: Iterable[StoredImage], holds: Holds) -> tuple[set[Digest], set[str]]:
    """What GC keeps: the blobs the images' references reach (the manifest, the index it was resolved from, the
    config, the layer blobs) and the layers (chain IDs as strings) the images and the holds rest on."""
    keep_blobs: set[Digest] = set()
    keep_layers: set[str] = holds.layers()
    for image in images:
        keep_blobs |= {image.entry.digest, image.image_id, *(d.digest for d in image.manifest.layers)}
        index = index_digest(image.entry)
        if index is not None:
            keep_blobs.add(index)
        keep_layers |= {str(c) for c in image.chain_ids}
    return keep_blobs, keep_layers


def garbage(store: Store, holds: Holds) -> set[Path]:
    """Mark what the references and holds reach; the blobs and layer dirs nothing reaches. With an unreadable
    hold, no layer is garbage (it may be the one that hold names). The caller holds ``in_use(exclusive=True)``
    (no pull or container creation is between committing a layer and holding or referencing it) and the store
    lock."""
    keep_blobs, keep_layers = reachable((load(store, n, d) for n, d in store.refs()), holds)
    out: set[Path] = set()
    for blob in (store.blobs / "sha256").iterdir():
        if len(blob.name) == 64 and Digest("sha256", blob.name) not in keep_blobs:  # else a write in flight
            out.add(blob)
    for layer in store.layers.iterdir():
        if holds.complete and f"sha256:{layer.name}" not in keep_layers:
            out.add(layer)  # a layer half removed by an earlier, failed GC is garbage like any other
    return out


def _describe_freed(store: Store, images: list[StoredImage], paths: set[Path]) -> list[Freed]:
    """The removed images' own items among ``paths``, in the images' order, with their sizes (read before the
    sweep removes them)."""
    out: list[Freed] = []
    seen: set[Path] = set()

    def note(path: Path, digest: Digest, what: str, size: int | None = None) -> None:
        if path in paths and path not in seen:
            seen.add(path)
            if size is None:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    size = 0
            out.append(Freed(str(digest), what, size))

    for image in images:
        index = index_digest(image.entry)
        if index is not None:
            note(store.blob_path(index), index, "index")
        note(store.blob_path(image.entry.digest), image.entry.digest, "manifest")
        note(store.blob_path(image.image_id), image.image_id, "config")
        for i, desc in enumerate(image.manifest.layers):
            note(store.blob_path(desc.digest), desc.digest, f"layer {i + 1} blob")
    for image in images:
        for i in reversed(range(len(image.chain_ids))):
            chain = image.chain_ids[i]
            try:
                record = store.layer(chain)
            except (OSError, ValueError, KeyError):
                record = None
            note(store.layer_dir(chain), chain, f"layer {i + 1}", record.size if record else 0)
    return out


def _sweep(store: Store, paths: set[Path]) -> None:
    for path in sorted(paths):
        if path.parent == store.layers:
            store.discard(path)
        else:
            remove_tree(path)


def collect(store: Store, warn: Callable[[str], None] = _stderr) -> tuple[Freed, ...]:
    """Remove what no reference or hold reaches (what failed pulls, forced removals and moved tags left): the
    store's dangling images, which ``runner system prune`` removes; each blob or layer with its size."""
    if not store.exists():
        return ()
    with store.in_use(exclusive=True), store.lock():
        paths = garbage(store, read_holds(store, warn))
        freed = []
        for path in sorted(paths):
            layer = path.parent == store.layers
            try:
                size = LayerRecord.from_json(read_json(path / "layer.json")).size if layer else path.stat().st_size
            except (OSError, ValueError, KeyError, TypeError):  # half removed by an earlier GC: no size to tell
                size = 0
            freed.append(Freed(f"sha256:{path.name}", "layer" if layer else "blob", size))
        _sweep(store, paths)
    return tuple(freed)


def unused_images(store: Store, warn: Callable[[str], None] = _stderr) -> list[str]:
    """The references of images no container rests on (``system prune -a`` removes them), by name."""
    if not store.exists():
        return []
    holds = read_holds(store, warn)
    return [name for name, desc in store.refs()
            if not holds.users({str(c) for c in load(store, name, desc).chain_ids})]
