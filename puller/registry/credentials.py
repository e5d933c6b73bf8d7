"""Credentials from Docker's ``config.json``, so a ``docker login`` works for us and ``puller login`` for Docker.

docker/cli docs "docker login": ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``); per registry
``auths[KEY].auth`` (base64 ``user:password``), or a credential helper: ``credHelpers[KEY]``, else ``credsStore``,
run as ``docker-credential-NAME get|store|erase`` with the server on stdin. Docker Hub's key is
``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from puller.registry.endpoint import Credentials
from shared.errors import Kind, StrataError
from shared.reference import DEFAULT_DOMAIN, DOCKER_HUB_REGISTRY_HOST, LEGACY_DEFAULT_DOMAIN
from shared.store.files import atomic_write

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30


def config_file() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def server_key(registry: str) -> str:
    """The key Docker files a registry's credentials under."""
    if registry in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN, DOCKER_HUB_REGISTRY_HOST, DOCKER_HUB_KEY):
        return DOCKER_HUB_KEY
    return registry


def _candidates(registry: str) -> list[str]:
    key = server_key(registry)
    return [key] if key == DOCKER_HUB_KEY else [key, f"https://{key}", f"http://{key}"]


def _load() -> dict[str, Any]:
    path = config_file()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:
        raise StrataError(f"cannot read {path}: {e}", Kind.USAGE) from None
    return doc if isinstance(doc, dict) else {}


def _helper(name: str, action: str, payload: str) -> str | None:
    import subprocess  # only with a helper configured: a warm pull imports this module

    exe = f"docker-credential-{name}"
    try:
        proc = subprocess.run([exe, action], input=payload, capture_output=True, text=True, timeout=HELPER_TIMEOUT)
    except FileNotFoundError:
        raise StrataError(f"credential helper {exe} is configured but not installed", Kind.USAGE) from None
    except subprocess.TimeoutExpired:
        raise StrataError(f"credential helper {exe} did not answer in {HELPER_TIMEOUT} s", Kind.SYSTEM) from None
    if proc.returncode != 0:
        if action == "get" and "not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise StrataError(f"credential helper {exe} {action} failed: {(proc.stderr or proc.stdout).strip()}",
                          Kind.SYSTEM)
    return proc.stdout


def lookup(registry: str) -> Credentials | None:
    """The credentials Docker would use for ``registry`` (a reference's domain), or None."""
    doc = _load()
    helpers = doc.get("credHelpers") or {}
    auths = doc.get("auths") or {}
    for key in _candidates(registry):
        helper = helpers.get(key) or doc.get("credsStore")
        out = _helper(helper, "get", key) if helper else None
        if out:
            found = json.loads(out)
            return Credentials(found.get("Username", ""), found.get("Secret", ""))
        entry = auths.get(key)
        if isinstance(entry, dict):
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise StrataError(f"{config_file()}: the auth entry for {key} is not base64 user:password",
                                      Kind.USAGE) from None
                return Credentials(user, password)
            if entry.get("username"):
                return Credentials(entry["username"], entry.get("password", ""))
    return None


def _save(doc: dict[str, Any]) -> None:
    path = config_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent="\t").encode() + b"\n", mode=0o600)


def store(registry: str, credentials: Credentials) -> None:
    doc = _load()
    key = server_key(registry)
    helper = (doc.get("credHelpers") or {}).get(key) or doc.get("credsStore")
    auths = doc.setdefault("auths", {})
    if helper:
        _helper(helper, "store", json.dumps({"ServerURL": key, "Username": credentials.username,
                                             "Secret": credentials.password}))
        auths[key] = {}  # Docker notes the registry here; the secret lives in the helper
    else:
        pair = f"{credentials.username}:{credentials.password}".encode()
        auths[key] = {"auth": base64.b64encode(pair).decode()}
    _save(doc)


def erase(registry: str) -> bool:
    doc = _load()
    key = server_key(registry)
    helper = (doc.get("credHelpers") or {}).get(key) or doc.get("credsStore")
    found = key in (doc.get("auths") or {})
    if helper:
        _helper(helper, "erase", key)
    if found:
        del doc["auths"][key]
        _save(doc)
    return found or bool(helper)
