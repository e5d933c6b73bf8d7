"""The store's layout on disk and :class:`Store`, its one handle: blobs, references, layers, holds, locks, tmp/.

The store both tools share is an OCI image layout for blobs and references, plus unpacked layers and containers.

Layout under the root (see docs/store.md)::

    oci-layout, index.json     OCI image layout; each reference is a manifest descriptor in index.json whose
                               annotation org.opencontainers.image.ref.name holds the full normalized reference
    blobs/sha256/HEX           every blob (manifests, configs, layers), only ever under its verified digest
    layers/CHAINHEX/           one unpacked layer on its parents: diff/ (an overlay lower dir), layer.json
    containers/ID/             one container: the runner's own files (config.json, state.json, init/, upper/, ...)
    holds/HOLDER.json          the layers a holder (a container) rests on: GC keeps them; the only thing GC reads
                               about containers, so the runner's files stay private to it
    tmp/PID.RANDOM.*           work in progress; renamed into place only when verified, swept when PID is gone
    partial/ALG/HEX            a blob download that was interrupted, resumed by the next pull (flock'd by its writer)
    cache/seccomp/KEY.bpf      seccomp filters compiled by the runner, keyed by what they were made from (any may go)
    strata.json                the store's own format: whose whiteouts its diff dirs hold (root's trusted.*
                               xattrs, or a user namespace's user.*), so neither kind of store is read as the other
    lock                       flock(2) guarding index.json and names
    gc.lock                    flock(2): shared while a pull or a container creation runs, exclusive for GC

Everything becomes visible by one rename(2) from tmp/ (same filesystem), so a crash or a second process can leave
litter in tmp/ but never a half-written blob, layer or reference.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from shared.digest import Digest
from shared.errors import Kind, StrataError, integrity, not_found, warn
from shared.image import OCI_INDEX, Descriptor
from shared.layer.whiteout import OVERLAY, USER_OVERLAY, OverlayFormat
from shared.store.files import atomic_write, flocked, fsync_dir, pid_alive, read_json, remove_tree, write_json
from shared.userns import entered, host_uid

# image-spec image-layout.md
OCI_LAYOUT_VERSION = "1.0.0"
# image-spec annotations.md: "Name of the reference for a target"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
# Set on a reference resolved from an index: the index's digest, what the user sees as the image's digest (the
# index blob is kept with the image). Read by images.py, gc.py and fsck.py.
INDEX_DIGEST_ANNOTATION = "io.strata.index.digest"
ROOT_ENV = "STRATA_ROOT"
FORMAT_FILE = "strata.json"  # {"overlayXattrs": "trusted" | "user"}: whose store this is (Store.overlay)


def default_root() -> Path:
    """``$STRATA_ROOT``, else ``/var/lib/strata`` for root, else ``$XDG_DATA_HOME/strata`` (an absolute one, as
    the XDG base directory spec asks), else ``~/.local/share/strata``."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    if host_uid() == 0:
        return Path("/var/lib/strata")
    data_home = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):
        data_home = str(Path.home() / ".local" / "share")
    return Path(data_home) / "strata"


def store_overlay() -> OverlayFormat:
    """The overlay format this process writes and reads: root's (``trusted.*``), or, in a user namespace,
    the unprivileged one (``user.*`` and overlayfs' ``userxattr``)."""
    return USER_OVERLAY if host_uid() != 0 else OVERLAY


class LayerRecord(NamedTuple):
    """What ``layers/CHAINHEX/layer.json`` says: both hashes, the parent chain, and the source blob. (This
    module's values are NamedTuples, not dataclasses: every command imports it, a warm pull too, and making a
    frozen dataclass costs about a millisecond.)"""

    chain_id: Digest
    diff_id: Digest
    parent: Digest | None
    blob_digest: Digest
    size: int  # bytes of the uncompressed tar

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": str(self.chain_id), "diff_id": str(self.diff_id),
                "parent": str(self.parent) if self.parent else None,
                "blob_digest": str(self.blob_digest), "size": self.size}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LayerRecord:
        return cls(Digest.parse(obj["chain_id"]), Digest.parse(obj["diff_id"]),
                   Digest.parse(obj["parent"]) if obj.get("parent") else None,
                   Digest.parse(obj["blob_digest"]), int(obj["size"]))


