"""Image archives as sources and sinks: ``oci-archive`` (a tar of an OCI layout) and ``docker-archive`` (what
``docker save`` writes and ``docker load``, ``podman load`` and skopeo's ``docker-archive:`` read).

docker-archive, as Docker 25+ writes it: an OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/HEX``)
with ``manifest.json`` beside it, ``[{"Config": "blobs/sha256/HEX", "RepoTags": ["name:tag"], "Layers":
["blobs/sha256/HEX", ...]}]``, and ``repositories`` (``{"repo": {"tag": ID}}``, for pre-1.10 loaders). The
legacy form (older Docker, skopeo) has no ``index.json``: configs are ``HEX.json``, layers ``ID/layer.tar`` or
``HEX.tar``, uncompressed; it has no registry manifest, so :class:`DockerArchiveSource` makes one as skopeo's
``docker-archive:`` source does, byte for byte (Docker schema 2, compact JSON, layer digest = the file's
digest, size = the file's size, media type ``...rootfs.diff.tar.gzip`` whatever the compression, as skopeo
writes it): the same archive then has the same manifest digest through skopeo and through ``puller load``.

A tar from outside is hostile. :class:`Archive` reads its headers once and refuses, as one line, member names
that are absolute or climb with ``..``, duplicate names, links whose target leaves the archive, more members than
any image needs, and a tar cut short; it is never extracted to disk as a tree: members are read by name, with
``pread`` at their offsets (so several threads read at once), each blob verified as it is copied out
(:func:`shared.transfer.layout.copy_verified`), each document capped at MAX_MANIFEST_BYTES. Links inside the
archive (Docker writes ``ID/layer.tar -> ../blobs/sha256/HEX``) are resolved by name within it, never on disk.

Sinks stage the layout in a directory (``staging``: in the store's tmp/, so blobs are hard links) and write the
tar only at ``close()``: to ``DEST.tmp-PID``, renamed to DEST once complete, or to a stream. On failure
(``discard``, or leaving the ``with`` block by an exception) nothing is left at DEST.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, cast

from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError, hostile, integrity, not_found
from shared.image import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    chain_ids,
)
from shared.layer import compress
from shared.store import REF_NAME_ANNOTATION, remove_tree
from shared.transfer.layout import (
    CHUNK,
    IMAGE_NAME_ANNOTATION,
    LayoutSink,
    LayoutSource,
    blob_name,
    copy_verified,
    image_name,
    read_document,
    read_index,
)
from shared.transfer.model import Document, Image, ProgressFn, Resolved, Source

MAX_MEMBERS = 100_000  # an image archive holds a few files per layer; more is a tar bomb
MAX_LINK_HOPS = 16
# skopeo's docker-archive source calls every layer this (manifest.DockerV2Schema2LayerMediaType)
SKOPEO_LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TYPES = {"none": "application/vnd.docker.image.rootfs.diff.tar", "gzip": SKOPEO_LAYER_TYPE,
                      "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd"}
_BLOB_PATH = re.compile(r"blobs/(sha256|sha512)/([a-f0-9]+)")


def _normalize(name: str, where: str) -> str:
    """A member name as a relative path without ``.`` parts; absolute names and ``..`` are HOSTILE."""
    if name.startswith("/"):
        raise hostile(f"{where}: member {name!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise hostile(f"{where}: member {name!r} climbs out of the archive with '..'")
    return "/".join(parts)


class Archive:
    """A tar file indexed by member name; read with pread, never extracted."""

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = path
        self.label = label or str(path)  # what messages call it ("stdin" for a spooled copy)
        self.where = f"archive {self.label}"
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise not_found(f"{path}: no such file") from None
        except OSError as e:
            raise StrataError(f"cannot open {path}: {e.strerror}", Kind.SYSTEM) from None
        try:
            self._index()
        except BaseException:
            os.close(self.fd)
            raise

    def _index(self) -> None:
        size = os.fstat(self.fd).st_size
        with open(self.fd, "rb", closefd=False) as f:
            try:
                with tarfile.open(fileobj=f, mode="r:") as tf:
                    count = 0
                    while (m := tf.next()) is not None:
                        count += 1
                        if count > MAX_MEMBERS:
                            raise hostile(f"{self.where} has more than {MAX_MEMBERS} members")
                        self._add(m, size)
                    tf.members = []  # type: ignore[attr-defined]  # the index is ours; tarfile's list would hold every header twice
            except tarfile.ReadError as e:
                text = str(e)
                if self.members and ("unexpected end" in text or "truncated" in text):
                    raise integrity(f"{self.where} is truncated") from None
                raise integrity(f"{self.where} is not a tar archive ({text or 'unreadable header'})") from None
            except (tarfile.HeaderError, UnicodeDecodeError, ValueError) as e:
                raise integrity(f"{self.where} has a corrupt tar header: {e}") from None

    def _add(self, m: tarfile.TarInfo, size: int) -> None:
        name = _normalize(m.name, self.where)
        if not name:
            return  # "./" itself
        if m.isdir():
            return
        if name in self.members:
            raise hostile(f"{self.where} holds {name!r} twice (which one a reader takes is ambiguous)")
        if m.issym() or m.islnk():
            base = posixpath.dirname(name) if m.issym() else ""
            if m.linkname.startswith("/"):
                raise hostile(f"{self.where}: link {name!r} points outside the archive ({m.linkname!r})")
            target = posixpath.normpath(posixpath.join(base, m.linkname))
            if target == ".." or target.startswith("../"):
                raise hostile(f"{self.where}: link {name!r} points outside the archive ({m.linkname!r})")
        elif m.isreg() and not m.issparse() and m.offset_data + m.size > size:
            raise integrity(f"{self.where} is truncated: member {name!r} ends past the end of the file")
        self.members[name] = m

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def member(self, name: str) -> tarfile.TarInfo | None:
        """The regular file ``name`` names, following links within the archive; None when absent. A name that
        ends at something else (a device, a link loop) is HOSTILE."""
        name = _normalize(name, self.where)
        for _ in range(MAX_LINK_HOPS):
            m = self.members.get(name)
            if m is None:
                return None
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = posixpath.normpath(m.linkname)
            elif m.isreg() and not m.issparse():
                return m
            else:
                raise hostile(f"{self.where}: {name!r} is not a regular file")
        raise hostile(f"{self.where}: {name!r} is a chain of more than {MAX_LINK_HOPS} links")

    def need(self, name: str, what: str) -> tarfile.TarInfo:
        m = self.member(name)
        if m is None:
            raise not_found(f"{what}: {name} is missing from {self.where}")
        return m

    def chunks(self, m: tarfile.TarInfo, what: str) -> Iterator[bytes]:
        offset, left = m.offset_data, m.size
        while left:
            block = os.pread(self.fd, min(CHUNK, left), offset)
            if not block:
                raise integrity(f"{what}: {self.where} is truncated")
            offset += len(block)
            left -= len(block)
            yield block


class TarFiles:
    """:class:`shared.transfer.layout.Files` over an archive's members."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def where(self) -> str:
        return self.archive.where

    def exists(self, name: str) -> bool:
        return self.archive.member(name) is not None

    def size(self, name: str, what: str) -> int:
        return self.archive.need(name, what).size

    def read_small(self, name: str, what: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        m = self.archive.need(name, what)
        if m.size > limit:
            raise integrity(f"{what}: {name} is {m.size} bytes, over the {limit}-byte limit")
        return b"".join(self.archive.chunks(m, what))

    def chunks(self, name: str, what: str, size: int) -> Iterator[bytes]:
        m = self.archive.need(name, what)
        if m.size != size:
            raise integrity(f"{what}: {name} is {m.size} bytes, its descriptor says {size}")
        return self.archive.chunks(m, what)


def _archive(path: Path | Archive) -> Archive:
    return path if isinstance(path, Archive) else Archive(path)


class OciArchiveSource(LayoutSource):
    """``oci-archive:FILE[:REF]``: an OCI layout in a tar, read as :class:`LayoutSource` reads a directory."""

    def __init__(self, path: Path | Archive, ref: str | None) -> None:
        self.archive = _archive(path)
        super().__init__(Path(self.archive.label), ref, TarFiles(self.archive), "oci-archive")


# -- docker-archive ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerEntry:
    """One element of manifest.json: member names, as normalized paths inside the archive."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def docker_entries(files: TarFiles) -> list[DockerEntry]:
    what = f"manifest.json of {files.where()}"
    raw = files.read_small("manifest.json", what)
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise integrity(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, list):
        raise integrity(f"{what} is not a list")
    out = []
    for item in doc:
        if not isinstance(item, dict):
            raise integrity(f"malformed {what}: an entry is not an object")
        config, tags, layers = item.get("Config"), item.get("RepoTags") or [], item.get("Layers")
        if not isinstance(config, str) or not isinstance(layers, list) or not isinstance(tags, list) \
                or not all(isinstance(x, str) for x in [*layers, *tags]):
            raise integrity(f"malformed {what}: Config, RepoTags or Layers of the wrong type")
        where = files.where()
        out.append(DockerEntry(_normalize(config, where), tuple(tags), tuple(_normalize(x, where) for x in layers)))
    return out


def _claimed(name: str) -> Digest | None:
    """The digest a member's name claims (``blobs/ALG/HEX``), if it is of that form."""
    match = _BLOB_PATH.fullmatch(name)
    if match is None:
        return None
    with contextlib.suppress(StrataError):
        return Digest(match[1], match[2])
    return None


def _tag_name(tag: str, what: str) -> str:
    try:
        return str(reference.parse(tag))
    except StrataError as e:
        raise integrity(f"{what}: RepoTag {tag!r} is not a reference ({e})") from None


class DockerArchiveSource:
    """``docker-archive:FILE[:REF]``: one manifest.json entry; REF is one of its RepoTags (normalized as Docker
    does) or ``@N`` (the Nth entry, as skopeo); without REF the archive must hold exactly one image."""

    def __init__(self, path: Path | Archive, ref: str | None = None) -> None:
        self.archive = _archive(path)
        self.path = self.archive.label
        self.ref = ref
        self.files = TarFiles(self.archive)
        self.entry = self._choose(docker_entries(self.files), ref)
        self._top: Document | None = None
        self._config: bytes = b""
        self._members: dict[Digest, str] = {}
        self._index_names: list[str] = []

    def describe(self) -> str:
        return f"docker-archive:{self.path}" + (f":{self.ref}" if self.ref else "")

    def _choose(self, entries: list[DockerEntry], ref: str | None) -> DockerEntry:
        where = f"docker-archive:{self.path}"
        if ref is not None and ref.startswith("@") and ref[1:].isdigit():
            if int(ref[1:]) >= len(entries):
                raise not_found(f"{where} has {len(entries)} images; there is no {ref}")
            return entries[int(ref[1:])]
        if ref is None and len(entries) == 1:
            return entries[0]
        if ref is not None:
            wanted = str(reference.parse(ref))
            found = [e for e in entries if any(_safe_name(t) == wanted for t in e.repo_tags)]
            if found:
                return found[0]
        listing = ", ".join(", ".join(e.repo_tags) or f"@{i} (untagged)" for i, e in enumerate(entries))
        if not entries:
            raise not_found(f"{where} holds no image")
        wanted_text = "several images; name one" if ref is None else f"no image tagged {ref!r}"
        raise not_found(f"{where} holds {wanted_text}: {listing}")

    def names(self) -> list[str]:
        """The image's full names: its RepoTags, then the names index.json gives its manifest (for ``load``)."""
        self.top()
        out: list[str] = []
        for name in [_tag_name(t, f"manifest.json of {self.path}") for t in self.entry.repo_tags] + \
                self._index_names:
            if name not in out:
                out.append(name)
        return out

    def top(self) -> Document:
        if self._top is None:
            self._top = self._prepare()
        return self._top

    def _prepare(self) -> Document:
        what = f"config of {self.describe()}"
        self._config = self.files.read_small(self.entry.config, what)
        config_digest = Digest.of_bytes(self._config)
        claimed = _claimed(self.entry.config)
        if claimed is not None:
            claimed.verify_bytes(self._config, what)
            config_digest = claimed
        config = ImageConfig.parse(self._config, what)
        if len(config.diff_ids) != len(self.entry.layers):
            raise integrity(f"{self.describe()}: the config lists {len(config.diff_ids)} layers, manifest.json "
                            f"{len(self.entry.layers)}")
        self._members = {config_digest: self.entry.config}
        real = self._find_manifest(config_digest)
        if real is not None:
            manifest = Manifest.parse(real.raw, real.media_type, f"manifest of {self.describe()}")
            for desc in manifest.layers:
                self._members[desc.digest] = blob_name(desc.digest)
            return real
        return self._synthesize(config_digest, config)

    def _find_manifest(self, config_digest: Digest) -> Document | None:
        """The registry manifest index.json holds for this entry (Docker 25+): same config, same layer files."""
        if not self.files.exists("index.json"):
            return None
        where = self.describe()
        wanted_layers = list(self.entry.layers)
        found: list[Document] = []
        budget = [1000]  # documents read while looking: an index of indexes cannot make us read forever

        def leads_to_it(desc: Descriptor, depth: int) -> bool:
            budget[0] -= 1
            if budget[0] < 0:
                raise hostile(f"{where}: index.json leads to more than 1000 documents")
            if desc.media_type in INDEX_TYPES and depth < 1:
                doc = read_document(self.files, desc, f"index in {where}")
                children = Index.parse(doc.raw, doc.media_type, f"index in {where}").manifests
                return any([leads_to_it(c, depth + 1) for c in children if c.media_type in MANIFEST_TYPES])
            if desc.media_type not in MANIFEST_TYPES:
                return False
            if found and desc.digest == found[0].digest:
                return True
            doc = read_document(self.files, desc, f"manifest in {where}")
            manifest = Manifest.parse(doc.raw, doc.media_type, f"manifest in {where}", strict_layers=False)
            if manifest.config.digest != config_digest or \
                    [blob_name(x.digest) for x in manifest.layers] != wanted_layers:
                return False
            if not found:
                found.append(doc)
            return doc.digest == found[0].digest

        for entry in read_index(self.files, f"index.json of {where}").manifests:
            if leads_to_it(entry, 0):
                name = image_name(entry)
                if name and name not in self._index_names:
                    self._index_names.append(name)
        return found[0] if found else None

    def _synthesize(self, config_digest: Digest, config: ImageConfig) -> Document:
        """A Docker schema 2 manifest, byte for byte as skopeo's docker-archive source makes it."""
        layers = []
        for i, name in enumerate(self.entry.layers):
            what = f"layer {i + 1} of {self.describe()}"
            member = self.archive.need(name, what)
            kind = compress.sniff(os.pread(self.archive.fd, 4, member.offset_data) if member.size else b"")
            if kind == "none":
                digest = config.diff_ids[i]  # a plain tar is its diff_id: checked as it is copied
            else:
                hasher = hashlib.sha256()
                for block in self.archive.chunks(member, what):
                    hasher.update(block)
                digest = Digest("sha256", hasher.hexdigest())
            self._members[digest] = name
            layers.append({"mediaType": SKOPEO_LAYER_TYPE if kind == "none" else DOCKER_LAYER_TYPES[kind],
                           "size": member.size, "digest": str(digest)})
        doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": {"mediaType": DOCKER_CONFIG, "size": len(self._config), "digest": str(config_digest)},
               "layers": layers}
        return Document.of(json.dumps(doc, separators=(",", ":")).encode(), DOCKER_MANIFEST)

    def _member(self, desc: Descriptor) -> str:
        self.top()
        name = self._members.get(desc.digest)
        if name is None:
            raise not_found(f"{self.describe()}: blob {desc.digest} is not in the archive")
        return name

    def manifest(self, desc: Descriptor) -> Document:
        return read_document(self.files, desc, f"manifest of {self.describe()}")

    def config(self, desc: Descriptor) -> bytes:
        self.top()
        desc.digest.verify_bytes(self._config, f"config of {self.describe()}")
        return self._config

    def blob(self, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
        progress(desc, "downloading", 0)
        path = copy_verified(self.files, self._member(desc), desc, scratch, self.describe(), progress)
        progress(desc, "downloaded", desc.size)
        return path


def _safe_name(tag: str) -> str | None:
    with contextlib.suppress(StrataError):
        return str(reference.parse(tag))
    return None


# -- what `load` reads ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_input(path: Path, label: str | None = None) -> Iterator[list[tuple[Source, list[str]]]]:
    """Every image at ``path`` with the full names it gives it: an OCI layout directory, or a tar that is a
    docker-archive (it has manifest.json; Docker's current archives are also OCI layouts, manifest.json wins
    for its RepoTags) or an oci-archive (index.json)."""
    if path.is_dir():
        layout = LayoutSource(path, None)
        sources = [LayoutSource(path, f"@{i}") for i in range(len(layout.entries()))]
        yield [(s, s.names()) for s in sources]
        return
    with Archive(path, label) as archive:
        files = TarFiles(archive)
        if files.exists("manifest.json"):
            docker = [DockerArchiveSource(archive, f"@{i}") for i in range(len(docker_entries(files)))]
            yield [(s, s.names()) for s in docker]
        elif files.exists("index.json"):
            oci = [OciArchiveSource(archive, f"@{i}") for i in range(len(read_index(files, archive.where).manifests))]
            yield [(s, s.names()) for s in oci]
        else:
            raise StrataError(f"{archive.label} is neither a docker-archive nor an oci-archive (it has no "
                              "manifest.json or index.json)", Kind.UNSUPPORTED)


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were read already (to sniff the compression)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf)
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(view))
        view[:len(data)] = data
        return len(data)


