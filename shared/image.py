"""Manifests, indexes and image configs: parsed from raw bytes, validated, immutable.

The two hashes of a layer are named apart everywhere: a :class:`Descriptor`'s ``digest`` addresses the blob as
stored (usually compressed); the config's ``diff_ids`` address the uncompressed tar. The chain ID (image-spec
config.md "Layer ChainID") names a layer *on its parents*, which is what an unpacked directory really is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity, usage

# image-spec media-types.md; Docker's equivalents from distribution's manifest/schema2 and manifestlist.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

# Layer media types and the compression each implies (image-spec layer.md; Docker's rootfs.diff types).
LAYER_TYPES: Mapping[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}

# distribution-spec: clients should cap what they read; no real manifest comes near this.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

# Go's GOARCH names for the machine names Python reports.
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


@dataclass(frozen=True)
class Platform:
    """An image's OS, architecture and variant, as an index entry and a config name them. (A dataclass without a
    docstring has dataclasses make one from its signature, with ``inspect``: ~8 ms of every command's imports.)"""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine
        arch = _ARCH.get(machine, machine)
        variant = {"aarch64": "v8", "arm64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(machine)
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise usage(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, other: Platform) -> bool:
        """Does an index entry ``other`` serve this (wanted) platform? arm64 means arm64/v8 (containerd)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        default_variant = {"arm64": "v8", "arm": "v7"}.get(self.architecture)
        mine = self.variant or default_variant
        theirs = other.variant or default_variant
        return self.variant is None or mine == theirs

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor: what a manifest, index or index.json says of a blob it points to."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Any, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise integrity(f"malformed {what}: descriptor is not an object")
        if not isinstance(obj.get("digest"), str):
            raise integrity(f"malformed {what}: bad descriptor (its digest is not a string)")
        try:
            digest = Digest.parse(obj["digest"])
            size = obj["size"]
            media_type = obj.get("mediaType", "")
            plat = obj.get("platform")
        except (KeyError, StrataError) as e:
            raise integrity(f"malformed {what}: bad descriptor ({e})") from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(media_type, str):
            raise integrity(f"malformed {what}: bad descriptor size or mediaType")
        annotations = obj.get("annotations") or {}
        urls = obj.get("urls") or []
        if not (isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values())
                and isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
            raise integrity(f"malformed {what}: bad descriptor annotations or urls")
        platform = None
        if isinstance(plat, dict) and "os" in plat and "architecture" in plat:
            variant = plat.get("variant")
            platform = Platform(str(plat["os"]), str(plat["architecture"]), str(variant) if variant else None)
        return cls(media_type, digest, size, platform, dict(annotations), tuple(urls))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform:
            out["platform"] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def _load(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise integrity(f"{what} is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise integrity(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise integrity(f"{what} is not a JSON object")
    return doc


def media_type_of(raw: bytes, content_type: str | None, what: str) -> str:
    """The document's type: its own ``mediaType`` field, which must agree with the Content-Type if both exist.

    Rejects a document that is both an index and a manifest (CVE-2021-41190) and schema1 with a clear error.
    """
    doc = _load(raw, what)
    declared = doc.get("mediaType")
    header = (content_type or "").split(";")[0].strip() or None
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise integrity(f"{what} has both 'manifests' and 'layers'/'config': refusing an ambiguous document "
                        "(CVE-2021-41190)")
    if doc.get("schemaVersion") == 1 or declared in DOCKER_SCHEMA1 or header in DOCKER_SCHEMA1:
        raise StrataError(f"{what} is a Docker schema 1 manifest, which is deprecated and not supported",
                          Kind.UNSUPPORTED)
    if declared and header and header not in ("application/json", "application/octet-stream") \
            and declared != header:
        raise integrity(f"{what}: mediaType {declared!r} does not match Content-Type {header!r}")
    kind = declared or header
    if kind in MANIFEST_TYPES or kind in INDEX_TYPES:
        return kind
    # skopeo and umoci write OCI documents without mediaType; tell them apart by shape.
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    raise StrataError(f"{what} has unsupported media type {kind!r}", Kind.UNSUPPORTED)


@dataclass(frozen=True)
class Manifest:
    """An image manifest: its config and its layers, base first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, raw: bytes, media_type: str, what: str = "manifest", strict_layers: bool = True) -> Manifest:
        """``strict_layers``: refuse layers we cannot unpack (anything but tar changesets). Off when a manifest is
        only moved, not unpacked (an attestation, an artifact): its blobs are copied by digest whatever they are."""
        doc = _load(raw, what)
        if media_type not in MANIFEST_TYPES:
            raise integrity(f"{what}: expected an image manifest, got {media_type}")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise integrity(f"malformed {what}: 'layers' is not a list")
        config = Descriptor.from_json(doc.get("config"), what)
        parsed = tuple(Descriptor.from_json(x, what) for x in layers)
        for layer in parsed:
            if strict_layers and layer.media_type not in LAYER_TYPES:
                raise StrataError(f"{what}: layer {layer.digest} has unsupported media type "
                                  f"{layer.media_type!r}", Kind.UNSUPPORTED)
        return cls(media_type, config, parsed)


