"""Image references, parsed and normalized exactly as Docker does.

Grammar and rules from github.com/distribution/reference (``reference.go``, ``normalize.go``):
the first component is a registry domain only if it contains ``.`` or ``:``, is ``localhost``, or has an
upper-case letter; otherwise the domain is ``docker.io`` and a one-component name gets ``library/``.
``index.docker.io`` is canonicalized to ``docker.io``. When both a tag and a digest are given, the digest wins and
the tag is dropped (``ParseDockerRef``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.digest import Digest
from shared.errors import usage

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
# The host that actually serves docker.io's v2 API (moby: registry.DefaultRegistryHost).
DOCKER_HUB_REGISTRY_HOST = "registry-1.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*))"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_ANCHORED_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_DOMAIN_RE = re.compile(_DOMAIN)


@dataclass(frozen=True)
class Reference:
    """A fully normalized reference: ``domain/path`` plus a tag or a digest (never neither)."""

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def repository(self) -> str:
        """``domain/path``: the full repository name, as recorded in the store."""
        return f"{self.domain}/{self.path}"

    @property
    def registry_host(self) -> str:
        """The host[:port] to talk HTTP to: docker.io is served by registry-1.docker.io."""
        return DOCKER_HUB_REGISTRY_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def identifier(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if any, else the tag."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """Docker's short display form: ``ubuntu:latest`` rather than ``docker.io/library/ubuntu:latest``."""
        name = self.repository
        if self.domain == DEFAULT_DOMAIN:
            name = self.path
            if name.startswith(OFFICIAL_REPO_PREFIX) and name.count("/") == 1:
                name = name.removeprefix(OFFICIAL_REPO_PREFIX)
        return name + str(self)[len(self.repository):]


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """Parse and normalize a user's reference; raise a USAGE error naming what is wrong."""
    if not text:
        raise usage("invalid reference format: empty reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise usage(f"invalid reference format: {text!r} contains white space")
    if _ANCHORED_IDENTIFIER_RE.fullmatch(text):
        raise usage(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_domain(text)
    remote = re.split(r"[:@]", remainder, maxsplit=1)[0]
    if remote.lower() != remote:
        raise usage(f"invalid reference format: repository name ({remote}) must be lowercase")
    if domain != DEFAULT_DOMAIN and not _DOMAIN_RE.fullmatch(domain):
        raise usage(f"invalid reference format: {text!r} has an invalid registry host {domain!r}")
    match = _REFERENCE_RE.fullmatch(f"{domain}/{remainder}")
    if match is None:
        raise usage(f"invalid reference format: {text!r}")
    if len(match["name"]) > NAME_TOTAL_LENGTH_MAX:
        raise usage(f"invalid reference format: repository name must not be more than "
                    f"{NAME_TOTAL_LENGTH_MAX} characters")
    digest = Digest.parse(match["digest"].lower()) if match["digest"] else None
    if digest is not None and match["digest"] != str(digest):
        raise usage(f"invalid reference format: digest {match['digest']!r} must be lowercase hex")
    tag = None if digest else (match["tag"] or DEFAULT_TAG)
    return Reference(match["domain"] or domain, match["path"], tag, digest)
