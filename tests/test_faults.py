"""Sanity tests of the test tools themselves, with plain ``requests`` (not the puller): each fault of
tests/faults.py does what it says against a real registry, and each image variant of tests/images.py is what its
name promises."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path

import pytest
import requests

from tests import images
from tests.faults import S3_AUTH_ERROR, FaultProxy, alter, cut, redirect, stall, status
from tests.marks import needs_root, needs_tools
from tests.registries import TokenRegistry
from tests.scripts import Registry

pytestmark = [needs_root, needs_tools]

ACCEPT = ", ".join([images.OCI_MANIFEST, images.OCI_INDEX, images.DOCKER_MANIFEST, images.DOCKER_LIST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def layer(registry: Registry, gzip_variant: images.Variant) -> tuple[str, bytes]:
    """(URL path, content) of the gzip variant's big layer, read straight from the registry."""
    digest = gzip_variant.image().layers[0]
    path = f"/v2/{images.REPO_PREFIX}/gzip/blobs/{digest}"
    data = requests.get(f"http://{registry.address}{path}", timeout=10).content
    assert sha256(data) == digest and len(data) > 1_000_000
    return path, data


def raw_get(address: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET over a bare socket, read to EOF: (status, headers, every body byte that came), nothing lost to a
    client library's buffering when the connection breaks."""
    host, port = address.rsplit(":", 1)
    lines = [f"GET {path} HTTP/1.1", f"Host: {address}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), fields, body


def test_pass_through_keeps_headers_and_keep_alive(fault_proxy: FaultProxy, gzip_variant: images.Variant,
                                                   layer: tuple[str, bytes]) -> None:  # fmt: skip
    path, data = layer
    with requests.Session() as s:
        r = s.get(f"http://{fault_proxy.address}/v2/{images.REPO_PREFIX}/gzip/manifests/1",
                  headers={"Accept": ACCEPT}, timeout=10)  # fmt: skip
        assert r.status_code == 200 and r.headers["Content-Type"] == images.OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == gzip_variant.digest == sha256(r.content)
        r = s.head(f"http://{fault_proxy.address}{path}", timeout=10)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(data)
        r = s.get(f"http://{fault_proxy.address}{path}", timeout=10)
        assert r.content == data and r.headers["Docker-Content-Digest"] == sha256(data)
        # an upload's Location names the proxy, not the registry behind it
        r = s.post(f"http://{fault_proxy.address}/v2/{images.REPO_PREFIX}/scratch/blobs/uploads/", timeout=10)
        assert r.status_code == 202 and r.headers["Location"].startswith(f"http://{fault_proxy.address}/v2/")
    assert [(e.method, e.status) for e in fault_proxy.log] == [("GET", 200), ("HEAD", 200), ("GET", 200),
                                                               ("POST", 202)]  # fmt: skip
    assert fault_proxy.bytes_sent(re.escape(path)) == len(data)
    assert len({e.peer for e in fault_proxy.log}) == 1  # all on one connection


def test_cut_sends_a_short_body_then_passes(fault_proxy: FaultProxy, layer: tuple[str, bytes]) -> None:
    path, data = layer
    rule = fault_proxy.add(cut(re.escape(path), 0.5, times=2))
    code, headers, body = raw_get(fault_proxy.address, path)  # the socket reads to EOF: the proxy closed it
    assert code == 200 and int(headers["Content-Length"]) == len(data) and body == data[: len(data) // 2]
    url = f"http://{fault_proxy.address}{path}"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10)
    assert rule.fired == 2 and fault_proxy.log[-1].fault == "cut"
    assert requests.get(url, timeout=10).content == data  # fired twice, then passes through
    assert len({e.peer for e in fault_proxy.log}) == 3  # a cut connection is not used again

    fault_proxy.add(cut(re.escape(path), 1000, reset=True))
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="reset by peer"):
        requests.get(url, timeout=10)
    assert fault_proxy.log[-1].bytes_sent == 1000


def test_range_passes_through_and_resumes_a_cut(fault_proxy: FaultProxy, layer: tuple[str, bytes]) -> None:
    path, data = layer
    url = f"http://{fault_proxy.address}{path}"
    fault_proxy.add(cut(re.escape(path), 100_000))
    _, _, first = raw_get(fault_proxy.address, path)
    assert first == data[:100_000]
    # a cut applies to ranged answers too: 206, then the first 100 bytes of the range
    fault_proxy.add(cut(re.escape(path), 100))
    code, headers, second = raw_get(fault_proxy.address, path, {"Range": f"bytes={len(first)}-"})
    assert code == 206 and headers["Content-Range"] == f"bytes {len(first)}-{len(data) - 1}/{len(data)}"
    assert second == data[len(first) : len(first) + 100]
    r = requests.get(url, headers={"Range": f"bytes={len(first) + 100}-"}, timeout=10)
    assert r.status_code == 206 and sha256(first + second + r.content) == sha256(data)
    assert fault_proxy.log[-1].range == f"bytes={len(first) + 100}-"
    assert fault_proxy.bytes_sent(re.escape(path)) == len(data)  # nothing fetched twice
    # distribution answers a range past the end with 416, Content-Range */size, and a Content-Length of the whole
    # blob over a 33-byte body: passed on as it is (the connection then closes)
    with requests.get(url, headers={"Range": f"bytes={len(data)}-"}, stream=True, timeout=10) as r:
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_status_answers_without_the_upstream(fault_proxy: FaultProxy, layer: tuple[str, bytes]) -> None:
    path, data = layer
    url = f"http://{fault_proxy.address}{path}"
    rule = fault_proxy.add(status(r"/blobs/", 429, {"Retry-After": "1"}, times=2))
    fault_proxy.add(status(r"/manifests/", 503))
    with requests.Session() as s:  # one connection: a status answer keeps it usable
        for _ in range(2):
            r = s.get(url, timeout=10)
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
            assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert s.get(url, timeout=10).content == data
        r = s.get(f"http://{fault_proxy.address}/v2/{images.REPO_PREFIX}/gzip/manifests/1", timeout=10)
        assert r.status_code == 503
    assert rule.fired == 2
    assert [e.status for e in fault_proxy.log] == [429, 429, 200, 503]


def test_alter_flips_one_byte(fault_proxy: FaultProxy, layer: tuple[str, bytes]) -> None:
    path, data = layer
    fault_proxy.add(alter(re.escape(path), 12345))
    got = requests.get(f"http://{fault_proxy.address}{path}", timeout=10).content
    assert len(got) == len(data) and sha256(got) != sha256(data)
    assert [i for i, (a, b) in enumerate(zip(got, data, strict=True)) if a != b] == [12345]


def test_stall_holds_the_connection(fault_proxy: FaultProxy, layer: tuple[str, bytes]) -> None:
    path, _ = layer
    fault_proxy.add(stall(re.escape(path), 10, seconds=30))
    with pytest.raises(requests.exceptions.ConnectionError) as info:  # urllib3's read timeout, mid-body
        requests.get(f"http://{fault_proxy.address}{path}", timeout=0.5).content  # noqa: B018
    assert "timed out" in str(info.value)  # the body stopped coming: the stall, not a closed connection
    assert fault_proxy.log[-1].bytes_sent == 10


def test_redirect_to_the_cdn(fault_proxy: FaultProxy, layer: tuple[str, bytes]) -> None:
    path, data = layer
    url = f"http://{fault_proxy.address}{path}"
    fault_proxy.add(redirect(re.escape(path), times=2))
    # requests drops Authorization on a redirect to another host:port, so the CDN serves it
    r = requests.get(url, headers={"Authorization": "Bearer secret"}, timeout=10)
    assert r.status_code == 200 and r.content == data and r.history[0].status_code == 307
    assert r.url.startswith(f"http://{fault_proxy.cdn_address}{path}?")
    assert "Docker-Content-Digest" not in r.headers  # the CDN is not the registry
    assert not fault_proxy.cdn_saw_authorization and fault_proxy.log[-1].authorization
    # a client that keeps Authorization gets S3's 400
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    r = requests.get(location, headers={"Authorization": "Bearer secret"}, timeout=10)
    assert r.status_code == 400 and "Only one auth mechanism allowed" in r.text
    assert fault_proxy.cdn_saw_authorization
    # the CDN honours Range
    r = requests.get(location, headers={"Range": "bytes=10-19"}, timeout=10)
    assert r.status_code == 206 and r.content == data[10:20]
    sent = [(e.status, e.bytes_sent) for e in fault_proxy.cdn_log]
    assert sent == [(200, len(data)), (400, len(S3_AUTH_ERROR)), (206, 10)]
    assert fault_proxy.requests(re.escape(path), server="cdn")[-1].range == "bytes=10-19"
    # fired twice: the third request is served by the registry itself
    r = requests.get(url, timeout=10)
    assert not r.history and r.headers["Docker-Content-Digest"] == sha256(data)


def test_in_front_of_a_token_registry(token_registry: TokenRegistry) -> None:
    with FaultProxy(token_registry.address) as proxy:
        repo = token_registry.public_repository
        r = requests.get(f"http://{proxy.address}/v2/{repo}/manifests/{token_registry.tag}",
                         headers={"Accept": ACCEPT}, timeout=10)  # fmt: skip
        assert r.status_code == 401
        challenge = dict(re.findall(r'(\w+)="([^"]*)"', r.headers["WWW-Authenticate"]))
        params = {"service": challenge["service"], "scope": challenge["scope"]}
        token = requests.get(challenge["realm"], params=params, timeout=10).json()["token"]
        auth = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}
        r = requests.get(f"http://{proxy.address}/v2/{repo}/manifests/{token_registry.tag}", headers=auth, timeout=10)
        assert r.status_code == 200
        digest = json.loads(r.content)["layers"][0]["digest"]
        proxy.add(redirect(r"/blobs/"))  # the CDN fetches with the redirected request's token
        r = requests.get(f"http://{proxy.address}/v2/{repo}/blobs/{digest}", headers=auth, timeout=10)
        assert r.status_code == 200 and sha256(r.content) == digest and r.history
        assert not proxy.cdn_saw_authorization


