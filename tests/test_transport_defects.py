"""Regressions of issue 13: transport failures the puller met with the wrong error, a traceback, unbounded memory
or pointless retries, each reproduced through the FaultProxy (or a closed port) with ``puller pull`` as a user
runs it.

* a connection cut mid-manifest or mid-config is transient (retried), not a "digest mismatch";
* a huge error, 401 or token body is read only up to a small cap (peak RSS measured on a fresh child);
* a redirect loop or a redirect to ``file://`` is one line, not a traceback;
* a refused connection (or a name that does not resolve) fails at once instead of being retried for seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests
import urllib3

from puller.registry import transport
from tests.conftest import ROOT, Tools, needs_root, needs_tools, one_line_error
from tests.faults import FaultProxy, cut, flood, status
from tests.images import Variant

pytestmark = [needs_root, needs_tools]

HUGE = 1_500_000_000  # 1.5 GB: held in memory twice (bytes + join), the old client grew to 3 GB
RSS_LIMIT_KB = 200 * 1024  # ru_maxrss is in KiB on Linux


def image_through(proxy: FaultProxy, variant: Variant) -> str:
    return f"{proxy.address}/{variant.ref.split('/', 1)[1]}"


def assert_nothing_stored(tools: Tools) -> None:
    index = tools.root / "index.json"
    assert not index.exists() or json.loads(index.read_text())["manifests"] == []
    for sub in ("layers", "tmp"):
        assert not (tools.root / sub).exists() or list((tools.root / sub).iterdir()) == []


# -- 1. a short document is transient ---------------------------------------------------------------------------


def test_manifest_and_config_cut_once_are_retried(tools: Tools, fault_proxy: FaultProxy,
                                                  gzip_variant: Variant) -> None:  # fmt: skip
    config = gzip_variant.image().config
    manifest_cut = fault_proxy.add(cut("/manifests/", at=0.5, method="GET"))
    config_cut = fault_proxy.add(cut(f"/blobs/{config}", at=0.5, method="GET"))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    assert result.code == 0, result.err
    assert manifest_cut.fired == 1 and config_cut.fired == 1
    assert [r.fault for r in fault_proxy.requests("/manifests/", method="GET")] == ["cut", None]
    assert [r.fault for r in fault_proxy.requests(f"/blobs/{config}", method="GET")] == ["cut", None]


@pytest.mark.parametrize("document", ["manifest", "config"])
def test_document_cut_every_time_names_the_cut(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant,
                                               document: str) -> None:  # fmt: skip
    path = "/manifests/" if document == "manifest" else f"/blobs/{gzip_variant.image().config}"
    fault_proxy.add(cut(path, at=0.5, method="GET", times=None))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    one_line_error(result, 1, "broke off", tool="puller")
    assert f"{document} of" in result.err and "digest mismatch" not in result.err
    assert len(fault_proxy.requests(path, method="GET")) == 5  # the client's bounded retry policy
    assert_nothing_stored(tools)


# -- 2. bounded bodies ------------------------------------------------------------------------------------------

# A fresh interpreter runs the puller as its only child, so RUSAGE_CHILDREN's ru_maxrss is that puller's peak
# (the test process's own children, registries and earlier CLIs, would otherwise set the maximum).
MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n{proc.returncode}\\n{proc.stderr}")
"""


def pull_measured(tools: Tools, ref: str) -> tuple[int, int, str]:
    """(peak RSS in KiB, exit code, stderr) of ``puller pull REF`` in a fresh child."""
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "puller", "--root", str(tools.root), "pull", ref]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=True).stdout
    rss, code, err = out.split("\n", 2)
    print(f"peak RSS of puller pull: {int(rss) / 1024:.1f} MiB")
    return int(rss), int(code), err


