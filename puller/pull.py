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
from shared.digest import Digest
from shared.errors import StrataError
from shared.image import Descriptor, Platform
from shared.reference import Reference
from shared.settings import Settings
from shared.store.images import StoredImage, load
from shared.store.layout import INDEX_DIGEST_ANNOTATION, Store
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


def _top_digest(desc: Descriptor) -> Digest:
    """What the reference itself names: the index it was resolved from, else the manifest."""
    return Digest.parse(desc.annotations.get(INDEX_DIGEST_ANNOTATION, str(desc.digest)))


def _current(store: Store, name: str, source: RegistrySource, ref: Reference, wanted: Platform,
             explicit: bool) -> StoredImage | None:
    """The stored image if it is complete and still what the reference names, else None. For a tag, HEAD says
    whether it still names the same thing (HEAD is free on Docker Hub). An image resolved from an index is
    current only for the platform it was resolved for; a single-platform image, when ``--platform`` was given,
    only if it is of that platform (else the pull goes on to the registry, which refuses it with the reason)."""
    desc = store.resolve(name)
    if desc is None:
        return None
    from_index = INDEX_DIGEST_ANNOTATION in desc.annotations
    if from_index and (desc.platform is None or not wanted.matches(desc.platform)):
        return None
    try:
        image = load(store, name, desc)
        image.layer_records(store)
    except StrataError:
        return None
    if explicit and not from_index and not wanted.matches(image.config.platform):
        return None
    if ref.digest is not None:
        return image
    return image if source.head() == _top_digest(desc) else None


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

    image = _current(store, name, source, ref, wanted, platform is not None)
    if image is not None:
        return PullResult(ref, _top_digest(image.entry), image.image_id, 0, 0, True)

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
