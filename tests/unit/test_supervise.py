"""The one supervise loop (runner/executor/supervise.py): Docker's exit code from a wait status or a returncode,
the signals the runner forwards to PID 1 and the handlers it puts back, the relay of a process's output into the
log, and the loop end to end on a forked child of the test. No root, network or tool: plain processes and pipes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.executor.process import Stdio
from runner.executor.supervise import (
    FORWARDED_SIGNALS,
    Started,
    exit_code,
    forward,
    forwarding,
    from_returncode,
    relay,
    supervise,
    wait_status,
)
from runner.logs import writer
from runner.logs.writer import LogWriter
from shared.errors import StrataError

PID_LIMIT = 1 << 22  # the kernel's largest pid_max: no process ever has a pid above it


def _child(exit_with: int = 0, sig: int | None = None, out: int = -1, text: bytes = b"") -> int:
    """A forked child that writes ``text`` to ``out``, then dies of ``sig`` or exits with ``exit_with``."""
    pid = os.fork()
    if pid == 0:
        try:
            if text:
                os.write(out, text)
            if sig is not None:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
        finally:
            os._exit(exit_with)
    return pid


@pytest.fixture
def stdio() -> Iterator[Stdio]:
    """Pipes as the container's stdio; every test closes the child's ends (a fork's copy stays in the child)."""
    pipes = Stdio(tty=False)
    yield pipes
    pipes.close()


def _records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- exit codes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(0, 0), (1 << 8, 1), (3 << 8, 3), (125 << 8, 125), (255 << 8, 255)])
def test_an_exit_status_is_the_process_s_own_code(status: int, code: int) -> None:
    assert exit_code(status) == code


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, 137), (signal.SIGTERM, 143), (signal.SIGINT, 130),
                                           (signal.SIGSEGV, 139)])
def test_death_by_signal_n_is_128_plus_n_as_docker_reports_it(sig: int, code: int) -> None:
    assert exit_code(sig) == code  # a wait status of a killed process is its signal number (no core dump bit)


@pytest.mark.parametrize(("returncode", "code"), [(0, 0), (7, 7), (-9, 137), (-15, 143), (255, 255)])
def test_a_returncode_maps_as_its_wait_status_does(returncode: int, code: int) -> None:
    assert from_returncode(returncode) == code


def test_a_real_child_s_exit_code() -> None:
    assert exit_code(wait_status(_child(exit_with=42))) == 42


def test_a_real_child_killed_by_sigterm_is_143() -> None:
    assert exit_code(wait_status(_child(sig=signal.SIGTERM))) == 143


def test_waiting_for_a_process_that_is_not_ours_is_one_error_after_the_grace() -> None:
    with pytest.raises(StrataError, match="is not ours to wait for"):
        wait_status(1, grace=0.05)


# -- signals ----------------------------------------------------------------------------------------------------------


def test_the_forwarded_signals_are_the_ones_a_user_sends_to_stop_or_poke_a_command() -> None:
    assert set(FORWARDED_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                                      signal.SIGUSR2}


def test_what_cannot_or_must_not_be_forwarded_is_not() -> None:
    assert not {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGWINCH} & \
        set(FORWARDED_SIGNALS)


def test_forwarding_puts_every_handler_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in FORWARDED_SIGNALS}
    with forwarding(os.getpid()):
        assert all(signal.getsignal(sig) is not before[sig] for sig in FORWARDED_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in FORWARDED_SIGNALS} == before


def test_forwarding_puts_them_back_when_the_block_fails() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), forwarding(os.getpid()):
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_we_receive_goes_to_the_process() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        os.write(write, b"ready")
        signal.pause()
        os._exit(0)
    os.close(write)
    assert os.read(read, 5) == b"ready"
    os.close(read)
    with forwarding(pid):
        os.kill(os.getpid(), signal.SIGUSR1)  # ours: the handler passes it on
    assert exit_code(wait_status(pid)) == 128 + signal.SIGUSR1


def test_forwarding_to_a_process_that_is_gone_is_no_error() -> None:
    forward(PID_LIMIT + 1, signal.SIGTERM)


# -- relay and the loop -----------------------------------------------------------------------------------------------


def test_started_closes_its_fds_once_however_often_it_is_asked(stdio: Stdio) -> None:
    stdio.close_child_ends()
    read, write = os.pipe()
    os.close(write)
    started = Started(0, stdio, master=read)
    started.close()
    started.close()
    assert started.master is None and stdio.stdout == -1
    with pytest.raises(OSError):
        os.fstat(read)


