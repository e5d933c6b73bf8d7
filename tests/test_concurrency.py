"""Several processes on one store at once (issue 13): parallel pulls of the same and of overlapping images all
succeed, each blob and layer exists once, and fsck finds the store clean; run, rm and pull side by side too."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.images import Variant
from tests.marks import needs_root, needs_tools
from tests.tools import Tools, popen_runner

pytestmark = [needs_root, needs_tools]


def puller_argv(tools: Tools, *args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "puller", "--root", str(tools.root), *args]


def test_parallel_pulls_of_overlapping_images(tools: Tools, test_image: str, rich_image: str,
                                              zstd_variant: Variant, v2s2_variant: Variant) -> None:
    """Six pulls at once: the same image twice, its zstd and Docker v2 twins (same layers, other blobs or
    manifest), and the rich image (the same base layer under more)."""
    refs = [test_image, test_image, zstd_variant.ref, v2s2_variant.ref, rich_image, rich_image]
    procs = [subprocess.Popen(puller_argv(tools, "pull", "--quiet", ref), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for ref in refs]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for ref, (code, out, err) in zip(refs, results, strict=True):
        assert code == 0, (ref, out, err)
    listed = tools.puller("images", "--format", "json")
    assert listed.code == 0, listed.err
    for ref in set(refs):
        assert ref.split("/", 1)[1].split(":")[0] in listed.out, listed.out
    layers = [p.name for p in (tools.root / "layers").iterdir()]
    assert len(layers) == len(set(layers)) and all(len(name) == 64 for name in layers), layers
    assert not list((tools.root / "tmp").iterdir()), "work in progress left behind"
    checked = tools.puller("fsck")
    assert checked.code == 0, checked.out + checked.err
    for ref in (test_image, rich_image):
        ran = tools.runner("run", "--rm", ref, "true")
        assert ran.code == 0, ran.err


def test_run_rm_and_pull_side_by_side(tools: Tools, test_image: str, rich_image: str, no_leaks: None) -> None:
    """Containers start and go while another image is pulled and garbage is collected: every command succeeds and
    the store checks clean."""
    assert tools.puller("pull", "--quiet", test_image).code == 0
    pull = subprocess.Popen(puller_argv(tools, "pull", "--quiet", rich_image), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    runs = [popen_runner(tools, "run", "--rm", test_image, "sh", "-c", f"echo {i}") for i in range(4)]
    outputs = [(r.wait(timeout=120), *r.communicate()) for r in runs]
    assert pull.wait(timeout=300) == 0, pull.communicate()
    for i, (code, out, err) in enumerate(outputs):
        assert (code, out) == (0, f"{i}\n"), err
    prune = tools.runner("prune", "-f")
    assert prune.code == 0, prune.err
    checked = tools.puller("fsck")
    assert checked.code == 0, checked.out + checked.err
    assert not [p for p in Path(tools.root, "containers").iterdir()], "a --rm container stayed"
