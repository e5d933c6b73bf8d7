"""``pull``: registry -> store, a composition of :mod:`shared.transfer`: is the stored image still current? if
not, resolve the reference at the registry (mirrors first), then :func:`shared.transfer.model.copy` into the
store, which unpacks each layer as soon as it and those below it are in while later blobs still download.

Consistency comes from the store sink's order of commits (a blob only verified, a layer only once its diff_id
matched, the reference last) and its rollback of the layers this pull made when anything fails, Ctrl-C included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from puller.progress import Progress, Quiet
from puller.registry.source import Place, RegistrySource, places_for
from puller.warm import current, top_digest
from shared.digest import Digest
from shared.image import Descriptor, Platform
from shared.reference import Reference
from shared.settings import Settings
from shared.store.layout import Store
from shared.store.transfer import StoreSink
from shared.transfer.model import Document, ProgressFn, Resolved, copy, resolve


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    manifest_digest: Digest  # what the reference names: an index or a manifest
    image_id: Digest
    layers_fetched: int
    layers_unpacked: int
    up_to_date: bool


def _progress_fn(progress: Progress, resolved: Resolved) -> ProgressFn:
    """Pull shows layers only (as Docker does): the config is a blob like them, but not one a user waits for.
    A layer is "done" twice, once when its blob is verified and stored, once when it is unpacked: the first is
    shown as "download complete" (Docker's word), so that "done" means the layer is ready; the source's
    "downloaded" just before it says the same and is not shown."""
    layers = {d.digest for image in resolved.images for d in image.manifest.layers}
    downloaded: set[Digest] = set()

    def show(desc: Descriptor, status: str, done: int) -> None:
        if desc.digest not in layers or status == "downloaded":
            return
        if status == "done" and desc.digest not in downloaded:
            downloaded.add(desc.digest)
            status = "download complete"
        elif status == "already exists":
            downloaded.add(desc.digest)
        progress.layer(desc.digest, status, done, desc.size)
    return show


def pull(store: Store, ref: Reference, settings: Settings | None = None, platform: Platform | None = None,
         jobs: int = 3, progress: Progress | None = None, places: Sequence[Place] | None = None) -> PullResult:
    progress = progress or Quiet()
    store.ensure()
    store.sweep_tmp()
    with store.in_use():
        return _pull(store, ref, settings, platform, jobs, progress, places)


def _pull(store: Store, ref: Reference, settings: Settings | None, platform: Platform | None, jobs: int,
          progress: Progress, places: Sequence[Place] | None) -> PullResult:
    source = RegistrySource(ref, places or places_for(ref, settings or Settings(), progress.message))
    wanted = platform or Platform.host()
    name = str(ref)

    image = current(store, name, source.head, ref, wanted, platform is not None)
    if image is not None:
        return PullResult(ref, top_digest(image.entry), image.image_id, 0, 0, True)

    def chosen(top: Document, entry: Descriptor) -> None:
        progress.message(f"{name}: index {top.digest.short}, using the {entry.platform} image")

    resolved = resolve(source, platform, on_index=chosen)
    if not resolved.top.is_index and platform is None:
        _warn_foreign(name, resolved.image.config.platform, progress)
    show = _progress_fn(progress, resolved)
    for desc in resolved.image.manifest.layers:
        show(desc, "waiting", 0)
    sink = StoreSink(store)
    moved = copy(source, sink, resolved, name, jobs, show)
    progress.close()
    fetched = moved - (resolved.image.manifest.config.digest in sink.fetched)
    return PullResult(ref, resolved.digest, resolved.image.image_id, fetched, len(sink.created), False)


def _warn_foreign(name: str, actual: Platform, progress: Progress) -> None:
    """Without ``--platform``, a single-platform image of another platform is pulled, as Docker does (the user
    named this image, there is nothing else to choose), with a word that the host cannot run it natively."""
    host = Platform.host()
    if not host.matches(actual):
        progress.message(f"WARNING: image {name} is {actual}, which does not match the host platform ({host}); "
                         "it will not run here without emulation")
