"""Sanity checks of the registry fixtures (htpasswd, token auth, pull-through cache), with plain requests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.authserver import decode_jwt
from tests.marks import needs_root, needs_tools
from tests.registries import HtpasswdRegistry, ProxyRegistry, TokenRegistry
from tests.scripts import Registry, image_script

pytestmark = [needs_root, needs_tools]

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # 127.0.0.1 only, never through a proxy from the environment
        session.headers["Accept"] = MANIFEST_TYPES
        yield session


def challenge(resp: requests.Response) -> tuple[str, dict[str, str]]:
    """(scheme, params) of the response's WWW-Authenticate header."""
    header = resp.headers["Www-Authenticate"]
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def get_token(http: requests.Session, reg: TokenRegistry, *scopes: str,
              creds: tuple[str, str] | None = None) -> str:  # fmt: skip
    resp = http.get(reg.realm, params={"service": reg.service, "scope": list(scopes)}, auth=creds, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == reg.auth.expires_in and body["issued_at"]
    return str(body["token"])


def manifest_url(address: str, repository: str, ref: str = "1") -> str:
    return f"http://{address}/v2/{repository}/manifests/{ref}"


# -- htpasswd ---------------------------------------------------------------------------------------------------


def test_htpasswd_registry_wants_basic_auth(http: requests.Session, htpasswd_registry: HtpasswdRegistry,
                                            test_layout: Path) -> None:  # fmt: skip
    reg = htpasswd_registry
    url = manifest_url(reg.address, reg.repository, reg.tag)
    for auth in (None, (reg.username, "wrong")):
        resp = http.get(url, auth=auth, timeout=10)
        assert resp.status_code == 401
        assert challenge(resp) == ("Basic", {"realm": "strata-test"})
    assert http.get(f"http://{reg.address}/v2/", auth=reg.creds, timeout=10).status_code == 200
    resp = http.get(url, auth=reg.creds, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Docker-Content-Digest"] == image_script.manifest_digest(test_layout)


# -- token auth -------------------------------------------------------------------------------------------------


def test_token_flow_as_docker_hub(http: requests.Session, token_registry: TokenRegistry, test_layout: Path) -> None:
    reg = token_registry
    resp = http.get(f"http://{reg.address}/v2/", timeout=10)
    assert resp.status_code == 401
    assert challenge(resp) == ("Bearer", {"realm": reg.realm, "service": reg.service})

    url = manifest_url(reg.address, reg.public_repository)
    resp = http.get(url, timeout=10)
    assert resp.status_code == 401
    scheme, params = challenge(resp)
    scope = f"repository:{reg.public_repository}:pull"
    assert (scheme, params) == ("Bearer", {"realm": reg.realm, "service": reg.service, "scope": scope})

    token = get_token(http, reg, scope)
    header, claims = decode_jwt(token)
    assert header["alg"] == "ES256" and len(header["x5c"]) == 1
    assert claims["access"] == [{"type": "repository", "name": reg.public_repository, "actions": ["pull"]}]
    assert claims["aud"] == reg.service and claims["sub"] == ""

    resp = http.get(url, headers=bearer(token), timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Docker-Content-Digest"] == image_script.manifest_digest(test_layout)
    config = resp.json()["config"]["digest"]
    blob = http.get(f"http://{reg.address}/v2/{reg.public_repository}/blobs/{config}", headers=bearer(token),
                    timeout=10)  # fmt: skip
    assert blob.status_code == 200 and blob.json()["os"] == "linux"

    [request] = reg.auth.log
    assert (request.path, request.scopes, request.service, request.authorization) == ("/token", [scope],
                                                                                       reg.service, False)
    assert reg.auth.scope_counts() == {scope: 1}


def test_token_for_one_repository_is_refused_on_another(http: requests.Session,
                                                        token_registry: TokenRegistry) -> None:  # fmt: skip
    reg = token_registry
    token = get_token(http, reg, f"repository:{reg.private_repository}:pull", creds=reg.creds(reg.owner))
    assert http.get(manifest_url(reg.address, reg.private_repository), headers=bearer(token),
                    timeout=10).status_code == 200  # fmt: skip
    resp = http.get(manifest_url(reg.address, reg.public_repository), headers=bearer(token), timeout=10)
    assert resp.status_code == 401
    assert challenge(resp)[1] == {"realm": reg.realm, "service": reg.service, "error": "insufficient_scope",
                                  "scope": f"repository:{reg.public_repository}:pull"}  # fmt: skip


def test_private_repository_needs_its_owner(http: requests.Session, token_registry: TokenRegistry) -> None:
    reg = token_registry
    scope = f"repository:{reg.private_repository}:pull"
    url = manifest_url(reg.address, reg.private_repository)
    for creds in (None, reg.creds(reg.other_user)):  # anonymous, and a valid user who does not own it
        token = get_token(http, reg, scope, f"repository:{reg.public_repository}:pull", creds=creds)
        assert decode_jwt(token)[1]["access"] == [  # the private scope is left out, not an error
            {"type": "repository", "name": reg.public_repository, "actions": ["pull"]}]
        resp = http.get(url, headers=bearer(token), timeout=10)
        assert resp.status_code == 401 and challenge(resp)[1]["error"] == "insufficient_scope"
    token = get_token(http, reg, f"repository:{reg.private_repository}:pull,push", "registry:catalog:*",
                      creds=reg.creds(reg.owner))  # fmt: skip
    assert decode_jwt(token)[1]["access"] == [
        {"type": "repository", "name": reg.private_repository, "actions": ["pull", "push"]}]
    assert decode_jwt(token)[1]["sub"] == reg.owner
    assert http.get(url, headers=bearer(token), timeout=10).status_code == 200
    assert [(r.user, r.authorization) for r in reg.auth.log] == [(None, False), (reg.other_user, True),
                                                                 (reg.owner, True)]  # fmt: skip


def test_token_server_knobs(http: requests.Session, token_registry: TokenRegistry) -> None:
    reg, auth = token_registry, token_registry.auth
    params = {"service": reg.service, "scope": f"repository:{reg.public_repository}:pull"}
    assert http.get(reg.realm, params=params, auth=(reg.owner, "wrong"), timeout=10).status_code == 401
    assert http.get(reg.realm, params=params, auth=("nobody", "x"), timeout=10).status_code == 401
    auth.refuse(reg.owner)
    assert http.get(reg.realm, params=params, auth=reg.creds(reg.owner), timeout=10).status_code == 401
    assert http.get(reg.realm, params=params, timeout=10).status_code == 200  # anonymous still served
    auth.allow(reg.owner)
    assert [r.status for r in auth.log] == [401, 401, 401, 200]

    url = manifest_url(reg.address, reg.public_repository)
    auth.alg, auth.expires_in = "RS256", 42
    token = get_token(http, reg, params["scope"])
    header, claims = decode_jwt(token)
    assert header["alg"] == "RS256" and claims["exp"] - claims["iat"] == 42
    assert http.get(url, headers=bearer(token), timeout=10).status_code == 200

    auth.exp_shift = -(auth.expires_in + 61)  # past distribution's 60 s leeway
    resp = http.get(url, headers=bearer(get_token(http, reg, params["scope"])), timeout=10)
    assert resp.status_code == 401 and challenge(resp)[1]["error"] == "invalid_token"
    auth.reset()
    assert (auth.alg, auth.expires_in, auth.exp_shift, auth.log) == ("ES256", 300, 0, [])


# -- pull-through cache -----------------------------------------------------------------------------------------


def test_proxy_registry_mirrors_upstream(http: requests.Session, proxy_registry: ProxyRegistry, registry: Registry,
                                         test_image: str) -> None:  # fmt: skip
    mirror = proxy_registry
    assert test_image == f"{registry.address}/{mirror.repository}:{mirror.tag}" == f"{mirror.upstream}/strata/test:1"
    upstream = http.get(manifest_url(registry.address, mirror.repository, mirror.tag), timeout=10)
    resp = http.get(manifest_url(mirror.address, mirror.repository, mirror.tag), timeout=10)
    assert upstream.status_code == resp.status_code == 200
    digest = resp.headers["Docker-Content-Digest"]
    assert digest == upstream.headers["Docker-Content-Digest"] and resp.content == upstream.content

    layer = resp.json()["layers"][0]
    assert not mirror.blob_file(layer["digest"]).exists()
    blob = http.get(f"http://{mirror.address}/v2/{mirror.repository}/blobs/{layer['digest']}", timeout=30)
    assert blob.status_code == 200 and len(blob.content) == layer["size"]
    cached = mirror.blob_file(layer["digest"])  # committed to the cache just after the response: wait a little
    deadline = time.monotonic() + 5
    while not cached.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cached.stat().st_size == layer["size"]
    assert http.get(manifest_url(mirror.address, "strata/no-such-repo"), timeout=10).status_code == 404
    push = http.post(f"http://{mirror.address}/v2/strata/pushed/blobs/uploads/", timeout=10)
    assert push.status_code == 405 and push.json()["errors"][0]["code"] == "UNSUPPORTED"
