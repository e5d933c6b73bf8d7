"""Differential test of the layer unpacker: the rich image (``scripts/build-test-image --rich``, three layers made
by umoci) pulled by ``puller``, its diff dirs merged read-only by overlayfs, against ``umoci unpack`` of the same
layout. Every path, type, mode, owner, size, content hash, symlink target, device number, xattr and mtime must be
equal; any difference fails the test and is listed."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.store import images as stored
from shared.store.layout import Store
from tests.marks import needs_root, needs_tools
from tests.scripts import image_script
from tests.tools import Tools, mounts_under
from tests.treesnap import Snapshot, differences, snapshot

pytestmark = [needs_root, needs_tools]

def _s(t: int) -> int:
    return t * 1_000_000_000


T1, T2, T3 = map(_s, image_script.RICH_MTIMES)
# What the rich image is meant to cover, checked on umoci's side: a case umoci lost would make both sides equal
# without testing anything. (path, field, expected); None as expected: the path must not exist.
REFERENCE: list[tuple[str, str, object]] = [
    ("rich/1m.bin", "size", 1 << 20), ("rich/empty", "size", 0),
    ("rich/private", "mode", 0o700), ("rich/team", "mode", 0o750), ("rich/team", "uid", 1000),
    ("rich/sticky", "mode", 0o1777), ("rich/setuid", "mode", 0o4755), ("rich/setgid", "mode", 0o2755),
    ("rich/cap", "xattrs", (("security.capability", image_script.CAP_NET_RAW_EP),)),
    ("rich/xattr-file", "xattrs", (("user.strata.comment", b"file xattr"),)),
    ("rich/xattr-dir", "xattrs", (("user.strata.dir", b"dir xattr"),)),
    ("rich/links/abs", "target", "/rich/small.txt"), ("rich/links/dangling", "target", "does/not/exist"),
    ("rich/fifo", "type", "fifo"), ("rich/char-null", "rdev", (1, 3)), ("rich/block-loop0", "rdev", (7, 0)),
    ("rich/ünïcødé-名前.txt", "type", "file"), ("rich/name with spaces.txt", "type", "file"),
    ("rich/old.txt", "mtime_ns", _s(image_script.OLD_MTIME)),
    ("rich/del-file", "type", None), ("rich/del-dir", "type", None), ("rich/dir-to-file/a", "type", None),
    ("rich/dir-to-file", "type", "file"), ("rich/file-to-dir", "type", "dir"), ("rich/chmod-dir", "mode", 0o711),
    ("rich/modify-me", "mtime_ns", T3), ("rich/grows", "mtime_ns", T2), ("rich/grows/new", "type", "file"),
    ("rich", "mtime_ns", T2), ("rich/quiet", "mtime_ns", T1), ("rich/quiet/new", "mtime_ns", T3),
    ("rich/hardlink-to-layer1", "uid", 1000),
]


def check_reference(umoci: Snapshot) -> list[str]:
    wrong = []
    for path, field, expected in REFERENCE:
        got = None if path not in umoci else getattr(umoci[path], field)
        if got != expected:
            wrong.append(f"{path}: {field} is {got!r}, the image should have {expected!r}")
    return wrong


@contextlib.contextmanager
def overlay(lowers: list[Path], mountpoint: Path) -> Iterator[Path]:
    """LOWERS (topmost first) merged read-only: lower dirs only, no upper. Always unmounted again."""
    mountpoint.mkdir()
    opts = "lowerdir=" + ":".join(map(str, lowers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(mountpoint)], check=True,
                   capture_output=True, text=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True, text=True)


def test_overlay_of_our_diff_dirs_equals_umoci_unpack(tools: Tools, rich_image: str, rich_layout: Path,
                                                      tmp_path: Path) -> None:
    pulled = tools.puller("pull", rich_image)
    assert pulled.code == 0, pulled.err
    store = Store(tools.root)
    image = stored.find(store, rich_image)
    assert len(image.chain_ids) == 3
    diff_dirs = [store.diff_dir(chain) for chain in image.chain_ids]  # base first

    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{rich_layout}:{image_script.RICH_TAG}", str(bundle)],
                   check=True, capture_output=True, text=True)
    theirs = snapshot(bundle / "rootfs")

    mountpoint = tmp_path / "merged"
    with overlay(diff_dirs[::-1], mountpoint) as merged:
        ours = snapshot(merged)
    assert mounts_under(mountpoint) == []

    assert check_reference(theirs) == []
    assert len(theirs) > 300  # busybox's applet links: the walk saw the whole tree
    diff = differences(ours, theirs)
    if diff:
        pytest.fail(f"{len(diff)} differences, ours (overlay of {len(diff_dirs)} diff dirs) vs umoci unpack:\n"
                    + "\n".join(diff), pytrace=False)
