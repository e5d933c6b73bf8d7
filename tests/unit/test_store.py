"""The store's pure logic (shared/store/): the stored image is a transfer Image (one image ID, one layer-count
check), layer records and holds, references in index.json, GC's reachability and ``rmi``, fsck's checks and its
repair plan. Every store here is a directory under tmp_path built with the store's own API and tiny
uncompressed layers: no root, no registry, no tool."""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.digest import Digest
from shared.errors import Kind, StrataError
from shared.image import OCI_CONFIG, OCI_MANIFEST, Descriptor, Platform, chain_ids
from shared.store import fsck, gc
from shared.store.files import atomic_write, pid_alive, read_json, remove_tree, write_json
from shared.store.images import all_images, find, index_digest, load, lookup, repository, stored_image
from shared.store.layout import INDEX_DIGEST_ANNOTATION, Hold, Holds, LayerRecord, Store
from shared.transfer.model import Document, Image

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
GONE_PID = 4194305  # over Linux's highest pid_max (2**22): never a process


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def documents(layers: list[bytes], diff_ids: list[Digest] | None = None) -> tuple[bytes, bytes]:
    """(manifest, config) bytes for uncompressed LAYERS; DIFF_IDS overrides what the config lists."""
    ids = diff_ids if diff_ids is not None else [Digest.of_bytes(t) for t in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [str(d) for d in ids]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": str(Digest.of_bytes(config)), "size": len(config)},
        "layers": [{"mediaType": LAYER_TAR, "digest": str(Digest.of_bytes(t)), "size": len(t)} for t in layers],
    }).encode()
    return manifest, config


@dataclass
class Built:
    name: str
    manifest: Digest
    config: Digest
    blobs: list[Digest]
    chains: list[Digest]


def put_image(store: Store, name: str, layers: list[bytes], index: bytes | None = None) -> Built:
    """Store an image as a pull does: blobs, each layer 'unpacked' (an empty diff/ and its layer.json), then the
    reference last; INDEX: the index it was resolved from."""
    manifest, config = documents(layers)
    blobs = [Digest.of_bytes(t) for t in layers]
    for tar, blob in zip(layers, blobs, strict=True):
        store.put_blob(tar, blob, "layer")
    diff_ids = list(blobs)  # uncompressed: the blob is the tar
    chains = chain_ids(diff_ids)
    for i, chain in enumerate(chains):
        if store.layer(chain) is None:
            tmp = store.temp_path("layer")
            (tmp / "diff").mkdir(parents=True)
            store.commit_layer(tmp, LayerRecord(chain, diff_ids[i], chains[i - 1] if i else None, blobs[i],
                                                len(layers[i])))
    store.put_blob(config, Digest.of_bytes(config), "config")
    store.put_blob(manifest, Digest.of_bytes(manifest), "manifest")
    annotations = {}
    if index is not None:
        store.put_blob(index, Digest.of_bytes(index), "index")
        annotations[INDEX_DIGEST_ANNOTATION] = str(Digest.of_bytes(index))
    store.set_ref(name, Descriptor(OCI_MANIFEST, Digest.of_bytes(manifest), len(manifest), None, annotations))
    return Built(name, Digest.of_bytes(manifest), Digest.of_bytes(config), blobs, chains)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "root").ensure()


BASE = tar_of({"etc/os-release": b"ID=test\n"})
APP = tar_of({"app/run": b"#!/bin/sh\n"})
OTHER = tar_of({"other": b"x"})

# -- the stored image is an Image ---------------------------------------------------------------------------------


def entry_for(manifest: bytes, platform: Platform | None = None) -> Descriptor:
    return Descriptor(OCI_MANIFEST, Digest.of_bytes(manifest), len(manifest), platform)


def test_stored_image_is_a_transfer_image_with_its_reference() -> None:
    manifest, config = documents([BASE, APP])
    image = stored_image("docker.io/library/x:1", entry_for(manifest), manifest, config)
    assert isinstance(image, Image)
    assert image.name == "docker.io/library/x:1"
    assert image.entry.digest == Digest.of_bytes(manifest)
    assert image.image_id == Digest.of_bytes(config)  # Docker's image ID: the config's digest
    assert image.digest == Digest.of_bytes(manifest)


def test_chain_ids_are_the_image_specs() -> None:
    manifest, config = documents([BASE, APP])
    image = stored_image("x", entry_for(manifest), manifest, config)
    base, app = Digest.of_bytes(BASE), Digest.of_bytes(APP)
    assert image.chain_ids[0] == base
    assert image.chain_ids == tuple(chain_ids([base, app]))
    assert [layer.diff_id for layer in image.layers] == [base, app]


