"""``puller fsck``: a clean pull checks clean; each way the store can break is named in one line and exits non-zero;
``--repair`` removes what is broken, after which fsck is clean and pulling again restores an image that runs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.images import Variant
from tests.marks import needs_root, needs_tools
from tests.tools import ROOT, Result, Tools, one_line_error

pytestmark = [needs_root, needs_tools]

REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Pulled:
    """Where the pulled test image lies in the store: the digests (``sha256:HEX``) and chain hexes, base first."""

    ref: str
    manifest: str
    config: str
    layers: tuple[str, ...]
    chains: tuple[str, ...]


def blob(tools: Tools, digest: str) -> Path:
    return tools.root / "blobs" / "sha256" / digest.split(":", 1)[1]


def pull(tools: Tools, ref: str) -> Pulled:
    result = tools.puller("pull", "--quiet", ref)
    assert result.code == 0, result.err
    index = json.loads((tools.root / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["annotations"][REF_NAME] == ref]
    manifest = json.loads(blob(tools, entry["digest"]).read_bytes())
    config = json.loads(blob(tools, manifest["config"]["digest"]).read_bytes())
    chains = []
    for layer_dir in (tools.root / "layers").iterdir():
        chains.append(json.loads((layer_dir / "layer.json").read_text()))
    by_diff = {c["diff_id"]: c["chain_id"].split(":", 1)[1] for c in chains}
    return Pulled(ref, entry["digest"], manifest["config"]["digest"],
                  tuple(x["digest"] for x in manifest["layers"]),
                  tuple(by_diff[d] for d in config["rootfs"]["diff_ids"]))


def fsck(tools: Tools, *args: str) -> Result:
    result = tools.puller("fsck", *args)
    assert result.err == "", result.err  # problems are findings on stdout, never errors or tracebacks
    return result


def assert_clean(tools: Tools) -> None:
    result = fsck(tools)
    assert result.code == 0, result.out
    assert result.out.startswith("fsck: clean (") and result.out.count("\n") == 1, result.out


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def corrupt_layer_blob(tools: Tools, p: Pulled) -> str:
    flip_byte(blob(tools, p.layers[1]))
    return f"blob {p.layers[1]} corrupt: hash is sha256:"


def corrupt_config_blob(tools: Tools, p: Pulled) -> str:
    flip_byte(blob(tools, p.config))
    return f"blob {p.config} corrupt: hash is sha256:"


def corrupt_manifest_blob(tools: Tools, p: Pulled) -> str:
    flip_byte(blob(tools, p.manifest))
    return f"blob {p.manifest} corrupt: hash is sha256:"


def delete_layer_blob(tools: Tools, p: Pulled) -> str:
    blob(tools, p.layers[0]).unlink()
    return f"ref {p.ref}: layer 1 blob {p.layers[0]} missing"


def delete_diff_dir(tools: Tools, p: Pulled) -> str:
    shutil.rmtree(tools.root / "layers" / p.chains[1] / "diff")
    return f"layer sha256:{p.chains[1]}: diff/ missing"


def corrupt_layer_json(tools: Tools, p: Pulled) -> str:
    (tools.root / "layers" / p.chains[0] / "layer.json").write_text('{"chain_id": ')
    return f"layer sha256:{p.chains[0]}: layer.json corrupt"


def falsify_layer_json(tools: Tools, p: Pulled) -> str:
    """Valid JSON, a plausible record, but the diff_id is not the one the chain ID was computed from."""
    path = tools.root / "layers" / p.chains[1] / "layer.json"
    record = json.loads(path.read_text())
    record["diff_id"] = "sha256:" + "0" * 64
    path.write_text(json.dumps(record))
    return f"layer sha256:{p.chains[1]}: chain_id does not follow from parent"


def remove_manifest(tools: Tools, p: Pulled) -> str:
    blob(tools, p.manifest).unlink()
    return f"ref {p.ref}: manifest {p.manifest} missing"


CORRUPTIONS: dict[str, Callable[[Tools, Pulled], str]] = {
    "layer-blob-byte": corrupt_layer_blob,
    "config-blob-byte": corrupt_config_blob,
    "manifest-blob-byte": corrupt_manifest_blob,
    "layer-blob-deleted": delete_layer_blob,
    "diff-dir-deleted": delete_diff_dir,
    "layer-json-corrupt": corrupt_layer_json,
    "layer-json-falsified": falsify_layer_json,
    "manifest-removed": remove_manifest,
}


def test_clean_pull_checks_clean(tools: Tools, test_image: str) -> None:
    pull(tools, test_image)
    result = fsck(tools)
    assert result.code == 0
    assert result.out == "fsck: clean (4 blobs, 2 layers, 1 ref checked)\n"
    again = fsck(tools, "--repair")  # nothing to do: nothing removed
    assert again.code == 0 and again.out == result.out


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_corruption_is_found_repaired_and_pulled_back(tools: Tools, test_image: str,
                                                      corrupt: Callable[[Tools, Pulled], str]) -> None:
    pulled = pull(tools, test_image)
    expected = corrupt(tools, pulled)

    found = fsck(tools)
    assert found.code == 1, found.out
    lines = found.out.splitlines()
    assert any(line.startswith(expected) for line in lines), found.out
    assert lines[-1].startswith("fsck: ") and "problem" in lines[-1], found.out

    repaired = fsck(tools, "--repair")
    assert repaired.code == 0, repaired.out
    assert "Removed: " in repaired.out or "Untagged: " in repaired.out, repaired.out
    assert f"Untagged: {test_image}" in repaired.out
    assert_clean(tools)
    assert list((tools.root / "tmp").iterdir()) == []  # what was removed went through tmp/ and is gone

    assert tools.puller("pull", "--quiet", test_image).code == 0
    assert_clean(tools)
    ran = tools.runner("run", "--rm", test_image, "true")
    assert ran.code == 0, ran.err


def test_shared_layers_go_with_every_reference_that_needs_them(tools: Tools, test_image: str,
                                                               gzip_variant: Variant) -> None:
    """The gzip variant is the test image under another name: the same blobs and layers. A layer blob gone: both
    references are untagged and the layer (with the one on it) removed, or pull would take it as "already
    exists" and never fetch the blob again."""
    pulled = pull(tools, test_image)
    other = pull(tools, gzip_variant.ref)
    assert (other.layers, other.chains) == (pulled.layers, pulled.chains)
    blob(tools, pulled.layers[0]).unlink()
    found = fsck(tools)
    assert found.code == 1
    assert found.out.splitlines()[:-1] == [f"ref {ref}: layer 1 blob {pulled.layers[0]} missing"
                                           for ref in sorted((test_image, gzip_variant.ref))]
    repaired = fsck(tools, "--repair")
    assert repaired.code == 0, repaired.out
    assert {f"Untagged: {test_image}", f"Untagged: {gzip_variant.ref}",
            *(f"Removed: layer sha256:{c}" for c in pulled.chains)} <= set(repaired.out.splitlines())
    assert_clean(tools)
    for ref in (test_image, gzip_variant.ref):
        assert tools.puller("pull", "--quiet", ref).code == 0
    assert_clean(tools)
    assert tools.runner("run", "--rm", gzip_variant.ref, "true").code == 0


