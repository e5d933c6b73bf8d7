"""Images as the store holds them: a reference -> manifest -> config -> layers on their chain IDs.

Both tools read images through here; the runner never touches the network, only what :func:`load` verifies.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity, not_found
from shared.image import Descriptor, ImageConfig, Manifest, chain_ids
from shared.store import LayerRecord, Store, read_json, remove_tree


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
    if not store.exists():
        raise not_found(f"no image {text!r}: the store at {store.root} is empty")
    name_error: StrataError | None = None
    try:
        name = str(reference.parse(text))
        desc = store.resolve(name)
        if desc is not None:
            return load(store, name, desc)
    except StrataError as e:
        name_error = e
    hex_part = text.removeprefix("sha256:")
    if re.fullmatch(r"[a-f0-9]{4,64}", hex_part):
        matches = {img.image_id: img for img in all_images(store) if img.image_id.hex.startswith(hex_part)}
        if len(matches) == 1:
            return next(iter(matches.values()))
        if len(matches) > 1:
            raise StrataError(f"image ID prefix {text!r} is ambiguous", name_error.kind if name_error else
                              not_found("").kind)
    if name_error is not None:
        raise name_error
    raise not_found(f"no image {text!r} in the store at {store.root} (pull it first)")


def describe(store: Store, image: StoredImage) -> dict[str, object]:
    """What ``inspect`` shows: both hashes of every layer, sizes, the platform and the image's run config."""
    records = image.layer_records(store)
    index_digest = image.descriptor.annotations.get("io.strata.index.digest")
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


def containers_using(store: Store) -> dict[str, set[str]]:
    """Chain IDs each container's rootfs rests on, by container name: those layers must stay."""
    out: dict[str, set[str]] = {}
    if not store.containers.is_dir():
        return out
    for d in store.containers.iterdir():
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, ValueError, KeyError):
            cfg = read_json(d / "config.json")
            out[cfg["name"]] = set(cfg["chain_ids"])
    return out


def remove(store: Store, name: str, force: bool = False) -> list[str]:
    """Untag ``name``; then delete every blob and layer no remaining image or container needs. Returns what
    was deleted. Refused while a container uses the image, unless ``force`` (which keeps that container's layers)."""
    with store.in_use(exclusive=True), store.lock():
        desc = store.resolve(name)
        if desc is None:
            raise not_found(f"no image {name!r} in the store at {store.root}")
        image = load(store, name, desc)
        users = [c for c, chains in containers_using(store).items() if {str(x) for x in image.chain_ids} <= chains]
        if users and not force:
            raise StrataError(f"image {name} is in use by container {', '.join(sorted(users))}; remove it first, "
                              "or use --force", Kind.STATE)
        store.drop_ref(name)
        return collect_garbage(store)


def collect_garbage(store: Store) -> list[str]:
    """Mark what the references and containers reach, sweep the rest. The caller holds ``in_use(exclusive=True)``
    (no pull or container creation is between committing a layer and referencing it) and the store lock."""
    keep_blobs: set[Digest] = set()
    keep_layers: set[str] = {c for chains in containers_using(store).values() for c in chains}
    for ref_name, desc in store.refs():
        image = load(store, ref_name, desc)
        keep_blobs |= {desc.digest, image.manifest.config.digest, *(d.digest for d in image.manifest.layers)}
        if "io.strata.index.digest" in desc.annotations:
            keep_blobs.add(Digest.parse(desc.annotations["io.strata.index.digest"]))
        keep_layers |= {str(c) for c in image.chain_ids}
    deleted = []
    for blob in sorted((store.blobs / "sha256").iterdir()):
        if len(blob.name) != 64:
            continue  # atomic_write's temp name: another process's write in flight
        if Digest("sha256", blob.name) not in keep_blobs:
            remove_tree(blob)
            deleted.append(f"sha256:{blob.name}")
    for layer in sorted(store.layers.iterdir()):
        if f"sha256:{layer.name}" not in keep_layers:
            store.discard(layer)  # a layer half removed by an earlier, failed GC is garbage like any other
            deleted.append(f"layer sha256:{layer.name}")
    return deleted
