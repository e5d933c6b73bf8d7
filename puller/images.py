"""What ``puller images`` lists and ``puller inspect`` shows, in Docker's shapes, so that a script written for
``docker images --format ...`` or ``docker image inspect`` reads ours unchanged.

Docker's numbers are followed where a user compares them: an image's size is the unpacked size (what its files
take: the sum over its layers of the regular files' bytes, as Docker's layer store counts while it unpacks), not
the download size; CREATED is the config's ``created`` as go-units prints an age.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import reference
from shared.digest import Digest
from shared.format import human_duration, human_size
from shared.store.images import StoredImage, all_images
from shared.store.layout import INDEX_DIGEST_ANNOTATION, Store

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as Docker shows a time it does not have
NONE = "<none>"

# The columns of ``images``, Docker's titles, and its default table.
HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
           "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
           "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
TABLE = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
TABLE_DIGESTS = "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def created_epoch(created: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (any number of fraction digits, ``Z`` or an offset), or None
    when the config has none or one that is not a time (a listing does not fail on it)."""
    if not created:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)", created.strip())
    if m is None:
        return None
    day, clock, fraction, zone = m.groups()
    try:
        when = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone in 'Zz' else zone}")
    except ValueError:
        return None
    return when.timestamp() + (float(fraction) if fraction else 0.0)


def go_time_string(epoch: float) -> str:
    """Go's ``time.Unix(s, 0).String()`` in local time, Docker's CreatedAt: ``2024-01-26 23:44:51 +0000 UTC``."""
    local = datetime.fromtimestamp(int(epoch), UTC).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z ") + (local.tzname() or local.strftime("%z"))


def unpacked_size(store: Store, chain_id: Digest) -> int:
    """The bytes a layer's files take as Docker counts them while unpacking: every regular file's length, a
    hard-linked file once (its other names are links in the tar, of length 0)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(store.diff_dir(chain_id))]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # a listing does not fail on a directory it may not read (fsck reports damage)
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def image_size(store: Store, image: StoredImage) -> int:
    """Docker's image Size: the unpacked size of all its layers."""
    return sum(unpacked_size(store, chain) for chain in image.chain_ids)


def _split(name: str) -> tuple[str, str, str | None]:
    """(familiar repository, tag or <none>, digest named in the reference or None) of a stored reference."""
    ref = reference.parse(name)
    familiar = reference.Reference(ref.domain, ref.path).familiar()
    return familiar, ref.tag or NONE, str(ref.digest) if ref.digest else None


def repo_digest(image: StoredImage) -> str:
    """The digest a user pulls the image by: the index it came from, else its manifest."""
    return image.entry.annotations.get(INDEX_DIGEST_ANNOTATION) or str(image.entry.digest)


@dataclass(frozen=True)
class Row:
    """One ``images`` line: a reference and its image, with the numbers the columns show."""

    repository: str
    tag: str
    digest: str
    image: StoredImage
    created: float | None
    size: int

    def fields(self, no_trunc: bool, now: float) -> dict[str, Any]:
        """Docker's image formatter fields (``--format`` names), in its ``{{json .}}`` order."""
        image_id = str(self.image.image_id)
        size = human_size(self.size, 3)  # Docker's SIZE column: HumanSizeWithPrecision(size, 3)
        return {
            "Containers": "N/A",
            "CreatedAt": go_time_string(self.created) if self.created is not None else "N/A",
            "CreatedSince": f"{human_duration(max(now - self.created, 0))} ago" if self.created is not None
            else "N/A",
            "Digest": self.digest,
            "ID": image_id if no_trunc else image_id.removeprefix("sha256:")[:12],
            "Repository": self.repository,
            "SharedSize": "N/A",
            "Size": size,
            "Tag": self.tag,
            "UniqueSize": "N/A",
            "VirtualSize": size,
        }


