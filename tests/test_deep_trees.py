"""Trees deeper than Python's stack and the fd limit, made by a hostile container or shipped in a hostile layer:
``runner rm``, ``runner prune`` and ``puller rmi`` remove them, and garbage collection finishes what an earlier,
crashed one left.

Real containers from the session test image in the test's own store (``no_leaks``: no cgroup, no process left;
``tools``: no mount left). The deep layer's tar is written by hand (hostile input may be), appended to a copy of
the test image by ``umoci raw add-layer`` and pushed by skopeo to the session registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import reference
from shared.errors import StrataError
from shared.store.files import remove_tree
from shared.store.layout import Store
from tests import runner_images
from tests.marks import also_as_user, needs_root, needs_tools
from tests.scripts import Registry
from tests.test_remove import chain_depth
from tests.tools import Tools, detached, mounts_under, wait_until

pytestmark = [needs_root, needs_tools]

LEVELS = 1500  # what the container makes: past Python's recursion limit (1,000)
MAKE_DEEP = f"cd / && i=0; while [ $i -lt {LEVELS} ]; do mkdir d; cd d; i=$((i+1)); done"
DEEP_TAG = "deep"
LAYER_LEVELS = 1200  # directories on the layer's path: /deep, then 1,199 levels of d
BOTTOM = "/".join(["deep", *["d"] * (LAYER_LEVELS - 1), "bottom"])


@pytest.fixture(autouse=True)
def remove_store(tools: Tools) -> Iterator[None]:
    """The store goes with our remover whatever happened: pytest's own clean-up of old temp dirs uses
    shutil.rmtree, which a deep tree left behind by a failed test would crash (in every later session)."""
    yield
    with contextlib.suppress(StrataError):  # a mount left behind stays; ``tools`` reports it
        remove_tree(tools.root)


@pytest.fixture
def img(stored_test_image: str) -> str:
    return stored_test_image


def status(tools: Tools, cid: str) -> str:
    result = tools.runner("inspect", cid)
    assert result.code == 0, result.err
    return str(json.loads(result.out)[0]["State"]["Status"])


@also_as_user
def test_rm_f_removes_a_running_container_with_a_1500_deep_tree(tools: Tools, img: str, no_leaks: None) -> None:
    with detached(tools, img, "sh", "-c", f"{MAKE_DEEP} && touch /made && exec sleep 600") as cid:
        container = tools.root / "containers" / cid
        wait_until(lambda: (container / "upper" / "made").exists(), "the deep tree made", timeout=120)
        assert chain_depth(container / "upper") == LEVELS
        result = tools.runner("rm", "-f", cid)
        assert result.code == 0, result.err
        assert not container.exists()
        assert mounts_under(tools.root) == []
        assert tools.runner("ps", "-a", "-q").out == ""


@also_as_user
def test_prune_removes_an_exited_container_with_a_1500_deep_tree(tools: Tools, img: str, no_leaks: None) -> None:
    with detached(tools, img, "sh", "-c", MAKE_DEEP) as cid:
        container = tools.root / "containers" / cid
        wait_until(lambda: status(tools, cid) == "exited", "the container exited", timeout=120)
        assert chain_depth(container / "upper") == LEVELS
        result = tools.runner("prune", "-f")
        assert result.code == 0, result.err
        assert not container.exists()
        assert mounts_under(tools.root) == []


def deep_layer_tar(path: Path) -> None:
    """/deep/d/.../d, LAYER_LEVELS directories, each an entry of its own, and the file BOTTOM at the end."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(1, LAYER_LEVELS + 1):
            info = tarfile.TarInfo("/".join(["deep", *["d"] * (n - 1)]) + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            tar.addfile(info)
        data = b"bottom\n"
        info = tarfile.TarInfo(BOTTOM)
        info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            tar.addfile(info, f)


def build_deep(base: Path, dest: Path) -> None:
    """The test image plus the hand-written deep layer, tagged DEEP_TAG."""
    image = runner_images._copy_as(base, dest, DEEP_TAG)
    with tempfile.TemporaryDirectory(prefix="strata-deep-") as tmp:
        tar = Path(tmp) / "deep.tar"
        deep_layer_tar(tar)
        runner_images._run(["umoci", "raw", "add-layer", "--image", image, "--history.created_by",
                            "strata tests: a 1,200-deep layer", tar])
    runner_images._run(["umoci", "gc", "--layout", dest])


@pytest.fixture(scope="module")
def deep_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry, test_layout: Path) -> str:
    return runner_images.build_and_push(build_deep, test_layout, tmp_path_factory.mktemp("deep-image"), DEEP_TAG,
                                        f"{registry.address}/strata/deep:1")


def pull_deep(tools: Tools, deep_image: str) -> tuple[set[str], str]:
    """Pull the deep image over the test image; the test image's layer dirs and the deep layer's."""
    layers = tools.root / "layers"
    base = set(os.listdir(layers))
    result = tools.puller("pull", "--quiet", deep_image)
    assert result.code == 0, result.err
    (deep,) = set(os.listdir(layers)) - base
    assert chain_depth(layers / deep / "diff" / "deep") == LAYER_LEVELS - 1
    return base, deep


@also_as_user
def test_a_1200_deep_layer_pulls_runs_and_goes_with_rmi(tools: Tools, img: str, deep_image: str,
                                                         no_leaks: None) -> None:
    base, deep = pull_deep(tools, deep_image)
    result = tools.runner("run", "--rm", deep_image, "cat", f"/{BOTTOM}")
    assert (result.code, result.out) == (0, "bottom\n"), result.err
    result = tools.puller("rmi", deep_image)
    assert result.code == 0, result.err
    layers = tools.root / "layers"
    assert not (layers / deep).exists()
    assert set(os.listdir(layers)) == base
    assert os.listdir(tools.root / "tmp") == []  # taken out by rename, then removed: nothing left over
    result = tools.puller("rmi", img)  # garbage collection works on after it
    assert result.code == 0, result.err
    assert os.listdir(layers) == []


def test_the_next_rmi_finishes_a_layer_an_earlier_gc_left_half_removed(tools: Tools, img: str,
                                                                       deep_image: str) -> None:
    """What rmi left when shutil.rmtree hit RecursionError in the deep layer: the reference dropped, the layer's
    directory half removed (its layer.json gone, the deep diff still there). Every later rmi collected garbage
    into the same crash; now the next one removes it."""
    _, deep = pull_deep(tools, deep_image)
    store = Store(tools.root)
    with store.lock():
        store.drop_ref(str(reference.parse(deep_image)))
    (tools.root / "layers" / deep / "layer.json").unlink()
    result = tools.puller("rmi", img)
    assert result.code == 0, result.err
    assert os.listdir(tools.root / "layers") == []
    assert os.listdir(tools.root / "blobs" / "sha256") == []