def test_single_manifest_variants(gzip_variant: images.Variant, zstd_variant: images.Variant,
                                  uncompressed_variant: images.Variant, v2s2_variant: images.Variant,
                                  registry: Registry, test_layout: Path) -> None:  # fmt: skip
    built = images.tagged(test_layout, images.TAG)["digest"]
    assert gzip_variant.digest == built  # pushed as built
    config = gzip_variant.image().config
    diff_ids = json.loads(images.inspect_raw(gzip_variant.ref, config=True))["rootfs"]["diff_ids"]
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd", "uncompressed": b"", "v2s2": b"\x1f\x8b"}
    for v in (gzip_variant, zstd_variant, uncompressed_variant, v2s2_variant):
        top, manifest, layer_type, _ = images.EXPECTED[v.name]
        assert v.media_type == top == manifest and v.ref == f"{registry.address}/variants/{v.name}:1"
        assert tuple(v.manifests) == (images.AMD64,) and v.digest == v.manifests[images.AMD64]
        assert v.configs == {images.AMD64: config} and v.attestation is None  # the config blob is unchanged
        assert v.image().layer_media_types == (layer_type, layer_type)
        first = v.image().layers[0]
        head = requests.get(f"http://{registry.address}/v2/variants/{v.name}/blobs/{first}",
                            headers={"Range": "bytes=0-3"}, timeout=10).content  # fmt: skip
        assert head.startswith(magic[v.name]) and len(head) == 4
    assert list(uncompressed_variant.image().layers) == diff_ids  # a plain tar's digest is its diff_id
    assert len({v.digest for v in (gzip_variant, zstd_variant, uncompressed_variant, v2s2_variant)}) == 4


