"""The puller through a fault-injecting proxy, and across every manifest and layer format a registry serves.

Faults as real networks and services make them: a connection cut mid-blob (resumed, few bytes fetched twice),
500s and 429 with Retry-After (retried), a body altered in flight (rejected, nothing stored), a redirect to a
CDN that fails any request carrying Authorization (as S3 does).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Tools, needs_root, needs_tools
from tests.faults import FaultProxy, alter, cut, redirect, status
from tests.images import ARM64, Variant
from tests.registries import TokenRegistry

pytestmark = [needs_root, needs_tools]


def image_through(proxy: FaultProxy, variant: Variant) -> str:
    """The variant's reference, with the proxy in front of its registry."""
    return f"{proxy.address}/{variant.ref.split('/', 1)[1]}"


def assert_nothing_stored(tools: Tools) -> None:
    assert json.loads((tools.root / "index.json").read_text())["manifests"] == []
    assert list((tools.root / "layers").iterdir()) == []
    assert list((tools.root / "tmp").iterdir()) == []


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
    from tests.conftest import image_script

    ref = gzip_variant.ref.rsplit(":", 1)[0] + ":sha-1234"
    image_script.push(test_layout, ref)
    result = tools.puller("pull", ref)
    assert result.code == 0, result.err


def test_ctrl_c_mid_pull_loses_nothing(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    """SIGINT while a blob is half downloaded: one line, exit 130, no reference, no layer, no temp file left; what
    came of the blob is kept in partial/ for the next pull to resume (test_crash.py resumes one)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, wait_until
    from tests.faults import stall

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
