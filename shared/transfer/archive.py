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

A tar from outside is hostile. :class:`Archive` takes only a regular, uncompressed file (a directory, a pipe, a
device or a compressed file is one line of error: ``load`` spools such input first, see :func:`spool`), reads
its headers once and refuses, as one line, member names that are absolute or climb with ``..``, duplicate
names, links whose target leaves the archive, more members than any image needs, extended headers (GNU
longname, PAX) over 1 MiB before reading them, and a tar cut short; it is never extracted to disk as a tree:
members are read by name, with ``pread`` at their offsets (so several threads read at once), each blob verified
as it is copied out (:func:`shared.transfer.layout.copy_verified`), each document capped at MAX_MANIFEST_BYTES
and read once per archive however many entries name it (manifest.json may list up to :data:`MAX_ENTRIES`).
Links inside the archive (Docker writes ``ID/layer.tar -> ../blobs/sha256/HEX``) are resolved by name within
it, never on disk.

Sinks stage the layout in a directory (``staging``: in the store's tmp/, so blobs are hard links) and write the
tar only at ``close()``: to a new ``.DEST.strata-tmp.PID.RANDOM`` renamed onto DEST once complete (DEST that is
a device or a FIFO is written into instead, never replaced), or to a stream. On failure (``discard``, or leaving
the ``with`` block by an exception) nothing is left at DEST; after a kill -9 the next save into that directory
removes the temp file.
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
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self, cast

from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError, hostile, integrity, not_found, usage
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
from shared.store.files import fsync_dir, remove_tree
from shared.store.layout import REF_NAME_ANNOTATION
from shared.transfer.layout import (
    CHUNK,
    IMAGE_NAME_ANNOTATION,
    LayoutSink,
    LayoutSource,
    blob_name,
    copy_verified,
    image_name,
    pid_temp_name,
    read_document,
    read_index,
    sweep_dead_temps,
)
from shared.transfer.model import Document, Image, ProgressFn, Resolved, Source

MAX_MEMBERS = 100_000  # an image archive holds a few files per layer; more is a tar bomb
MAX_ENTRIES = 1000  # manifest.json entries: one per image saved together; more is a bomb (each is read and parsed)
MAX_HEADER_BYTES = 1 << 20  # a GNU longname/longlink or a PAX header: a path and a few records, never a MiB
MAX_CACHED_BYTES = 64 << 20  # documents an archive keeps once read (entries naming the same config share it)
MAX_LINK_HOPS = 16
# skopeo's docker-archive source calls every layer this (manifest.DockerV2Schema2LayerMediaType)
SKOPEO_LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TYPES = {"none": "application/vnd.docker.image.rootfs.diff.tar", "gzip": SKOPEO_LAYER_TYPE,
                      "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd"}
_BLOB_PATH = re.compile(r"blobs/(sha256|sha512)/([a-f0-9]+)")


class _CappedTarInfo(tarfile.TarInfo):
    """tarfile's header parser, refusing before it reads them the headers it would read whole into memory: a
    GNU longname/longlink (``L``/``K``) or PAX (``x``/``g``/``X``) header over :data:`MAX_HEADER_BYTES` (its size
    field is all tarfile looks at: an 800 MB one, sparse on disk, cost 843 MB), and GNU sparse members (their
    extension blocks are a list read whole; Docker never writes them)."""

    where = "the archive"  # set per use (a subclass per Archive): tarfile builds instances itself

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        kinds = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)
        if self.type in kinds and self.size > MAX_HEADER_BYTES:
            raise hostile(f"{self.where} has a {self.size}-byte extended tar header (type "
                          f"{self.type.decode(errors='replace')!r}), over the {MAX_HEADER_BYTES}-byte limit")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise hostile(f"{self.where} holds a GNU sparse member, which no image archive has")
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]


def _capped(where: str) -> type[tarfile.TarInfo]:
    return type("_CappedTarInfo", (_CappedTarInfo,), {"where": where})


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
        self.cache: dict[str, bytes] = {}  # small members read once (by name: members do not change)
        self.cached = 0
        try:  # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise not_found(f"{path}: no such file") from None
        except OSError as e:
            raise StrataError(f"cannot open {path}: {e.strerror}", Kind.SYSTEM) from None
        try:
            self._check_file()
            self._index()
        except BaseException:
            os.close(self.fd)
            raise

    def _check_file(self) -> None:
        """Refuse, in one line, what cannot be read by member at offsets: a directory, a pipe or a device (stdin
        from a pipe, a FIFO), a compressed file. ``puller load`` copies (and decompresses) such input first;
        ``copy`` reads the archive in place, so it asks for a file."""
        mode = os.fstat(self.fd).st_mode
        if stat.S_ISDIR(mode):
            raise usage(f"{self.label} is a directory, not an archive (an OCI layout directory is oci:DIR)")
        if not stat.S_ISREG(mode):
            raise usage(f"{self.label} is not a regular file (a pipe or a device): an archive is read by member "
                        "at its offsets; write it to a file first, or use `puller load`, which copies its input")
        kind = _compression(os.pread(self.fd, 6, 0))
        if kind != "none":
            raise StrataError(f"{self.label} is {kind}-compressed: an archive is read in place, uncompressed; "
                              "decompress it first, or use `puller load`, which decompresses", Kind.UNSUPPORTED)

    def _index(self) -> None:
        size = os.fstat(self.fd).st_size
        with open(self.fd, "rb", closefd=False) as f:
            try:
                with tarfile.open(fileobj=f, mode="r:", tarinfo=_capped(self.where)) as tf:
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
        """The member, read once per archive: many manifest.json entries (or index entries) may name one
        document, and each must not cost its own copy (500 entries naming one 4 MiB config made 4 GB)."""
        m = self.archive.need(name, what)
        if m.size > limit:
            raise integrity(f"{what}: {name} is {m.size} bytes, over the {limit}-byte limit")
        key = f"{m.offset_data}:{m.size}"  # the bytes themselves, whatever link led to them
        data = self.archive.cache.get(key)
        if data is None:
            data = b"".join(self.archive.chunks(m, what))
            if self.archive.cached + len(data) <= MAX_CACHED_BYTES:
                self.archive.cache[key] = data
                self.archive.cached += len(data)
        return data

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
    if len(doc) > MAX_ENTRIES:
        raise hostile(f"{what} lists {len(doc)} images, over the {MAX_ENTRIES} one archive may hold")
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

    def __init__(self, path: Path | Archive, ref: str | None = None,
                 entries: list[DockerEntry] | None = None) -> None:
        self.archive = _archive(path)
        self.path = self.archive.label
        self.ref = ref
        self.files = TarFiles(self.archive)
        self.entry = self._choose(entries if entries is not None else docker_entries(self.files), ref)
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
            entries = docker_entries(files)
            docker = [DockerArchiveSource(archive, f"@{i}", entries) for i in range(len(entries))]
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


