"""``pull``: resolve -> fetch blobs in parallel, each verified -> unpack layers in order -> record the reference.

The order is what keeps the store consistent: every blob is verified before any layer is unpacked, every layer
is checked against its diff_id before it is renamed into place, and the reference is written last. A failure at
any step (Ctrl-C included) leaves only verified blobs, complete layers, and temp litter that the next run sweeps.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from puller.registry.client import RegistryClient
from shared.digest import Digest
from shared.errors import integrity
from shared.image import INDEX_TYPES, Descriptor, ImageConfig, Index, Manifest, Platform, chain_ids
from shared.layer.unpack import unpack_blob
from shared.reference import Reference
from shared.store import LayerRecord, Store, remove_tree

Report = Callable[[str], None]


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    manifest_digest: Digest
    image_id: Digest
    layers_fetched: int
    layers_unpacked: int
    up_to_date: bool


def _fetch_blob(client: RegistryClient, store: Store, repository: str, desc: Descriptor, what: str) -> None:
    tmp = store.temp_path("blob")
    try:
        client.fetch_blob(repository, desc, tmp, what)
        store.commit_blob(tmp, desc.digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def pull(store: Store, ref: Reference, platform: Platform | None = None, jobs: int = 3,
         report: Report = lambda line: None, client: RegistryClient | None = None) -> PullResult:
    store.ensure()
    store.sweep_tmp()
    client = client or RegistryClient(ref.registry_host)
    wanted = platform or Platform.host()
    repo = ref.path
    name = str(ref)

    top = client.get_manifest(repo, ref.identifier, f"manifest of {name}")
    platform_of_entry: Platform | None = None
    if top.media_type in INDEX_TYPES:
        index = Index.parse(top.raw, top.media_type, f"index of {name}")
        entry = index.select(wanted)
        platform_of_entry = entry.platform
        report(f"{name}: index {top.digest}, using {entry.platform} manifest {entry.digest}")
        store.put_blob(top.raw, top.digest, f"index of {name}")
        fetched = client.get_manifest(repo, str(entry.digest), f"{entry.platform} manifest of {name}")
        if fetched.digest != entry.digest:
            raise integrity(f"{name}: the registry served {fetched.digest} for {entry.digest}")
    else:
        fetched = top
    manifest = Manifest.parse(fetched.raw, fetched.media_type, f"manifest of {name}")

    previous = store.resolve(name)
    if store.has_blob(manifest.config.digest):
        config_raw = store.read_blob(manifest.config.digest, "image config")
    else:
        config_raw = client.get_small_blob(repo, manifest.config, f"config of {name}")
    config = ImageConfig.parse(config_raw, f"config of {name}")
    if len(config.diff_ids) != len(manifest.layers):
        raise integrity(f"{name}: the config lists {len(config.diff_ids)} layers, the manifest "
                        f"{len(manifest.layers)}")
    chains = chain_ids(config.diff_ids)

    # 1. every missing blob, in parallel, each verified as it streams
    missing = [(i, d) for i, d in enumerate(manifest.layers)
               if store.layer(chains[i]) is None and not store.has_blob(d.digest)]
    for i, d in enumerate(manifest.layers):
        if (i, d) not in missing:
            report(f"{d.digest.short}: already exists")
    if missing:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(_fetch_blob, client, store, repo, d, f"layer {i + 1} ({d.digest})"): d
                       for i, d in missing}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    fut.result()
                    report(f"{futures[fut].digest.short}: downloaded {futures[fut].size} bytes, verified")
            except BaseException:
                client.cancel.set()  # downloads still running stop at their next chunk
                raise

    # 2. layers in order (an implicit parent takes its metadata from the layers below), each checked
    unpacked = 0
    for i, (desc, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains, strict=True)):
        if store.layer(chain) is not None:
            continue
        lowers = [store.diff_dir(c) for c in reversed(chains[:i])]
        tmp = store.temp_path("layer")
        tmp.mkdir(mode=0o700)
        try:
            result = unpack_blob(store.blob_path(desc.digest), tmp / "diff", diff_id, lowers,
                                 f"layer {i + 1} ({desc.digest})")
            record = LayerRecord(chain, diff_id, chains[i - 1] if i else None, desc.digest, result.size)
            store.commit_layer(tmp, record)
        finally:
            remove_tree(tmp)
        unpacked += 1
        report(f"{desc.digest.short}: unpacked")

    # 3. the documents, then the reference: only now is the image there
    store.put_blob(config_raw, manifest.config.digest, "image config")
    store.put_blob(fetched.raw, fetched.digest, "manifest")
    plat = platform_of_entry or config.platform
    annotations = {"io.strata.index.digest": str(top.digest)} if top.digest != fetched.digest else {}
    store.set_ref(name, Descriptor(fetched.media_type, fetched.digest, len(fetched.raw), plat, annotations))
    up_to_date = previous is not None and previous.digest == fetched.digest and not missing and not unpacked
    return PullResult(ref, top.digest, manifest.config.digest, len(missing), unpacked, up_to_date)
