"""Issue 12, the runner's side: what a Docker user relies on at the terminal and in scripts. ``run -it`` keeps
what was typed before the shell was up; limit options are refused as Docker refuses them; ``ps`` shows Docker's
columns, filters and formats; ``inspect`` has ``docker inspect``'s shape."""

from __future__ import annotations

import sys

import pytest

from runner import cgroups
from shared.errors import Kind, StrataError
from tests.conftest import Tools, needs_root, needs_tools, one_line_error
from tests.test_tty import Terminal

pytestmark = [needs_root, needs_tools]


def test_typeahead_before_the_shell_starts_reaches_it(tools: Tools, test_image: str) -> None:
    """A line typed right after pressing Enter on ``run -it`` (before the container's shell is up, while the
    runner's own terminal is still in cooked mode) is executed by the shell, not dropped by the switch to raw."""
    assert tools.puller("pull", test_image).code == 0
    term = Terminal([sys.executable, "-m", "runner", "--root", str(tools.root), "run", "--rm", "-it", test_image,
                     "sh"])
    try:
        term.type("echo TYPED$((40+2)); exit 7\r")  # the shell is not up yet: the runner has just been spawned
        out = term.read_until(b"TYPED42")
    finally:
        code = term.close()
    assert b"TYPED42" in out and code == 7


# -- limits, as Docker's daemon checks them ---------------------------------------------------------------------


@pytest.mark.parametrize(("cpus", "expected"), [(0.01, 0.01), (1.5, 1.5), (2, 2), (0, None), (None, None)])
def test_cpus_in_range_are_taken(cpus: float | None, expected: float | None) -> None:
    assert cgroups.check_cpus(cpus, 2) == expected


@pytest.mark.parametrize("cpus", [99, 2.01, 0.005, -1, float("nan"), float("inf")])
def test_cpus_out_of_range_are_refused_in_dockers_words(cpus: float) -> None:
    with pytest.raises(StrataError) as e:
        cgroups.check_cpus(cpus, 2)
    assert e.value.kind == Kind.USAGE
    assert "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available" in str(e.value)


@pytest.mark.parametrize(("text", "expected"), [("6m", 6 << 20), ("512M", 512 << 20), ("1g", 1 << 30),
                                                ("1GiB", 1 << 30), ("8192 kb", 8 << 20),
                                                ("1.5g", 3 << 29), ("1t", 1 << 40), ("0", None)])
def test_memory_sizes_as_docker_reads_them(text: str, expected: int | None) -> None:
    assert cgroups.Limits.parse_memory(text) == expected


@pytest.mark.parametrize(("text", "words"), [("1k", "minimum memory limit allowed is 6MB"),
                                             ("6291455b", "minimum memory limit allowed is 6MB"),
                                             ("lots", "invalid size"), ("-1m", "invalid size"),
                                             ("1x", "invalid size")])
def test_memory_below_the_minimum_or_malformed_is_refused(text: str, words: str) -> None:
    with pytest.raises(StrataError) as e:
        cgroups.Limits.parse_memory(text)
    assert e.value.kind == Kind.USAGE and words in str(e.value) and "--memory" in str(e.value)


def test_pids_limit_zero_or_negative_is_no_limit() -> None:
    """Docker: ``--pids-limit`` 0 or -1 means unlimited; a positive one is the limit."""
    assert cgroups.Limits.from_options(None, None, -1, 2).pids is None
    assert cgroups.Limits.from_options(None, None, 0, 2).pids is None
    assert cgroups.Limits.from_options("64m", 1, 50, 2) == cgroups.Limits(64 << 20, 1, 50)


def test_limits_docker_refuses_fail_create_with_one_line(tools: Tools, test_image: str) -> None:
    """At the command line: exit 125 (Docker's for a run it refused), one line, nothing created."""
    assert tools.puller("pull", test_image).code == 0
    available = cgroups.host_cpus()
    one_line_error(tools.runner("run", "--rm", "--cpus", "99", test_image, "true"), 125,
                   f"range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available")
    one_line_error(tools.runner("create", "-m", "4m", test_image, "true"), 125,
                   "minimum memory limit allowed is 6MB")
    assert not (tools.root / "containers").exists() or list((tools.root / "containers").iterdir()) == []
    assert tools.runner("run", "--rm", "--cpus", str(available), "-m", "0", "--pids-limit", "-1", test_image,
                        "true").code == 0
