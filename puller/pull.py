"""``pull``: resolve -> fetch blobs in parallel, each verified -> unpack layers in order -> record the reference.

Downloads run in a thread pool while the main thread unpacks each layer as soon as its blob and the layers below
it are in, so fetching, decompressing and unpacking overlap. Consistency comes from the order of commits: a
blob is renamed into the store only once verified, a layer only once its diff_id matches, the reference last;
if anything fails (Ctrl-C included), the layers this pull created are removed again, so the store holds what it
held before plus verified blobs, and temp litter the next run sweeps.

Sources are tried in order, mirrors first (Docker's semantics): the first that serves the manifest serves the
blobs, and a blob a mirror fails to serve is fetched from the next source. Digests are checked the same way
whichever host answered.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from puller.progress import Progress, Quiet
from puller.registry.client import Endpoint, FetchedManifest, RegistryClient, RetryPolicy
from puller.settings import Settings
from shared import stored
from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity
from shared.image import INDEX_TYPES, Descriptor, ImageConfig, Index, Manifest, Platform, chain_ids
from shared.layer import compress
from shared.layer.unpack import unpack_blob
from shared.reference import Reference
from shared.store import LayerRecord, Store, remove_tree

INDEX_DIGEST_ANNOTATION = "io.strata.index.digest"
# A mirror is a shortcut: one quick retry, then on to the next source (Docker falls back at once).
MIRROR_RETRY = RetryPolicy(attempts=2, base_delay=0.2)


@dataclass(frozen=True)
class Source:
    client: RegistryClient
    repository: str

    @property
    def name(self) -> str:
        return self.client.host


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    manifest_digest: Digest  # what the reference names: an index or a manifest
    image_id: Digest
    layers_fetched: int
    layers_unpacked: int
    up_to_date: bool


def sources_for(ref: Reference, settings: Settings, progress: Progress | None = None) -> list[Source]:
    """Mirrors of the reference's registry first, then the registry itself."""
    from puller.registry import credentials

    notice = progress.message if progress else (lambda m: None)
    out = [Source(RegistryClient(Endpoint.from_url(m.url, settings.insecure), None, MIRROR_RETRY, notice),
                  ref.path) for m in settings.mirrors_for(ref.domain)]
    origin = Endpoint.for_registry(ref.registry_host, settings.insecure)
    out.append(Source(RegistryClient(origin, credentials.lookup(ref.domain), notice=notice), ref.path))
    return out


def _first(sources: Sequence[Source], what: str,
           fetch: Callable[[Source], FetchedManifest]) -> tuple[Source, FetchedManifest]:
    errors: list[str] = []
    for source in sources:
        try:
            return source, fetch(source)
        except StrataError as e:
            if e.kind is Kind.INTEGRITY or source is sources[-1]:
                raise StrataError(f"{e}" + (f" (mirrors: {'; '.join(errors)})" if errors else ""), e.kind) from None
            errors.append(f"{source.name}: {e}")
    raise StrataError(f"no source for {what}", Kind.REGISTRY)


def _top_digest(desc: Descriptor) -> Digest:
    """What the reference itself names: the index it was resolved from, else the manifest."""
    return Digest.parse(desc.annotations.get(INDEX_DIGEST_ANNOTATION, str(desc.digest)))


def _current(store: Store, name: str, sources: Sequence[Source], ref: Reference, wanted: Platform,
             explicit: bool) -> stored.StoredImage | None:
    """The stored image if it is complete and still what the reference names, else None. For a tag, HEAD says
    whether it still names the same thing (HEAD is free on Docker Hub). An image resolved from an index is
    current only for the platform it was resolved for; a single-platform image, when ``--platform`` was given,
    only if it is of that platform (else the pull goes on to the registry, which refuses it with the reason)."""
    desc = store.resolve(name)
    if desc is None:
        return None
    if INDEX_DIGEST_ANNOTATION in desc.annotations and (desc.platform is None or not wanted.matches(desc.platform)):
        return None
    try:
        image = stored.load(store, name, desc)
        image.layer_records(store)
    except StrataError:
        return None
    if explicit and INDEX_DIGEST_ANNOTATION not in desc.annotations and not wanted.matches(image.config.platform):
        return None
    if ref.digest is not None:
        return image
    for source in sources:
        try:
            head = source.client.head_manifest(source.repository, ref.identifier, f"manifest of {name}")
        except StrataError:
            continue
        return image if head == _top_digest(desc) else None
    return None


