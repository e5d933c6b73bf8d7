"""The puller through a fault-injecting proxy, and across every manifest and layer format a registry serves.

Faults as real networks and services make them: a connection cut mid-blob (resumed, few bytes fetched twice),
500s and 429 with Retry-After (retried), a body altered in flight (rejected, nothing stored), a redirect to a
CDN that fails any request carrying Authorization (as S3 does).

Transport failures the puller once met with the wrong error, a traceback, unbounded memory or pointless retries
(issue 13), each reproduced through the FaultProxy (or a closed port) with ``puller pull`` as a user runs it:

* a connection cut mid-manifest or mid-config is transient (retried), not a "digest mismatch";
* a huge error, 401 or token body is read only up to a small cap (peak RSS measured on a fresh child);
* a redirect loop or a redirect to ``file://`` is one line, not a traceback;
* a refused connection (or a name that does not resolve) fails at once instead of being retried for seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import urllib3

from puller.registry import transport
from tests.faults import FaultProxy, alter, cut, flood, redirect, stall, status
from tests.images import ARM64, Variant
from tests.marks import needs_root, needs_tools
from tests.registries import TokenRegistry
from tests.scripts import image_script
from tests.tools import ROOT, Tools, one_line_error, wait_until, warm_pull

pytestmark = [needs_root, needs_tools]

HUGE = 1_500_000_000  # 1.5 GB: held in memory twice (bytes + join), the old client grew to 3 GB
RSS_LIMIT_KB = 200 * 1024  # ru_maxrss is in KiB on Linux


def image_through(proxy: FaultProxy, variant: Variant) -> str:
    """The variant's reference, with the proxy in front of its registry."""
    return f"{proxy.address}/{variant.ref.split('/', 1)[1]}"


def assert_nothing_stored(tools: Tools, made: bool = True) -> None:
    """No image, layer or temporary file in the store. MADE=False: a pull that failed at its transport may not
    have made the store at all."""
    index = tools.root / "index.json"
    if made or index.exists():
        assert json.loads(index.read_text())["manifests"] == []
    for sub in ("layers", "tmp"):
        if made or (tools.root / sub).exists():
            assert list((tools.root / sub).iterdir()) == []


def test_cut_mid_blob_resumes_and_refetches_little(tools: Tools, fault_proxy: FaultProxy,
                                                   gzip_variant: Variant) -> None:
    layer = gzip_variant.image().layers[0]  # the 2 MB busybox layer
    fault_proxy.add(cut(f"/blobs/{layer}", at=0.5, times=2))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    assert result.code == 0, result.err
    ranged = [r for r in fault_proxy.requests(f"/blobs/{layer}") if r.range]
    assert len(ranged) == 2 and all(r.status == 206 for r in ranged)
    size = int(json.loads(tools.puller("inspect", image_through(fault_proxy, gzip_variant)).out)[0]["Layers"][0]
               ["Size"])
    assert fault_proxy.bytes_sent(f"/blobs/{layer}") < size * 1.05  # what was resumed was not fetched again