def test_huge_error_body_is_not_read(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    fault_proxy.add(flood("/manifests/", 500, HUGE, method="GET", times=None))
    rss, code, err = pull_measured(tools, image_through(fault_proxy, gzip_variant))
    assert code == 1 and err.count("\n") == 1 and err.startswith("puller: error: "), err
    assert "registry answered 500 for manifest of" in err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"
    assert fault_proxy.bytes_sent("/manifests/") < HUGE // 10  # the client hung up instead of draining
    assert_nothing_stored(tools)


def test_huge_401_and_token_bodies_are_not_read(tools: Tools, fault_proxy: FaultProxy,
                                                gzip_variant: Variant) -> None:  # fmt: skip
    realm = f"http://{fault_proxy.address}/token"
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}",service="flood",scope="repository:x:pull"'}
    fault_proxy.add(flood("/manifests/", 401, HUGE, challenge, method="GET", times=None))
    fault_proxy.add(flood("/token", 200, HUGE, times=None))
    rss, code, err = pull_measured(tools, image_through(fault_proxy, gzip_variant))
    assert code == 1 and err.count("\n") == 1 and err.startswith("puller: error: "), err
    assert f"token service {realm}" in err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"
    assert fault_proxy.requests("/token")  # the 401 was drained (a little) and its challenge answered
    assert fault_proxy.bytes_sent("/manifests/") + fault_proxy.bytes_sent("/token") < HUGE // 10
    assert_nothing_stored(tools)


def test_huge_token_error_body_is_not_read(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    realm = f"http://{fault_proxy.address}/token"
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}",service="flood"'}
    fault_proxy.add(status("/manifests/", 401, challenge, method="GET", times=None))
    fault_proxy.add(flood("/token", 503, HUGE, times=None))
    rss, code, err = pull_measured(tools, image_through(fault_proxy, gzip_variant))
    assert code == 1 and err.count("\n") == 1 and f"token service {realm} answered 503" in err, err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"


# -- 3. redirects the client cannot follow ----------------------------------------------------------------------


def test_redirect_loop_is_one_line(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    ref = image_through(fault_proxy, gzip_variant)
    here = f"http://{fault_proxy.address}/v2/{ref.split('/', 1)[1].replace(':', '/manifests/')}"
    fault_proxy.add(status("/manifests/", 307, {"Location": here}, times=None))
    result = tools.puller("pull", ref)
    one_line_error(result, 1, "redirect", tool="puller")
    assert "Traceback" not in result.err and fault_proxy.address in result.err
    assert_nothing_stored(tools)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher:x"])
def test_redirect_to_another_scheme_is_one_line(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant,
                                                location: str) -> None:  # fmt: skip
    fault_proxy.add(status("/manifests/", 302, {"Location": location}, times=None))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    one_line_error(result, 1, "redirect", tool="puller")
    assert location in result.err and "Traceback" not in result.err
    assert_nothing_stored(tools)


# -- 4. unreachable is not transient ----------------------------------------------------------------------------


def closed_port() -> int:
    """A port that was just listening on 127.0.0.1 and is closed now: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        return int(s.getsockname()[1])


def test_connection_refused_fails_at_once(tools: Tools) -> None:
    port = closed_port()
    started = time.monotonic()
    result = tools.puller("pull", f"127.0.0.1:{port}/x")
    elapsed = time.monotonic() - started
    one_line_error(result, 1, f"127.0.0.1:{port}", tool="puller")
    assert "connection refused" in result.err and "attempts" not in result.err
    assert elapsed < 5, elapsed  # a bound against the old 7 s of retries (no backoff slept at all)
    assert_nothing_stored(tools)


def test_a_name_without_address_is_not_retried() -> None:
    """The unknown-host case without a lookup (this machine's resolver is not on loopback, and a test sends nothing
    elsewhere): the exception chain requests raises for getaddrinfo's EAI_NONAME is "no such host", fail now;
    EAI_AGAIN (a resolver that did not answer) stays transient, retried."""
    def wrapped(code: int) -> BaseException:
        cause = urllib3.exceptions.NewConnectionError(None, "Failed to resolve")
        cause.__cause__ = socket.gaierror(code, "name resolution")
        return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/v2/", reason=cause))

    assert transport.unreachable(wrapped(socket.EAI_NONAME)) == "no such host"
    assert transport.unreachable(wrapped(socket.EAI_AGAIN)) is None
    assert transport.unreachable(requests.exceptions.ConnectionError(ConnectionRefusedError())) == \
        "connection refused"
