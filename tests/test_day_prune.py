"""Issue 22, item 4's pruning: ``runner prune`` and ``runner container prune`` ask Docker's y/N without ``-f`` (no
answer, or the end of input, is no), ``runner system prune [-a] [-f]`` spans both tools' stores: stopped
containers, unused networks, dangling images (with -a every image no container uses), and Docker's summary."""

from __future__ import annotations

import re

from tests.marks import also_as_user, needs_root, needs_tools
from tests.test_network import Host, host  # noqa: F401 - the stand-in host's fixture
from tests.tools import Tools, detached

pytestmark = [needs_root, needs_tools]

WARNING = "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "


def _names(tools: Tools) -> list[str]:
    listed = tools.runner("ps", "-a", "--format", "{{.Names}}")
    assert listed.code == 0, listed.err
    return sorted(listed.out.split())


def _stopped(tools: Tools, image: str) -> list[str]:
    """An exited container and a created one; their IDs."""
    assert tools.runner("run", "--name", "exited", image, "true").code == 0
    created = tools.runner("create", "--name", "created", image, "true")
    assert created.code == 0, created.err
    ids = tools.runner("ps", "-aq", "--no-trunc", "-f", "status=exited", "-f", "status=created").out.split()
    assert len(ids) == 2
    return sorted(ids)


@also_as_user
def test_prune_asks_and_only_y_goes_on(tools: Tools, stored_test_image: str) -> None:
    ids = _stopped(tools, stored_test_image)
    with detached(tools, "--name", "up", stored_test_image, "sleep", "60"):
        for answer in ("n\n", "", "\n", "yes please\n"):  # no, the end of input, nothing, anything but y
            said = tools.runner("prune", stdin=answer)
            assert (said.code, said.out, said.err) == (0, WARNING, ""), (answer, said)
            assert _names(tools) == ["created", "exited", "up"]
        said = tools.runner("container", "prune", stdin=" Y \n")
        assert said.code == 0, said.err
        assert said.out.startswith(WARNING + "Deleted Containers:\n")
        body = said.out.removeprefix(WARNING).splitlines()
        assert sorted(body[1:3]) == ids and body[3] == "" and re.fullmatch(r"Total reclaimed space: [\d.]+k?B",
                                                                           body[4]), said.out
        assert _names(tools) == ["up"]  # the running one stays


def test_prune_f_asks_nothing(tools: Tools, stored_test_image: str) -> None:
    ids = _stopped(tools, stored_test_image)
    pruned = tools.runner("prune", "-f")
    assert pruned.code == 0 and pruned.out.splitlines()[0] == "Deleted Containers:", pruned.out
    assert sorted(pruned.out.splitlines()[1:3]) == ids
    assert _names(tools) == []
    nothing = tools.runner("container", "prune", "--force")
    assert (nothing.code, nothing.out) == (0, "Total reclaimed space: 0B\n")


def test_system_prune_without_a_keeps_tagged_images_and_sweeps_dangling_ones(tools: Tools, stored_test_image: str,
                                                                            rich_image: str) -> None:
    assert tools.puller("pull", "-q", rich_image).code == 0
    assert tools.runner("create", "--name", "on-rich", rich_image, "true").code == 0
    assert tools.puller("rmi", "-f", rich_image).code == 0  # untagged; the container keeps its layers: dangling
    asked = tools.runner("system", "prune", stdin="n\n")
    assert asked.code == 0 and asked.out == (
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one "
        "container\n  - all dangling images\n\nAre you sure you want to continue? [y/N] ")
    assert _names(tools) == ["on-rich"]
    pruned = tools.runner("system", "prune", "-f")
    assert pruned.code == 0, pruned.err
    sections = pruned.out.split("\n\n")
    assert sections[0].splitlines()[0] == "Deleted Containers:" and len(sections[0].splitlines()) == 2
    assert sections[1].splitlines()[0] == "Deleted Images:", pruned.out
    assert all(re.fullmatch(r"deleted: sha256:[0-9a-f]{64}", line) for line in sections[1].splitlines()[1:])
    assert re.fullmatch(r"Total reclaimed space: [\d.]+[kM]?B\n", sections[2]), pruned.out
    assert tools.puller("images", "--format", "{{.Repository}}:{{.Tag}}").out == f"{stored_test_image}\n"
    checked = tools.puller("fsck")
    assert checked.code == 0, checked.out + checked.err
    assert tools.runner("run", "--rm", stored_test_image, "true").code == 0


@also_as_user
def test_system_prune_a_removes_every_image_no_container_uses(tools: Tools, stored_test_image: str,
                                                             rich_image: str) -> None:
    assert tools.puller("pull", "-q", rich_image).code == 0
    assert tools.runner("create", "--name", "stopped", rich_image, "true").code == 0
    with detached(tools, "--name", "up", stored_test_image, "sleep", "60"):
        asked = tools.runner("system", "prune", "-a")  # no input: no
        assert "  - all images without at least one container associated to them\n" in asked.out
        assert _names(tools) == ["stopped", "up"]
        pruned = tools.runner("system", "prune", "--all", "--force")
        assert pruned.code == 0, pruned.err
        assert "Deleted Containers:\n" in pruned.out and "Deleted Images:\nuntagged: " + rich_image in pruned.out
        assert _names(tools) == ["up"]
        kept = tools.puller("images", "--format", "{{.Repository}}:{{.Tag}}").out
        assert kept == f"{stored_test_image}\n"  # a running container uses it
        assert tools.puller("fsck").code == 0
    nothing = tools.runner("system", "prune", "-a", "-f")  # now nothing uses it
    assert nothing.code == 0 and "untagged: " + stored_test_image in nothing.out
    assert tools.puller("images", "-q").out == ""


def test_system_prune_removes_the_networks_no_container_is_on(host: Host) -> None:  # noqa: F811
    """In a throwaway network namespace (tests/test_network.py's stand-in host), as every network test."""
    host.runner("network", "create", "front")
    assert " front " in host.runner("network", "ls").stdout
    pruned = host.runner("system", "prune", "-f")
    assert pruned.stdout == "Deleted Networks:\nfront\n\nTotal reclaimed space: 0B\n", pruned.stdout
    assert " front " not in host.runner("network", "ls").stdout
