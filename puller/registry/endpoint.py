"""What every exchange with a registry shares, whichever HTTP library carries it: where the registry is and how
it is spoken to (:class:`Endpoint`), who we are to it (:class:`Credentials`), what its 401 asks for
(:class:`Challenge`), a token service's answer, and Docker Hub's rate-limit header.

No HTTP library is imported here: the warm pull's one HEAD (``puller/registry/lean.py``, over a socket) and the
registry client (``puller/registry/client.py``, over requests) both build on these, so that both speak to a
registry by the same rules. The values are NamedTuples, not dataclasses: the warm pull imports this module, and
making a frozen dataclass costs it about a millisecond each.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.image import INDEX_TYPES, MANIFEST_TYPES

# Sent as one header so no server falls back to schema1 conversion or to picking linux/amd64 from a list for us
# (distribution registry/handlers/manifests.go).
MANIFEST_ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
USER_AGENT = "strata-puller/0.1"
TIMEOUT = (15, 60)  # (connect, between bytes)
DEFAULT_TOKEN_LIFETIME = 60  # token.md: "if omitted, the default is 60 seconds"
TOKEN_BODY_CAP = 64 * 1024  # a token response (Docker Hub's are ~4 KiB)
TOKEN_TIMEOUT = (10, 30)  # (connect, between bytes) for a token request


def is_loopback_host(host: str) -> bool:
    """``localhost`` and 127.0.0.0/8 (and ::1) speak plain HTTP without flags, as Docker allows."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Endpoint(NamedTuple):
    """Where and how to speak HTTP to a registry (or a mirror of one)."""

    host: str  # host[:port]
    scheme: str = "https"
    verify_tls: bool = True
    http_fallback: bool = False  # insecure registries: unchecked HTTPS first, then plain HTTP (Docker's way)

    @classmethod
    def for_registry(cls, host: str, insecure: frozenset[str] = frozenset()) -> Endpoint:
        """Docker's rule: localhost, 127.0.0.0/8 and the configured insecure registries are tried over HTTPS
        without certificate checks first, then over plain HTTP; every other registry over checked HTTPS only."""
        if is_loopback_host(host) or host in insecure or host.rsplit(":", 1)[0] in insecure:
            return cls(host, "https", verify_tls=False, http_fallback=True)
        return cls(host)

    @classmethod
    def from_url(cls, url: str, insecure: frozenset[str] = frozenset()) -> Endpoint:
        scheme, _, host = url.partition("://")
        return cls(host, scheme, verify_tls=host not in insecure)


class Credentials(NamedTuple):
    username: str
    password: str

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class Challenge(NamedTuple):
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        """RFC 7235 challenge with quoted-string params (commas inside quotes are allowed, as charliecloud does)."""
        import urllib.request  # its two header parsers; costs nothing once http.client is in (it always is here)

        scheme, _, rest = header.strip().partition(" ")
        items = urllib.request.parse_http_list(rest)
        params = urllib.request.parse_keqv_list([i for i in items if "=" in i])
        return cls(scheme.lower(), {k.lower(): v for k, v in params.items()})


def merge_scopes(*scopes: str) -> str:
    """Space-separated ``type:name:actions`` scopes as one, each resource once with the union of its actions, in
    the order first seen (distribution's challenges list actions in any order: ``push,pull``)."""
    merged: dict[str, list[str]] = {}
    for text in scopes:
        for item in text.split():
            resource, sep, actions = item.rpartition(":")
            if not sep:
                resource, actions = item, ""
            have = merged.setdefault(resource, [])
            have.extend(a for a in actions.split(",") if a and a not in have)
    return " ".join(f"{r}:{','.join(a)}" if a else r for r, a in merged.items())


def token_query(challenge: Challenge, scope: str) -> list[tuple[str, str]]:
    """The query a token service is asked (token.md): ``service`` and one ``scope`` per resource, what we need
    merged with what the challenge says is needed."""
    asked = merge_scopes(scope, challenge.params.get("scope", ""))
    service = challenge.params.get("service", "")
    return [(k, v) for k, v in (("service", service), *(("scope", s) for s in asked.split())) if v]


def parse_token(raw: bytes) -> tuple[str, int] | None:
    """A token service's answer: the token (``token``, else OAuth's ``access_token``) and its lifetime in seconds;
    None when it holds no token."""
    try:
        body: dict[str, Any] = json.loads(raw)
        token = str(body.get("token") or body.get("access_token") or "")
        lifetime = int(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
    except (ValueError, TypeError, AttributeError):  # not JSON, or JSON but not an object
        return None
    return (token, lifetime) if token else None


def rate_limit_notice(host: str, headers: Mapping[str, str]) -> str | None:
    """Docker Hub reports its pull limit on manifest responses: ``ratelimit-remaining: 20;w=21600``."""
    remaining = headers.get("ratelimit-remaining")
    if not remaining:
        return None
    limit = headers.get("ratelimit-limit", "?")
    return (f"{host}: pull rate limit: {remaining.split(';')[0]} of {limit.split(';')[0]} left "
            f"(window {remaining.partition('w=')[2] or '?'} s)")
