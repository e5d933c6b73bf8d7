"""``--detach-keys`` as Docker reads them (moby/term's ToBytes) and the escape proxy that matches them in what
the user types (runner/executor/attach.py)."""

from __future__ import annotations

import pytest

from runner.executor.attach import DEFAULT_KEYS, Escape, detach_keys
from shared.errors import StrataError


@pytest.mark.parametrize(("text", "keys"), [
    (None, b"\x10\x11"), ("", b"\x10\x11"), ("ctrl-p,ctrl-q", b"\x10\x11"), ("ctrl-a,x", b"\x01x"),
    ("a", b"a"), ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x00\x1b\x1c\x1d\x1e\x1f"),
])
def test_detach_keys_as_docker_reads_them(text: str | None, keys: bytes) -> None:
    assert detach_keys(text) == keys


# "X,,": an empty key between commas is no character; "é": two bytes, as Go's len counts
@pytest.mark.parametrize("text", ["ctrl-1", "ctrl-A", "ab", "ctrl-p,ctrl", "é", "DEL", "X,,"])
def test_bad_detach_keys_in_docker_s_words(text: str) -> None:
    with pytest.raises(StrataError, match=rf"^Invalid detach keys \({text}\) provided$"):
        detach_keys(text)


def test_the_escape_proxy_holds_a_partial_match_and_passes_it_on_when_it_fails() -> None:
    escape = Escape(DEFAULT_KEYS)
    assert escape.feed(b"ls\x10") == (b"ls", False)  # held: maybe the keys
    assert escape.feed(b"x") == (b"\x10x", False)  # not: passed on as typed
    assert escape.feed(b"\x10\x10") == (b"\x10", False)  # the second may start the keys
    assert escape.feed(b"\x11rest") == (b"", True)  # detached: nothing after the keys goes on
    assert Escape(b"\x01x").feed(b"a\x01xb") == (b"a", True)
