"""Volumes under an OCI runtime (issue 18 item 2). The runc and crun installed here look a bind's target up again
for its read-only remount, so the runner binds the ``-v`` volumes itself (our executor's code, the target resolved
once) on the overlay it mounts before ``create``, and leaves them out of the runtime's config.json; a volume under
a mount the runtime makes itself (/dev, /proc, /sys) stays the runtime's. The attack itself is
tests/test_devices_and_volumes.py::test_volume_target_swapped_during_start_never_lands_read_write; here: the
binds are made once per start and leave with ``stop`` and ``rm``, and ``runner bundle`` keeps every mount.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.tools import Tools, mounts_under

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def img(tools: Tools, test_image: str, no_leaks: None, executor: str) -> str:
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    return test_image


def mount_points(under: Path) -> list[str]:
    """The host's mount points below UNDER (mountinfo's fifth field), relative to it."""
    return sorted(line.split()[4].removeprefix(f"{under}/") for line in mounts_under(under)
                  if line.split()[4].startswith(f"{under}/"))


@pytest.mark.parametrize("executor", ["runc", "crun", "runner-oci"], indirect=True)
def test_volumes_are_bound_once_per_start_and_leave_with_the_container(tools: Tools, img: str, tmp_path: Path,
                                                                       executor: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("vol\n")
    made = tools.runner("run", "-d", "--name", "vols", "-v", f"{src}:/data:ro", "-v", f"{src}:/dev/vol", img,
                        "sleep", "600")
    assert made.code == 0, made.err
    container = tools.root / "containers" / made.out.strip()
    merged = container / "merged"
    mounts = json.loads((container / "oci" / "config.json").read_text())["mounts"]
    given = {m["destination"] for m in mounts}
    assert "/dev/vol" in given and "/data" not in given and "/etc/hosts" not in given, given
    for start in range(2):
        # the runner's binds on the host; /dev/vol is the runtime's, made in the container's namespace
        assert mount_points(merged) == ["data", "etc/hostname", "etc/hosts", "etc/resolv.conf"], start
        data = next(ln.split() for ln in mounts_under(merged) if ln.split()[4] == f"{merged}/data")
        assert not any(f.startswith("master:") for f in data[6:data.index("-")]), data  # the host's mounts stay out
        seen = tools.runner("exec", "vols", "sh", "-c", "cat /data/f /dev/vol/f /etc/hostname; touch /data/x")
        assert seen.out.startswith("vol\nvol\n") and seen.code != 0 and not (src / "x").exists(), seen
        assert tools.runner("stop", "-t", "1", "vols").code == 0
        assert mounts_under(tools.root) == []
        if start == 0:
            assert tools.runner("start", "vols").code == 0
    assert tools.runner("rm", "-f", "vols").code == 0
    assert mounts_under(tools.root) == []


def test_a_bundle_keeps_every_mount(tools: Tools, test_image: str, tmp_path: Path) -> None:
    """Nobody binds anything for a bundle's runtime: its config.json keeps the volumes and network files, and
    its rootfs is the image's tree alone."""
    assert tools.puller("pull", test_image).code == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("vol\n")
    bundle = tmp_path / "bundle"
    made = tools.runner("bundle", "-v", f"{src}:/data:ro", test_image, str(bundle), "true")
    assert made.code == 0, made.err
    mounts = {m["destination"]: m for m in json.loads((bundle / "config.json").read_text())["mounts"]}
    assert mounts["/data"]["source"] == str(src) and "rro" in mounts["/data"]["options"]
    assert mounts["/etc/hosts"]["source"] == str(bundle / "hosts")
    assert not (bundle / "rootfs" / "data" / "f").exists()
    assert mounts_under(tools.root) == []
