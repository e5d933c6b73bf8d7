"""Bad input to the puller: each gets a one-line error, a non-zero exit, and the store stays consistent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.scripts import Registry, image_script, registry_script, start_registry
from tests.tools import Tools

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of the test's own, since the test damages what it stores."""
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        registry_script.stop(tmp_path / "registry")


def _layers_of(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / manifest_digest).read_text())
    return [layer["digest"] for layer in manifest["layers"]]


def assert_store_has_no_image(root: Path) -> None:
    index = json.loads((root / "index.json").read_text())
    assert index["manifests"] == []
    assert list((root / "layers").iterdir()) == []
    assert list((root / "tmp").iterdir()) == []


def test_corrupted_blob_fails_and_leaves_nothing(tools: Tools, own_registry: Registry, test_layout: Path) -> None:
    ref = f"{own_registry.address}/strata/corrupt:1"
    image_script.push(test_layout, ref)
    layer = _layers_of(test_layout)[0]
    blob = own_registry.blob_file(layer)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte altered: only the digest can tell
    blob.write_bytes(bytes(data))

    result = tools.puller("pull", ref)
    assert result.code != 0
    assert result.err.count("\n") == 1
    assert "digest mismatch" in result.err and layer in result.err
    assert_store_has_no_image(tools.root)
    assert not (tools.root / "blobs/sha256" / layer.split(":")[1]).exists()


def test_missing_image_and_tag(tools: Tools, registry: Registry, test_image: str) -> None:
    result = tools.puller("pull", f"{registry.address}/strata/nothing-here:1")
    assert result.code != 0 and result.err.count("\n") == 1 and "not found" in result.err
    result = tools.puller("pull", f"{registry.address}/strata/test:no-such-tag")
    assert result.code != 0 and "not found" in result.err


def test_malformed_reference(tools: Tools) -> None:
    result = tools.puller("pull", "Not/Valid")
    assert result.code == 2
    assert result.err.strip() == "puller: error: invalid reference format: repository name (Valid) must be lowercase"


def test_unreachable_registry(tools: Tools) -> None:
    result = tools.puller("pull", "127.0.0.1:9/x/y:1")  # port 9 (discard): nothing listens
    assert result.code != 0 and result.err.count("\n") == 1 and "cannot reach registry 127.0.0.1:9" in result.err
