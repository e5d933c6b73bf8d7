"""The puller's own settings file: insecure registries and mirrors, named as in Docker's daemon.json.

``$STRATA_CONFIG``, else ``/etc/strata/config.json`` (root) or ``$XDG_CONFIG_HOME/strata/config.json``::

    {"insecure-registries": ["myreg:5000"], "registry-mirrors": ["https://mirror.example", "myreg:5000=http://m:5001"]}

A mirror ``URL`` serves docker.io (Docker's semantics); ``REGISTRY=URL`` mirrors another registry (podman's
registries.conf allows that too). Command-line options add to the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import usage
from shared.reference import DEFAULT_DOMAIN

CONFIG_ENV = "STRATA_CONFIG"


def config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if os.geteuid() == 0:
        return Path("/etc/strata/config.json")
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "strata" / "config.json"


@dataclass(frozen=True)
class Mirror:
    registry: str  # the registry it mirrors (a reference's domain: docker.io, host:port)
    url: str  # scheme://host[:port]

    @classmethod
    def parse(cls, text: str) -> Mirror:
        registry, sep, url = text.partition("=")
        if not sep:
            registry, url = DEFAULT_DOMAIN, text
        if "://" not in url:
            url = "https://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise usage(f"invalid mirror {text!r}: expected [REGISTRY=]http(s)://HOST[:PORT] (the root of a domain)")
        return cls(registry, f"{parts.scheme}://{parts.netloc}")


@dataclass(frozen=True)
class Settings:
    insecure: frozenset[str] = frozenset()
    mirrors: tuple[Mirror, ...] = field(default_factory=tuple)

    def mirrors_for(self, domain: str) -> list[Mirror]:
        return [m for m in self.mirrors if m.registry == domain]


def load(extra_insecure: list[str] | None = None, extra_mirrors: list[str] | None = None,
         path: Path | None = None) -> Settings:
    path = path or config_path()
    doc: dict[str, Any] = {}
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except (ValueError, OSError) as e:
        raise usage(f"cannot read settings {path}: {e}") from None
    if not isinstance(doc, dict):
        raise usage(f"settings {path} is not a JSON object")
    insecure = [str(x) for x in doc.get("insecure-registries") or []]
    mirrors = [str(x) for x in doc.get("registry-mirrors") or []]
    return Settings(frozenset(insecure + list(extra_insecure or [])),
                    tuple(Mirror.parse(m) for m in mirrors + list(extra_mirrors or [])))
