"""Images the runner tests need beyond the test image, made by real tools: each is a copy of the test image's OCI
layout (scripts/build-test-image) with more layers appended by ``umoci raw add-layer``, from tars made by ``tar``.

    many    130 layers: the test image's 2, then one per file /layer-2 ... /layer-129 (the file names its layer)
    links   one more layer of absolute and relative symlinks that lead out of the root if followed on the host:
            /escape -> /, /dotdot -> ../../../../.., /hostetc -> /etc

``umoci raw add-layer`` appends a tar verbatim without unpacking the image, so the 128 rounds of ``many`` take
about 2 s, where 128 rounds of unpack/repack would grow with the layer count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

TAG = "test"  # the test image's tag in its layout
MANY_TAG = "many"
LINKS_TAG = "links"
MANY_LAYERS = 130
BASE_LAYERS = 2  # the test image's own
LINKS = {"escape": "/", "dotdot": "../../../../..", "hostetc": "/etc"}


def _run(argv: Sequence[str | os.PathLike[str]]) -> None:
    proc = subprocess.run([os.fspath(a) for a in argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr.strip()}")


def _copy_as(base: Path, dest: Path, tag: str) -> str:
    """A copy of the layout at BASE with the test image tagged TAG; returns the image argument for umoci."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest, symlinks=True)
    _run(["umoci", "tag", "--image", f"{dest}:{TAG}", tag])
    _run(["umoci", "rm", "--image", f"{dest}:{TAG}"])
    return f"{dest}:{tag}"


def _add_layer(image: str, work: Path, n: int, populate: Callable[[Path], list[str]]) -> None:
    """One layer: POPULATE fills an empty dir and names its top-level entries; tar them; append the tar."""
    stage = work / f"stage{n}"
    stage.mkdir()
    names = populate(stage)
    tar = work / f"layer{n}.tar"
    _run(["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", stage, "-cf", tar, *names])
    _run(["umoci", "raw", "add-layer", "--image", image, "--history.created_by", f"strata tests layer {n}", tar])
    tar.unlink()
    shutil.rmtree(stage)


def build_many_layers(base: Path, dest: Path, total: int = MANY_LAYERS) -> None:
    """The test image plus one layer per file /layer-N, N from BASE_LAYERS to TOTAL-1, tagged MANY_TAG."""
    image = _copy_as(base, dest, MANY_TAG)
    with tempfile.TemporaryDirectory(prefix="strata-many-") as tmp:
        for n in range(BASE_LAYERS, total):
            def populate(stage: Path, n: int = n) -> list[str]:
                (stage / f"layer-{n}").write_text(f"layer {n}\n")
                return [f"layer-{n}"]

            _add_layer(image, Path(tmp), n, populate)
    _run(["umoci", "gc", "--layout", dest])


def build_links(base: Path, dest: Path) -> None:
    """The test image plus one layer of LINKS (symlinks out of the root when resolved on the host), LINKS_TAG."""
    image = _copy_as(base, dest, LINKS_TAG)

    def populate(stage: Path) -> list[str]:
        for name, target in LINKS.items():
            os.symlink(target, stage / name)
        return list(LINKS)

    with tempfile.TemporaryDirectory(prefix="strata-links-") as tmp:
        _add_layer(image, Path(tmp), BASE_LAYERS, populate)
    _run(["umoci", "gc", "--layout", dest])


def push(layout: Path, tag: str, dest: str) -> None:
    _run(["skopeo", "copy", "--dest-tls-verify=false", "--quiet", f"oci:{layout}:{tag}", f"docker://{dest}"])


def build_and_push(build: Callable[[Path, Path], None], base: Path, work: Path, tag: str, dest: str) -> str:
    """Build one of these images from the test image's layout and push it; return the reference."""
    layout = work / "layout"
    build(base, layout)
    push(layout, tag, dest)
    return dest


FIFO_ETC_TAG = "fifo-etc"


def build_fifo_etc(base: Path, dest: Path) -> None:
    """The test image plus one layer whose /etc/passwd and /etc/group are fifos, tagged FIFO_ETC_TAG: a runner that
    read them as files to look a user up would wait for a writer forever."""
    image = _copy_as(base, dest, FIFO_ETC_TAG)

    def populate(stage: Path) -> list[str]:
        (stage / "etc").mkdir()
        os.chmod(stage / "etc", 0o755)  # explicitly: mkdir and mkfifo are subject to the umask
        for name in ("passwd", "group"):
            os.mkfifo(stage / "etc" / name)
            os.chmod(stage / "etc" / name, 0o644)
        return ["etc"]

    with tempfile.TemporaryDirectory(prefix="strata-fifo-etc-") as tmp:
        _add_layer(image, Path(tmp), BASE_LAYERS, populate)
    _run(["umoci", "gc", "--layout", dest])
