"""Images as the store holds them: a reference -> manifest -> config -> layers on their chain IDs.

Both tools read images through here; the runner never touches the network, only what :func:`load` verifies.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity, not_found
from shared.image import Descriptor, ImageConfig, Manifest, chain_ids
from shared.store import Holds, LayerRecord, Store, remove_tree

# On a reference resolved from an index: the index's digest, what the user sees as the image's digest (the index
# blob is kept with the image).
INDEX_DIGEST_ANNOTATION = "io.strata.index.digest"


@dataclass(frozen=True)
class StoredImage:
    name: str  # the full normalized reference it is stored under
    descriptor: Descriptor  # of the manifest
    manifest: Manifest
    config: ImageConfig
    chain_ids: tuple[Digest, ...]

    @property
    def image_id(self) -> Digest:
        """Docker's image ID: the config's digest."""
        return self.manifest.config.digest

    def layer_records(self, store: Store) -> list[LayerRecord]:
        """Every layer, base first; a missing one means the pull never finished or the store was damaged."""
        records = []
        for i, chain in enumerate(self.chain_ids):
            record = store.layer(chain)
            if record is None:
                raise not_found(f"layer {i + 1} of {self.name} ({self.config.diff_ids[i]}) is not unpacked in "
                                f"the store; pull the image again")
            records.append(record)
        return records


def load(store: Store, name: str, descriptor: Descriptor) -> StoredImage:
    manifest = Manifest.parse(store.read_blob(descriptor.digest, "manifest"), descriptor.media_type)
    config = ImageConfig.parse(store.read_blob(manifest.config.digest, "image config"))
    if len(config.diff_ids) != len(manifest.layers):
        raise integrity(f"{name}: the config lists {len(config.diff_ids)} layers, the manifest "
                        f"{len(manifest.layers)}")
    return StoredImage(name, descriptor, manifest, config, tuple(chain_ids(config.diff_ids)))


def all_images(store: Store) -> list[StoredImage]:
    return [load(store, name, desc) for name, desc in store.refs()] if store.exists() else []


def find(store: Store, text: str) -> StoredImage:
    """An image by reference (normalized as Docker does) or by image ID (config digest or a prefix of it)."""
    return _lookup(store, text)[0]


def _lookup(store: Store, text: str) -> tuple[StoredImage, bool]:
    """:func:`find`, and whether ``text`` named the image by ID (``rmi`` then means every reference to it)."""
    if not store.exists():
        raise not_found(f"no image {text!r}: the store at {store.root} is empty")
    name_error: StrataError | None = None
    try:
        ref = reference.parse(text)
        desc = store.resolve(str(ref))
        if desc is not None:
            return load(store, str(ref), desc), False
        if ref.digest is not None:
            found = _by_digest(store, ref.repository, ref.digest)
            if found is not None:
                return found, False
    except StrataError as e:
        name_error = e
    hex_part = text.removeprefix("sha256:")
    if re.fullmatch(r"[a-f0-9]{4,64}", hex_part):
        matches = {img.image_id: img for img in all_images(store) if img.image_id.hex.startswith(hex_part)}
        if len(matches) == 1:
            return next(iter(matches.values())), True
        if len(matches) > 1:
            raise StrataError(f"image ID prefix {text!r} is ambiguous", name_error.kind if name_error else
                              not_found("").kind)
    if name_error is not None:
        raise name_error
    raise not_found(f"no image {text!r} in the store at {store.root} (pull it first)")


def _digest_reference(text: str) -> reference.Reference | None:
    try:
        ref = reference.parse(text)
    except StrataError:
        return None
    return ref if ref.digest is not None else None


def _index_digest(desc: Descriptor) -> Digest | None:
    text = desc.annotations.get(INDEX_DIGEST_ANNOTATION)
    return Digest.parse(text) if text else None


def _by_digest(store: Store, repository: str, digest: Digest) -> StoredImage | None:
    """``NAME@sha256:...``: the image stored under any reference of NAME's repository whose manifest, or the index
    it was pulled from, has that digest (what ``pull`` printed as the image's digest), as Docker resolves it."""
    for name, desc in store.refs():
        if _repository(name) != repository:
            continue
        if digest in (desc.digest, _index_digest(desc)):
            return load(store, name, desc)
    return None


def describe(store: Store, image: StoredImage) -> dict[str, object]:
    """What ``inspect`` shows: both hashes of every layer, sizes, the platform and the image's run config."""
    records = image.layer_records(store)
    index_digest = image.descriptor.annotations.get(INDEX_DIGEST_ANNOTATION)
    return {
        "Name": image.name,
        "Id": str(image.image_id),
        "Digest": index_digest or str(image.descriptor.digest),
        "ManifestDigest": str(image.descriptor.digest),
        "MediaType": image.descriptor.media_type,
        "Platform": str(image.config.platform),
        "Created": image.config.created,
        "Config": image.config.raw.get("config") or {},
        "Layers": [{"Digest": str(d.digest), "DiffID": str(r.diff_id), "ChainID": str(r.chain_id),
                    "MediaType": d.media_type, "Size": d.size, "UncompressedSize": r.size}
                   for d, r in zip(image.manifest.layers, records, strict=True)],
        "Size": sum(d.size for d in image.manifest.layers),
        "UncompressedSize": sum(r.size for r in records),
    }


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


def _repository(name: str) -> str:
    """The repository of a normalized reference (``host[:port]/path`` without ``:tag`` or ``@digest``)."""
    if "@" in name:
        return name.split("@", 1)[0]
    repo, _, tag = name.rpartition(":")
    return name if not repo or "/" in tag else repo


def _single_reference(names: list[str]) -> bool:
    """Docker's isSingleReference: all in one repository, and at most one of them a tag (digest references are
    not tags). Then removing by ID removes them all without -f."""
    return len({_repository(n) for n in names}) == 1 and sum("@" not in n for n in names) <= 1


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def remove_image(store: Store, text: str, force: bool = False, warn: Callable[[str], None] = _stderr) -> Removal:
    """``rmi TEXT``: untag the reference TEXT names, or, for an image ID, every reference to that image (refused
    unless ``force`` when they are not one repository's single tag, as Docker refuses); then delete what that
    made unreferenced. Garbage no image referenced before (left by earlier forced removals, failed pulls) is
    swept too, so the store does not keep it, but it is not reported: it is not what this rmi freed.
    Refused while a container uses the image, unless ``force`` (which keeps that container's layers)."""
    if not store.exists():
        raise not_found(f"no image {text!r}: the store at {store.root} is empty")
    with store.in_use(exclusive=True), store.lock():
        image, by_id = _lookup(store, text)
        names = [image.name]
        digest_ref = _digest_reference(text)
        if digest_ref is not None and image.name != str(digest_ref):  # found by digest under its tags: untag those
            names = sorted(n for n, d in store.refs() if _repository(n) == digest_ref.repository
                           and digest_ref.digest in (d.digest, _index_digest(d)))
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
        before = _garbage(store, holds)
        for name in names:
            store.drop_ref(name)
        after = _garbage(store, holds)
        own = _describe_freed(store, images, after - before)
        _sweep(store, after)
        return Removal(tuple(names), tuple(own))


def _garbage(store: Store, holds: Holds) -> set[Path]:
    """Mark what the references and holds reach; the blobs and layer dirs nothing reaches. With an unreadable
    hold, no layer is garbage (it may be the one that hold names). The caller holds ``in_use(exclusive=True)``
    (no pull or container creation is between committing a layer and holding or referencing it) and the store
    lock."""
    keep_blobs: set[Digest] = set()
    keep_layers: set[str] = holds.layers()
    for ref_name, desc in store.refs():
        image = load(store, ref_name, desc)
        keep_blobs |= {desc.digest, image.manifest.config.digest, *(d.digest for d in image.manifest.layers)}
        if INDEX_DIGEST_ANNOTATION in desc.annotations:
            keep_blobs.add(Digest.parse(desc.annotations[INDEX_DIGEST_ANNOTATION]))
        keep_layers |= {str(c) for c in image.chain_ids}
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
        index = image.descriptor.annotations.get(INDEX_DIGEST_ANNOTATION)
        if index:
            note(store.blob_path(Digest.parse(index)), Digest.parse(index), "index")
        note(store.blob_path(image.descriptor.digest), image.descriptor.digest, "manifest")
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