def test_a_config_listing_other_than_one_diff_id_per_layer_is_refused() -> None:
    manifest, config = documents([BASE, APP], diff_ids=[Digest.of_bytes(BASE)])
    with pytest.raises(StrataError) as e:
        stored_image("docker.io/library/x:1", entry_for(manifest), manifest, config)
    assert e.value.kind is Kind.INTEGRITY
    assert str(e.value) == "docker.io/library/x:1: the config lists 1 layers, the manifest 2"


def test_the_layer_count_check_is_the_one_every_image_gets() -> None:
    manifest, config = documents([BASE], diff_ids=[])
    with pytest.raises(StrataError, match="the config lists 0 layers, the manifest 1"):
        Image.build(Document.of(manifest, OCI_MANIFEST), config, "an image")


def test_a_config_that_is_not_the_manifests_is_refused() -> None:
    manifest, _ = documents([BASE])
    _, other_config = documents([APP])
    with pytest.raises(StrataError) as e:
        stored_image("x", entry_for(manifest), manifest, other_config)
    assert e.value.kind is Kind.INTEGRITY


def test_the_platform_is_the_index_entrys_else_the_configs() -> None:
    manifest, config = documents([BASE])
    arm = Platform("linux", "arm64", "v8")
    assert stored_image("x", entry_for(manifest, arm), manifest, config).platform == arm
    assert stored_image("x", entry_for(manifest), manifest, config).platform == Platform("linux", "amd64")


# -- records --------------------------------------------------------------------------------------------------------


def test_layer_record_round_trips_through_json() -> None:
    base, app = Digest.of_bytes(BASE), Digest.of_bytes(APP)
    top = chain_ids([base, app])[1]
    record = LayerRecord(top, app, base, Digest.of_bytes(b"blob"), 1234)
    assert LayerRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    root = LayerRecord(base, base, None, base, 1)
    assert root.to_json()["parent"] is None
    assert LayerRecord.from_json(root.to_json()) == root


def test_holds_say_which_layers_and_which_holders() -> None:
    a, b, c = (Digest.of_bytes(x) for x in (b"a", b"b", b"c"))
    holds = Holds((Hold("id1", "container", "web", (a, b)), Hold("id2", "container", "db", (a,))))
    assert holds.complete
    assert holds.layers() == {str(a), str(b)}
    assert holds.users({str(a)}) == ["container db", "container web"]
    assert holds.users({str(a), str(b)}) == ["container web"]
    assert holds.users({str(c)}) == []
    assert not Holds((), ("holds/x.json: not a hold record",)).complete


@pytest.mark.parametrize(("name", "repo"), [
    ("docker.io/library/alpine:3.19", "docker.io/library/alpine"),
    ("localhost:5000/app:v1", "localhost:5000/app"),
    ("localhost:5000/app", "localhost:5000/app"),
    ("docker.io/library/alpine@sha256:" + "a" * 64, "docker.io/library/alpine"),
])
def test_repository_of_a_normalized_reference(name: str, repo: str) -> None:
    assert repository(name) == repo


def test_index_digest_comes_from_the_annotation() -> None:
    d = Digest.of_bytes(b"index")
    assert index_digest(Descriptor(OCI_MANIFEST, d, 1, None, {INDEX_DIGEST_ANNOTATION: str(d)})) == d
    assert index_digest(Descriptor(OCI_MANIFEST, d, 1)) is None


# -- the store on disk ------------------------------------------------------------------------------------------


def test_references_are_set_replaced_and_dropped(store: Store) -> None:
    one = Descriptor(OCI_MANIFEST, Digest.of_bytes(b"1"), 1)
    two = Descriptor(OCI_MANIFEST, Digest.of_bytes(b"2"), 1)
    store.set_ref("a:1", one)
    store.set_ref("b:1", one)
    store.set_ref("a:1", two)
    assert [(n, d.digest) for n, d in store.refs()] == [("b:1", one.digest), ("a:1", two.digest)]
    assert store.resolve("a:1") is not None and store.resolve("a:1").digest == two.digest  # type: ignore[union-attr]
    with store.lock():
        store.drop_ref("b:1")
    assert store.resolve("b:1") is None


