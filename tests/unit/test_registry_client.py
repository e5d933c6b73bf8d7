"""The registry client's own bookkeeping, without a registry: Docker Hub's rate-limit notice."""

from __future__ import annotations

import requests

from puller.registry.client import RegistryClient


def test_rate_limit_is_shown_once() -> None:
    notices: list[str] = []
    client = RegistryClient("registry-1.docker.io", notice=notices.append)
    for _ in range(2):
        resp = requests.Response()
        resp.headers.update({"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "42;w=21600"})
        client._note_rate_limit(resp)
    assert notices == ["registry-1.docker.io: pull rate limit: 42 of 100 left (window 21600 s)"]
