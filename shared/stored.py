"""Images as the store holds them: a reference -> manifest -> config -> layers on their chain IDs.

Both tools read images through here; the runner never touches the network, only what :func:`load` verifies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared import reference
from shared.digest import Digest
from shared.errors import StrataError, integrity, not_found
from shared.image import Descriptor, ImageConfig, Manifest, chain_ids
from shared.store import LayerRecord, Store


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