def test_image_pulled_onto_existing_layers_checks_clean(tools: Tools, test_image: str,
                                                        zstd_variant: Variant) -> None:
    """The zstd variant has the test image's layers (same diff_ids, so the same chain IDs) from other blobs. Its
    blobs are fetched all the same (they were not: "already exists"), so the store stays an OCI layout that holds
    every blob of every manifest it lists, and skopeo can copy the image out of it."""
    pulled = pull(tools, test_image)
    zstd = pull(tools, zstd_variant.ref)
    assert zstd.chains == pulled.chains and zstd.layers != pulled.layers
    found = fsck(tools)
    assert found.code == 0, found.out
    out = tools.root.parent / "copied"
    copy = subprocess.run(["skopeo", "copy", "--quiet", f"oci:{tools.root}:{zstd_variant.ref}", f"dir:{out}"],
                          capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr


def test_malformed_index_entry_is_removed(tools: Tools, test_image: str) -> None:
    pull(tools, test_image)
    index_path = tools.root / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:nope",
                               "size": 2})
    index_path.write_text(json.dumps(index))
    found = fsck(tools)
    assert found.code == 1
    assert found.out.splitlines()[0].startswith("malformed index.json entry 2: bad descriptor")
    repaired = fsck(tools, "--repair")
    assert repaired.code == 0 and "Removed: index.json entry 2" in repaired.out
    assert_clean(tools)
    assert tools.runner("run", "--rm", test_image, "true").code == 0  # the good reference was left alone