class _Tee(io.RawIOBase):
    """What tarfile reads of the (decompressed) input, written to the spool file as it goes."""

    def __init__(self, reader: BinaryIO, out: BinaryIO) -> None:
        self.reader, self.out = reader, out

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.reader.read(size if size is not None and size > 0 else CHUNK)
        self.out.write(data)
        return data


def spool(stream: BinaryIO, dest: Path) -> None:
    """Copy ``stream`` (stdin, a pipe, a compressed archive: ``docker save | gzip``) into the new file ``dest``,
    decompressing gzip, zstd, bzip2 and xz as ``docker load`` does, so that it can be read by member.

    The copy is a tar walked header by header as it is written (tarfile in stream mode, headers capped as
    :class:`Archive` caps them): input whose first block is not a tar header (``/dev/zero``, a gzip of zeros)
    is refused at once, and copying stops at the end-of-archive block, so what is spooled is bounded by what
    the headers declare (plus one read-ahead chunk), never by how much input there is."""
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
    what = "the input" + ("" if kind == "none" else f" ({kind}-decompressed)")
    count = 0
    try:
        with open(dest, "xb") as out:
            tee = cast(BinaryIO, _Tee(reader, out))
            try:
                with tarfile.open(fileobj=tee, mode="r|", bufsize=CHUNK, tarinfo=_capped(what)) as tf:
                    while tf.next() is not None:
                        count += 1
                        if count > MAX_MEMBERS:
                            raise hostile(f"{what} has more than {MAX_MEMBERS} members")
                        tf.members = []  # type: ignore[attr-defined]  # only the walk matters here
            except tarfile.ReadError as e:
                if count == 0 and out.tell() == 0:
                    return  # empty input: the caller says so
                if count == 0:
                    raise integrity(f"{what} is not a tar archive ({e or 'unreadable header'})") from None
                raise integrity(f"{what} is truncated or corrupt after {count} members ({e})") from None
            except (tarfile.HeaderError, UnicodeDecodeError, ValueError) as e:
                raise integrity(f"{what} has a corrupt tar header: {e}") from None
            if count == 0 and out.tell() > 0:
                raise integrity(f"{what} is not a tar archive (its first 512-byte block is all zeros)")
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
        """Write the tar (to a file: see :meth:`_write_file`; or the stream), then drop the staging directory."""
        if self.closed:
            return
        self.closed = True
        try:
            self.layout.close()
            if isinstance(self.dest, Path):
                try:
                    self._write_file(self.dest)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    raise StrataError(f"cannot write {self.dest}: {e.strerror or e}", Kind.SYSTEM) from None
            else:
                try:
                    self._write(self.dest)
                    self.dest.flush()
                except BrokenPipeError:
                    raise StrataError("the reader of the archive went away (broken pipe)", Kind.SYSTEM) from None
        finally:
            remove_tree(self.staging)

    def _write_file(self, dest: Path) -> None:
        """Write the tar to DEST as ``docker save -o`` does, without its hazards.

        DEST that exists and is not a regular file (a device, a FIFO, ``/dev/stdout``) is written into, never
        replaced: renaming over it would replace ``/dev/null`` itself. Otherwise the tar goes to a new file
        beside DEST, ``.NAME.strata-tmp.PID.RANDOM``, created with O_EXCL|O_NOFOLLOW (a random name nobody
        could plant a symlink at beforehand), and is renamed onto DEST once complete and synced, so a failed
        save leaves no file. A symlink DEST is followed, as ``docker save -o`` follows it: its target is what is
        written (the rename goes onto the target, the link stays). Temp files of saves that were killed (their
        PID is gone) are removed from that directory first."""
        try:
            st: os.stat_result | None = os.stat(dest)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise usage(f"{dest} is a directory; an archive is written to a file")
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(os.open(dest, os.O_WRONLY | os.O_CLOEXEC), "wb") as f:
                self._write(f)
                f.flush()
            return
        target = Path(os.path.realpath(dest)) if os.path.islink(dest) else dest
        prefix = f".{target.name}.strata-tmp"
        sweep_dead_temps(target.parent, prefix)
        tmp = target.parent / pid_temp_name(prefix)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            with open(fd, "wb") as f:
                self._write(f)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISREG(os.lstat(target).st_mode):  # made a device or a link while we wrote
                    raise StrataError(f"cannot write {dest}: it was replaced by something not a regular file "
                                      "while the archive was written", Kind.STATE)
            os.replace(tmp, target)
            with contextlib.suppress(OSError):
                fsync_dir(target.parent)
        finally:
            tmp.unlink(missing_ok=True)

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

