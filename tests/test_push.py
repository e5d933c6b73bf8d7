"""``puller push``: a stored image into a real registry (Debian's docker-registry), checked by skopeo and by a
fresh pull; blobs skipped (HEAD) or mounted rather than uploaded; an upload cut mid-blob goes on; auth as pull.

Uploads are counted at a FaultProxy in front of the registry (tests/faults.py), which also breaks them. Pushing to
the proxy's address is pushing to another registry host than the one the store's images were pulled from, so no
mount is tried there; pulling through the proxy makes the store's references name the proxy's host, and then
the same registry's other repositories are mount candidates.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.faults import FaultProxy, add_headers, cut_request, drop
from tests.images import ARM64, Variant
from tests.marks import needs_root, needs_tools
from tests.registries import HtpasswdRegistry, ProxyRegistry, TokenRegistry
from tests.scripts import Registry
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]

UPLOADS = r"/blobs/uploads/"


def skopeo_inspect(ref: str, *args: str) -> Any:
    proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *args, f"docker://{ref}"], capture_output=True,
                          check=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    return proc.stdout if "--raw" in args else json.loads(proc.stdout)


def described(tools: Tools, ref: str) -> dict[str, Any]:
    result = tools.puller("inspect", ref)
    assert result.code == 0, result.err
    return dict(json.loads(result.out)[0])


def pull(tools: Tools, *args: str) -> None:
    result = tools.puller("pull", *args)
    assert result.code == 0, result.err


def push(tools: Tools, *args: str) -> str:
    result = tools.puller("push", *args)
    assert result.code == 0, result.err
    return result.out


def blob_sizes(image: dict[str, Any], tools: Tools) -> dict[str, int]:
    """Every blob a push of IMAGE moves: its layers and its config, by digest."""
    sizes = {layer["Digest"]: layer["Size"] for layer in image["Layers"]}
    config = tools.root / "blobs" / "sha256" / image["Id"].split(":", 1)[1]
    sizes[image["Id"]] = config.stat().st_size
    return sizes


def uploads(proxy: FaultProxy) -> list[Any]:
    """Requests that carried blob bytes (monolithic PUTs, PATCH chunks); the closing empty PUT of a chunked
    upload does not count."""
    return [e for e in proxy.requests(UPLOADS, "proxy") if e.method in ("PUT", "PATCH") and e.bytes_received]


def docker_config(tools: Tools, registry: str, user: str, password: str) -> None:
    tools.docker_config.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (tools.docker_config / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))


@pytest.fixture
def proxy(registry: Registry) -> Any:
    with FaultProxy(registry.address) as p:
        yield p


def test_push_then_skopeo_and_a_fresh_pull_see_the_same_digests(tools: Tools, test_image: str, proxy: FaultProxy,
                                                                tmp_path: Path) -> None:  # fmt: skip
    pull(tools, test_image)
    ours = described(tools, test_image)
    dest = f"{proxy.address}/pushed/check:1"
    out = push(tools, test_image, dest)
    lines = out.splitlines()
    assert lines[0] == f"The push refers to repository [{proxy.address}/pushed/check]"
    assert sorted(lines[1:-1]) == sorted(f"{d['Digest'][7:19]}: Pushed" for d in ours["Layers"])
    manifest = (tools.root / "blobs" / "sha256" / ours["ManifestDigest"][7:]).read_bytes()
    assert lines[-1] == f"1: digest: {ours['ManifestDigest']} size: {len(manifest)}"

    seen = skopeo_inspect(dest)
    assert seen["Digest"] == ours["ManifestDigest"]
    assert seen["Layers"] == [layer["Digest"] for layer in ours["Layers"]]
    assert "sha256:" + hashlib.sha256(skopeo_inspect(dest, "--raw")).hexdigest() == ours["ManifestDigest"]
    assert "sha256:" + hashlib.sha256(skopeo_inspect(dest, "--config", "--raw")).hexdigest() == ours["Id"]

    fresh = Tools(tmp_path / "fresh-root", tools.docker_config, tools.settings)
    pull(fresh, dest)
    theirs = described(fresh, dest)
    assert (theirs["ManifestDigest"], theirs["Id"]) == (ours["ManifestDigest"], ours["Id"])

    # each blob went up once, whole, in one monolithic PUT of exactly its bytes
    sizes = blob_sizes(ours, tools)
    sent = uploads(proxy)
    assert [e.method for e in sent] == ["PUT"] * len(sizes)
    assert sorted(e.bytes_received for e in sent) == sorted(sizes.values())
    assert len(proxy.requests(UPLOADS, "proxy", "POST")) == len(sizes)


def test_a_second_image_sharing_layers_skips_them(tools: Tools, test_image: str, index_variant: Variant,
                                                 proxy: FaultProxy) -> None:  # fmt: skip
    pull(tools, test_image)
    pull(tools, "--platform", ARM64, index_variant.ref)  # the same layers, its own config
    amd, arm = described(tools, test_image), described(tools, index_variant.ref)
    assert [x["Digest"] for x in amd["Layers"]] == [x["Digest"] for x in arm["Layers"]]
    push(tools, test_image, f"{proxy.address}/pushed/share:amd64")
    assert len(uploads(proxy)) == len(amd["Layers"]) + 1

    proxy.clear()
    out = push(tools, index_variant.ref, f"{proxy.address}/pushed/share:arm64")
    assert out.count("Layer already exists") == len(arm["Layers"]) and "Pushed" not in out
    sent = uploads(proxy)
    assert [e.path for e in proxy.requests(UPLOADS, "proxy", "PUT")] and len(sent) == 1  # the config only
    assert sent[0].query.endswith(f"digest={arm['Id']}")
    heads = proxy.requests(r"/pushed/share/blobs/", "proxy", "HEAD")
    assert sorted(e.path.rsplit("/", 1)[1] for e in heads if e.status == 200) == sorted(
        x["Digest"] for x in arm["Layers"])
    assert skopeo_inspect(f"{proxy.address}/pushed/share:arm64")["Digest"] == arm["ManifestDigest"]


def test_pushed_to_another_repository_of_the_same_registry_blobs_are_mounted(tools: Tools, test_image: str,
                                                                             proxy: FaultProxy) -> None:  # fmt: skip
    source = test_image.replace(test_image.split("/", 1)[0], proxy.address, 1)  # the same image, via the proxy
    pull(tools, source)
    ours = described(tools, source)
    proxy.clear()
    out = push(tools, source, f"{proxy.address}/pushed/mounted:1")
    assert out.count("Mounted from strata/test") == len(ours["Layers"])
    assert uploads(proxy) == []
    mounts = proxy.requests(UPLOADS, "proxy", "POST")
    assert len(mounts) == len(ours["Layers"]) + 1  # and the config
    assert all("from=strata/test" in e.query and e.status == 201 for e in mounts)
    assert skopeo_inspect(f"{proxy.address}/pushed/mounted:1")["Digest"] == ours["ManifestDigest"]


def _pushed_and_pulled_back(tools: Tools, dest: str, ours: dict[str, Any], tmp_path: Path) -> None:
    assert skopeo_inspect(dest)["Digest"] == ours["ManifestDigest"]
    fresh = Tools(tmp_path / "fresh-root", tools.docker_config, tools.settings)
    pull(fresh, dest)
    assert described(fresh, dest)["Id"] == ours["Id"]


def test_a_cut_monolithic_upload_starts_over_on_docker_registry(tools: Tools, test_image: str, proxy: FaultProxy,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """docker-registry 2.8 keeps the part of a body it got, but its signed upload state still says the offset
    before it, so it calls the session invalid (GET answers 404 BLOB_UPLOAD_INVALID): the blob goes again whole,
    in a new session. Nothing else is sent twice."""
    pull(tools, test_image)
    ours = described(tools, test_image)
    sizes = blob_sizes(ours, tools)
    first = ours["Layers"][0]
    rule = proxy.add(cut_request(UPLOADS, 0.5, method="PUT"))
    dest = f"{proxy.address}/pushed/cut:1"
    push(tools, "--jobs", "1", test_image, dest)  # one blob at a time: the first PUT is the first layer's
    assert rule.fired == 1
    sessions = proxy.requests(UPLOADS, "proxy", "GET")
    assert [e.status for e in sessions] == [404]  # asked what it kept: it forgot the session
    assert len(proxy.requests(UPLOADS, "proxy", "POST")) == len(sizes) + 1
    assert sum(e.bytes_received for e in uploads(proxy)) == sum(sizes.values()) + first["Size"]
    _pushed_and_pulled_back(tools, dest, ours, tmp_path)


def test_a_chunked_upload_cut_between_chunks_resumes_where_the_registry_stopped(
        tools: Tools, test_image: str, proxy: FaultProxy, tmp_path: Path) -> None:  # fmt: skip
    """The registry asks for chunks (OCI-Chunk-Min-Length: 1 MiB); the second chunk of the 2 MB layer is lost on
    the way (a buffering front end's client connection broke). GET on the session says what it holds (the first
    chunk) and the upload goes on from there: one chunk is sent twice, not the blob."""
    pull(tools, test_image)
    ours = described(tools, test_image)
    sizes = blob_sizes(ours, tools)
    first = ours["Layers"][0]
    assert first["Size"] > 2 * 2**20
    proxy.add(add_headers(UPLOADS, {"OCI-Chunk-Min-Length": str(2**20)}, method="POST"))
    rule = proxy.add(drop(UPLOADS, method="PATCH", skip=1))
    dest = f"{proxy.address}/pushed/chunks:1"
    push(tools, "--jobs", "1", test_image, dest)
    assert rule.fired == 1
    sent = uploads(proxy)
    assert {e.method for e in sent} == {"PATCH"}
    assert max(e.bytes_received for e in sent) == 2**20  # chunks of the size asked for
    status = proxy.requests(UPLOADS, "proxy", "GET")
    assert [(e.status, e.headers.get("range")) for e in status] == [(204, None)]
    assert len(proxy.requests(UPLOADS, "proxy", "POST")) == len(sizes)  # no new session
    assert sum(e.bytes_received for e in sent) == sum(sizes.values()) + 2**20
    ranges = [e.headers["content-range"] for e in sent if e.bytes_received >= 2**20]
    assert ranges == ["0-1048575", "1048576-2097151", "1048576-2097151"]
    _pushed_and_pulled_back(tools, dest, ours, tmp_path)


def test_a_chunk_cut_mid_body_on_docker_registry_starts_over(tools: Tools, test_image: str, proxy: FaultProxy,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """Chunked, but the chunk is cut mid-body: docker-registry keeps that part and forgets the session (as for a
    monolithic upload), so the layer starts again in a new session; the push still succeeds."""
    pull(tools, test_image)
    ours = described(tools, test_image)
    proxy.add(add_headers(UPLOADS, {"OCI-Chunk-Min-Length": str(2**20)}, method="POST"))
    proxy.add(cut_request(UPLOADS, 0.5, method="PATCH", skip=1))
    dest = f"{proxy.address}/pushed/chunkcut:1"
    push(tools, "--jobs", "1", test_image, dest)
    assert [e.status for e in proxy.requests(UPLOADS, "proxy", "GET")] == [404]
    assert len(proxy.requests(UPLOADS, "proxy", "POST")) == len(blob_sizes(ours, tools)) + 1
    _pushed_and_pulled_back(tools, dest, ours, tmp_path)


def test_token_auth_push_asks_for_pull_and_push(tools: Tools, token_registry: TokenRegistry) -> None:
    reg = token_registry
    docker_config(tools, reg.address, reg.owner, reg.password(reg.owner))
    pull(tools, reg.public_image)
    ours = described(tools, reg.public_image)
    reg.auth.clear_log()
    dest = f"{reg.address}/strata/pushed:1"
    out = push(tools, reg.public_image, dest)
    assert out.count(f"Mounted from {reg.public_repository}") == len(ours["Layers"])
    asked = [r.scopes for r in reg.auth.token_requests()]
    assert ["repository:strata/pushed:pull,push"] in asked
    # a mount: push on the target and pull on the source, two scope parameters in one token request
    assert ["repository:strata/pushed:pull,push", f"repository:{reg.public_repository}:pull"] in asked
    assert all(r.user == reg.owner for r in reg.auth.token_requests())
    fresh = Tools(tools.root.parent / "fresh-root", tools.docker_config, tools.settings)
    pull(fresh, dest)
    assert described(fresh, dest)["ManifestDigest"] == ours["ManifestDigest"]


def test_token_auth_push_without_the_right_is_one_line(tools: Tools, token_registry: TokenRegistry) -> None:
    reg = token_registry
    pull(tools, reg.public_image)
    docker_config(tools, reg.address, reg.other_user, reg.password(reg.other_user))  # pull only, on strata/public
    result = tools.puller("push", reg.public_image)
    one_line_error(result, 1, "denied", tool="puller")


def test_basic_auth_push_sends_each_body_once(tools: Tools, htpasswd_registry: HtpasswdRegistry) -> None:
    reg = htpasswd_registry
    docker_config(tools, reg.address, reg.username, reg.password)
    pull(tools, reg.image)
    ours = described(tools, reg.image)
    with FaultProxy(reg.address) as p:
        docker_config(tools, p.address, reg.username, reg.password)
        push(tools, reg.image, f"{p.address}/pushed/basic:1")
        sent = uploads(p)
        assert len(sent) == len(ours["Layers"]) + 1 and all(e.status == 201 and e.authorization for e in sent)


def test_push_errors_are_one_line(tools: Tools, test_image: str, proxy_registry: ProxyRegistry,
                                  tmp_path: Path) -> None:  # fmt: skip
    one_line_error(tools.puller("push", "strata/nothere:1"), 1, "No such image", tool="puller")
    pull(tools, test_image)
    one_line_error(tools.puller("push", test_image, f"{proxy_registry.address}/strata/pushed:1"), 1, "405",
                   tool="puller")  # a pull-through cache refuses pushes
    one_line_error(tools.puller("push", test_image, "127.0.0.1:1/strata/pushed:1"), 1, "connection refused",
                   tool="puller")
    one_line_error(tools.puller("push", test_image, f"127.0.0.1:1/strata/pushed@sha256:{'0' * 64}"), 2,
                   "digest reference", tool="puller")


def test_quiet_prints_the_reference(tools: Tools, test_image: str, proxy: FaultProxy) -> None:
    pull(tools, test_image)
    dest = f"{proxy.address}/pushed/quiet:2"
    assert push(tools, "-q", test_image, dest) == f"{dest}\n"


def test_a_whole_index_goes_registry_to_registry_children_first(index_variant: Variant, proxy: FaultProxy,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    """The sink as ``copy`` uses it for a whole index (no CLI here: push moves stored images, which are one
    platform's): every child manifest by digest, then the index under the tag, byte for byte."""
    from puller.registry.client import Endpoint, RegistryClient
    from puller.registry.sink import RegistrySink
    from puller.registry.source import RegistrySource, places_for
    from shared import reference
    from shared.settings import Settings
    from shared.transfer.model import copy, resolve

    src = reference.parse(index_variant.ref)
    source = RegistrySource(src, places_for(src, Settings()))
    resolved = resolve(source, None, all_platforms=True)
    dest = reference.parse(f"{proxy.address}/pushed/index:1")
    sink = RegistrySink(dest, RegistryClient(Endpoint.for_registry(dest.registry_host)))
    try:
        copy(source, sink, resolved, dest.tag)
    finally:
        sink.close()
    assert "sha256:" + hashlib.sha256(skopeo_inspect(str(dest), "--raw")).hexdigest() == index_variant.digest
    puts = [e.path.rsplit("/", 1)[1] for e in proxy.requests(r"/pushed/index/manifests/", "proxy", "PUT")]
    children = [m.digest for m in index_variant.images] + [index_variant.attestation]
    assert sorted(puts[:-1]) == sorted(children) and puts[-1] == "1"
