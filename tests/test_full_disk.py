"""A full disk during a pull (issue 13): one line naming the cause, a non-zero exit, nothing partial kept, the
space given back, and fsck clean; the same pull then succeeds once there is room."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of the test's own, unmounted afterwards whatever happened."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_pull_into_a_full_disk(tools: Tools, small_disk: Path, rich_image: str) -> None:
    full = Tools(small_disk / "root", tools.docker_config, tools.settings)
    empty = used_bytes(small_disk)
    result = full.puller("pull", rich_image)
    one_line_error(result, 1, "No space left on device", tool="puller")
    assert not list((full.root / "tmp").iterdir()), "work in progress kept"
    assert not list((full.root / "layers").iterdir()), "a layer of a failed pull kept"
    assert rich_image not in (full.root / "index.json").read_text()
    checked = full.puller("fsck")
    assert checked.code == 0, checked.out + checked.err
    assert used_bytes(small_disk) - empty < 512 * 1024, "the space was not given back"
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = full.puller("pull", "--quiet", rich_image)
    assert again.code == 0, again.err
    assert full.puller("fsck").code == 0