def needs_spool(path: Path) -> bool:
    """Whether ``path`` must be copied before it can be read by member: a pipe or a compressed archive."""
    if path.is_dir():
        return False
    if not path.is_file():
        return True
    with open(path, "rb") as f:
        return _compression(f.read(6)) != "none"


def _compression(head: bytes) -> str:
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return compress.sniff(head)


def spool(stream: BinaryIO, dest: Path) -> None:
    """Copy ``stream`` (stdin, a pipe, a compressed archive: ``docker save | gzip``) into the new file ``dest``,
    decompressing gzip, zstd, bzip2 and xz as ``docker load`` does, so that it can be read by member."""
    head = stream.read(6)
    kind = _compression(head)
    raw = cast(BinaryIO, io.BufferedReader(_Prefixed(head, stream), CHUNK))
    reader: BinaryIO
    if kind == "bz2":
        reader = cast(BinaryIO, bz2.BZ2File(raw))
    elif kind == "xz":
        reader = cast(BinaryIO, lzma.LZMAFile(raw))  # noqa: SIM115 - read to the end below
    else:
        reader = compress.decompressed(raw, kind)
    corrupt: tuple[type[BaseException], ...] = (OSError, lzma.LZMAError, *compress.stream_errors())
    try:
        with open(dest, "xb") as out:
            while block := reader.read(CHUNK):
                out.write(block)
    except corrupt as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise integrity(f"the archive is corrupt or truncated ({kind}: {e})") from None


