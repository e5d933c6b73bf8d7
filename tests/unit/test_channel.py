"""The one message protocol between the runner and what it starts (runner/executor/channel.py): every message
survives the trip, a Failed message arrives as one bounded line whatever was sent, a pty's fd travels with its
message and nowhere else, and anything else on the line is an error. Plain socketpairs, no root."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from runner.executor.channel import MAX_MESSAGE, Channel, Failed, Go, Pty, Running, SetupFailed


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    a, b = Channel.pair()
    yield a, b
    a.close()
    b.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("message", [Go(), Running(), Failed("exec: 'nope': executable file not found", 127),
                                     Failed("", 125), Failed("écrit ✓", 126), SetupFailed(7, 1),
                                     SetupFailed(10, 20, 5)])
def test_a_message_arrives_as_it_was_sent(pair: tuple[Channel, Channel],
                                          message: Go | Running | Failed | SetupFailed) -> None:
    pair[0].send(message)
    assert pair[1].recv() == message


def test_each_message_is_one_packet(pair: tuple[Channel, Channel]) -> None:
    pair[0].send(Go())
    pair[0].send(Failed("late", 125))
    assert pair[1].recv() == Go()
    assert pair[1].recv() == Failed("late", 125)


def test_end_of_file_when_the_other_end_is_closed(pair: tuple[Channel, Channel]) -> None:
    pair[0].send(Running())
    pair[0].close()
    assert pair[1].recv() == Running()
    assert pair[1].recv() is None


def test_a_long_failure_is_cut_to_fit_one_packet(pair: tuple[Channel, Channel]) -> None:
    pair[0].send(Failed("x" * (3 * MAX_MESSAGE), 125))
    got = pair[1].recv()
    assert isinstance(got, Failed) and got.code == 125
    assert len(got.message) > 0 and set(got.message) == {"x"}
    assert len(json.dumps({"type": "failed", "message": got.message, "code": 125}).encode()) <= MAX_MESSAGE


def test_a_failure_s_control_characters_never_reach_the_terminal(pair: tuple[Channel, Channel]) -> None:
    pair[0].send(Failed("line one\nline two\x1b[2J\r", 125))
    assert pair[1].recv() == Failed("line one?line two?[2J?", 125)


def test_a_failure_without_a_code_is_docker_s_125(pair: tuple[Channel, Channel]) -> None:
    pair[0].sock.send(b'{"type": "failed", "message": "no code"}')
    assert pair[1].recv() == Failed("no code", 125)


def test_a_pty_message_carries_its_fd(pair: tuple[Channel, Channel]) -> None:
    read, write = os.pipe()
    try:
        pair[0].send(Pty(write))
        got = pair[1].recv()
        assert isinstance(got, Pty) and got.fd not in (read, write)
        os.write(got.fd, b"through")
        os.close(got.fd)
        assert os.read(read, 7) == b"through"
    finally:
        os.close(read)
        os.close(write)


def test_a_pty_message_without_an_fd_is_an_error(pair: tuple[Channel, Channel]) -> None:
    pair[0].sock.send(b'{"type": "pty"}')
    with pytest.raises(ValueError, match="unexpected message"):
        pair[1].recv()


def test_an_fd_sent_with_any_other_message_is_closed_not_kept(pair: tuple[Channel, Channel]) -> None:
    read, write = os.pipe()
    try:
        before = _open_fds()
        socket.send_fds(pair[0].sock, [b'{"type": "go"}'], [read])
        assert pair[1].recv() == Go()
        assert _open_fds() == before
    finally:
        os.close(read)
        os.close(write)


@pytest.mark.parametrize("packet", [b'{"type": "hello"}', b'{"kind": "go"}', b'{}'])
def test_an_unknown_message_is_an_error(pair: tuple[Channel, Channel], packet: bytes) -> None:
    pair[0].sock.send(packet)
    with pytest.raises(ValueError, match="unexpected message on the channel"):
        pair[1].recv()


def test_both_ends_are_close_on_exec(pair: tuple[Channel, Channel]) -> None:
    assert not os.get_inheritable(pair[0].fileno()) and not os.get_inheritable(pair[1].fileno())


def test_the_stage_s_failure_arrives_as_stage_c_writes_it(pair: tuple[Channel, Channel]) -> None:
    """stage.c's snprintf, byte for byte: the numbers, and nothing the runner would print as text."""
    pair[0].sock.send(b'{"type": "setup-failed", "step": 13, "errno": 0, "at": 0}')
    assert pair[1].recv() == SetupFailed(13, 0, 0)

