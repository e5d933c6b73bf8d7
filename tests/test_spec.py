"""The runner's shape (issue 10): the store's GC knows containers only by the holds they take on layers.

Real containers from the session test image in the test's own store; ``no_leaks`` checks that no cgroup and no
process is left, ``tools`` that no mount is.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import Tools, needs_root, needs_tools

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def img(tools: Tools, test_image: str, no_leaks: None) -> str:
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    return test_image


def layer_dirs(tools: Tools) -> set[str]:
    return set(os.listdir(tools.root / "layers"))


# -- the GC knows containers only by their holds ------------------------------------------------------------------


def test_a_containers_layers_survive_a_forced_rmi_of_its_image(tools: Tools, img: str) -> None:
    assert tools.runner("run", "--name", "keeper", img, "true").code == 0
    held = json.loads((tools.root / "holds").joinpath(os.listdir(tools.root / "holds")[0]).read_text())
    assert (held["kind"], held["name"]) == ("container", "keeper")
    layers = layer_dirs(tools)
    assert {c.removeprefix("sha256:") for c in held["layers"]} == layers
    refused = tools.puller("rmi", img)
    assert refused.code != 0 and "in use by container keeper" in refused.err
    assert tools.puller("rmi", "--force", img).code == 0
    assert layer_dirs(tools) == layers  # the container still rests on them
    assert tools.runner("run", "--rm", img, "true").code != 0  # the image is gone: only the container has them
    assert tools.puller("fsck").code == 0
    assert tools.runner("rm", "keeper").code == 0
    assert os.listdir(tools.root / "holds") == []


def test_an_unreadable_hold_keeps_every_layer_and_says_so(tools: Tools, img: str) -> None:
    holds = tools.root / "holds"
    holds.mkdir(exist_ok=True)
    (holds / "broken.json").write_text("{not json")
    layers = layer_dirs(tools)
    removed = tools.puller("rmi", img)
    assert removed.code == 0, removed.err
    assert "WARNING: unreadable hold holds/broken.json" in removed.err
    assert "keeping every layer" in removed.err
    assert layer_dirs(tools) == layers
    found = tools.puller("fsck")
    assert found.code == 1 and "hold holds/broken.json" in found.out
    (holds / "broken.json").unlink()
    assert tools.puller("pull", img).code == 0 and tools.puller("rmi", img).code == 0
    assert layer_dirs(tools) == set()  # a later GC with every hold readable takes them
