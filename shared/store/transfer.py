"""The store as a source and a sink of images (an OCI layout that also unpacks every layer it takes).

As a sink it keeps the store's discipline: a blob is renamed into ``blobs/`` only verified; a layer is unpacked
into ``tmp/`` and renamed under its chain ID only once its diff_id matched; the reference is written last, so a
crash at any point leaves what was there plus verified blobs and layers, and litter ``sweep_tmp`` removes. Layer
dirs are shared by chain ID, blobs are per digest: the same tar in another compression is another blob, kept too
(peers reading the layout need every blob its manifests name), and checked to hold the diff_id's tar.

From a registry, every layer is unpacked as its bytes arrive, side by side with the others
(:mod:`shared.layer.parallel`: a process per layer, fed by the thread that downloads its blob), into ``tmp/``
without its lowers; what needs them (:mod:`shared.layer.deferred`) is done in :meth:`StoreSink.put_layer`, in
order, once the layers below are committed, and the layer committed only then: its blob verified, its diff_id
matched. A layer that cannot be unpacked that way (a hard link into a lower, a download that resumed with a
gap) is unpacked again from its blob the ordinary way.
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
from shared.layer.deferred import apply_lowers, pending_from_json
from shared.layer.parallel import Job, Unpackers, failure
from shared.layer.unpack import UnpackResult, check_diff_id, unpack_blob, unpacking
from shared.layer.whiteout import OverlayFormat
from shared.store.files import remove_tree
from shared.store.images import StoredImage, all_images
from shared.store.layout import INDEX_DIGEST_ANNOTATION, LayerRecord, Store
from shared.transfer.model import Document, Feed, Image, ProgressFn, Resolved, copy_file
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
        self._unpackers: Unpackers | None = None
        self._layers: dict[Digest, int] = {}  # blob -> the layer it is unpacked as, as it arrives
        self._jobs: dict[Digest, tuple[Path, Job]] = {}  # blob -> (its temp layer dir, the worker unpacking it)

    def begin(self, resolved: Resolved) -> None:
        """Before any download: fork the unpackers (:mod:`shared.layer.parallel`) if a layer is to be unpacked."""
        image = resolved.image
        for i, desc in enumerate(image.manifest.layers):
            if desc.digest not in self._layers and self.store.layer(image.chain_ids[i]) is None:
                self._layers[desc.digest] = i
        if self._layers:
            try:
                self._unpackers = Unpackers()
            except OSError:  # (no process to spare: every layer is unpacked here, in order)
                self._layers.clear()

    def feed_for(self, desc: Descriptor) -> Feed | None:
        """As blob DESC starts to download: a worker to unpack it from the bytes as they arrive, or None."""
        with self._lock:
            if self._unpackers is None or desc.digest not in self._layers:
                return None
            i = self._layers.pop(desc.digest)
            tmp = self.store.temp_path("layer")
            tmp.mkdir(mode=0o700)
            mapping = entered()
            try:
                job = self._unpackers.start(tmp / "diff", f"layer {i + 1} ({desc.digest})", self.store.overlay,
                                            mapping.size if mapping is not None else None)
            except OSError:
                tmp.rmdir()
                return None
            self._jobs[desc.digest] = (tmp, job)
            return job

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
        with self._lock:
            streamed = self._jobs.pop(desc.digest, None)
        if self.store.layer(chains[i]) is not None:
            if streamed is not None:  # committed meanwhile by another pull: ours is not needed
                self._discard(*streamed)
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
        what = f"layer {i + 1} ({desc.digest})"
        done = None
        if streamed is not None:
            done = self._finished(streamed, diff_id, lowers, what, self.store.overlay,
                                  lambda n: progress(desc, "unpacking", n))
        tmp, result = done or self._unpacked(desc, diff_id, lowers, what, lambda n: progress(desc, "unpacking", n))
        try:
            if result.left_out:  # one line a layer, as podman says what a rootless unpack could not make
                warn(f"{what}: left out {' and '.join(result.left_out)}: a user namespace cannot make them")
            record = LayerRecord(chains[i], diff_id, chains[i - 1] if i else None, desc.digest, result.size)
            if self.store.commit_layer(tmp, record):
                self.created.append(chains[i])
        finally:
            remove_tree(tmp)
        progress(desc, "done", desc.size)

    def _unpacked(self, desc: Descriptor, diff_id: Digest, lowers: list[Path], what: str,
                  on_progress: Callable[[int], None]) -> tuple[Path, UnpackResult]:
        """The layer unpacked here from its stored blob, on its lowers: a temp dir holding diff/, and the result
        (ON_PROGRESS hears how far it got)."""
        tmp = self.store.temp_path("layer")
        tmp.mkdir(mode=0o700)
        try:
            mapping = entered()
            return tmp, unpack_blob(self.store.blob_path(desc.digest), tmp / "diff", diff_id, lowers, what,
                                    self.store.overlay, mapping.size if mapping is not None else None, on_progress)
        except BaseException:
            remove_tree(tmp)
            raise

    @staticmethod
    def _finished(streamed: tuple[Path, Job], diff_id: Digest, lowers: list[Path], what: str,
                  overlay: OverlayFormat, on_progress: Callable[[int], None]) -> tuple[Path, UnpackResult] | None:
        """A layer its worker unpacked as it arrived, finished on its lowers (``overlay`` is the store's): its temp
        dir holding diff/, and the result; None, its temp dir gone, when it is to be unpacked again here.
        ON_PROGRESS hears how far the worker got while it is waited for."""
        tmp, job = streamed
        try:
            doc = job.result(on_progress)
            error = failure(doc) if doc is not None else None
            if error is not None:
                raise error
            if doc is None or not doc.get("ok"):
                remove_tree(tmp)
                return None
            check_diff_id(Digest.parse(str(doc["diff_id"])), diff_id, what)
            with unpacking(what):
                apply_lowers(tmp / "diff", pending_from_json(doc["pending"]), lowers, overlay)
        except BaseException:
            remove_tree(tmp)
            raise
        return tmp, UnpackResult(diff_id, int(doc["size"]), tuple(str(x) for x in doc["left_out"]))

    def _discard(self, tmp: Path, job: Job) -> None:
        """A worker's layer not to be used: its input ended, its end waited for, its temp dir removed."""
        job.abandon()
        job.result()
        remove_tree(tmp)

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        self._stop()
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

    def _stop(self) -> None:
        """End every worker still at work (abandoned) and the zygote; no worker is started after this."""
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            unpackers, self._unpackers = self._unpackers, None
        for tmp, job in jobs:
            self._discard(tmp, job)
        if unpackers is not None:
            unpackers.close()

    def abort(self) -> None:
        """Remove the layers this sink created: nothing references them yet, unless a concurrent pull of another
        image sharing them finished in between, which the check below sees."""
        self._stop()
        if not self.created:
            return
        with self.store.lock():
            needed = {c for img in all_images(self.store) for c in img.chain_ids}
            for chain in self.created:
                if chain not in needed:
                    self.store.discard(self.store.layer_dir(chain))
        self.created.clear()
