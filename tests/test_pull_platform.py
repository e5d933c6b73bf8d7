"""``puller pull --platform`` and images of one platform only (no index to choose from): another platform is
refused, a foreign image pulled without --platform is pulled with a warning, as Docker does."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.marks import needs_root, needs_tools
from tests.scripts import Registry
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]


@pytest.fixture(scope="module")
def arm64_image(registry: Registry, variants_layout: Path) -> str:
    """The test image's arm64/v8 twin, a plain manifest (no index), in the session registry."""
    ref = f"{registry.address}/platform/arm64:1"
    images.copy_to_registry(f"oci:{variants_layout}:{images.ARM64_TAG}", ref)
    return ref


def _store_is_empty(tools: Tools) -> None:
    assert json.loads((tools.root / "index.json").read_text())["manifests"] == []
    assert os.listdir(tools.root / "blobs/sha256") == []
    assert os.listdir(tools.root / "layers") == []


def _inspect(tools: Tools, ref: str) -> dict[str, Any]:
    result = tools.puller("inspect", ref)
    assert result.code == 0, result.err
    described: dict[str, Any] = json.loads(result.out)[0]
    return described


def test_pull_platform_of_another_single_platform_image_is_refused(tools: Tools, test_image: str) -> None:
    refused = tools.puller("pull", "--platform", "linux/arm64", test_image)
    one_line_error(refused, 1, f"image with reference {test_image} was found but does not match the specified "
                   "platform: wanted linux/arm64, actual: linux/amd64 (a single-platform image: no index to choose "
                   "from)", tool="puller")
    _store_is_empty(tools)  # nothing stored for it
    # already in the store (pulled for the host): still refused, not "up to date"; what is stored stays
    assert tools.puller("pull", test_image).code == 0
    again = tools.puller("pull", "--platform", "linux/arm64/v8", test_image)
    one_line_error(again, 1, "wanted linux/arm64/v8, actual: linux/amd64", tool="puller")
    assert _inspect(tools, test_image)["Platform"] == "linux/amd64"
    matching = tools.puller("pull", "--platform", "linux/amd64", test_image)
    assert matching.code == 0 and "up to date" in matching.out, matching.err


def test_pull_of_a_foreign_single_platform_image_without_platform_warns(tools: Tools, arm64_image: str) -> None:
    """Docker pulls it (the user named it; there is nothing to choose); we also say the host cannot run it."""
    pulled = tools.puller("pull", arm64_image)
    assert pulled.code == 0, pulled.err
    assert f"WARNING: image {arm64_image} is linux/arm64/v8, which does not match the host platform " \
           "(linux/amd64)" in pulled.out
    assert _inspect(tools, arm64_image)["Platform"] == "linux/arm64/v8"
    asked = tools.puller("pull", "--platform", "linux/arm64", arm64_image)  # arm64 means arm64/v8
    assert asked.code == 0 and "up to date" in asked.out and "WARNING" not in asked.out, asked.err