def test_index_and_list_variants(index_variant: images.Variant, list_variant: images.Variant,
                                 variants_layout: Path) -> None:  # fmt: skip
    index = json.loads(images.inspect_raw(index_variant.ref))
    assert index_variant.digest == images.tagged(variants_layout, images.INDEX_TAG)["digest"]
    assert [m.get("platform") for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "unknown", "os": "unknown"},
    ]
    assert index["manifests"][2]["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    assert index_variant.attestation == index["manifests"][2]["digest"]
    listed = json.loads(images.inspect_raw(list_variant.ref))
    assert listed["mediaType"] == images.DOCKER_LIST and len(listed["manifests"]) == 2
    for v in (index_variant, list_variant):
        assert tuple(v.manifests) == (images.AMD64, images.ARM64)
        for platform, arch, variant in ((images.AMD64, "amd64", None), (images.ARM64, "arm64", "v8")):
            raw = images.inspect_raw(f"{v.repo}@{v.manifests[platform]}", config=True)
            assert sha256(raw) == v.configs[platform]
            config = json.loads(raw)
            assert (config["architecture"], config.get("variant")) == (arch, variant)
        assert v.image(images.AMD64).layers == v.image(images.ARM64).layers  # same layers, another config
    assert index_variant.configs == list_variant.configs
    assert set(index_variant.manifests.values()).isdisjoint(list_variant.manifests.values())
