"""An OCI image layout directory (image-spec image-layout.md) as a source and a sink of images: skopeo's
``oci:DIR[:REF]``.

A layout from outside is untrusted input. It is read only through :class:`Files`, which knows two kinds of
names: ``index.json`` and ``blobs/ALG/HEX`` built from a validated :class:`Digest` (never a path taken from a
document). Documents are read up to :data:`MAX_MANIFEST_BYTES` and checked against the digest and size their
descriptor gives; a blob is copied into the sink's scratch file while hashed, so what the sink takes is what was
verified (a file changed after a check cannot slip through; a blob or document that is a symlink is refused).
The same reader logic serves an oci-archive (``shared/transfer/archive.py`` gives it a tar's members).

As a sink it keeps the store's discipline: blobs land in a temp file and are renamed under their digest,
``index.json`` is rewritten last, atomically, replacing the entry of the same ref name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError, hostile, integrity, not_found, usage
from shared.image import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    Index,
    media_type_of,
)
from shared.store.files import atomic_write, fsync_dir, pid_alive
from shared.store.layout import OCI_LAYOUT_VERSION, REF_NAME_ANNOTATION
from shared.transfer.model import Document, ProgressFn, Resolved, copy_file

# containerd's (and Docker's `docker save`) annotation for the full image name; ref.name then holds only the tag
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
CHUNK = 1 << 20
SCRATCH_PREFIX = ".tmp"  # LayoutSink's temp files: .tmp.PID.RANDOM


def pid_temp_name(prefix: str) -> str:
    """A fresh temp file name ``PREFIX.PID.RANDOM`` (PREFIX starts with a dot: hidden), random so that nobody
    can plant something under it beforehand, with our PID so that :func:`sweep_dead_temps` can tell, after a
    kill -9, that its writer is gone."""
    return f"{prefix}.{os.getpid()}.{os.urandom(8).hex()}"


def sweep_dead_temps(directory: Path | int, prefix: str) -> None:
    """Remove the ``PREFIX.PID.RANDOM`` files in ``directory`` (a path or a directory fd) whose PID is no
    longer a process: what a killed writer left. A live PID's file (another writer at work) stays, and so does
    anything that is not a plain file; a PID reused since is a leftover kept until the next time."""
    pattern = re.compile(re.escape(prefix) + r"\.([0-9]+)\.[0-9a-f]{16}")
    dir_fd = directory if isinstance(directory, int) else None
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or int(match[1]) == os.getpid() or pid_alive(int(match[1])):
            continue
        where = name if isinstance(directory, int) else os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(where, dir_fd=dir_fd).st_mode):  # we only ever create plain files
                os.unlink(where, dir_fd=dir_fd)


def blob_name(digest: Digest) -> str:
    """The one way a blob is addressed in a layout: from a validated digest, so no document can name a path."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


