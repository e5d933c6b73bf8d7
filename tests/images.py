"""Variants of the test image, made by real tools (skopeo) and pushed to a registry, each under its own
repository ``variants/NAME:1``, then read back with ``skopeo inspect --raw`` and checked:

    gzip          OCI manifest, gzip layers (the layout as umoci wrote it)
    zstd          OCI manifest, zstd layers (skopeo --dest-compress-format zstd)
    uncompressed  OCI manifest, plain tar layers (skopeo --dest-decompress)
    v2s2          Docker schema 2 manifest, gzip layers (skopeo --format v2s2)
    index         OCI index: linux/amd64, linux/arm64/v8 and a BuildKit-style attestation manifest (skopeo --all)
    list          Docker manifest list: linux/amd64, linux/arm64/v8 (skopeo --all --format v2s2)

The arm64/v8 image has the same layers as the amd64 one and its own config ("architecture": "arm64",
"variant": "v8"); it, the attestation and the two indexes are written into a copy of the test layout by
``build_variants_layout`` (tags ARM64_TAG, INDEX_TAG, PAIR_TAG next to the test image's "test").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

TAG = "test"  # the test image in the layout (scripts/build-test-image)
ARM64_TAG = "arm64"  # the arm64/v8 manifest
INDEX_TAG = "index"  # OCI index: amd64, arm64/v8, attestation
PAIR_TAG = "pair"  # OCI index: amd64, arm64/v8 only (the source of the Docker list)
AMD64 = "linux/amd64"
ARM64 = "linux/arm64/v8"
REPO_PREFIX = "variants"
VARIANTS = ("gzip", "zstd", "uncompressed", "v2s2", "index", "list")


class VariantError(RuntimeError):
    """skopeo failed, or the registry serves something other than what was meant."""


@dataclass(frozen=True)
class PlatformImage:
    """One image manifest as the registry serves it."""

    platform: str  # "linux/amd64", "linux/arm64/v8"
    digest: str  # the manifest's digest
    media_type: str  # the manifest's media type
    config: str  # the config blob's digest
    layers: tuple[str, ...]  # the layer blobs' digests, bottom first
    layer_media_types: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """What ``ref`` resolves to in the registry: one manifest, or an index / list of them."""

    name: str  # "gzip", "zstd", ... (VARIANTS)
    ref: str  # 127.0.0.1:PORT/variants/NAME:1
    digest: str  # the digest of the document the tag points at (manifest, index or list)
    media_type: str  # its media type
    images: tuple[PlatformImage, ...]  # the one image, or the index's platform images in its order
    attestation: str | None = None  # the index's attestation manifest digest, if any

    @property
    def repo(self) -> str:
        """127.0.0.1:PORT/variants/NAME (``f"{v.repo}@{digest}"`` names anything in it)."""
        return self.ref.rsplit(":", 1)[0]

    @property
    def is_index(self) -> bool:
        return self.media_type in (OCI_INDEX, DOCKER_LIST)

    @property
    def manifests(self) -> dict[str, str]:
        """platform -> manifest digest."""
        return {i.platform: i.digest for i in self.images}

    @property
    def configs(self) -> dict[str, str]:
        """platform -> config digest."""
        return {i.platform: i.config for i in self.images}

    def image(self, platform: str = AMD64) -> PlatformImage:
        for i in self.images:
            if i.platform == platform:
                return i
        raise KeyError(f"{self.ref} has no {platform} image (has {', '.join(self.manifests)})")


# -- the layout ------------------------------------------------------------------------------------------------


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    """Store DATA in LAYOUT's blobs; return (digest, size)."""
    hex_ = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hex_).write_bytes(data)
    return f"sha256:{hex_}", len(data)


def _get_blob(layout: Path, digest: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes())
    return doc