def test_relay_writes_stdout_and_stderr_to_the_log(tmp_path: Path, stdio: Stdio) -> None:
    os.write(stdio.child[1], b"out\n")
    os.write(stdio.child[2], b"err\n")
    stdio.close_child_ends()
    log = LogWriter(tmp_path / "log.json")
    try:
        relay(Started(0, stdio), feed=False, log=log, echo=False)
    finally:
        log.close()
    assert sorted((r["stream"], r["log"]) for r in _records(tmp_path / "log.json")) == \
        [("stderr", "err\n"), ("stdout", "out\n")]


def _pump_sleeps(monkeypatch: pytest.MonkeyPatch, stdio: Stdio, *script: tuple[int, bytes | None]) -> list[float]:
    """relay's pump on STDIO with a clock that never moves (every wakeup comes "at once" after the last) and a
    sleep that only counts. Before each of its waits in select, the next step of SCRIPT happens: (fd, data)
    writes DATA to that child end, (fd, None) closes it. The sleeps it took."""
    slept: list[float] = []
    steps = list(script)
    real_select = writer.select.select

    def select(r: list[int], w: list[int], x: list[int], *timeout: float | None) \
            -> tuple[list[int], list[int], list[int]]:
        if steps:
            fd, data = steps.pop(0)
            if data is None:
                os.close(fd)
            else:
                os.write(fd, data)
        return real_select(r, w, x, *timeout)

    monkeypatch.setattr(writer.time, "sleep", slept.append)
    monkeypatch.setattr(writer.time, "monotonic", lambda: 100.0)
    monkeypatch.setattr(writer.select, "select", select)
    os.close(stdio.child[0])
    relay(Started(0, stdio), feed=False, log=None, echo=False)
    return slept


def test_the_end_of_the_streams_is_never_waited_for(monkeypatch: pytest.MonkeyPatch, stdio: Stdio) -> None:
    """A command that writes nothing and exits (``exec C /bin/true``): its pipes close one wakeup apart, and the
    pump returns without the batching wait."""
    out, err = stdio.child[1], stdio.child[2]
    assert _pump_sleeps(monkeypatch, stdio, (out, None), (err, None)) == []


def test_a_stream_that_keeps_writing_is_read_in_batches(monkeypatch: pytest.MonkeyPatch, stdio: Stdio) -> None:
    """Data right after data: one wait of BUSY before the next read; none for the end that follows."""
    out, err = stdio.child[1], stdio.child[2]
    assert _pump_sleeps(monkeypatch, stdio, (out, b"one"), (out, b"two"), (out, None), (err, None)) == [writer.BUSY]


def test_streams_that_take_turns_are_not_batched(monkeypatch: pytest.MonkeyPatch, stdio: Stdio) -> None:
    """stdout, stderr, stdout... each right after the other: no batching wait (it would put one stream's batch
    before the other's, out of the order written); a stream alone again is batched."""
    out, err = stdio.child[1], stdio.child[2]
    assert _pump_sleeps(monkeypatch, stdio, (out, b"1"), (err, b"2"), (out, b"3"), (err, b"4"), (out, None),
                        (err, None)) == []


def test_without_feed_the_process_reads_end_of_input(stdio: Stdio) -> None:
    stdio.close_child_ends()
    relay(Started(0, stdio), feed=False, log=None, echo=False)
    assert stdio.stdin == -1  # our end closed: its reads see end of file


def test_supervise_returns_the_exit_code_and_logs_the_output(tmp_path: Path, stdio: Stdio) -> None:
    pid = _child(exit_with=3, out=stdio.child[1], text=b"hello\n")
    stdio.close_child_ends()
    told = []
    log = LogWriter(tmp_path / "log.json")
    try:
        code = supervise(Started(pid, stdio), False, log, False, running=lambda: told.append("running"))
    finally:
        log.close()
    assert code == 3 and told == ["running"]
    assert [r["log"] for r in _records(tmp_path / "log.json")] == ["hello\n"]
    assert stdio.stdout == -1  # closed by the loop


def test_signals_are_forwarded_while_it_runs_and_given_back_after(stdio: Stdio) -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    pid = _child()
    stdio.close_child_ends()
    supervise(Started(pid, stdio), False, None, False, running=lambda: seen.append(signal.getsignal(signal.SIGTERM)))
    assert seen[0] is not before and signal.getsignal(signal.SIGTERM) is before


def test_exec_s_loop_forwards_nothing(stdio: Stdio) -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    pid = _child(exit_with=5)
    stdio.close_child_ends()
    code = supervise(Started(pid, stdio), False, None, False,
                     running=lambda: seen.append(signal.getsignal(signal.SIGTERM)), forward_signals=False)
    assert code == 5 and seen == [before]
