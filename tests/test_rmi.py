"""``puller rmi``: what it untags, what it refuses, what it deletes and reports, and the garbage it collects.

Images are the session registry's: the test image (linux/amd64, two layers), the same image under two tags of
one repository, and a one-layer image made of the test image's base layer only (so that it shares exactly that
layer)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.format import human_size
from tests import images
from tests.images import Variant
from tests.marks import needs_root, needs_tools
from tests.scripts import Registry, image_script
from tests.tools import Tools, one_line_error, puller_inspect

pytestmark = [needs_root, needs_tools]


def _put_blob(layout: Path, doc: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(doc, separators=(",", ":")).encode()
    hex_ = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hex_).write_bytes(data)
    return f"sha256:{hex_}", len(data)


def _base_only_layout(source: Path, layout: Path) -> None:
    """A copy of the test layout whose tag "base" is an image of the test image's first layer alone."""
    shutil.copytree(source, layout, symlinks=True)
    desc = images.tagged(layout, image_script.TAG)
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / desc["digest"].split(":", 1)[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":", 1)[1]).read_bytes())
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
    config["history"] = [h for h in config.get("history", []) if not h.get("empty_layer")][:1]
    digest, size = _put_blob(layout, config)
    manifest["config"] = {**manifest["config"], "digest": digest, "size": size}
    manifest["layers"] = manifest["layers"][:1]
    digest, size = _put_blob(layout, manifest)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({"mediaType": images.OCI_MANIFEST, "digest": digest, "size": size,
                               "annotations": {"org.opencontainers.image.ref.name": "base"}})
    (layout / "index.json").write_text(json.dumps(index))


@dataclass(frozen=True)
class Images:
    tag_a: str  # the test image ...
    tag_b: str  # ... under a second tag of the same repository
    base: str  # the test image's base layer alone