# -- sinks ------------------------------------------------------------------------------------------------------


class _ArchiveSink:
    """A layout staged in ``staging`` (a new directory), written as a tar at :meth:`close`."""

    transport = "oci-archive"

    def __init__(self, dest: Path | BinaryIO, staging: Path) -> None:
        self.dest = dest
        self.staging = staging
        self.layout = LayoutSink(staging)
        self.closed = False

    def describe(self) -> str:
        return f"{self.transport}:{self.dest if isinstance(self.dest, Path) else '-'}"

    def scratch(self) -> Path:
        return self.layout.scratch()

    def has_blob(self, desc: Descriptor) -> bool:
        return self.layout.has_blob(desc)

    def put_blob(self, desc: Descriptor, path: Path, progress: ProgressFn) -> None:
        self.layout.put_blob(desc, path, progress)

    def put_layer(self, image: Image, i: int, progress: ProgressFn) -> None:
        """An archive keeps blobs only."""

    def abort(self) -> None:
        self.layout.abort()

    def extra_files(self) -> dict[str, bytes]:
        return {}

    def close(self) -> None:
        """Write the tar (DEST.tmp-PID, then one rename; or the stream), then drop the staging directory."""
        if self.closed:
            return
        self.closed = True
        try:
            self.layout.close()
            if isinstance(self.dest, Path):
                tmp = self.dest.with_name(f"{self.dest.name}.tmp-{os.getpid()}")
                try:
                    with open(tmp, "wb") as f:
                        self._write(f)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.dest)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    raise StrataError(f"cannot write {self.dest}: {e.strerror or e}", Kind.SYSTEM) from None
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                try:
                    self._write(self.dest)
                    self.dest.flush()
                except BrokenPipeError:
                    raise StrataError("the reader of the archive went away (broken pipe)", Kind.SYSTEM) from None
        finally:
            remove_tree(self.staging)

    def discard(self) -> None:
        """Give up: nothing is written to DEST, the staging directory goes."""
        self.closed = True
        self.layout.abort()
        remove_tree(self.staging)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def _write(self, out: BinaryIO) -> None:
        """The layout as a tar: deterministic headers (root-owned, mtime 0), directories first, index.json and
        the docker files after the blobs they name."""
        root = self.staging
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            def add_dir(name: str) -> None:
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)

            def add_bytes(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))

            add_bytes("oci-layout", (root / "oci-layout").read_bytes())
            add_dir("blobs")
            for alg in sorted(p for p in (root / "blobs").iterdir() if p.is_dir()):
                add_dir(f"blobs/{alg.name}")
                for blob in sorted(alg.iterdir()):
                    if blob.name.startswith("."):
                        continue
                    info = tarfile.TarInfo(f"blobs/{alg.name}/{blob.name}")
                    info.size, info.mode = blob.stat().st_size, 0o644
                    with open(blob, "rb") as f:
                        tf.addfile(info, f)
            add_bytes("index.json", (root / "index.json").read_bytes())
            for name, data in self.extra_files().items():
                add_bytes(name, data)