class Files(Protocol):
    """Read access to a layout's files by name (a directory's, or a tar's members)."""

    def where(self) -> str:
        """The place, for messages."""
        ...

    def exists(self, name: str) -> bool:
        ...

    def read_small(self, name: str, what: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """The whole file, refused (INTEGRITY) when over ``limit``; NOT_FOUND when absent."""
        ...

    def chunks(self, name: str, what: str, size: int) -> Iterator[bytes]:
        """The file's bytes, refused unless it holds exactly ``size`` bytes (checked before reading)."""
        ...


def copy_verified(files: Files, name: str, desc: Descriptor, scratch: Path, what: str,
                  progress: ProgressFn | None = None) -> Path:
    """Copy ``name`` into the new file ``scratch`` while hashing it; return ``scratch`` once its size and digest
    are the descriptor's (else remove it and raise INTEGRITY)."""
    hasher = desc.digest.hasher()
    size = 0
    try:
        with open(scratch, "xb") as out:
            for block in files.chunks(name, what, desc.size):
                hasher.update(block)
                size += len(block)
                out.write(block)
                if progress is not None:
                    progress(desc, "downloading", size)
        actual = Digest(desc.digest.algorithm, hasher.hexdigest())
        if size != desc.size:
            raise integrity(f"{what}: blob {desc.digest} is {size} bytes, its descriptor says {desc.size}")
        if actual != desc.digest:
            raise integrity(f"{what}: blob {desc.digest} hashes to {actual}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
        raise
    return scratch


class DirFiles:
    """A layout directory's files. Symlinks are refused (a hostile layout could point a blob at a host file)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self) -> str:
        return str(self.root)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.root / name)

    @contextlib.contextmanager
    def _open(self, name: str, what: str) -> Iterator[tuple[BinaryIO, int]]:
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise not_found(f"{what}: {name} is missing from {self.root}") from None
        except OSError as e:
            if os.path.islink(self.root / name):
                raise hostile(f"{what}: {self.root / name} is a symlink, which a layout may not hold") from None
            raise StrataError(f"{what}: cannot open {self.root / name}: {e.strerror}", Kind.SYSTEM) from None
        f = os.fdopen(fd, "rb")
        with f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise hostile(f"{what}: {self.root / name} is not a regular file")
            yield f, st.st_size

    def read_small(self, name: str, what: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        with self._open(name, what) as (f, size):
            if size > limit:
                raise integrity(f"{what}: {name} is {size} bytes, over the {limit}-byte limit")
            data = f.read(limit + 1)
        if len(data) > limit:
            raise integrity(f"{what}: {name} is over the {limit}-byte limit")
        return data

    def chunks(self, name: str, what: str, size: int) -> Iterator[bytes]:
        with self._open(name, what) as (f, actual):
            if actual != size:
                raise integrity(f"{what}: {name} is {actual} bytes, its descriptor says {size}")
            while block := f.read(CHUNK):
                yield block


def read_document(files: Files, desc: Descriptor, what: str) -> Document:
    """A manifest or index blob, capped, checked against its descriptor's size and digest, typed by its own
    ``mediaType`` (which must agree with the descriptor's)."""
    raw = read_config(files, desc, what)
    declared = desc.media_type if desc.media_type in (*MANIFEST_TYPES, *INDEX_TYPES) else None
    return Document(raw, media_type_of(raw, declared, what), desc.digest)


def read_config(files: Files, desc: Descriptor, what: str) -> bytes:
    """A small blob (a config, a document), capped and checked against its descriptor's size and digest."""
    if desc.size > MAX_MANIFEST_BYTES:
        raise integrity(f"{what}: {desc.digest} is {desc.size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    raw = files.read_small(blob_name(desc.digest), what)
    if len(raw) != desc.size:
        raise integrity(f"{what}: blob {desc.digest} is {len(raw)} bytes, its descriptor says {desc.size}")
    desc.digest.verify_bytes(raw, what)
    return raw


def read_index(files: Files, what: str) -> Index:
    """``index.json``, capped and parsed (each entry a valid descriptor)."""
    if not files.exists("index.json"):
        raise not_found(f"{files.where()} is not an OCI layout: it has no index.json")
    raw = files.read_small("index.json", what)
    return Index.parse(raw, OCI_INDEX, f"index.json of {files.where()}")


def entry_name(desc: Descriptor) -> str | None:
    """The ref name skopeo's ``oci:DIR:REF`` matches: ``org.opencontainers.image.ref.name``."""
    return desc.annotations.get(REF_NAME_ANNOTATION)


def image_name(desc: Descriptor) -> str | None:
    """The full image name an index.json entry gives, normalized as Docker does, for ``load``: containerd's
    (and ``docker save``'s) ``io.containerd.image.name`` first (then ref.name is only the tag), else ref.name
    when it is a reference (``foo`` is ``docker.io/library/foo:latest``); None when neither is one."""
    for key in (IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION):
        text = desc.annotations.get(key)
        if text:
            with contextlib.suppress(StrataError):
                return str(reference.parse(text))
    return None


def choose(entries: tuple[Descriptor, ...], ref: str | None, where: str) -> Descriptor:
    """The entry REF names (ref.name equal to it, or ``@N``: the Nth entry), or the only one when REF is None;
    else a one-line error listing what is there."""
    if ref is not None and ref.startswith("@") and ref[1:].isdigit():
        n = int(ref[1:])
        if n >= len(entries):
            raise not_found(f"{where} has {len(entries)} images; there is no {ref}")
        return entries[n]
    if ref is None:
        if len(entries) == 1:
            return entries[0]
        if not entries:
            raise not_found(f"{where} holds no image")
    else:
        found = [e for e in entries if entry_name(e) == ref]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise integrity(f"{where} names {len(found)} images {ref!r}")
    listing = ", ".join(entry_name(e) or f"@{i} (unnamed)" for i, e in enumerate(entries))
    wanted = "several images; name one" if ref is None else f"no image named {ref!r}"
    raise not_found(f"{where} holds {wanted}: {listing}")


def names_in(path: Path) -> list[str | None]:
    """The ref name of each entry in the layout's index.json, in order (None for an unnamed one)."""
    return [entry_name(e) for e in read_index(DirFiles(path), f"OCI layout {path}").manifests]


class LayoutSource:
    """``oci:DIR[:REF]``: one index.json entry of a layout (see :func:`choose` for REF)."""

    def __init__(self, path: Path, ref: str | None, files: Files | None = None, transport: str = "oci") -> None:
        self.path = path
        self.ref = ref
        self.files: Files = files or DirFiles(path)
        self.transport = transport
        self._entry: Descriptor | None = None

    def describe(self) -> str:
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")

    def entries(self) -> tuple[Descriptor, ...]:
        return read_index(self.files, self.describe()).manifests

    def entry(self) -> Descriptor:
        if self._entry is None:
            self._entry = choose(self.entries(), self.ref, f"{self.transport}:{self.path}")
        return self._entry

    def names(self) -> list[str]:
        """The full image name this entry gives (for ``load``), or none."""
        name = image_name(self.entry())
        return [name] if name else []

    def top(self) -> Document:
        return read_document(self.files, self.entry(), f"manifest of {self.describe()}")

    def manifest(self, desc: Descriptor) -> Document:
        return read_document(self.files, desc, f"{desc.platform or desc.digest} manifest of {self.describe()}")

    def config(self, desc: Descriptor) -> bytes:
        return read_config(self.files, desc, f"config of {self.describe()}")

    def blob(self, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
        progress(desc, "downloading", 0)
        path = copy_verified(self.files, blob_name(desc.digest), desc, scratch, self.describe(), progress)
        progress(desc, "downloaded", desc.size)
        return path


class LayoutSink:
    """Writes images into a layout directory, creating it when absent (``oci:DIR[:REF]`` as a destination)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scratch: list[Path] = []
        if path.exists() and not path.is_dir():
            raise usage(f"{path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not (path / "oci-layout").is_file():
            raise usage(f"{path} exists and is not an OCI layout (no oci-layout file); name a new or empty "
                        "directory")
        try:
            (path / "blobs").mkdir(parents=True, exist_ok=True)
            if not (path / "oci-layout").is_file():
                atomic_write(path / "oci-layout", json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())
            if not (path / "index.json").is_file():
                atomic_write(path / "index.json", _index_bytes([]))
            sweep_dead_temps(path, SCRATCH_PREFIX)  # what writers killed midway (kill -9) left here
        except PermissionError as e:
            raise StrataError(f"cannot write {path}: {e.strerror}", Kind.SYSTEM) from None

    def describe(self) -> str:
        return f"oci:{self.path}"

    def scratch(self) -> Path:
        """A temp file name in the layout: ``.tmp.PID.RANDOM``, which the next sink removes if we are killed."""
        tmp = self.path / pid_temp_name(SCRATCH_PREFIX)
        self._scratch.append(tmp)
        return tmp

    def has_blob(self, desc: Descriptor) -> bool:
        # Only the size of a blob already in the layout is checked, not its digest: skopeo's oci: destination
        # does the same (TryReusingBlob stats the file). A blob is renamed in only once verified, so a wrong one
        # means someone else wrote into the layout; rehashing every blob on each copy would cost a full read.
        try:
            return (self.path / blob_name(desc.digest)).stat().st_size == desc.size
        except FileNotFoundError:
            return False

    def put_blob(self, desc: Descriptor, path: Path, progress: ProgressFn) -> None:
        final = self.path / blob_name(desc.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if path.parent == self.path and path.name.startswith(SCRATCH_PREFIX + "."):
            os.chmod(path, 0o644)
            os.rename(path, final)  # our own scratch file: one rename
            return
        tmp = self.scratch()
        try:
            copy_file(path, tmp)
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes, digest: Digest, what: str) -> None:
        """A small blob (document, config) the caller holds, checked against its digest."""
        digest.verify_bytes(data, what)
        final = self.path / blob_name(digest)
        if not final.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(final, data)

    def put_layer(self, image: object, i: int, progress: ProgressFn) -> None:
        """A layout keeps blobs only: nothing to unpack."""

    def put_documents(self, resolved: Resolved) -> Descriptor:
        """Every image's config and manifest, and with a whole index the index; return what a name points at."""
        for image in resolved.images:
            self.put_bytes(image.config_raw, image.image_id, "image config")
            self.put_bytes(image.manifest_doc.raw, image.digest, "manifest")
        if resolved.whole_index:
            self.put_bytes(resolved.top.raw, resolved.top.digest, "index")
            return resolved.top.descriptor
        return resolved.image.descriptor

    def put_image(self, resolved: Resolved, name: str | None) -> None:
        desc = self.put_documents(resolved)
        annotations = {k: v for k, v in desc.annotations.items() if k != REF_NAME_ANNOTATION}
        if name is not None:
            annotations[REF_NAME_ANNOTATION] = name
        self.set_entry(Descriptor(desc.media_type, desc.digest, desc.size, desc.platform, annotations),
                       lambda e: _ann(e).get(REF_NAME_ANNOTATION) == name if name is not None else
                       (REF_NAME_ANNOTATION not in _ann(e) and e.get("digest") == str(desc.digest)))

    def set_entry(self, desc: Descriptor, replaces: Callable[[dict[str, Any]], bool]) -> None:
        """Add ``desc`` to index.json, dropping the entries ``replaces`` picks; one atomic rename, under a lock
        on the directory (two writers into one layout do not lose each other's entries)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            read_index(DirFiles(self.path), f"OCI layout {self.path}")  # validated, then kept as it is
            raw = json.loads(DirFiles(self.path).read_small("index.json", "index.json"))
            keep = [e for e in raw["manifests"] if not replaces(e)]
            atomic_write(self.path / "index.json", _index_bytes([*keep, desc.to_json()]))
        finally:
            os.close(fd)

    def abort(self) -> None:
        """Remove this sink's temp files; verified blobs already in place stay (nothing lists them)."""
        for tmp in self._scratch:
            tmp.unlink(missing_ok=True)
        self._scratch.clear()

    def close(self) -> None:
        self.abort()
        with contextlib.suppress(OSError):
            fsync_dir(self.path)


def _ann(entry: dict[str, Any]) -> dict[str, Any]:
    ann = entry.get("annotations")
    return ann if isinstance(ann, dict) else {}


def _index_bytes(manifests: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      separators=(",", ":")).encode()