@pytest.fixture(scope="module")
def rmi_images(registry: Registry, test_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Images:
    out = Images(f"{registry.address}/rmi/test:a", f"{registry.address}/rmi/test:b",
                 f"{registry.address}/rmi/base:1")
    images.copy_to_registry(f"oci:{test_layout}:{image_script.TAG}", out.tag_a)
    images.copy_to_registry(f"oci:{test_layout}:{image_script.TAG}", out.tag_b)
    layout = tmp_path_factory.mktemp("rmi") / "layout"
    _base_only_layout(test_layout, layout)
    images.copy_to_registry(f"oci:{layout}:base", out.base)
    return out



# -- rmi --------------------------------------------------------------------------------------------------------


# sizes as go-units HumanSize writes them (shared/format.py)
DELETED = re.compile(r"^Deleted: (sha256:[0-9a-f]{64}) \(([^,]+), (\d+(?:\.\d+)?(?:e\+\d+)?[kMGTPEZY]?B)\)$")


def _rmi(tools: Tools, *args: str) -> tuple[list[str], list[tuple[str, str]], str]:
    """Run rmi; its Untagged names, its Deleted (digest, what) pairs, its total; checks the order of the lines."""
    result = tools.puller("rmi", *args)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines and lines[-1].startswith("Total reclaimed space: "), lines
    untagged = [line.removeprefix("Untagged: ") for line in lines if line.startswith("Untagged: ")]
    deleted = [m.groups() for line in lines if (m := DELETED.match(line))]
    assert all(line.startswith("Untagged: ") for line in lines[:len(untagged)])  # first what was untagged
    assert len(untagged) + len(deleted) == len(lines) - 1, lines  # nothing else
    return untagged, [(d, what) for d, what, _ in deleted], lines[-1].removeprefix("Total reclaimed space: ")


def _pull(tools: Tools, *refs: str) -> None:
    for ref in refs:
        result = tools.puller("pull", ref)
        assert result.code == 0, result.err


def test_rmi_by_an_id_two_tags_share_is_refused_unless_forced(tools: Tools, rmi_images: Images) -> None:
    _pull(tools, rmi_images.tag_a, rmi_images.tag_b, rmi_images.base)
    image_id = puller_inspect(tools, rmi_images.tag_a)["Id"]
    assert puller_inspect(tools, rmi_images.tag_b)["Id"] == image_id
    short = image_id.removeprefix("sha256:")[:12]
    refused = tools.puller("rmi", short)
    one_line_error(refused, 1, f"conflict: unable to delete {short} (must be forced) - image is referenced in "
                   "multiple repositories", tool="puller")
    assert refused.out == ""
    assert puller_inspect(tools, rmi_images.tag_a)["Id"] == puller_inspect(tools, rmi_images.tag_b)["Id"] == image_id
    untagged, deleted, total = _rmi(tools, "-f", short)
    assert untagged == sorted([rmi_images.tag_a, rmi_images.tag_b])
    assert (image_id, "config") in deleted
    assert total != "0B"
    assert tools.puller("inspect", rmi_images.tag_a).code != 0
    assert tools.puller("inspect", rmi_images.tag_b).code != 0
    assert tools.puller("inspect", rmi_images.base).code == 0


def test_rmi_of_one_tag_of_two_only_untags(tools: Tools, rmi_images: Images) -> None:
    _pull(tools, rmi_images.tag_a, rmi_images.tag_b)
    blobs, layers = set(os.listdir(tools.root / "blobs/sha256")), set(os.listdir(tools.root / "layers"))
    assert _rmi(tools, rmi_images.tag_a) == ([rmi_images.tag_a], [], "0B")
    assert set(os.listdir(tools.root / "blobs/sha256")) == blobs
    assert set(os.listdir(tools.root / "layers")) == layers
    assert puller_inspect(tools, rmi_images.tag_b)["Name"] == rmi_images.tag_b


def _make_foreign_garbage(tools: Tools, rich_image: str) -> set[str]:
    """Garbage that is not any later rmi's: the rich image's layers, kept by a container through a forced rmi,
    then left unreferenced when the container goes. Returns their chain IDs."""
    _pull(tools, rich_image)
    chains = {layer["ChainID"] for layer in puller_inspect(tools, rich_image)["Layers"]}
    assert tools.runner("run", "--name", "keeper", rich_image, "true").code == 0
    assert tools.puller("rmi", "--force", rich_image).code == 0
    assert tools.runner("rm", "keeper").code == 0
    assert {f"sha256:{d}" for d in os.listdir(tools.root / "layers")} >= chains
    return chains


def test_rmi_of_the_last_tag_reports_exactly_what_it_freed(tools: Tools, rmi_images: Images,
                                                           rich_image: str) -> None:
    foreign = _make_foreign_garbage(tools, rich_image)
    _pull(tools, rmi_images.tag_a, rmi_images.tag_b, rmi_images.base)
    image = puller_inspect(tools, rmi_images.tag_a)
    base = puller_inspect(tools, rmi_images.base)
    assert not foreign & {layer["ChainID"] for layer in image["Layers"]}
    shared = base["Layers"][0]
    assert (shared["Digest"], shared["ChainID"]) == (image["Layers"][0]["Digest"], image["Layers"][0]["ChainID"])
    top = image["Layers"][1]

    assert _rmi(tools, rmi_images.tag_b) == ([rmi_images.tag_b], [], "0B")
    untagged, deleted, total = _rmi(tools, rmi_images.tag_a)
    assert untagged == [rmi_images.tag_a]
    assert deleted == [(image["ManifestDigest"], "manifest"), (image["Id"], "config"),
                       (top["Digest"], "layer 2 blob"), (top["ChainID"], "layer 2")]
    manifest_size = len(images.inspect_raw(rmi_images.tag_a))
    config_size = len(images.inspect_raw(rmi_images.tag_a, config=True))
    assert total == human_size(manifest_size + config_size + top["Size"] + top["UncompressedSize"])
    # the shared base layer stays for the other image; the foreign garbage was swept, not reported
    assert os.listdir(tools.root / "layers") == [shared["ChainID"].removeprefix("sha256:")]
    assert puller_inspect(tools, rmi_images.base)["Layers"][0]["ChainID"] == shared["ChainID"]


def test_rmi_collects_what_nothing_needs(tools: Tools, test_image: str, gzip_variant: Variant) -> None:
    assert tools.puller("pull", test_image).code == 0
    assert tools.puller("pull", gzip_variant.ref).code == 0  # the same layers under another name
    layers = set(os.listdir(tools.root / "layers"))
    assert len(layers) == 2
    first = tools.puller("rmi", test_image)
    assert first.code == 0 and "Untagged" in first.out
    assert set(os.listdir(tools.root / "layers")) == layers  # still used by the other image
    kept = tools.runner("run", "--name", "user-of-it", gzip_variant.ref, "true")
    assert kept.code == 0
    refused = tools.puller("rmi", gzip_variant.ref)
    assert refused.code != 0 and "in use by container user-of-it" in refused.err
    forced = tools.puller("rmi", "--force", gzip_variant.ref)
    assert forced.code == 0
    assert json.loads((tools.root / "index.json").read_text())["manifests"] == []
    assert os.listdir(tools.root / "blobs/sha256") == []  # no reference needs a blob any more
    assert set(os.listdir(tools.root / "layers")) == layers  # but the container's layers stay
    assert tools.runner("run", "--rm", "--pull", "never", "user-of-it", "true").code != 0  # gone: no new containers
    assert tools.runner("rm", "user-of-it").code == 0
