"""Issue 22, item 1: ``run``/``create``/``bundle --pull missing|always|never`` as Docker's (default missing), the
pull done by ``puller pull`` in a child (its progress on stderr, the container's output alone on stdout), its
failure one line and 125; and ``runner images|pull|rmi|...`` pointing at the puller in one line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.marks import also_as_user, needs_root, needs_tools
from tests.scripts import Registry, image_script
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]


def _image_of(tools: Tools, container: str) -> str:
    shown = tools.runner("inspect", "-f", "{{.Image}}", container)
    assert shown.code == 0, shown.err
    return shown.out.strip()


def _image_id(tools: Tools, ref: str) -> str:
    shown = tools.puller("inspect", "-f", "{{.Id}}", ref)
    assert shown.code == 0, shown.err
    return shown.out.strip()


@also_as_user  # a user's runner runs the puller in the user's namespace, on the user's store
def test_run_pulls_a_missing_image_its_output_alone_on_stdout(tools: Tools, test_image: str) -> None:
    tools.root.mkdir(mode=0o700)
    tools.hand_over(tools.root)  # an empty store of the user's own (the test's dir is root's)
    ran = tools.runner("run", "--rm", test_image, "echo", "hello")
    assert (ran.code, ran.out) == (0, "hello\n"), ran.err
    lines = ran.err.splitlines()
    assert lines[0] == f"Unable to find image '{test_image}' locally", ran.err
    assert any(line.startswith("Status: Downloaded newer image for ") for line in lines), ran.err
    again = tools.runner("run", "--rm", test_image, "echo", "again")  # there now: no pull, nothing said
    assert (again.code, again.out, again.err) == (0, "again\n", "")
    created = tools.runner("create", "--pull", "missing", test_image, "true")
    assert created.code == 0 and created.out.count("\n") == 1 and created.err == "", created
    assert tools.runner("rm", created.out.strip()).code == 0


def test_pull_always_takes_the_moved_tag_missing_keeps_the_stored_one(tools: Tools, registry: Registry,
                                                                      test_layout: Path, rich_layout: Path) -> None:
    ref = f"{registry.address}/strata/day-pull-{uuid.uuid4().hex[:8]}:1"
    image_script.push(rich_layout, ref, tag=image_script.RICH_TAG)
    first = tools.runner("create", "--name", "first", ref, "true")  # missing: pulled
    assert first.code == 0 and "Unable to find image" in first.err, first.err
    old = _image_id(tools, ref)
    image_script.push(test_layout, ref)  # the tag moves in the registry
    assert tools.runner("create", "--name", "kept", ref, "true").code == 0
    assert _image_of(tools, "kept") == old  # missing: the store has it, the registry is not asked
    always = tools.runner("create", "--pull", "always", "--name", "fresh", ref, "true")
    assert always.code == 0 and "Unable to find image" not in always.err, always.err
    assert "Status: Downloaded newer image for " in always.err and always.out.count("\n") == 1
    assert _image_of(tools, "fresh") == _image_id(tools, ref) != old
    up_to_date = tools.runner("run", "--rm", "--pull=always", ref, "echo", "ran")
    assert up_to_date.code == 0 and up_to_date.out == "ran\n" and "Image is up to date" in up_to_date.err
    for name in ("first", "kept", "fresh"):
        assert tools.runner("rm", name).code == 0


def test_pull_never_and_a_missing_image(tools: Tools, test_image: str, registry: Registry) -> None:
    one_line_error(tools.runner("run", "--rm", "--pull", "never", test_image, "true"), 125,
                   f"No such image: {test_image}")
    one_line_error(tools.runner("create", "--pull=never", "nosuch/image", "true"), 125,
                   "No such image: nosuch/image:latest")  # Docker's familiar name, its tag added
    one_line_error(tools.runner("run", "--pull", "sometimes", test_image, "true"), 125,
                   "invalid pull option: 'sometimes': must be one of \"always\", \"missing\" or \"never\"")
    assert not (tools.root / "containers").exists() or not any((tools.root / "containers").iterdir())
    assert tools.puller("images", "-q").out == ""  # never pulled anything


def test_a_pull_that_fails_is_one_line_and_125(tools: Tools, registry: Registry) -> None:
    ref = f"{registry.address}/strata/never-pushed:1"
    failed = tools.runner("run", "--rm", ref, "true")
    lines = failed.err.splitlines()
    assert failed.code == 125 and failed.out == "", failed
    assert lines[0] == f"Unable to find image '{ref}' locally" and "Traceback" not in failed.err, failed.err
    assert lines[-1].startswith("runner: error: manifest of ") and "not found" in lines[-1], failed.err
    assert sum(line.startswith(("runner: error", "puller: error")) for line in lines) == 1, failed.err
    refused = tools.runner("create", "--pull", "always", "127.0.0.1:1/strata/nothing:1", "true")
    assert refused.code == 125 and refused.err.splitlines()[-1].startswith("runner: error: cannot reach registry")
    assert not (tools.root / "containers").exists() or not any((tools.root / "containers").iterdir())


def test_bundle_pulls_as_run_does(tools: Tools, test_image: str, tmp_path: Path) -> None:
    made = tools.runner("bundle", test_image, str(tmp_path / "b"))
    assert made.code == 0 and made.out == f"{tmp_path / 'b'}\n" and "Unable to find image" in made.err, made.err
    assert (tmp_path / "b" / "config.json").is_file()


@pytest.mark.parametrize(("typed", "puller"), [
    (("images",), "puller images"),
    (("image", "ls"), "puller images"),
    (("image", "rm", "busybox"), "puller rmi busybox"),
    (("pull", "busybox"), "puller pull busybox"),
    (("rmi", "-f", "busybox"), "puller rmi -f busybox"),
    (("push", "busybox", "h:5000/b"), "puller push busybox h:5000/b"),
    (("save", "-o", "b.tar", "busybox"), "puller save -o b.tar busybox"),
    (("load", "-i", "b.tar"), "puller load -i b.tar"),
    (("login", "-u", "me"), "puller login -u me"),
    (("logout",), "puller logout"),
    (("tag", "busybox", "mine:1"), "puller copy busybox mine:1"),
])
def test_the_image_verbs_point_at_puller(tools: Tools, typed: tuple[str, ...], puller: str) -> None:
    said = tools.runner(*typed)
    root = f"--root {tools.root} "
    one_line_error(said, 125, f"'runner {' '.join(typed)}' is '{puller.replace('puller ', 'puller ' + root, 1)}': "
                              "images are puller's")
