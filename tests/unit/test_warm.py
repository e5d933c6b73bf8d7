"""Which command lines the warm pull answers itself (puller/warm.py): ``[--root DIR] pull [-q] REF`` exactly;
every other one goes to the full command line, which knows every option and says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from puller.warm import Command, parse


@pytest.mark.parametrize(("argv", "expected"), [
    (["pull", "busybox"], Command(None, False, "busybox")),
    (["--root", "/s", "pull", "-q", "busybox"], Command(Path("/s"), True, "busybox")),
    (["--root=/s", "pull", "busybox", "--quiet"], Command(Path("/s"), True, "busybox")),
    (["--root", "/a", "--root", "/b", "pull", "x"], Command(Path("/b"), False, "x")),  # click: the last one wins
])
def test_the_one_form_is_answered(argv: list[str], expected: Command) -> None:
    assert parse(argv) == expected


@pytest.mark.parametrize("argv", [
    [], ["pull"], ["images"], ["pull", "-q"], ["pull", "a", "b"], ["--root"], ["--root", "", "pull", "x"],
    ["--rooted", "/s", "pull", "x"], ["-v", "pull", "x"], ["pull", "--platform", "linux/arm64", "x"],
    ["pull", "--jobs", "2", "x"], ["pull", "-j2", "x"], ["pull", "--mirror", "m", "x"], ["pull", "--", "x"],
    ["pull", "--insecure-registry", "h", "x"], ["pull", "--help"], ["pull", "-qj", "2", "x"],
])
def test_every_other_command_line_goes_the_full_way(argv: list[str]) -> None:
    assert parse(argv) is None