def test_missing_store_is_one_line_error(tools: Tools) -> None:
    result = tools.puller("fsck")
    one_line_error(result, 1, f"no store at {tools.root}", tool="puller")
    assert not tools.root.exists()  # checking must not create a store


def test_litter_is_reported_not_a_problem(tools: Tools, test_image: str) -> None:
    pull(tools, test_image)
    dead = tools.root / "tmp" / "999999999.0123456789abcdef.layer"  # above any pid_max: its process is gone
    (dead / "diff").mkdir(parents=True)
    live = tools.root / "tmp" / f"{os.getpid()}.0123456789abcdef.blob"  # a live process's work in progress
    live.write_bytes(b"partial")
    half_written = tools.root / "blobs" / "sha256" / f".{'a' * 64}.999999999.0123abcd"  # atomic_write's temp
    half_written.write_bytes(b"half")
    result = fsck(tools)
    assert result.code == 0
    assert result.out.splitlines()[:2] == [f"litter: blobs/sha256/{half_written.name} (its process is gone)",
                                           f"litter: tmp/{dead.name} (its process is gone)"]
    assert live.name not in result.out
    repaired = fsck(tools, "--repair")
    assert repaired.code == 0 and f"Removed: tmp/{dead.name}" in repaired.out
    assert not dead.exists() and live.exists() and not half_written.exists()
    assert_clean(tools)


def test_container_on_a_broken_layer_is_a_problem_repair_leaves_to_rm(tools: Tools, test_image: str) -> None:
    pulled = pull(tools, test_image)
    assert tools.runner("run", "--name", "kept", test_image, "true").code == 0
    shutil.rmtree(tools.root / "layers" / pulled.chains[0] / "diff")
    found = fsck(tools)
    assert found.code == 1
    assert f"container kept: layer sha256:{pulled.chains[0]} broken" in found.out.splitlines()
    repaired = fsck(tools, "--repair")
    assert repaired.code == 1, repaired.out  # a container's layers are never removed under it
    assert f"Kept: layer sha256:{pulled.chains[0]}, container kept uses it" in repaired.out
    assert (tools.root / "layers" / pulled.chains[0]).is_dir()
    assert tools.runner("rm", "kept").code == 0
    assert fsck(tools, "--repair").code == 0
    assert_clean(tools)
    assert tools.puller("pull", "--quiet", test_image).code == 0
    assert tools.runner("run", "--rm", test_image, "true").code == 0
    assert_clean(tools)


def test_fsck_waits_for_a_pull_in_progress(tools: Tools, test_image: str) -> None:
    """A pull holds gc.lock shared while its blobs and layers are not referenced yet; fsck takes it exclusive."""
    pull(tools, test_image)
    fd = os.open(tools.root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        proc = subprocess.Popen([sys.executable, "-m", "puller", "--root", str(tools.root), "fsck"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting for the "pull" to finish
    finally:
        os.close(fd)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.startswith("fsck: clean"), (out, err)