def _fetch_blob(source: Source, store: Store, desc: Descriptor, what: str, progress: Progress) -> None:
    tmp = store.temp_path("blob")
    try:
        progress.layer(desc.digest, "downloading", 0, desc.size)
        source.client.fetch_blob(source.repository, desc, tmp, what,
                                 lambda n: progress.layer(desc.digest, "downloading", n, desc.size))
        store.commit_blob(tmp, desc.digest)
        progress.layer(desc.digest, "downloaded")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fetch_from_any(sources: Sequence[Source], store: Store, desc: Descriptor, what: str,
                    progress: Progress) -> None:
    for source in sources:
        try:
            _fetch_blob(source, store, desc, what, progress)
            return
        except StrataError as e:
            if e.kind is Kind.INTEGRITY or source is sources[-1]:
                raise


def pull(store: Store, ref: Reference, settings: Settings | None = None, platform: Platform | None = None,
         jobs: int = 3, progress: Progress | None = None, sources: Sequence[Source] | None = None) -> PullResult:
    progress = progress or Quiet()
    store.ensure()
    store.sweep_tmp()
    with store.in_use():
        return _pull(store, ref, settings, platform, jobs, progress, sources)


def _pull(store: Store, ref: Reference, settings: Settings | None, platform: Platform | None, jobs: int,
          progress: Progress, sources: Sequence[Source] | None) -> PullResult:
    sources = list(sources or sources_for(ref, settings or Settings(), progress=progress))
    wanted = platform or Platform.host()
    name = str(ref)

    image = _current(store, name, sources, ref, wanted, platform is not None)
    if image is not None:
        return PullResult(ref, _top_digest(image.descriptor), image.image_id, 0, 0, True)

    source, top = _first(sources, name, lambda s: s.client.get_manifest(s.repository, ref.identifier,
                                                                         f"manifest of {name}"))
    sources = sources[sources.index(source):]  # blobs from the source that served the manifest, then the next
    platform_of_entry: Platform | None = None
    if top.media_type in INDEX_TYPES:
        index = Index.parse(top.raw, top.media_type, f"index of {name}")
        entry = index.select(wanted)
        platform_of_entry = entry.platform
        progress.message(f"{name}: index {top.digest.short}, using the {entry.platform} image")
        fetched = source.client.get_manifest(source.repository, str(entry.digest),
                                             f"{entry.platform} manifest of {name}")
        if fetched.digest != entry.digest:
            raise integrity(f"{name}: the registry served {fetched.digest} for {entry.digest}")
    else:
        fetched = top
    manifest = Manifest.parse(fetched.raw, fetched.media_type, f"manifest of {name}")

    if store.has_blob(manifest.config.digest):
        config_raw = store.read_blob(manifest.config.digest, "image config")
    else:
        config_raw = source.client.get_small_blob(source.repository, manifest.config, f"config of {name}")
    config = ImageConfig.parse(config_raw, f"config of {name}")
    if len(config.diff_ids) != len(manifest.layers):
        raise integrity(f"{name}: the config lists {len(config.diff_ids)} layers, the manifest "
                        f"{len(manifest.layers)}")
    if platform_of_entry is None:
        _check_single_platform(name, config.platform, platform, progress)
    chains = chain_ids(config.diff_ids)

    created: list[Digest] = []
    fetched_count = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures: dict[int, concurrent.futures.Future[None]] = {}
        for i, desc in enumerate(manifest.layers):
            # The store keeps every blob of every manifest it lists (an OCI layout peers can read), also when the
            # layer is unpacked already from another blob of the same tar (another compression)
            if store.has_blob(desc.digest):
                progress.layer(desc.digest, "already exists" if store.layer(chains[i]) is not None else "downloaded")
            else:
                progress.layer(desc.digest, "waiting")
                futures[i] = pool.submit(_fetch_from_any, sources, store, desc, f"layer {i + 1} ({desc.digest})",
                                         progress)
        fetched_count = len(futures)
        try:
            for i, (desc, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains, strict=True)):
                if i in futures:
                    futures[i].result()
                if store.layer(chain) is not None:
                    if i in futures:  # not unpacked from it, so prove it holds that tar before keeping it
                        _check_diff_id(store, desc, diff_id, i)
                        progress.layer(desc.digest, "already exists")
                    continue
                progress.layer(desc.digest, "unpacking")
                if _unpack(store, desc, diff_id, chains[: i + 1], i):
                    created.append(chain)
                progress.layer(desc.digest, "done")
        except BaseException:
            for source_ in sources:
                source_.client.abort()  # running downloads stop now, and clean up after themselves
            _roll_back(store, created)
            raise

    store.put_blob(config_raw, manifest.config.digest, "image config")
    if top.digest != fetched.digest:
        store.put_blob(top.raw, top.digest, f"index of {name}")
    store.put_blob(fetched.raw, fetched.digest, "manifest")
    annotations = {INDEX_DIGEST_ANNOTATION: str(top.digest)} if top.digest != fetched.digest else {}
    store.set_ref(name, Descriptor(fetched.media_type, fetched.digest, len(fetched.raw),
                                   platform_of_entry or config.platform, annotations))
    progress.close()
    return PullResult(ref, top.digest, manifest.config.digest, fetched_count, len(created), False)


