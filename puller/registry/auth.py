"""Registry authentication as ``requests.auth.AuthBase`` classes, so call sites never handle tokens.

distribution/distribution docs/spec/auth/token.md: a request answered 401 carries ``WWW-Authenticate``; for
``Bearer`` the client fetches a token from ``realm`` with ``service`` and ``scope`` and retries. Tokens are cached per
(realm, service, scope) until they expire (``expires_in``, default 60 s). Credentials and tokens go only to the
registry host: never along a redirect to another host (distribution-spec "MUST NOT forward Authorization headers
across host boundaries"), which is why the retry hook checks the response's host.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.auth import AuthBase

from puller.registry.endpoint import (
    TOKEN_BODY_CAP,
    TOKEN_TIMEOUT,
    Challenge,
    Credentials,
    parse_token,
    token_query,
)
from puller.registry.transport import failure, read_capped
from shared.errors import Kind, StrataError


class TokenCache:
    """Bearer tokens per (realm, service, scope), shared by every thread of one pull."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._realms: dict[str, tuple[str, str]] = {}  # host -> (realm, service) from its last challenge
        self.basic_hosts: set[str] = set()  # hosts that challenged Basic: credentials go with every request after

    def cached(self, host: str, scope: str) -> str | None:
        with self._lock:
            realm = self._realms.get(host)
            if realm is None:
                return None
            token = self._tokens.get((*realm, scope))
            if token and token[1] > time.monotonic():
                return token[0]
            return None

    def fetch(self, session: requests.Session, host: str, challenge: Challenge, scope: str,
              credentials: Credentials | None) -> str:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        if urlsplit(realm).scheme not in ("https", "http"):
            raise StrataError(f"registry {host} sent a bearer challenge with an unusable realm {realm!r}",
                              Kind.REGISTRY)
        # what we need and what the registry says it needs, one ``scope`` parameter each (token.md allows several:
        # a mount needs push on the target and pull on the source); cached under what we asked for, so the next
        # request finds it before it is sent (an upload's body is not sent twice for a 401)
        with self._lock:  # one token request per scope, whatever the number of threads asking
            self._realms[host] = (realm, service)
            hit = self._tokens.get((realm, service, scope))
            if hit and hit[1] > time.monotonic():
                return hit[0]
            params = token_query(challenge, scope)
            headers = {"Authorization": credentials.basic_header()} if credentials else {}
            try:  # streamed, so that only TOKEN_BODY_CAP bytes of whatever the service sends are ever read
                with session.get(realm, params=params, headers=headers, timeout=TOKEN_TIMEOUT,
                                 allow_redirects=False, stream=True) as resp:
                    if resp.status_code != 200:
                        raise StrataError(f"token service {realm} answered {resp.status_code} for scope {scope!r}"
                                          + (" (bad credentials?)" if resp.status_code in (401, 403) else ""),
                                          Kind.REGISTRY)
                    raw, whole = read_capped(resp.raw, TOKEN_BODY_CAP)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                raise StrataError(f"cannot reach the token service {realm}: {failure(e)[0]}",
                                  Kind.REGISTRY) from None
            if not whole:
                raise StrataError(f"token service {realm} sent a response over {TOKEN_BODY_CAP} bytes",
                                  Kind.REGISTRY)
            found = parse_token(raw)
            if found is None:
                raise StrataError(f"token service {realm} returned no token", Kind.REGISTRY)
            token, lifetime = found
            # refresh a little early so a token does not expire between our check and the registry's
            self._tokens[(realm, service, scope)] = (token, time.monotonic() + max(lifetime - 5, 1))
            return token


class RegistryAuth(AuthBase):
    """Auth for one repository scope on one registry host: answers 401 challenges, Bearer or Basic."""

    def __init__(self, session: requests.Session, host: str, scope: str, cache: TokenCache,
                 credentials: Credentials | None = None) -> None:
        self.session = session
        self.host = host
        self.scope = scope
        self.cache = cache
        self.credentials = credentials

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.cache.cached(self.host, self.scope)
        if token:
            r.headers["Authorization"] = f"Bearer {token}"
        elif self.credentials is not None and self.host in self.cache.basic_hosts:
            r.headers["Authorization"] = self.credentials.basic_header()
        r.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return r

    def _on_response(self, resp: requests.Response, **kwargs: Any) -> requests.Response:
        if resp.status_code != 401 or urlsplit(resp.url).netloc != self.host:
            return resp  # never answer another host's challenge with this registry's secrets
        if getattr(resp.request, "_strata_auth_retry", False):
            return resp
        header = resp.headers.get("WWW-Authenticate", "")
        challenge = Challenge.parse(header)
        if challenge.scheme == "bearer":
            value = "Bearer " + self.cache.fetch(self.session, self.host, challenge, self.scope, self.credentials)
        elif challenge.scheme == "basic":
            if self.credentials is None:
                raise StrataError(f"registry {self.host} requires a login (no credentials for it)", Kind.REGISTRY)
            value = self.credentials.basic_header()
            self.cache.basic_hosts.add(self.host)
        else:
            return resp
        resp.content  # noqa: B018 - drain so the connection can be reused (BoundedAdapter: at most a cap, else hang up)
        resp.close()
        retry = resp.request.copy()
        retry.headers["Authorization"] = value
        retry._strata_auth_retry = True  # type: ignore[attr-defined]
        new: requests.Response = resp.connection.send(retry, **kwargs)
        new.history.append(resp)
        new.request = retry
        return new
