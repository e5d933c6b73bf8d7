"""Images as the store holds them: a reference -> manifest -> config -> layers on their chain IDs.

Both tools read images through here; the runner never touches the network, only what :func:`load` verifies. A
stored image is a :class:`shared.transfer.model.Image` (one definition of the image ID and of the check that the
config lists one diff_id per layer) that also knows the reference it is stored under.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared import reference
from shared.digest import Digest
from shared.errors import StrataError, not_found
from shared.image import Descriptor, Manifest
from shared.store.layout import INDEX_DIGEST_ANNOTATION, LayerRecord, Store
from shared.transfer.model import Document, Image


@dataclass(frozen=True)
class StoredImage(Image):
    """An image in the store: its manifest and config, with the name and index.json entry it is stored under."""

    name: str = field(kw_only=True)  # the full normalized reference it is stored under
    entry: Descriptor = field(kw_only=True)  # the manifest's, as index.json lists it (with its annotations)

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


def stored_image(name: str, descriptor: Descriptor, manifest_raw: bytes, config_raw: bytes) -> StoredImage:
    """The image ``name`` names, from its manifest's and config's bytes (``manifest_raw`` is the one
    ``descriptor`` names: the caller verified it), cross-checked as every image is (:meth:`Image.build`)."""
    image = Image.build(Document(manifest_raw, descriptor.media_type, descriptor.digest), config_raw, name,
                        descriptor.platform)
    return StoredImage(image.manifest_doc, image.manifest, image.config_raw, image.config, image.platform,
                       name=name, entry=descriptor)


def load(store: Store, name: str, descriptor: Descriptor) -> StoredImage:
    manifest_raw = store.read_blob(descriptor.digest, "manifest")
    config = Manifest.parse(manifest_raw, descriptor.media_type).config
    return stored_image(name, descriptor, manifest_raw, store.read_blob(config.digest, "image config"))


def all_images(store: Store) -> list[StoredImage]:
    return [load(store, name, desc) for name, desc in store.refs()] if store.exists() else []


def no_such_image(text: str) -> StrataError:
    """Docker's words for an image the store does not hold (``Error: No such image: X``): scripts match them."""
    return not_found(f"No such image: {text}")


def find(store: Store, text: str) -> StoredImage:
    """An image by reference (normalized as Docker does) or by image ID (config digest or a prefix of it)."""
    return lookup(store, text)[0]


def lookup(store: Store, text: str) -> tuple[StoredImage, bool]:
    """:func:`find`, and whether ``text`` named the image by ID (``rmi`` then means every reference to it)."""
    if not store.exists():
        raise no_such_image(text)
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
    raise no_such_image(text)


def index_digest(desc: Descriptor) -> Digest | None:
    """The index a reference was resolved from (what pull printed as the image's digest), if it was."""
    text = desc.annotations.get(INDEX_DIGEST_ANNOTATION)
    return Digest.parse(text) if text else None


def repository(name: str) -> str:
    """The repository of a normalized reference (``host[:port]/path`` without ``:tag`` or ``@digest``)."""
    if "@" in name:
        return name.split("@", 1)[0]
    repo, _, tag = name.rpartition(":")
    return name if not repo or "/" in tag else repo


def _by_digest(store: Store, repo: str, digest: Digest) -> StoredImage | None:
    """``NAME@sha256:...``: the image stored under any reference of NAME's repository whose manifest, or the index
    it was pulled from, has that digest (what ``pull`` printed as the image's digest), as Docker resolves it."""
    for name, desc in store.refs():
        if repository(name) != repo:
            continue
        if digest in (desc.digest, index_digest(desc)):
            return load(store, name, desc)
    return None
