"""``runner run --userns=auto`` (issue 20): a root-started container in a user namespace of its own, its ids a
block of a user's subordinate ranges (runner/isolation/idmap.py).

The block's owner is a user of the test's own making (tests/rootless.py), named in the test's settings file
(``root-auto-userns-user``): nothing of the machine's /etc/subuid is read or changed but that user's lines,
which userdel removes. What is checked: the image's owners are the same inside (idmapped layers), the
container's root is the block's first id on the host, it cannot reach what host root owns (a sentinel), two
containers get two blocks, what the container writes is committed with the image's ids, exec joins the same
namespace, and rm frees the block.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.rootless import User, user
from tests.tools import Tools, detached, one_line_error

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def owner(tmp_path: Path, tools: Tools) -> Iterator[User]:
    homes = tmp_path / "homes"
    homes.mkdir(mode=0o755)
    with user(homes, ranges=True) as made:
        tools.configure(**{"root-auto-userns-user": made.name})
        try:
            yield made
        finally:  # a failed test's containers stay in its store: their leases go with the test's user
            for lease in _leases(made):
                lease.unlink()


def _leases(owner: User) -> list[Path]:
    assert owner.subuids is not None
    return [p for p in Path("/run/strata-userns").glob("*") if p.name == str(owner.subuids[0])]


def test_a_container_of_its_own_ids_sees_the_images_owners(tools: Tools, owner: User, stored_test_image: str,
                                                            tmp_path: Path) -> None:
    assert owner.subuids is not None
    base = owner.subuids[0]
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host root's\n")
    sentinel.chmod(0o600)
    ran = tools.runner("run", "--rm", "--userns=auto", "-v", f"{tmp_path}:/host", stored_test_image, "sh", "-c",
                       "id -u; cat /proc/self/uid_map; stat -c '%u:%g' /etc/passwd /bin/busybox; touch /x && "
                       "stat -c '%u' /x; cat /host/sentinel 2>&1; { echo written > /host/sentinel; } 2>&1; "
                       "cat /proc/self/status | grep CapEff")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(base), "65536"]
    assert lines[2:4] == ["0:0", "0:0"]  # as in the image's tar, through the idmapped layers
    assert lines[4] == "0"
    assert "Permission denied" in lines[5] and "Permission denied" in lines[6], lines
    assert sentinel.read_text() == "host root's\n"
    assert lines[7].split()[1] == "00000000a80425fb"  # Docker's capabilities, in its own namespace only
    assert _leases(owner) == []


def test_two_containers_get_two_blocks_and_exec_joins_the_containers(tools: Tools, owner: User,
                                                                      stored_test_image: str) -> None:
    assert owner.subuids is not None
    with detached(tools, "--userns=auto", stored_test_image, "sleep", "300") as first:
        got = tools.runner("run", "--rm", "--userns=auto", stored_test_image, "cat", "/proc/self/uid_map")
        # the owner has one range of 65536 ids: one block, which the first container holds
        one_line_error(got, 125, "every block of 65536 ids of user")
        ran = tools.runner("exec", first, "sh", "-c", "cat /proc/self/uid_map; id -u")
        assert ran.out.split() == ["0", str(owner.subuids[0]), "65536", "0"], ran
        assert len(_leases(owner)) == 1
    assert _leases(owner) == []


def test_commit_maps_the_containers_ids_back(tools: Tools, owner: User, stored_test_image: str) -> None:
    made = tools.runner("run", "--userns=auto", "--name", "cc", stored_test_image, "sh", "-c",
                        "mkdir /d && echo data > /d/f && chown 42:43 /d/f && rm -f /bin/true")
    assert made.code == 0, made.err
    upper = next(tools.root.glob("containers/*/upper"))
    assert owner.subuids is not None
    assert os.stat(upper / "d" / "f").st_uid == owner.subuids[0] + 42  # on disk: the block's ids
    assert tools.runner("commit", "cc", "localhost/c:1").code == 0
    ran = tools.runner("run", "--rm", "localhost/c:1", "sh", "-c", "stat -c '%u:%g' /d /d/f; ls /bin/true 2>&1")
    assert ran.out.splitlines()[:2] == ["0:0", "42:43"], ran
    assert "No such file" in ran.out.splitlines()[2]
    assert tools.runner("rm", "cc").code == 0
    assert _leases(owner) == []


def test_what_userns_auto_cannot_be_combined_with_is_refused(tools: Tools, owner: User,
                                                              stored_test_image: str) -> None:
    one_line_error(tools.runner("run", "--rm", "--userns=keep-id", stored_test_image, "true"), 125,
                   "invalid --userns 'keep-id'")
    one_line_error(tools.runner("run", "--rm", "--userns=auto", "--runtime", "runc", stored_test_image, "true"),
                   125, "--userns=auto runs under Strata's own executor")
    tools.configure(**{"root-auto-userns-user": "strata-nobody-here"})
    one_line_error(tools.runner("run", "--rm", "--userns=auto", stored_test_image, "true"), 125,
                   "--userns=auto takes its ids from user strata-nobody-here's ranges")
    assert json.loads(tools.runner("ps", "-a", "--format", "{{json .}}").out or "null") is None


def test_mode_of_the_lease_directory(owner: User, tools: Tools, stored_test_image: str) -> None:
    assert tools.runner("run", "--rm", "--userns=auto", stored_test_image, "true").code == 0
    assert stat.S_IMODE(os.stat("/run/strata-userns").st_mode) == 0o700
