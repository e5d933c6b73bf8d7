"""The soak loop (scripts/soak), short: pull, run, run -d + exec + rm -f, run + prune, rmi, over and over on one
store, checking after every round that no mount, cgroup, process or work in progress was left and fsck is clean,
and that each command's peak memory stayed flat."""

from __future__ import annotations

from pathlib import Path

from tests.marks import needs_root, needs_tools
from tests.scripts import load_script

pytestmark = [needs_root, needs_tools]

ITERATIONS = 10  # scripts/soak defaults to 200


def test_soak_short(test_image: str, tmp_path: Path) -> None:
    report = load_script("soak").soak(test_image, tmp_path / "root", ITERATIONS)
    assert report["problems"] == [], report
    assert report["iterations"] == ITERATIONS