def test_a_corrupt_index_is_an_integrity_error(store: Store) -> None:
    store.index_path.write_text("{not json")
    with pytest.raises(StrataError) as e:
        store.refs()
    assert e.value.kind is Kind.INTEGRITY


def test_blobs_are_only_taken_and_read_under_their_digest(store: Store) -> None:
    d = Digest.of_bytes(b"hello")
    with pytest.raises(StrataError):
        store.put_blob(b"other", d, "blob")
    store.put_blob(b"hello", d, "blob")
    assert store.read_blob(d, "blob") == b"hello"
    store.blob_path(d).write_bytes(b"HELLO")
    with pytest.raises(StrataError) as e:
        store.read_blob(d, "blob")
    assert e.value.kind is Kind.INTEGRITY
    with pytest.raises(StrataError) as e:
        store.read_blob(Digest.of_bytes(b"absent"), "blob")
    assert e.value.kind is Kind.NOT_FOUND


def test_holds_are_written_read_and_released(store: Store) -> None:
    layer = Digest.of_bytes(b"layer")
    store.hold("c1", "container", "web", [layer])
    holds = store.holds()
    assert holds.complete and holds.holds == (Hold("c1", "container", "web", (layer,)),)
    store.release_hold("c1")
    store.release_hold("c1")  # idempotent
    assert store.holds().holds == ()


def test_an_unreadable_hold_is_reported_not_raised(store: Store) -> None:
    store.hold("c1", "container", "web", [])
    (store.holds_dir / "bad.json").write_text("[]")
    holds = store.holds()
    assert not holds.complete
    assert holds.unreadable == ("holds/bad.json: not a hold record",)
    assert [h.holder for h in holds.holds] == ["c1"]


@pytest.mark.parametrize("holder", ["", "a/b", ".hidden"])
def test_a_holder_name_that_is_not_a_file_name_is_refused(store: Store, holder: str) -> None:
    with pytest.raises(StrataError) as e:
        store.hold(holder, "container", "x", [])
    assert e.value.kind is Kind.USAGE


def test_sweep_takes_the_litter_of_processes_that_are_gone(store: Store) -> None:
    mine = store.temp_path("blob")
    mine.write_bytes(b"")
    gone = store.tmp / f"{GONE_PID}.abcd.layer"
    (gone / "diff" / "deep").mkdir(parents=True)
    foreign = store.tmp / "not-a-pid"
    foreign.write_bytes(b"")
    store.sweep_tmp()
    assert mine.exists() and foreign.exists() and not gone.exists()


def test_files_write_whole_and_remove_trees(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left
    tree = tmp_path / "t"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "link").symlink_to(tmp_path / "f.json")
    remove_tree(tree)
    assert not tree.exists() and path.exists()  # the symlink went, not what it named
    remove_tree(tree)  # absent is fine
    assert pid_alive(os.getpid()) and not pid_alive(GONE_PID)


# -- images and GC --------------------------------------------------------------------------------------------------


def test_stored_images_load_and_are_found_by_name_and_id(store: Store) -> None:
    built = put_image(store, "docker.io/library/app:1", [BASE, APP])
    image = load(store, built.name, store.resolve(built.name))  # type: ignore[arg-type]
    assert image.image_id == built.config and list(image.chain_ids) == built.chains
    assert [r.chain_id for r in image.layer_records(store)] == built.chains
    assert find(store, "app:1") == image
    assert lookup(store, built.config.hex[:12]) == (image, True)
    assert [i.name for i in all_images(store)] == [built.name]
    with pytest.raises(StrataError) as e:
        find(store, "nothing:here")
    assert e.value.kind is Kind.NOT_FOUND


def test_reachable_is_what_references_and_holds_name(store: Store) -> None:
    index = b'{"schemaVersion": 2}'
    built = put_image(store, "docker.io/library/app:1", [BASE, APP], index=index)
    held = Digest.of_bytes(b"a container's layer")
    blobs, layers = gc.reachable(all_images(store), Holds((Hold("c", "container", "web", (held,)),)))
    assert blobs == {built.manifest, built.config, Digest.of_bytes(index), *built.blobs}
    assert layers == {str(c) for c in built.chains} | {str(held)}


