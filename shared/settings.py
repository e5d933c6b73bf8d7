"""The settings file both tools read: one loader, one set of locations, every key checked as it is read.

Which file (the first rule that applies; only that file is read, nothing is merged from another):

1. ``$STRATA_CONFIG``, when it is set and not empty, for any user;
2. as root (effective uid 0): ``/etc/strata/config.json``;
3. as any other user: ``$XDG_CONFIG_HOME/strata/config.json``, ``$XDG_CONFIG_HOME`` being ``~/.config`` when it
   is unset or empty (the XDG base directory rule pip's user configuration follows too).

A missing file is no settings (every default). The keys, with Docker's daemon.json names where Docker has one::

    {"insecure-registries": ["myreg:5000"],                       the puller: plain HTTP allowed for these
     "registry-mirrors": ["https://m.example", "myreg:5000=http://m:5001"],   mirrors tried before the registry
     "runtime": "crun",                                           the runner: the executor of new containers
     "network": "none",                                           the runner: --network's default
     "bip": "10.200.0.1/24",                                      the default bridge's address and prefix
     "root-auto-userns-user": "containers"}                       whose subordinate ids --userns=auto takes

A mirror ``URL`` serves docker.io (Docker's semantics); ``REGISTRY=URL`` mirrors another registry (podman's
registries.conf allows that too). Command-line options win over the file: ``--runtime`` and ``--network``
replace its value, ``--insecure-registry`` and ``--mirror`` add to its lists (:meth:`Settings.with_options`).
A key of the wrong type is refused with one line naming the file and the key; JSON ``null`` and a key that is
absent are the same (the default); keys this version does not know are ignored, so one file can carry another
tool's keys (daemon.json's) beside ours. Everyone gets values from :func:`load`, never the path: what a key
means is decided here once, for root and for every other user alike.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.errors import StrataError, usage
from shared.reference import DEFAULT_DOMAIN
from shared.userns import host_uid

CONFIG_ENV = "STRATA_CONFIG"
SYSTEM_FILE = Path("/etc/strata/config.json")


@dataclass(frozen=True)
class Mirror:
    """A registry mirror from the settings file or ``--mirror``: tried before REGISTRY itself."""

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
    """What the settings file says, each key as the value its users need (the module doc lists them)."""

    insecure: frozenset[str] = frozenset()  # insecure-registries
    mirrors: tuple[Mirror, ...] = field(default_factory=tuple)  # registry-mirrors
    runtime: str = ""  # "": ours
    network: str = ""  # "": bridge
    bip: ipaddress.IPv4Interface | None = None  # None: the first free subnet of the default pool
    auto_userns_user: str = "containers"  # whose /etc/subuid ranges --userns=auto takes blocks from

    def mirrors_for(self, domain: str) -> list[Mirror]:
        return [m for m in self.mirrors if m.registry == domain]

    def with_options(self, insecure: Iterable[str] = (), mirrors: Iterable[str] = ()) -> Settings:
        """The puller's command-line ``--insecure-registry`` and ``--mirror`` added to the file's."""
        return replace(self, insecure=self.insecure | frozenset(insecure),
                       mirrors=self.mirrors + tuple(Mirror.parse(m) for m in mirrors))


def locate(env: Mapping[str, str], euid: int) -> Path:
    """The settings file for a process with this environment and effective uid (the order: the module doc)."""
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    if euid == 0:
        return SYSTEM_FILE
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or pwd.getpwuid(euid).pw_dir) / ".config")
    return Path(config_home) / "strata" / "config.json"


def load() -> Settings:
    """This process's settings (read each time: a long test or a ``run`` sees the file as it is now)."""
    return read(locate(os.environ, host_uid()))


def read(path: Path) -> Settings:
    """The settings in PATH; no file is no settings. Unreadable or not JSON: one line naming the file."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Settings()
    except (ValueError, OSError) as e:
        raise usage(f"cannot read settings {path}: {e}") from None
    return parse(doc, path)


def parse(doc: object, path: Path) -> Settings:
    """A settings document as JSON gave it; PATH only names the file in errors."""
    if not isinstance(doc, dict):
        raise usage(f"settings {path} is not a JSON object")
    values: dict[str, Any] = {}
    for key, (name, check) in KEYS.items():
        value = doc.get(key)
        if value is not None:
            try:
                values[name] = check(key, value)
            except StrataError as e:
                raise usage(f"settings {path}: {e}") from None
    return Settings(**values)


def _strings(key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise usage(f"{key} must be a list of strings")
    return value


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise usage(f"{key} must be a string")
    return value


def _mirrors(key: str, value: object) -> tuple[Mirror, ...]:
    texts = _strings(key, value)
    try:
        return tuple(Mirror.parse(m) for m in texts)
    except StrataError as e:
        raise usage(f"{key}: {e}") from None


def _bip(key: str, value: object) -> ipaddress.IPv4Interface | None:
    text = _string(key, value)
    if not text:
        return None
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        iface = None
    if not isinstance(iface, ipaddress.IPv4Interface) or "/" not in text:
        raise usage(f"invalid {key} {text!r}: use an IPv4 ADDRESS/PREFIX, e.g. 10.200.0.1/24")
    return iface


# each key: the Settings field it fills and the check that turns its JSON value into that field's value
KEYS: dict[str, tuple[str, Callable[[str, object], Any]]] = {
    "insecure-registries": ("insecure", lambda key, value: frozenset(_strings(key, value))),
    "registry-mirrors": ("mirrors", _mirrors),
    "runtime": ("runtime", _string),
    "network": ("network", _string),
    "bip": ("bip", _bip),
    "root-auto-userns-user": ("auto_userns_user", _string),
}
