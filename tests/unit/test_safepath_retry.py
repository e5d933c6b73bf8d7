"""openat2's EAGAIN (a rename or mount anywhere raced a RESOLVE_IN_ROOT ``..`` walk) is retried, a bounded number
of times, by the one wrapper every caller goes through: a busy host once failed a container's start on it (the
volume target ``/dotdot/...`` of tests/test_runner.py under runc, beside three parallel workers mounting)."""

from __future__ import annotations

import errno

import pytest

from shared.layer import safepath


def flaky(failures: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def call(dir_fd: int, name: str, flags: int, resolve: int) -> int:
        calls.append(resolve)
        if len(calls) <= failures:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable", name)
        return 42

    return calls, call


def test_eagain_is_retried_until_the_walk_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, call = flaky(5)
    monkeypatch.setattr(safepath, "_openat2", lambda: call)
    assert safepath.openat2(3, "dotdot/x", 0, safepath.RESOLVE_IN_ROOT) == 42
    assert len(calls) == 6
    assert safepath.open_subdir(3, "x") == 42


def test_eagain_that_never_ends_is_the_error_after_a_bounded_number_of_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, call = flaky(10_000)
    monkeypatch.setattr(safepath, "_openat2", lambda: call)
    with pytest.raises(BlockingIOError):
        safepath.openat2(3, "x", 0, safepath.RESOLVE_IN_ROOT)
    assert 1 < len(calls) <= 64
