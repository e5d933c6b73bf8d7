"""The rest of the puller's promises: documents it refuses, a re-pull that only asks HEAD, rmi and its garbage
collection, credential helpers, Docker Hub's rate-limit notice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from puller.registry.client import RegistryClient
from shared.errors import Kind, StrataError
from shared.image import MAX_MANIFEST_BYTES, media_type_of
from tests.conftest import Tools, needs_root, needs_tools
from tests.faults import FaultProxy
from tests.images import Variant
from tests.registries import HtpasswdRegistry

LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "a" * 64, "size": 1}


@pytest.mark.parametrize(("doc", "content_type", "message", "kind"), [
    ({"schemaVersion": 2, "manifests": [], "layers": [LAYER], "config": LAYER}, None, "CVE-2021-41190",
     Kind.INTEGRITY),
    ({"schemaVersion": 1, "fsLayers": []}, "application/vnd.docker.distribution.manifest.v1+prettyjws",
     "schema 1 manifest", Kind.UNSUPPORTED),
    ({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": [], "config": LAYER},
     "application/vnd.oci.image.index.v1+json", "does not match Content-Type", Kind.INTEGRITY),
    ({"schemaVersion": 2, "mediaType": "application/vnd.example.other+json"}, None, "unsupported media type",
     Kind.UNSUPPORTED),
])
def test_documents_refused(doc: dict[str, object], content_type: str | None, message: str, kind: Kind) -> None:
    with pytest.raises(StrataError, match=message) as info:
        media_type_of(json.dumps(doc).encode(), content_type, "manifest")
    assert info.value.kind is kind


def test_oversized_document_refused() -> None:
    with pytest.raises(StrataError, match="over the") as info:
        media_type_of(b" " * (MAX_MANIFEST_BYTES + 1), None, "manifest")
    assert info.value.kind is Kind.INTEGRITY


def test_rate_limit_is_shown_once() -> None:
    notices: list[str] = []
    client = RegistryClient("registry-1.docker.io", notice=notices.append)
    for _ in range(2):
        resp = requests.Response()
        resp.headers.update({"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "42;w=21600"})
        client._note_rate_limit(resp)
    assert notices == ["registry-1.docker.io: pull rate limit: 42 of 100 left (window 21600 s)"]


@needs_root
@needs_tools
def test_second_pull_of_a_tag_asks_only_head(tools: Tools, fault_proxy: FaultProxy, gzip_variant: Variant) -> None:
    ref = f"{fault_proxy.address}/{gzip_variant.ref.split('/', 1)[1]}"
    assert tools.puller("pull", ref).code == 0
    fault_proxy.clear()
    again = tools.puller("pull", ref)
    assert again.code == 0 and "up to date" in again.out
    assert [r.method for r in fault_proxy.log if "/manifests/" in r.path] == ["HEAD"]
    assert not fault_proxy.requests("/blobs/")


@needs_root
@needs_tools
def test_rmi_collects_what_nothing_needs(tools: Tools, test_image: str, gzip_variant: Variant) -> None:
    assert tools.puller("pull", test_image).code == 0
    assert tools.puller("pull", gzip_variant.ref).code == 0  # the same layers under another name
    layers = set(os.listdir(tools.root / "layers"))
    assert len(layers) == 2
    first = tools.puller("rmi", test_image)
    assert first.code == 0 and "Untagged" in first.out
    assert set(os.listdir(tools.root / "layers")) == layers  # still used by the other image
    kept = tools.runner("run", "--name", "user-of-it", gzip_variant.ref, "true")
    assert kept.code == 0
    refused = tools.puller("rmi", gzip_variant.ref)
    assert refused.code != 0 and "in use by container user-of-it" in refused.err
    forced = tools.puller("rmi", "--force", gzip_variant.ref)
    assert forced.code == 0
    assert json.loads((tools.root / "index.json").read_text())["manifests"] == []
    assert os.listdir(tools.root / "blobs/sha256") == []  # no reference needs a blob any more
    assert set(os.listdir(tools.root / "layers")) == layers  # but the container's layers stay
    assert tools.runner("run", "--rm", "user-of-it", "true").code != 0  # (the image is gone: no new containers)
    assert tools.runner("rm", "user-of-it").code == 0


HELPER = """#!/bin/sh
# a docker-credential-* helper: get prints JSON for the server on stdin; store/erase keep a file
store="{store}"
read server
case "$1" in
  get) if [ -f "$store" ]; then cat "$store"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  store) echo "$server" > "$store" ;;
  erase) rm -f "$store" ;;
esac
"""


@needs_root
@needs_tools
def test_credential_helper(tools: Tools, htpasswd_registry: HtpasswdRegistry, tmp_path: Path) -> None:
    reg = htpasswd_registry
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "secret.json"
    helper = bin_dir / "docker-credential-strata-test"
    helper.write_text(HELPER.format(store=store))
    helper.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    tools.docker_config.mkdir()
    (tools.docker_config / "config.json").write_text(json.dumps({"credsStore": "strata-test"}))
    assert tools.puller("pull", reg.image, env=env).code != 0  # the helper knows nothing yet
    login = tools.puller("login", "-u", reg.username, "--password-stdin", reg.address, stdin=reg.password + "\n",
                         env=env)
    assert login.code == 0, login.err
    saved = json.loads(store.read_text())
    assert saved == {"ServerURL": reg.address, "Username": reg.username, "Secret": reg.password}
    saved_config = json.loads((tools.docker_config / "config.json").read_text())
    assert saved_config["auths"][reg.address] == {}  # noted, as Docker does; the secret is in the helper
    assert tools.puller("pull", reg.image, env=env).code == 0
    assert tools.puller("logout", reg.address, env=env).code == 0
    assert not store.exists()


def test_login_prompt_at_end_of_input_is_a_usage_error(tools: Tools) -> None:
    """Regression: end of input at the Username prompt was reported as 'interrupted'."""
    result = tools.puller("login", "127.0.0.1:9", stdin="")
    assert result.code == 2
    assert result.err == "puller: error: input ended before the command had what it asked for\n"