def _check_diff_id(store: Store, desc: Descriptor, diff_id: Digest, i: int) -> None:
    held = compress.tar_digest(store.blob_path(desc.digest))
    if held != diff_id:
        store.discard(store.blob_path(desc.digest))  # a verified blob, but not of this image
        raise integrity(f"layer {i + 1} ({desc.digest}) holds the tar {held}, the config says diff_id {diff_id}")


def _check_single_platform(name: str, actual: Platform, asked: Platform | None, progress: Progress) -> None:
    """A plain manifest offers one platform, its config's. Asked for another with ``--platform``, refuse (as
    Docker's containerd image store does, in its words) before anything is stored: it is not what the user
    asked for, and we cannot fetch what was. Without ``--platform``, pull it, as Docker does (the user named
    this image, there is nothing else to choose), but say that the host cannot run it natively."""
    if asked is not None:
        if not asked.matches(actual):
            raise StrataError(f"image with reference {name} was found but does not match the specified platform: "
                              f"wanted {asked}, actual: {actual} (a single-platform image: no index to choose "
                              f"from)", Kind.NOT_FOUND)
        return
    host = Platform.host()
    if not host.matches(actual):
        progress.message(f"WARNING: image {name} is {actual}, which does not match the host platform ({host}); "
                         "it will not run here without emulation")


def _unpack(store: Store, desc: Descriptor, diff_id: Digest, chain: list[Digest], i: int) -> bool:
    lowers = [store.diff_dir(c) for c in reversed(chain[:-1])]
    tmp = store.temp_path("layer")
    tmp.mkdir(mode=0o700)
    try:
        result = unpack_blob(store.blob_path(desc.digest), tmp / "diff", diff_id, lowers,
                             f"layer {i + 1} ({desc.digest})")
        record = LayerRecord(chain[-1], diff_id, chain[-2] if i else None, desc.digest, result.size)
        return store.commit_layer(tmp, record)
    finally:
        remove_tree(tmp)


def _roll_back(store: Store, created: list[Digest]) -> None:
    """Remove the layers this pull created: nothing references them yet, unless a concurrent pull of another
    image sharing them finished in between, which the check below sees."""
    if not created:
        return
    with store.lock():
        needed = {c for img in stored.all_images(store) for c in img.chain_ids}
        for chain in created:
            if chain not in needed:
                store.discard(store.layer_dir(chain))