def tagged(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor tagged TAG in LAYOUT's index.json."""
    for desc in json.loads((layout / "index.json").read_text())["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(desc)
    raise VariantError(f"tag {tag!r} not in {layout}/index.json")


def _tag(layout: Path, tag: str, media_type: str, digest: str, size: int) -> None:
    """Point TAG at (MEDIA_TYPE, DIGEST, SIZE) in LAYOUT's index.json (replacing what it named)."""
    path = layout / "index.json"
    index = json.loads(path.read_text())
    index["manifests"] = [d for d in index["manifests"]
                          if d.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]  # fmt: skip
    index["manifests"].append({"mediaType": media_type, "digest": digest, "size": size,
                               "annotations": {"org.opencontainers.image.ref.name": tag}})  # fmt: skip
    path.write_text(json.dumps(index))


def add_arm64(layout: Path, tag: str = TAG) -> dict[str, Any]:
    """Write an arm64/v8 twin of the image tagged TAG (same layers, a config saying arm64 v8), tag it ARM64_TAG;
    return its descriptor."""
    amd64 = tagged(layout, tag)
    manifest = _get_blob(layout, amd64["digest"])
    config = _get_blob(layout, manifest["config"]["digest"])
    config["architecture"], config["variant"] = "arm64", "v8"
    digest, size = _put_blob(layout, _canonical(config))
    manifest["config"] = {**manifest["config"], "digest": digest, "size": size}
    digest, size = _put_blob(layout, _canonical(manifest))
    _tag(layout, ARM64_TAG, OCI_MANIFEST, digest, size)
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}


def add_attestation(layout: Path, subject: str) -> dict[str, Any]:
    """Write a BuildKit-style attestation manifest about the manifest SUBJECT; return its index entry
    (platform unknown/unknown, vnd.docker.reference.type: attestation-manifest)."""
    statement = {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document",
                 "subject": [{"name": "strata-test", "digest": {"sha256": subject.split(":", 1)[1]}}],
                 "predicate": {"spdxVersion": "SPDX-2.3", "name": "strata-test"}}  # fmt: skip
    layer, layer_size = _put_blob(layout, _canonical(statement))
    config = {"architecture": "unknown", "os": "unknown", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [layer]}}  # fmt: skip
    config_digest, config_size = _put_blob(layout, _canonical(config))
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": IN_TOTO, "digest": layer, "size": layer_size,
                            "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]}  # fmt: skip
    digest, size = _put_blob(layout, _canonical(manifest))
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.digest": subject,
                            "vnd.docker.reference.type": "attestation-manifest"}}  # fmt: skip


