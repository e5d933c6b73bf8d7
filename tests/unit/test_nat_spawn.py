"""runner/net/nat.py runs ``nft`` without subprocess (issue 21): its spawn and PATH lookup, checked with sh."""

from __future__ import annotations

import shutil

import pytest

from runner.net import nat


def test_spawn_gives_the_exit_code_output_and_errors_and_feeds_stdin() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    big = "x" * 300_000  # more than a pipe holds: memfds need no pump
    code, out, err = nat.spawn([sh, "-c", "wc -c; echo oops >&2; exit 3"], big)
    assert (code, out.strip(), err) == (3, str(len(big)), "oops\n")


def test_spawn_reports_a_signal_as_a_negative_code() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    assert nat.spawn([sh, "-c", "kill -9 $$"])[0] == -9


def test_which_finds_what_shutil_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sh", "ls", "no-such-tool-here"):
        assert nat.which(name) == shutil.which(name)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert nat.which("sh") is None