@dataclass(frozen=True)
class Index:
    """An image index (or Docker manifest list): a manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, raw: bytes, media_type: str, what: str = "index") -> Index:
        doc = _load(raw, what)
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise integrity(f"malformed {what}: 'manifests' is not a list")
        return cls(media_type, tuple(Descriptor.from_json(x, what) for x in entries))

    def select(self, wanted: Platform) -> Descriptor:
        """The first entry that serves ``wanted`` (image-spec image-index.md); attestations are skipped."""
        offered: list[str] = []
        for entry in self.manifests:
            if entry.media_type not in MANIFEST_TYPES or entry.platform is None:
                continue  # unknown types MUST NOT be an error; nested indexes are not followed
            if entry.platform.os == "unknown" or \
                    entry.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
                continue
            offered.append(str(entry.platform))
            if wanted.matches(entry.platform):
                return entry
        raise StrataError(f"no image for platform {wanted} in the index; it offers: "
                          f"{', '.join(offered) or 'nothing usable'}", Kind.NOT_FOUND)


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config that pulling and running need; ``raw`` keeps everything else."""

    diff_ids: tuple[Digest, ...]
    platform: Platform
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    created: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, raw: bytes, what: str = "image config") -> ImageConfig:
        doc = _load(raw, what)
        rootfs = doc.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" \
                or not isinstance(rootfs.get("diff_ids"), list):
            raise integrity(f"malformed {what}: rootfs.diff_ids missing")
        try:
            diff_ids = tuple(Digest.parse(d) for d in rootfs["diff_ids"])
        except (StrataError, AttributeError, TypeError) as e:
            raise integrity(f"malformed {what}: bad diff_id ({e})") from None
        cfg = doc.get("config") or {}
        if not isinstance(cfg, dict):
            raise integrity(f"malformed {what}: 'config' is not an object")

        def strings(key: str) -> tuple[str, ...]:
            value = cfg.get(key) or ()
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise integrity(f"malformed {what}: config.{key} is not a list of strings")
            return tuple(value)

        variant, created = doc.get("variant"), doc.get("created")
        plat = Platform(str(doc.get("os", "linux")), str(doc.get("architecture", "")),
                        str(variant) if variant else None)
        return cls(diff_ids, plat, strings("Env"), strings("Entrypoint"), strings("Cmd"),
                   str(cfg.get("WorkingDir") or ""), str(cfg.get("User") or ""),
                   created if isinstance(created, str) else None, doc)


def chain_ids(diff_ids: Sequence[Digest]) -> list[Digest]:
    """image-spec config.md: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            text = f"{out[-1]} {diff_id}".encode()
            out.append(Digest("sha256", hashlib.sha256(text).hexdigest()))
    return out