def add_index(layout: Path, tag: str, entries: Sequence[dict[str, Any]]) -> str:
    """Write an OCI index of ENTRIES, tag it TAG; return its digest."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}
    digest, size = _put_blob(layout, _canonical(index))
    _tag(layout, tag, OCI_INDEX, digest, size)
    return digest


def build_variants_layout(source: Path, layout: Path, tag: str = TAG) -> None:
    """Copy the OCI layout SOURCE (image tagged TAG, linux/amd64) to LAYOUT and add the arm64/v8 twin, an
    attestation, INDEX_TAG (amd64, arm64/v8, attestation) and PAIR_TAG (amd64, arm64/v8)."""
    if layout.exists():
        shutil.rmtree(layout)
    shutil.copytree(source, layout, symlinks=True)
    amd64 = tagged(layout, tag)
    amd64 = {"mediaType": amd64["mediaType"], "digest": amd64["digest"], "size": amd64["size"],
             "platform": {"architecture": "amd64", "os": "linux"}}  # fmt: skip
    arm64 = {**add_arm64(layout, tag), "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    attestation = add_attestation(layout, amd64["digest"])
    add_index(layout, INDEX_TAG, [amd64, arm64, attestation])
    add_index(layout, PAIR_TAG, [amd64, arm64])


# -- skopeo ----------------------------------------------------------------------------------------------------


def copy_to_registry(src: str, ref: str) -> None:
    """skopeo copy SRC to the registry as REF, digests as they are (the same image ID under every name)."""
    skopeo("copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", src, f"docker://{ref}")


def skopeo(*args: str | os.PathLike[str]) -> bytes:
    """Run skopeo with ARGS; its stdout, or VariantError with its stderr."""
    argv = ["skopeo", *(os.fspath(a) for a in args)]
    proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise VariantError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.decode().strip()}")
    return proc.stdout


def inspect_raw(ref: str, config: bool = False) -> bytes:
    """The manifest (or index; or with CONFIG the config blob) REF resolves to, byte for byte as served."""
    return skopeo("inspect", "--raw", "--tls-verify=false", *(["--config"] if config else []), f"docker://{ref}")


def _copy(src: str, dest: str, *options: str) -> None:
    skopeo("copy", "--quiet", "--dest-tls-verify=false", *options, src, dest)


def push_variant(name: str, layout: Path, address: str) -> Variant:
    """Push variant NAME (one of VARIANTS) of the image in LAYOUT (a build_variants_layout) to
    ADDRESS/variants/NAME:1; read it back, check its media types and platforms, and describe it."""
    ref = f"{address}/{REPO_PREFIX}/{name}:1"
    dest = f"docker://{ref}"
    with tempfile.TemporaryDirectory(prefix="strata-variant-") as tmp:
        # --preserve-digests: the pushed manifests are the ones made here (else skopeo may swap a layer for one
        # the registry already has with the same content, in another compression)
        if name == "gzip":
            _copy(f"oci:{layout}:{TAG}", dest, "--preserve-digests")
        elif name == "zstd":  # recompressed on the way into a fresh layout: a push would reuse the gzip blobs
            _copy(f"oci:{layout}:{TAG}", f"oci:{tmp}/oci:{TAG}", "--dest-compress-format", "zstd")
            _copy(f"oci:{tmp}/oci:{TAG}", dest, "--preserve-digests")
        elif name == "uncompressed":  # --dest-decompress acts on dir: destinations only
            _copy(f"oci:{layout}:{TAG}", f"dir:{tmp}/dir", "--dest-decompress")
            _copy(f"dir:{tmp}/dir", dest, "--preserve-digests")
        elif name == "v2s2":
            _copy(f"oci:{layout}:{TAG}", dest, "--format", "v2s2")
        elif name == "index":
            _copy(f"oci:{layout}:{INDEX_TAG}", dest, "--all", "--preserve-digests")
        elif name == "list":
            _copy(f"oci:{layout}:{PAIR_TAG}", dest, "--all", "--format", "v2s2")
        else:
            raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    variant = describe(name, ref)
    check(variant)
    return variant


def describe(name: str, ref: str) -> Variant:
    """Read what REF resolves to (and, for an index, each manifest it lists) with skopeo inspect --raw."""
    raw = inspect_raw(ref)
    doc = json.loads(raw)
    media_type = doc.get("mediaType", OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    repo = ref.rsplit(":", 1)[0]
    if "manifests" not in doc:
        config = json.loads(inspect_raw(ref, config=True))
        platform = "/".join(p for p in (config.get("os"), config.get("architecture"), config.get("variant")) if p)
        return Variant(name, ref, digest, media_type, (_platform_image(platform, digest, raw),))
    images: list[PlatformImage] = []
    attestation = None
    for entry in doc["manifests"]:
        if entry.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest":
            attestation = entry["digest"]
            continue
        p = entry["platform"]
        platform = "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)
        images.append(_platform_image(platform, entry["digest"], inspect_raw(f"{repo}@{entry['digest']}")))
    return Variant(name, ref, digest, media_type, tuple(images), attestation)


def _platform_image(platform: str, digest: str, raw: bytes) -> PlatformImage:
    if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
        raise VariantError(f"the registry served {platform} manifest {digest} with another digest")
    doc = json.loads(raw)
    media_type = doc.get("mediaType", OCI_MANIFEST)
    layers = doc["layers"]
    return PlatformImage(platform, digest, media_type, doc["config"]["digest"],
                         tuple(x["digest"] for x in layers), tuple(x["mediaType"] for x in layers))  # fmt: skip


EXPECTED: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # name: (top media type, manifest media type, layer media type, platforms)
    "gzip": (OCI_MANIFEST, OCI_MANIFEST, OCI_LAYER_GZIP, (AMD64,)),
    "zstd": (OCI_MANIFEST, OCI_MANIFEST, OCI_LAYER_ZSTD, (AMD64,)),
    "uncompressed": (OCI_MANIFEST, OCI_MANIFEST, OCI_LAYER_TAR, (AMD64,)),
    "v2s2": (DOCKER_MANIFEST, DOCKER_MANIFEST, DOCKER_LAYER_GZIP, (AMD64,)),
    "index": (OCI_INDEX, OCI_MANIFEST, OCI_LAYER_GZIP, (AMD64, ARM64)),
    "list": (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_LAYER_GZIP, (AMD64, ARM64)),
}


def check(variant: Variant) -> None:
    """Raise VariantError unless VARIANT has the media types and platforms its name promises."""
    top, manifest, layer, platforms = EXPECTED[variant.name]
    problems = []
    if variant.media_type != top:
        problems.append(f"media type {variant.media_type}, not {top}")
    if tuple(variant.manifests) != platforms:
        problems.append(f"platforms {tuple(variant.manifests)}, not {platforms}")
    for image in variant.images:
        if image.media_type != manifest:
            problems.append(f"{image.platform} manifest is {image.media_type}, not {manifest}")
        if not image.layers or set(image.layer_media_types) != {layer}:
            problems.append(f"{image.platform} layers are {image.layer_media_types}, not {layer}")
    if (variant.attestation is not None) != (variant.name == "index"):
        problems.append(f"attestation {variant.attestation}")
    if problems:
        raise VariantError(f"{variant.ref}: " + "; ".join(problems))
