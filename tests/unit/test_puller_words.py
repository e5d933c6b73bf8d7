"""puller's words for what a user meets (issue 22): a connection that fails is said in words, with its reason from
the bottom of the exception chain requests and urllib3 build (never a class name); a resumed download's rate
counts only the bytes that came over the network."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import socket
import ssl

import pytest
import requests
import urllib3

from puller.progress import Bars, Progress
from puller.registry import transport
from shared.digest import Digest
from shared.layer import parallel
from shared.layer.compress import Counted


def as_requests_raises(cause: BaseException) -> BaseException:
    """CAUSE wrapped as urllib3 2 and requests wrap it: NewConnectionError(...) from CAUSE, in a MaxRetryError's
    reason, in requests' ConnectionError."""
    inner = urllib3.exceptions.NewConnectionError(None, f"Failed to establish a new connection: {cause}")  # type: ignore[arg-type]
    inner.__cause__ = cause
    retries = urllib3.exceptions.MaxRetryError(None, "/v2/", reason=inner)  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(retries)


@pytest.mark.parametrize(("code", "words", "final"), [
    (errno.ENETUNREACH, "network is unreachable", True),
    (errno.EHOSTUNREACH, "no route to host", True),
    (errno.ECONNREFUSED, "connection refused", True),
    (errno.ETIMEDOUT, "connection timed out", False),
    (errno.ECONNRESET, "connection reset by peer", False),
])
def test_an_errno_deep_in_the_chain_is_said_in_words(code: int, words: str, final: bool) -> None:
    exc = as_requests_raises(OSError(code, "ignored"))
    assert transport.failure(exc) == (words, final)
    assert transport.unreachable(exc) == (words if final else None)


def test_a_real_refused_connection() -> None:
    """Not a hand-made chain: requests itself against a port just closed on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5)
    assert transport.failure(caught.value) == ("connection refused", True)


def test_names_tls_and_timeouts() -> None:
    unknown = as_requests_raises(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert transport.failure(unknown) == ("no such host", True)
    again = transport.failure(as_requests_raises(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name "
                                                                 "resolution")))
    assert again == ("the host name could not be resolved: temporary failure in name resolution", False)
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cert.verify_message = "self-signed certificate"
    assert transport.failure(requests.exceptions.SSLError(urllib3.exceptions.MaxRetryError(
        None, "/v2/", reason=urllib3.exceptions.SSLError(cert)))) == (  # type: ignore[arg-type]
        "TLS certificate check failed: self-signed certificate", True)
    hello = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    hello.reason = "WRONG_VERSION_NUMBER"
    assert transport.failure(requests.exceptions.SSLError(hello)) == ("TLS handshake failed: wrong version number",
                                                                      True)
    connect = urllib3.exceptions.ConnectTimeoutError(None, "timed out")
    connect.__cause__ = TimeoutError("timed out")
    assert transport.failure(requests.exceptions.ConnectTimeout(urllib3.exceptions.MaxRetryError(
        None, "/v2/", reason=connect))) == ("connection timed out", False)  # type: ignore[arg-type]
    read = urllib3.exceptions.ReadTimeoutError(None, "/v2/", "Read timed out.")  # type: ignore[arg-type]
    assert transport.failure(requests.exceptions.ReadTimeout(read)) == (
        "the registry stopped answering (timed out)", False)


def test_no_class_name_ever() -> None:
    """Whatever the chain holds, the words are not an exception's class name."""
    for exc in (requests.exceptions.ConnectionError(), urllib3.exceptions.ProtocolError("x"), ValueError("odd")):
        words, _ = transport.failure(exc)
        assert "Error" not in words and "Exception" not in words, words


# -- what a pull shows -------------------------------------------------------------------------------------------

LAYER = Digest.parse("sha256:" + "ab" * 32)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def last_row(out: io.StringIO) -> str:
    return out.getvalue().rsplit("\x1b[J", 1)[-1].strip()


def test_a_resumed_rate_counts_only_new_bytes_on_a_terminal() -> None:
    clock, out = Clock(), io.StringIO()
    bars = Bars(out, clock)
    bars.layer(LAYER, "downloading", 0, 100_000_000)
    bars.layer(LAYER, "resuming", 60_000_000, 100_000_000)
    assert last_row(out) == f"{LAYER.short}: resuming from 60MB of 100MB"
    clock.now += 5  # hashing what was kept: not the network's time either
    bars.layer(LAYER, "downloading", 60_000_000, 100_000_000)
    clock.now += 2
    bars.layer(LAYER, "downloading", 80_000_000, 100_000_000)
    assert last_row(out).endswith(" 80MB/100MB 10MB/s"), last_row(out)  # 20 MB in 2 s, not 80 MB in 7 s


def test_plain_lines_say_the_resume_and_what_was_new() -> None:
    clock, out = Clock(), io.StringIO()
    plain = Progress(out, clock)
    plain.layer(LAYER, "downloading", 0, 100_000_000)
    plain.layer(LAYER, "resuming", 60_000_000, 100_000_000)
    plain.layer(LAYER, "downloading", 60_000_000, 100_000_000)
    clock.now += 4
    plain.layer(LAYER, "downloading", 100_000_000, 100_000_000)
    plain.layer(LAYER, "download complete", 100_000_000, 100_000_000)
    plain.layer(LAYER, "unpacking", 0, 100_000_000)
    plain.layer(LAYER, "unpacking", 50_000_000, 100_000_000)  # a worker's count: no line of its own
    assert out.getvalue().splitlines() == [
        f"{LAYER.short}: resuming from 60MB of 100MB",
        f"{LAYER.short}: download complete (resumed: 40MB new at 10MB/s, 60MB from before)",
        f"{LAYER.short}: unpacking"]


def test_unpacking_a_large_layer_shows_a_bar() -> None:
    clock, out = Clock(), io.StringIO()
    bars = Bars(out, clock)
    bars.layer(LAYER, "unpacking", 0, 120_000_000)
    assert last_row(out) == f"{LAYER.short}: unpacking"
    clock.now += 1
    bars.layer(LAYER, "unpacking", 45_000_000, 120_000_000)
    assert last_row(out) == f"{LAYER.short}: unpacking [{'=' * 11}>{' ' * 18}] 45MB/120MB"


def test_a_worker_never_waits_to_say_its_count() -> None:
    """The count goes up a non-blocking pipe: when the parent has not read (the pipe is full), the line is
    dropped and the read of the layer's bytes goes on."""
    data_r, data_w = os.pipe()
    report_r, report_w = os.pipe()
    try:
        os.set_blocking(report_w, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(report_w, b"x" * 4096)
        os.write(data_w, b"layer bytes")
        os.close(data_w)
        counted = Counted(io.FileIO(data_r, "rb"), parallel._reporter(report_w))
        buffer = bytearray(64)
        assert counted.readinto(buffer) == 11 and counted.readinto(buffer) == 0 and counted.count == 11
        counted.close()
    finally:
        for fd in (report_r, report_w):
            os.close(fd)