HOLD_FORMAT = 1


class Hold(NamedTuple):
    """Layers a holder (a container, by ID) rests on, and what to call it in messages: ``kind`` and ``name``
    ("container", "web")."""

    holder: str
    kind: str
    name: str
    layers: tuple[Digest, ...]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


class Holds(NamedTuple):
    """Every hold the store has, and the holds files it could not read. An unreadable hold may name any layer,
    so whoever collects garbage must then keep every layer (and say why): see :attr:`complete`."""

    holds: tuple[Hold, ...] = ()
    unreadable: tuple[str, ...] = ()  # one line each: which file and why

    @property
    def complete(self) -> bool:
        return not self.unreadable

    def layers(self) -> set[str]:
        return {str(c) for h in self.holds for c in h.layers}

    def users(self, layers: set[str]) -> list[str]:
        """The holders that rest on all of ``layers`` (an image's chain IDs, as strings), by label."""
        return sorted(h.label for h in self.holds if layers <= {str(c) for c in h.layers})


class Store:
    """A store root. Cheap to construct; :meth:`ensure` creates the layout on first write."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.blobs = self.root / "blobs"
        self.layers = self.root / "layers"
        self.containers = self.root / "containers"
        self.tmp = self.root / "tmp"
        self.holds_dir = self.root / "holds"
        self.index_path = self.root / "index.json"

    # -- layout ---------------------------------------------------------------------------------------------

    def ensure(self) -> Store:
        try:
            if host_uid() != 0:
                self.root.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    self.root.mkdir(0o700)  # a user's store is the user's alone
            for d in (self.root, self.blobs / "sha256", self.layers, self.containers, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
            self._ensure_format()
            layout = self.root / "oci-layout"
            if not layout.exists():
                write_json(layout, {"imageLayoutVersion": OCI_LAYOUT_VERSION})
            if not self.index_path.exists():
                with self.lock():
                    if not self.index_path.exists():
                        write_json(self.index_path, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        except PermissionError as e:
            raise StrataError(f"cannot write the store at {self.root}: {e.strerror}", Kind.SYSTEM) from None
        return self

    def _ensure_format(self) -> None:
        path = self.root / FORMAT_FILE
        if not path.exists():
            with self.lock():
                if not path.exists() and not self.index_path.exists():
                    write_json(path, {"overlayXattrs": store_overlay().xattr_namespace})
                    mapping = entered()
                    if mapping is not None and not mapping.full:  # said once: when the store is made
                        warn("/etc/subuid and /etc/subgid grant this user no ids, so only the user's own is "
                             "mapped: every file of an image is the user's (root inside) and chown inside fails")
        _ = self.overlay  # checked: never write one store's format into the other's

    @functools.cached_property
    def overlay(self) -> OverlayFormat:
        """How this store's diff dirs say whiteouts and opaque dirs (``strata.json``), which must be how this
        process can: a root store's ``trusted.*`` xattrs are out of a user namespace's reach, and a user's
        store mounted as root's would show its ``user.overlay.*`` marks as files' own xattrs. A store made before
        the file existed was made by root."""
        try:
            made = str(read_json(self.root / FORMAT_FILE).get("overlayXattrs", ""))
        except FileNotFoundError:
            made = OVERLAY.xattr_namespace
        here = store_overlay()
        if made != here.xattr_namespace:
            who = {"trusted": "root", "user": "a user without root"}.get(made)
            if who is None:
                raise integrity(f"{self.root / FORMAT_FILE} names an unknown overlay format {made!r}")
            raise StrataError(f"the store at {self.root} was made by {who} ({made}.overlay.* whiteouts): "
                              f"{'root' if here is OVERLAY else 'a user without root'} cannot use it; give "
                              "--root or $STRATA_ROOT another store", Kind.STATE)
        return here

    def exists(self) -> bool:
        return self.index_path.exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock for read-modify-write of shared records (index.json, container names)."""
        with flocked(self.root / "lock"):
            yield

    @contextlib.contextmanager
    def in_use(self, exclusive: bool = False) -> Iterator[None]:
        """Held shared by every pull and container creation while blobs or layers they commit are not referenced
        yet; held exclusive by garbage collection, which must not take those for garbage."""
        with flocked(self.root / "gc.lock", exclusive):
            yield

    def sweep_tmp(self) -> None:
        """Remove work in progress left by processes that are gone (killed, crashed, Ctrl-C'd)."""
        if not self.tmp.is_dir():
            return
        for entry in self.tmp.iterdir():
            pid_text = entry.name.split(".", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not pid_alive(int(pid_text)):
                # litter that cannot go (a mount point in it) stays litter: it must not fail the pull that sweeps
                with contextlib.suppress(StrataError):
                    remove_tree(entry)

    def temp_path(self, suffix: str) -> Path:
        """A fresh name in tmp/ that :meth:`sweep_tmp` can attribute to this process."""
        return self.tmp / f"{os.getpid()}.{os.urandom(8).hex()}.{suffix}"

    def discard(self, path: Path) -> None:
        """Take ``path`` (a layer dir) out of the store by one rename(2) into tmp/, then remove it there.

        Removal is the reverse of publishing, so it is atomic too: a removal that fails or is interrupted midway
        leaves litter in tmp/ for :meth:`sweep_tmp`, never a half-removed layer under its chain ID that a later
        pull would take for complete (it skips layers whose layer.json it finds).
        """
        grave = self.temp_path("removed")
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StrataError(f"cannot remove {path}: {e.strerror}", Kind.SYSTEM) from None
        remove_tree(grave)

    # -- holds: what keeps layers alive besides references ---------------------------------------------------

    def _hold_path(self, holder: str) -> Path:
        if not holder or "/" in holder or holder.startswith("."):
            raise StrataError(f"invalid holder name {holder!r}", Kind.USAGE)
        return self.holds_dir / f"{holder}.json"

    def hold(self, holder: str, kind: str, name: str, layers: Sequence[Digest]) -> None:
        """Record that ``holder`` rests on ``layers`` (written atomically; replaces an earlier hold). Take it while
        holding :meth:`in_use` shared, before the layers are used: GC then never sees them unheld."""
        self.holds_dir.mkdir(exist_ok=True)
        write_json(self._hold_path(holder), {"format": HOLD_FORMAT, "holder": holder, "kind": kind, "name": name,
                                             "layers": [str(c) for c in layers]})

    def release_hold(self, holder: str) -> None:
        """Drop ``holder``'s hold; absent is fine (release is idempotent). The layers go at the next GC."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._hold_path(holder))

    def holds(self) -> Holds:
        """Every hold, and which ones could not be read (see :class:`Holds`)."""
        found: list[Hold] = []
        bad: list[str] = []
        try:
            entries = sorted(self.holds_dir.iterdir())
        except FileNotFoundError:
            return Holds()
        except OSError as e:
            return Holds((), (f"{self.holds_dir}: {e.strerror}",))
        for path in entries:
            if path.name.startswith(".") or not path.name.endswith(".json"):
                continue  # atomic_write's temp file, or not ours
            try:
                doc = read_json(path)
                if not isinstance(doc, dict) or doc.get("format") != HOLD_FORMAT:
                    raise ValueError("not a hold record")
                found.append(Hold(str(doc["holder"]), str(doc["kind"]), str(doc["name"]),
                                  tuple(Digest.parse(c) for c in doc["layers"])))
            except (OSError, ValueError, KeyError, TypeError, StrataError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
                bad.append(f"{path.relative_to(self.root)}: {why}")
        return Holds(tuple(found), tuple(bad))

    # -- blobs ----------------------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    @contextlib.contextmanager
    def partial(self, digest: Digest, on_wait: Callable[[], None] = lambda: None) -> Iterator[Path]:
        """The one download in progress of blob DIGEST, kept across processes: ``partial/ALG/HEX``, held under an
        exclusive flock(2) so that two pulls of one blob never write it at once (the second waits, then finds the
        blob in place). The file stays when a download is interrupted (killed, Ctrl-C, the network gone), so the
        next pull resumes from where it stopped; the digest is checked over the whole file in the end, so
        resuming can only cost a retry, never admit wrong bytes. The caller removes it on any other failure."""
        path = self.partial_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    on_wait()  # another process downloads it: say so, rather than sit there silently
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    same = False  # committed or removed while we waited: take a fresh one
                if same:
                    try:
                        yield path
                    finally:
                        with contextlib.suppress(FileNotFoundError):  # nothing to resume from: no litter
                            if os.stat(path, follow_symlinks=False).st_size == 0:
                                os.unlink(path)
                    return
            finally:
                os.close(fd)

    def partial_path(self, digest: Digest) -> Path:
        return self.root / "partial" / digest.algorithm / digest.hex

    def partials(self) -> list[Path]:
        """Downloads kept for resuming (``fsck`` lists them)."""
        folder = self.root / "partial"
        return sorted(p for d in folder.iterdir() if d.is_dir() for p in d.iterdir()) if folder.is_dir() else []

    def commit_blob(self, tmp: Path, digest: Digest) -> Path:
        """Move a verified temp file into the CAS. The caller has checked its digest while writing it."""
        final = self.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o644)
        os.rename(tmp, final)
        return final

    def put_blob(self, data: bytes, digest: Digest, what: str) -> Path:
        digest.verify_bytes(data, what)
        final = self.blob_path(digest)
        if not final.is_file():
            final.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(final, data)
        return final

    def read_blob(self, digest: Digest, what: str) -> bytes:
        """Read a small blob (manifest, config) and check it: the store is trusted only as far as it verifies."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise not_found(f"{what} {digest} is not in the store at {self.root}") from None
        digest.verify_bytes(data, f"stored {what}")
        return data

    # -- references (index.json) -------------------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        try:
            doc = read_json(self.index_path)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        except ValueError as e:
            raise integrity(f"{self.index_path} is corrupt: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise integrity(f"{self.index_path} is not an OCI index")
        return doc

    def refs(self) -> list[tuple[str, Descriptor]]:
        out = []
        for entry in self._read_index()["manifests"]:
            desc = Descriptor.from_json(entry, "index.json")
            name = desc.annotations.get(REF_NAME_ANNOTATION)
            if name:
                out.append((name, desc))
        return out

    def resolve(self, name: str) -> Descriptor | None:
        for ref_name, desc in self.refs():
            if ref_name == name:
                return desc
        return None

    def set_ref(self, name: str, desc: Descriptor) -> None:
        """Point reference ``name`` at ``desc`` (replacing what it named), atomically, under the lock."""
        entry = desc.to_json()
        entry["annotations"] = {**desc.annotations, REF_NAME_ANNOTATION: name}
        with self.lock():
            doc = self._read_index()
            doc["manifests"] = [m for m in doc["manifests"]
                                if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) != name] + [entry]
            write_json(self.index_path, doc)

    def drop_ref(self, name: str) -> None:
        """Forget reference ``name``. The caller holds :meth:`lock` (it usually collects garbage next)."""
        doc = self._read_index()
        doc["manifests"] = [m for m in doc["manifests"]
                            if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) != name]
        write_json(self.index_path, doc)

    # -- layers ---------------------------------------------------------------------------------------------

    def layer_dir(self, chain_id: Digest) -> Path:
        return self.layers / chain_id.hex

    def diff_dir(self, chain_id: Digest) -> Path:
        return self.layer_dir(chain_id) / "diff"

    def layer(self, chain_id: Digest) -> LayerRecord | None:
        try:
            return LayerRecord.from_json(read_json(self.layer_dir(chain_id) / "layer.json"))
        except FileNotFoundError:
            return None

    def commit_layer(self, tmp_dir: Path, record: LayerRecord) -> bool:
        """Publish an unpacked, verified layer. False when another process published the same one first."""
        write_json(tmp_dir / "layer.json", record.to_json())
        try:
            os.rename(tmp_dir, self.layer_dir(record.chain_id))
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            remove_tree(tmp_dir)
            return False
        fsync_dir(self.layers)
        return True
