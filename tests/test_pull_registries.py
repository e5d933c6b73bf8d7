"""The puller against registries configured as real services are: basic auth, Docker-Hub-style token auth,
a pull-through mirror. Credentials come from Docker's config.json, as ``docker login`` leaves them."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from tests.marks import needs_root, needs_tools
from tests.registries import HtpasswdRegistry, ProxyRegistry, TokenRegistry
from tests.scripts import Registry, image_script, registry_script
from tests.tools import Tools, warm_pull

pytestmark = [needs_root, needs_tools]


def wait_for(path: Path, timeout: float = 5.0) -> bool:
    """distribution's proxy writes its cache a moment after it answered."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


def write_docker_config(tools: Tools, registry: str, user: str, password: str) -> None:
    tools.docker_config.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (tools.docker_config / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))


def test_basic_auth_from_docker_config(tools: Tools, htpasswd_registry: HtpasswdRegistry) -> None:
    reg = htpasswd_registry
    anonymous = tools.puller("pull", reg.image)
    assert anonymous.code != 0 and anonymous.err.count("\n") == 1 and "requires a login" in anonymous.err
    write_docker_config(tools, reg.address, reg.username, reg.password)
    assert tools.puller("pull", reg.image).code == 0
    warm_pull(tools, reg.image)  # the lean way answers Basic's challenge too


def test_login_then_logout(tools: Tools, htpasswd_registry: HtpasswdRegistry) -> None:
    reg = htpasswd_registry
    wrong = tools.puller("login", "-u", reg.username, "--password-stdin", reg.address, stdin="nope\n")
    assert wrong.code != 0 and "denied" in wrong.err
    assert not (tools.docker_config / "config.json").exists()
    ok = tools.puller("login", "-u", reg.username, "--password-stdin", reg.address, stdin=reg.password + "\n")
    assert ok.code == 0 and "Login Succeeded" in ok.out
    saved = json.loads((tools.docker_config / "config.json").read_text())
    assert base64.b64decode(saved["auths"][reg.address]["auth"]).decode() == f"{reg.username}:{reg.password}"
    assert (tools.docker_config / "config.json").stat().st_mode & 0o077 == 0  # secrets are not world-readable
    assert tools.puller("pull", reg.image).code == 0
    assert tools.puller("logout", reg.address).code == 0
    assert reg.address not in json.loads((tools.docker_config / "config.json").read_text())["auths"]


def test_anonymous_bearer_token_one_request_per_scope(tools: Tools, token_registry: TokenRegistry) -> None:
    reg = token_registry
    result = tools.puller("pull", reg.public_image)
    assert result.code == 0, result.err
    scope = f"repository:{reg.public_repository}:pull"
    assert reg.auth.scope_counts() == {scope: 1}  # cached for the manifest, the config and every layer
    assert all(not r.authorization for r in reg.auth.log)  # anonymous: nothing to send
    warm_pull(tools, reg.public_image)  # the lean way: its HEAD's 401, one token, the HEAD again
    assert reg.auth.scope_counts() == {scope: 2} and all(not r.authorization for r in reg.auth.log)


def test_bearer_token_with_credentials_for_a_private_repository(tools: Tools, token_registry: TokenRegistry) -> None:
    reg = token_registry
    denied = tools.puller("pull", reg.private_image)
    assert denied.code != 0 and denied.err.count("\n") == 1 and "denied" in denied.err
    write_docker_config(tools, reg.address, reg.other_user, reg.password(reg.other_user))
    assert tools.puller("pull", reg.private_image).code != 0  # bob may not read alice's repository
    write_docker_config(tools, reg.address, reg.owner, reg.password(reg.owner))
    assert tools.puller("pull", reg.private_image).code == 0
    assert any(r.user == reg.owner for r in reg.auth.log)
    asked = len(reg.auth.log)
    warm_pull(tools, reg.private_image)  # the token asked with the owner's credentials, the lean way too
    assert [r.user for r in reg.auth.log[asked:]] == [reg.owner]


def test_refused_credentials_are_a_clear_error(tools: Tools, token_registry: TokenRegistry) -> None:
    reg = token_registry
    write_docker_config(tools, reg.address, reg.owner, "wrong-password")
    result = tools.puller("pull", reg.private_image)
    assert result.code != 0 and result.err.count("\n") == 1
    assert "token service" in result.err and "401" in result.err


def test_pull_through_mirror(tools: Tools, proxy_registry: ProxyRegistry, registry: Registry,
                             test_image: str) -> None:
    mirror = f"{registry.address}=http://{proxy_registry.address}"
    result = tools.puller("pull", "--mirror", mirror, test_image)
    assert result.code == 0, result.err
    described = json.loads(tools.puller("inspect", test_image).out)[0]
    for layer in described["Layers"]:  # the mirror served the blobs, so it cached them
        assert wait_for(proxy_registry.blob_file(layer["Digest"]))
    tools.configure(**{"registry-mirrors": [mirror]})
    warm_pull(tools, test_image)  # asked of the mirror, the lean way


def test_mirror_down_falls_back_to_the_registry(tools: Tools, registry: Registry, test_image: str,
                                                tmp_path: Path) -> None:
    state = tmp_path / "gone"
    address = registry_script.start(state)
    registry_script.stop(state)  # a mirror that no longer answers
    tools.configure(**{"registry-mirrors": [f"{registry.address}=http://{address}"]})
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    again = tools.puller("pull", test_image)  # the lean way cannot ask the mirror: the full way, to the registry
    assert again.code == 0 and "Image is up to date" in again.out and again.err == "", again.err


def _self_signed_for_loopback(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_loopback_registry_over_tls_with_an_unchecked_certificate(tools: Tools, test_layout: Path,
                                                                   tmp_path: Path) -> None:
    """Docker tries HTTPS without certificate checks first for localhost and 127.0.0.0/8, then plain HTTP."""
    state = tmp_path / "tls-registry"
    address = registry_script.start(state, tls=_self_signed_for_loopback(tmp_path / "certs"))
    try:
        image_script.push(test_layout, f"{address}/strata/tls:1")
        result = tools.puller("pull", f"{address}/strata/tls:1")
        assert result.code == 0, result.err
        assert "InsecureRequestWarning" not in result.err
        warm_pull(tools, f"{address}/strata/tls:1")  # the lean way speaks unchecked TLS to loopback as well
    finally:
        registry_script.stop(state)


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
