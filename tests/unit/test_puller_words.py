"""puller's words for what a user meets (issue 22): a connection that fails is said in words, with its reason from
the bottom of the exception chain requests and urllib3 build (never a class name); a resumed download's rate
counts only the bytes that came over the network."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest
import requests
import urllib3

from puller.registry import transport


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
