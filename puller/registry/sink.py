"""A registry repository as a sink of images (``push``; the registry as a source is puller/registry/source.py).

For every blob: skipped when the repository has it (HEAD), else mounted from another repository of the same
registry known to hold it (up to three candidates, as Docker tries), else uploaded (puller/registry/upload.py:
streamed from the file, resumed after a cut). Documents last, each only after everything it names is in: for a
whole index the child manifests by digest, then the index under the tag; otherwise the image's manifest under
the tag (or by digest alone when there is no tag). Nothing is visible under the tag before every blob is in.

A registry cannot be rolled back: blobs pushed by a push that then fails stay there, unreferenced, for the
registry's garbage collection, as with Docker (and a retry skips them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from puller.registry.client import RegistryClient
from puller.registry.upload import MAX_MOUNT_TRIES, Session, Uploader
from shared.digest import Digest
from shared.image import Descriptor
from shared.reference import Reference
from shared.transfer.model import Image, ProgressFn, Resolved

# What a sink says of a blob through the copy's progress (then ``copy`` says "done" or "already exists").
PUSHING = "pushing"  # with the bytes the registry has taken so far
MOUNTED = "mounted from "  # + the repository it was mounted from

Candidates = Callable[[Digest], Sequence[str]]  # other repositories of this registry that may hold a blob


def no_candidates(digest: Digest) -> Sequence[str]:
    return ()


class RegistrySink:
    """``docker://HOST/REPO[:TAG]``: one repository of one registry, through ``client``."""

    def __init__(self, ref: Reference, client: RegistryClient, candidates: Candidates = no_candidates,
                 scratch: Callable[[], Path] | None = None) -> None:
        self.ref = ref
        self.client = client
        self.uploader = Uploader(client, ref.path)
        self.candidates = candidates
        self._scratch = scratch
        self._scratch_dir: Path | None = None
        self._lock = threading.Lock()
        self.mounted: dict[Digest, str] = {}  # blob -> the repository it came from
        self.uploaded: set[Digest] = set()

    def describe(self) -> str:
        return str(self.ref)

    def scratch(self) -> Path:
        """Where a source that has no file of its own (a registry, the config read already) writes a blob."""
        if self._scratch is not None:
            return self._scratch()
        with self._lock:
            if self._scratch_dir is None:
                self._scratch_dir = Path(tempfile.mkdtemp(prefix="strata-push-"))
            return self._scratch_dir / f"{os.urandom(8).hex()}.blob"

    def has_blob(self, desc: Descriptor) -> bool:
        return self.uploader.has_blob(desc.digest)

    def put_blob(self, desc: Descriptor, path: Path, progress: ProgressFn) -> None:
        what = f"blob {desc.digest}"
        session: Session | None = None
        tried = [r for r in dict.fromkeys(self.candidates(desc.digest)) if r != self.ref.path][:MAX_MOUNT_TRIES]
        for source in tried:
            if session is not None:
                self.uploader.cancel(session)  # a mount that did not happen opened one; the next try opens another
            session = self.uploader.mount(desc, source, what)
            if session is None:
                with self._lock:
                    self.mounted[desc.digest] = source
                progress(desc, MOUNTED + source, desc.size)
                return
        progress(desc, PUSHING, 0)
        self.uploader.upload(desc, path, what, lambda n: progress(desc, PUSHING, n), session)
        with self._lock:
            self.uploaded.add(desc.digest)

    def put_layer(self, image: Image, i: int, progress: ProgressFn) -> None:
        """A registry keeps blobs, not unpacked layers: nothing to do."""

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        """NAME: the tag to point at the image; None pushes it by digest only."""
        where = self.describe()
        if resolved.whole_index:
            for image in resolved.images:
                self.uploader.put_manifest(str(image.digest), image.manifest_doc,
                                           f"manifest {image.digest} of {where}")
            top = resolved.top
        else:
            top = resolved.image.manifest_doc
        self.uploader.put_manifest(name or str(top.digest), top, f"manifest of {where}")

    def abort(self) -> None:
        """Stop the uploads in flight (their sessions are deleted); what was pushed stays (see the module doc)."""
        self.client.abort()

    def close(self) -> None:
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None