def rows(store: Store, wanted: str | None = None) -> list[Row]:
    """Every reference in the store as a row, newest image first (then by name), optionally only those of the
    repository ``wanted`` names (``alpine`` or ``alpine:3.19``, as ``docker images REPOSITORY[:TAG]``)."""
    sizes: dict[Digest, int] = {}
    want_repo, want_tag = None, None
    if wanted:
        ref = reference.parse(wanted)
        want_repo = ref.repository
        want_tag = ref.tag if ":" in wanted.rsplit("/", 1)[-1] else None
    out: list[Row] = []
    for image in all_images(store):
        ref = reference.parse(image.name)
        if want_repo is not None and (ref.repository != want_repo or (want_tag and ref.tag != want_tag)):
            continue
        repository, tag, named = _split(image.name)
        if image.image_id not in sizes:
            sizes[image.image_id] = image_size(store, image)
        out.append(Row(repository, tag, named or repo_digest(image), image,
                       created_epoch(image.config.created), sizes[image.image_id]))
    out.sort(key=lambda r: (-(r.created or 0.0), r.repository, r.tag))
    return out


def listing_fields(store: Store, wanted: str | None, no_trunc: bool) -> list[dict[str, Any]]:
    now = time.time()
    return [row.fields(no_trunc, now) for row in rows(store, wanted)]


def inspect_document(store: Store, image: StoredImage) -> dict[str, Any]:
    """``docker image inspect``'s object for an image, then what Strata adds (its reference, the manifest, and
    both hashes of every layer with its chain ID, under names Docker does not use)."""
    raw = image.config.raw
    shaped = _inspect_config(raw)
    tags, digests = _repo_names(store, image)
    records = image.layer_records(store)
    dirs = [str(store.diff_dir(chain)) for chain in reversed(image.chain_ids)]
    doc: dict[str, Any] = {
        "Id": str(image.image_id),
        "RepoTags": sorted(tags),
        "RepoDigests": sorted(digests),
        "Parent": str(raw.get("parent") or ""),
        "Comment": str(raw.get("comment") or ""),
        "Created": image.config.created or ZERO_TIME,
        "DockerVersion": str(raw.get("docker_version") or ""),
        "Author": str(raw.get("author") or ""),
        "Config": shaped,
        "Architecture": image.config.platform.architecture,
    }
    if image.config.platform.variant:
        doc["Variant"] = image.config.platform.variant
    doc["Os"] = image.config.platform.os
    if raw.get("os.version"):
        doc["OsVersion"] = raw["os.version"]
    doc |= {
        "Size": image_size(store, image),
        "GraphDriver": {"Data": {"UpperDir": dirs[0], **({"LowerDir": ":".join(dirs[1:])} if dirs[1:] else {})}
                        if dirs else {}, "Name": "overlay"},
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in image.config.diff_ids]},
        "Metadata": {"LastTagTime": ZERO_TIME},
        # Strata's additions:
        "Name": image.name,
        "Digest": repo_digest(image),
        "ManifestDigest": str(image.entry.digest),
        "MediaType": image.entry.media_type,
        "Platform": str(image.config.platform),
        "Layers": [{"Digest": str(d.digest), "DiffID": str(r.diff_id), "ChainID": str(r.chain_id),
                    "MediaType": d.media_type, "Size": d.size, "UncompressedSize": r.size}
                   for d, r in zip(image.manifest.layers, records, strict=True)],
    }
    return doc


def _inspect_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``config`` object in the shape and key order ``docker image inspect`` prints it."""
    config: dict[str, Any] = dict(raw.get("config") or {})
    shaped: dict[str, Any] = {"User": config.pop("User", "") or ""}
    if config.get("ExposedPorts"):
        shaped["ExposedPorts"] = config.pop("ExposedPorts")
    for key, empty in (("Env", None), ("Cmd", None), ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None),
                       ("OnBuild", None), ("Labels", None)):
        shaped[key] = config.pop(key, empty) or empty
    if config.get("StopSignal"):
        shaped["StopSignal"] = config.pop("StopSignal")
    config.pop("ExposedPorts", None)
    config.pop("StopSignal", None)
    shaped.update(config)  # Healthcheck, Shell, ArgsEscaped... as the config has them
    return shaped


def _repo_names(store: Store, image: StoredImage) -> tuple[list[str], list[str]]:
    """RepoTags and RepoDigests: every reference stored to the same image ID, as tags and as digests."""
    tags: list[str] = []
    digests: list[str] = []
    for other in all_images(store):
        if other.image_id != image.image_id:
            continue
        repository, tag, named = _split(other.name)
        if tag != NONE:
            tags.append(f"{repository}:{tag}")
        entry = f"{repository}@{named or repo_digest(other)}"
        if entry not in digests:
            digests.append(entry)
    return tags, digests
