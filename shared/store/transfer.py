"""The store as a source and a sink of images (an OCI layout that also unpacks every layer it takes).

As a sink it keeps the store's discipline: a blob is renamed into ``blobs/`` only verified; a layer is unpacked
into ``tmp/`` and renamed under its chain ID only once its diff_id matched; the reference is written last, so a
crash at any point leaves what was there plus verified blobs and layers, and litter ``sweep_tmp`` removes. Layer
dirs are shared by chain ID, blobs are per digest: the same tar in another compression is another blob, kept too
(peers reading the layout need every blob its manifests name), and checked to hold the diff_id's tar.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from shared.digest import Digest
from shared.errors import Cancelled, Kind, StrataError, integrity, warn
from shared.image import Descriptor
from shared.layer import compress
from shared.layer.unpack import unpack_blob
from shared.store.files import remove_tree
from shared.store.images import StoredImage, all_images
from shared.store.layout import INDEX_DIGEST_ANNOTATION, LayerRecord, Store
from shared.transfer.model import Document, Image, ProgressFn, Resolved, copy_file
from shared.userns import entered


class StoreSource:
    """A stored image, read back: its files were verified when they were stored (``fsck`` re-checks them)."""

    def __init__(self, store: Store, image: StoredImage) -> None:
        self.store = store
        self.stored = image

    def describe(self) -> str:
        return self.stored.name

    def top(self) -> Document:
        desc = self.stored.entry
        return Document(self.store.read_blob(desc.digest, "manifest"), desc.media_type, desc.digest)

    def manifest(self, desc: Descriptor) -> Document:
        return Document(self.store.read_blob(desc.digest, "manifest"), desc.media_type, desc.digest)

    def config(self, desc: Descriptor) -> bytes:
        return self.store.read_blob(desc.digest, "image config")

    def blob(self, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
        path = self.store.blob_path(desc.digest)
        if not path.is_file():
            raise integrity(f"blob {desc.digest} of {self.stored.name} is missing from the store; run "
                            "`puller fsck --repair`, then pull it again")
        return path


class StoreSink:
    """Blobs into ``blobs/``, layers unpacked on their parents, the reference last."""

    one_image_per_name = True  # a reference names one runnable image (copy refuses a whole index before moving)

    def __init__(self, store: Store) -> None:
        self.store = store
        self.created: list[Digest] = []  # layer dirs this sink made (rolled back by abort)
        self.fetched: set[Digest] = set()  # blobs this sink took (a layer present already must match them)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"the store at {self.store.root}"

    def scratch(self) -> Path:
        return self.store.temp_path("blob")

    def has_blob(self, desc: Descriptor) -> bool:
        return self.store.has_blob(desc.digest)

    @contextlib.contextmanager
    def partial(self, desc: Descriptor, on_wait: Callable[[], None] = lambda: None) -> Iterator[Path]:
        """Where a resumable source downloads DESC: kept when the download is interrupted (Ctrl-C, a kill, the
        registry gone) for the next pull to resume; removed on any other failure (a digest mismatch, a full disk:
        nothing partial is kept that could not help)."""
        with self.store.partial(desc.digest, on_wait) as path:
            try:
                yield path
            except (StrataError, OSError) as e:
                if not isinstance(e, Cancelled) and not (isinstance(e, StrataError) and e.kind is Kind.REGISTRY):
                    path.unlink(missing_ok=True)
                raise

    def put_blob(self, desc: Descriptor, path: Path, progress: ProgressFn) -> None:
        if path.parent == self.store.tmp or path == self.store.partial_path(desc.digest):
            self.store.commit_blob(path, desc.digest)  # our own scratch file: one rename
        else:
            tmp = self.scratch()
            try:
                copy_file(path, tmp)
                self.store.commit_blob(tmp, desc.digest)
            finally:
                tmp.unlink(missing_ok=True)
        with self._lock:
            self.fetched.add(desc.digest)

    def put_layer(self, image: Image, i: int, progress: ProgressFn) -> None:
        desc = image.manifest.layers[i]
        chains = image.chain_ids
        diff_id = image.config.diff_ids[i]
        if self.store.layer(chains[i]) is not None:
            if desc.digest in self.fetched:  # not unpacked from it: prove it holds that tar before keeping it
                held = compress.tar_digest(self.store.blob_path(desc.digest))
                if held != diff_id:
                    self.store.discard(self.store.blob_path(desc.digest))  # a verified blob, but not this image's
                    raise integrity(f"layer {i + 1} ({desc.digest}) holds the tar {held}, the config says "
                                    f"diff_id {diff_id}")
            progress(desc, "already exists", desc.size)
            return
        progress(desc, "unpacking", 0)
        lowers = [self.store.diff_dir(c) for c in reversed(chains[:i])]
        tmp = self.store.temp_path("layer")
        tmp.mkdir(mode=0o700)
        try:
            what = f"layer {i + 1} ({desc.digest})"
            mapping = entered()
            result = unpack_blob(self.store.blob_path(desc.digest), tmp / "diff", diff_id, lowers, what,
                                 self.store.overlay, mapping.size if mapping is not None else None)
            if result.left_out:  # one line a layer, as podman says what a rootless unpack could not make
                warn(f"{what}: left out {' and '.join(result.left_out)}: a user namespace cannot make them")
            record = LayerRecord(chains[i], diff_id, chains[i - 1] if i else None, desc.digest, result.size)
            if self.store.commit_layer(tmp, record):
                self.created.append(chains[i])
        finally:
            remove_tree(tmp)
        progress(desc, "done", desc.size)

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        image = resolved.image
        self.store.put_blob(image.config_raw, image.image_id, "image config")
        annotations: dict[str, str] = {}
        if resolved.top.is_index:
            self.store.put_blob(resolved.top.raw, resolved.top.digest, "index")
            annotations[INDEX_DIGEST_ANNOTATION] = str(resolved.top.digest)
        self.store.put_blob(image.manifest_doc.raw, image.digest, "manifest")
        if name is not None:
            doc = image.manifest_doc
            self.store.set_ref(name, Descriptor(doc.media_type, doc.digest, len(doc.raw),
                                                image.platform or image.config.platform, annotations))

    def abort(self) -> None:
        """Remove the layers this sink created: nothing references them yet, unless a concurrent pull of another
        image sharing them finished in between, which the check below sees."""
        if not self.created:
            return
        with self.store.lock():
            needed = {c for img in all_images(self.store) for c in img.chain_ids}
            for chain in self.created:
                if chain not in needed:
                    self.store.discard(self.store.layer_dir(chain))
        self.created.clear()