def test_cut_every_time_fails_naming_the_blob(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    layer = gzip_variant.image().layers[0]
    fault_proxy.add(cut(f"/blobs/{layer}", at=1000, times=None))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    assert result.code != 0 and result.err.count("\n") == 1
    assert layer in result.err and "broke off" in result.err
    assert_nothing_stored(tools)


def test_server_errors_and_rate_limits_are_retried(tools: Tools, fault_proxy: FaultProxy,
                                                   gzip_variant: Variant) -> None:
    fault_proxy.add(status("/manifests/", 500, times=2))
    fault_proxy.add(status("/blobs/", 503, times=1))
    fault_proxy.add(status("/blobs/", 429, {"Retry-After": "1"}, times=1))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    assert result.code == 0, result.err
    assert [r.status for r in fault_proxy.requests("/manifests/")][:3] == [500, 500, 200]


def test_long_retry_after_is_reported_not_waited_for(tools: Tools, fault_proxy: FaultProxy,
                                                     gzip_variant: Variant) -> None:
    fault_proxy.add(status("/manifests/", 429, {"Retry-After": "3600"}, times=None))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    assert result.code != 0 and result.err.count("\n") == 1
    assert "rate limit" in result.err and "retry after 3600 s" in result.err


def test_body_altered_in_flight_is_rejected(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    layer = gzip_variant.image().layers[0]
    fault_proxy.add(alter(f"/blobs/{layer}"))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    assert result.code != 0 and "digest mismatch" in result.err and layer in result.err
    assert_nothing_stored(tools)
    assert not (tools.root / "blobs/sha256" / layer.split(":")[1]).exists()


def test_redirect_to_a_cdn_gets_no_credentials(tools: Tools, token_registry: TokenRegistry) -> None:
    with FaultProxy(token_registry.address) as proxy:
        proxy.add(redirect("/blobs/", times=None))
        result = tools.puller("pull", f"{proxy.address}/{token_registry.public_repository}:1")
        assert result.code == 0, result.err
        assert len(proxy.cdn_log) >= 2  # the config and the layers came from the CDN
        assert not proxy.cdn_saw_authorization
        assert any(r.authorization for r in proxy.log)  # while the registry itself did get the bearer token


@pytest.mark.parametrize("name", ["gzip", "zstd", "uncompressed", "v2s2"])
def test_layer_and_manifest_formats(tools: Tools, request: pytest.FixtureRequest, name: str) -> None:
    variant: Variant = request.getfixturevalue(f"{name}_variant")
    result = tools.puller("pull", variant.ref)
    assert result.code == 0, result.err
    described = json.loads(tools.puller("inspect", variant.ref).out)[0]
    assert described["ManifestDigest"] == variant.image().digest
    assert [layer["MediaType"] for layer in described["Layers"]] == list(variant.image().layer_media_types)
    run = tools.runner("run", "--rm", variant.ref, "cat", "/etc/layer2.txt")
    assert run.out == "from layer 2\n"


@pytest.mark.parametrize("name", ["index", "list"])
def test_index_resolves_to_the_platform_asked_for(tools: Tools, request: pytest.FixtureRequest, name: str) -> None:
    variant: Variant = request.getfixturevalue(f"{name}_variant")
    for platform in ("linux/amd64", ARM64):
        assert tools.puller("pull", "--platform", platform, variant.ref).code == 0
        described = json.loads(tools.puller("inspect", variant.ref).out)[0]
        assert described["ManifestDigest"] == variant.image(platform).digest
        assert described["Digest"] == variant.digest  # the reference still names the index
        assert described["Platform"] == platform
    missing = tools.puller("pull", "--platform", "linux/s390x", variant.ref)
    assert missing.code != 0 and missing.err.count("\n") == 1
    assert "linux/amd64" in missing.err and "linux/arm64/v8" in missing.err and "unknown" not in missing.err


def test_a_tag_that_looks_like_a_digest(tools: Tools, gzip_variant: Variant, test_layout: Path) -> None:
    """Regression: a tag starting with "sha" was taken for a digest."""
    ref = gzip_variant.ref.rsplit(":", 1)[0] + ":sha-1234"
    image_script.push(test_layout, ref)
    result = tools.puller("pull", ref)
    assert result.code == 0, result.err


def test_ctrl_c_mid_pull_loses_nothing(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    """SIGINT while a blob is half downloaded: one line, exit 130, no reference, no layer, no temp file left; what
    came of the blob is kept in partial/ for the next pull to resume (test_crash.py resumes one)."""
    layer = gzip_variant.image().layers[0]
    fault_proxy.add(stall(f"/blobs/{layer}", at=0.5, seconds=30))
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    proc = subprocess.Popen([sys.executable, "-m", "puller", "--root", str(tools.root), "pull",
                             image_through(fault_proxy, gzip_variant)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: any(r.bytes_sent for r in fault_proxy.requests(f"/blobs/{layer}")), "half a blob sent")
        partial = tools.root / "partial/sha256" / layer.split(":")[1]
        wait_until(lambda: partial.exists() and partial.stat().st_size > 0, "the blob's first bytes on disk")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err == "puller: interrupted\n"
    assert_nothing_stored(tools)
    assert not (tools.root / "blobs/sha256" / layer.split(":")[1]).exists()
    assert not any((tools.root / "tmp").iterdir())
    assert partial.stat().st_size > 0  # kept: the next pull resumes it


# -- transport: a short document is transient --------------------------------------------------------------------------


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
    assert_nothing_stored(tools, made=False)


# -- transport: bounded bodies -----------------------------------------------------------------------------------------

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
    assert_nothing_stored(tools, made=False)


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
    assert_nothing_stored(tools, made=False)


def test_huge_token_error_body_is_not_read(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    realm = f"http://{fault_proxy.address}/token"
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}",service="flood"'}
    fault_proxy.add(status("/manifests/", 401, challenge, method="GET", times=None))
    fault_proxy.add(flood("/token", 503, HUGE, times=None))
    rss, code, err = pull_measured(tools, image_through(fault_proxy, gzip_variant))
    assert code == 1 and err.count("\n") == 1 and f"token service {realm} answered 503" in err, err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"


# -- transport: redirects the client cannot follow ---------------------------------------------------------------------


def test_redirect_loop_is_one_line(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    ref = image_through(fault_proxy, gzip_variant)
    here = f"http://{fault_proxy.address}/v2/{ref.split('/', 1)[1].replace(':', '/manifests/')}"
    fault_proxy.add(status("/manifests/", 307, {"Location": here}, times=None))
    result = tools.puller("pull", ref)
    one_line_error(result, 1, "redirect", tool="puller")
    assert "Traceback" not in result.err and fault_proxy.address in result.err
    assert_nothing_stored(tools, made=False)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher:x"])
def test_redirect_to_another_scheme_is_one_line(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant,
                                                location: str) -> None:  # fmt: skip
    fault_proxy.add(status("/manifests/", 302, {"Location": location}, times=None))
    result = tools.puller("pull", image_through(fault_proxy, gzip_variant))
    one_line_error(result, 1, "redirect", tool="puller")
    assert location in result.err and "Traceback" not in result.err
    assert_nothing_stored(tools, made=False)


# -- transport: unreachable is not transient ---------------------------------------------------------------------------


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
    assert_nothing_stored(tools, made=False)


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


# -- a re-pull ---------------------------------------------------------------------------------------------------


def test_second_pull_of_a_tag_asks_only_head(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    ref = f"{fault_proxy.address}/{gzip_variant.ref.split('/', 1)[1]}"
    assert tools.puller("pull", ref).code == 0
    fault_proxy.clear()
    again = warm_pull(tools, ref)
    assert [r.method for r in fault_proxy.log if "/manifests/" in r.path] == ["HEAD"]
    assert not fault_proxy.requests("/blobs/")
    assert again.out.splitlines() == [f"Pulling {ref}", f"Digest: {gzip_variant.digest}",
                                      f"Status: Image is up to date for {ref}", ref]


def test_a_warm_pull_the_lean_way_cannot_answer_goes_the_full_way(tools: Tools, fault_proxy: FaultProxy,
                                                                  gzip_variant: Variant) -> None:
    """The lean HEAD knows only the plain way: a 503 (to retry) sends the pull to the registry client, which
    retries it and finds the image up to date; nothing is said twice."""
    ref = f"{fault_proxy.address}/{gzip_variant.ref.split('/', 1)[1]}"
    assert tools.puller("pull", ref).code == 0
    fault_proxy.clear()
    fault_proxy.add(status(r"/manifests/", 503, {"Retry-After": "0"}))
    again = tools.puller("pull", ref)
    assert again.code == 0, again.err
    assert again.out.splitlines() == [f"Pulling {ref}", f"Digest: {gzip_variant.digest}",
                                      f"Status: Image is up to date for {ref}", ref]
    assert [(r.method, r.status) for r in fault_proxy.log if "/manifests/" in r.path] == [("HEAD", 503),
                                                                                          ("HEAD", 200)]
    assert not fault_proxy.requests("/blobs/")