def test_rmi_frees_what_only_that_image_used(store: Store) -> None:
    shared_base = put_image(store, "docker.io/library/a:1", [BASE, APP])
    other = put_image(store, "docker.io/library/b:1", [BASE, OTHER])
    removal = gc.remove_image(store, "a:1", warn=lambda line: None)
    assert removal.untagged == ("docker.io/library/a:1",)
    freed = {f.what for f in removal.deleted}
    assert freed == {"manifest", "config", "layer 2 blob", "layer 2"}
    assert removal.reclaimed > 0
    assert store.has_blob(Digest.of_bytes(BASE)) and store.layer(other.chains[0]) is not None
    assert store.layer(shared_base.chains[1]) is None and store.resolve("docker.io/library/a:1") is None


def test_rmi_refuses_an_image_a_container_holds(store: Store) -> None:
    built = put_image(store, "docker.io/library/a:1", [BASE])
    store.hold("c1", "container", "web", built.chains)
    with pytest.raises(StrataError) as e:
        gc.remove_image(store, "a:1", warn=lambda line: None)
    assert e.value.kind is Kind.STATE and "container web" in str(e.value)
    gc.remove_image(store, "a:1", force=True, warn=lambda line: None)
    assert store.layer(built.chains[0]) is not None  # forced: the container's layers stay


# -- fsck -----------------------------------------------------------------------------------------------------------


def test_fsck_finds_a_sound_store_clean(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    put_image(store, "docker.io/library/a:1", [BASE, APP])
    report = fsck.check(store)
    assert report.problems == []
    assert report.counts == {"blobs": 4, "layers": 2, "refs": 1}
    assert fsck.run(store, False) == 0
    assert capsys.readouterr().out == "fsck: clean (4 blobs, 2 layers, 1 ref checked)\n"


def test_fsck_reports_a_corrupt_layer_blob_and_repair_untags(store: Store) -> None:
    built = put_image(store, "docker.io/library/a:1", [BASE, APP])
    store.blob_path(built.blobs[1]).write_bytes(b"rot")
    report = fsck.check(store)
    assert report.bad_blobs == {built.blobs[1]}
    assert report.bad_refs == {built.name}
    assert f"ref {built.name}: layer 2 blob {built.blobs[1]} corrupt" in report.problems
    plan = fsck.plan_repair(report)
    assert plan.refs == {built.name} and plan.blobs == {built.blobs[1]}
    assert plan.layers == {built.chains[1].hex}  # unpacked from a blob that is gone: pull must fetch it again
    fsck.repair(store, report, plan)
    assert fsck.check(store).problems == []


def test_fsck_reports_a_layer_whose_chain_id_does_not_follow(store: Store) -> None:
    built = put_image(store, "docker.io/library/a:1", [BASE, APP])
    path = store.layer_dir(built.chains[1]) / "layer.json"
    record = read_json(path)
    record["parent"] = str(Digest.of_bytes(b"elsewhere"))
    write_json(path, record)
    report = fsck.check(store)
    assert built.chains[1].hex in report.bad_layers
    assert any("chain_id does not follow from parent" in p for p in report.problems)


def test_fsck_reports_a_config_that_disagrees_with_its_manifest(store: Store) -> None:
    manifest, config = documents([BASE], diff_ids=[])
    store.put_blob(config, Digest.of_bytes(config), "config")
    store.put_blob(manifest, Digest.of_bytes(manifest), "manifest")
    store.set_ref("docker.io/library/bad:1", entry_for(manifest))
    report = fsck.check(store)
    assert report.problems == ["ref docker.io/library/bad:1: the config lists 0 layers, the manifest 1"]
    assert report.bad_refs == {"docker.io/library/bad:1"}


def _report(**kw: object) -> fsck.Report:
    report = fsck.Report()
    for key, value in kw.items():
        setattr(report, key, value)
    return report


def test_repair_plan_takes_the_layers_above_a_broken_one_and_the_refs_on_them() -> None:
    report = _report(bad_layers={"b"}, parents={"c": "b", "d": "c"}, layers_dir_names={"a", "b", "c", "d"},
                     ref_chains={"x": ["a", "b", "c"], "y": ["a"]})
    plan = fsck.plan_repair(report)
    assert plan.layers == {"b", "c", "d"}
    assert plan.refs == {"x"}
    assert plan.kept_layers == {}


def test_repair_plan_keeps_what_a_container_rests_on() -> None:
    report = _report(bad_layers={"b"}, parents={"c": "b"}, layers_dir_names={"b", "c"},
                     container_layers={"container web": {"b"}})
    plan = fsck.plan_repair(report)
    assert plan.layers == set()  # the broken layer stays, so the one on it has something to stand on
    assert plan.kept_layers == {"b": "container web"}