class OciArchiveSink(_ArchiveSink):
    """``oci-archive:FILE[:REF]`` as a destination; each image's name is its ref.name in index.json."""

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        self.layout.put_image(resolved, name)


class DockerArchiveSink(_ArchiveSink):
    """``docker save``'s format: an OCI layout (documents kept byte for byte, so digests survive a save and a
    load) whose index.json entries carry Docker's annotations (``io.containerd.image.name``: the full name,
    ``org.opencontainers.image.ref.name``: the tag), plus manifest.json (one entry per image, all its names in
    RepoTags, familiar as Docker writes them) and ``repositories``. Layers stay as stored (compressed)."""

    transport = "docker-archive"
    one_image_per_name = True  # manifest.json lists images, not indexes (copy refuses a whole index up front)

    def __init__(self, dest: Path | BinaryIO, staging: Path) -> None:
        super().__init__(dest, staging)
        self.entries: dict[tuple[str, ...], dict[str, Any]] = {}  # by config and layer blobs
        self.repositories: dict[str, dict[str, str]] = {}

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        image = resolved.image
        desc = self.layout.put_documents(resolved)
        ref = reference.parse(name) if name is not None else None
        annotations: dict[str, str] = {}
        if ref is not None:
            annotations[IMAGE_NAME_ANNOTATION] = str(ref)
            if ref.tag:
                annotations[REF_NAME_ANNOTATION] = ref.tag
        entry = Descriptor(desc.media_type, desc.digest, desc.size, desc.platform, annotations)
        self.layout.set_entry(entry, lambda e: _same_entry(e, annotations, desc.digest))
        layers = [blob_name(x.digest) for x in image.manifest.layers]
        item = self.entries.setdefault((blob_name(image.image_id), *layers),
                                       {"Config": blob_name(image.image_id), "RepoTags": [], "Layers": layers})
        if ref is not None and ref.tag and ref.digest is None:
            tag = ref.familiar()
            if tag not in item["RepoTags"]:
                item["RepoTags"].append(tag)
            top = chain_ids(image.config.diff_ids)[-1].hex if image.config.diff_ids else image.image_id.hex
            self.repositories.setdefault(tag.rsplit(":", 1)[0], {})[ref.tag] = top

    def extra_files(self) -> dict[str, bytes]:
        out = {"manifest.json": json.dumps(list(self.entries.values()), separators=(",", ":")).encode()}
        if self.repositories:
            out["repositories"] = json.dumps(self.repositories, separators=(",", ":")).encode()
        return out


def _same_entry(entry: dict[str, Any], annotations: dict[str, str], digest: Digest) -> bool:
    ann = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
    assert isinstance(ann, dict)
    if IMAGE_NAME_ANNOTATION in annotations:
        return bool(ann.get(IMAGE_NAME_ANNOTATION) == annotations[IMAGE_NAME_ANNOTATION])
    return not ann and entry.get("digest") == str(digest)

