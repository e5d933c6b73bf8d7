"""``runner commit``: a container's rw layer becomes the top layer of a new image in the store.

A composition of :mod:`shared.transfer`, as pull is: the upper dir (the rw layer; never the -init layer, a lower
dir of its own, see :mod:`runner.isolation.rootfs`) is packed into a blob in the store's ``tmp/`` (overlay whiteouts
become ``.wh.NAME``, opaque dirs ``.wh..wh..opq``: :func:`shared.layer.pack.pack`); a new config (the parent's, the new
diff_id, a history entry, ``--change`` applied) and an OCI manifest (the parent's layers and the new one) make a
one-image :class:`CommitSource`; :func:`shared.transfer.model.copy` moves it into a
:class:`shared.store.transfer.StoreSink`, which unpacks and verifies the new layer exactly as a pull would, then
writes the reference last. So the image runs at once, and a crash at any moment leaves only verified blobs and
layers (and litter in ``tmp/``) that nothing references yet.

Determinism: the same stopped container committed twice gives the same manifest digest. The pack is
deterministic (sorted, the files' own mtimes, gzip without a time), and ``created`` is when the container
finished (else when it started, else when it was created), never "now"; a running container's commit is "now".

A running container is paused for the pack (Docker's ``--pause``, the default) by the executor that started it
(our cgroup freezer, or the runtime's ``pause``), and thawed afterwards, on failure too: a tree packed while it
changes may be torn.
"""

from __future__ import annotations

import contextlib
import errno
import json
import posixpath
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.container.lifecycle import paused
from runner.container.record import Container, find
from shared import reference
from shared.digest import Digest
from shared.errors import Kind, StrataError, not_found, usage
from shared.image import OCI_CONFIG, OCI_MANIFEST, Descriptor
from shared.layer.pack import pack
from shared.store import images as stored
from shared.store.files import remove_tree
from shared.store.layout import Store
from shared.store.transfer import StoreSink, StoreSource
from shared.transfer.model import Document, ProgressFn, copy, resolve

NEW_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# The parent's layers keep their bytes; the manifest is OCI, so Docker's layer types take their OCI names
# (the same tar formats), as skopeo converts them.
OCI_LAYER_NAMES = {
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
# moby's validCommitCommands, less HEALTHCHECK (its options are a language of their own)
CHANGE_COMMANDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME",
                   "WORKDIR")
DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class CommitOptions:
    container: str
    reference: str
    message: str | None = None
    author: str | None = None
    changes: Sequence[str] = ()
    pause: bool = True


# -- --change: Dockerfile instructions on the config ----------------------------------------------------------


def _words(text: str, what: str) -> list[str]:
    """Dockerfile word splitting: white space, with quotes and backslash escapes (shlex's POSIX rules)."""
    import shlex

    try:
        return shlex.split(text, posix=True)
    except ValueError as e:
        raise usage(f"invalid --change {what!r}: {e}") from None


def _name_values(rest: str, change: str, legacy: bool) -> list[tuple[str, str]]:
    """``K=V K2="v 2"``, or the legacy ``K V with spaces`` (ENV and LABEL both accept it, as Docker's)."""
    first = rest.split(None, 1)
    if legacy and first and "=" not in first[0]:
        if len(first) < 2:
            raise usage(f"invalid --change {change!r}: {first[0]} needs a value")
        return [(first[0], first[1].strip())]
    pairs = []
    for word in _words(rest, change):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise usage(f"invalid --change {change!r}: {word!r} is not KEY=VALUE")
        pairs.append((key, value))
    if not pairs:
        raise usage(f"invalid --change {change!r}: nothing to set")
    return pairs


def _json_list(rest: str) -> list[str] | None:
    """The exec (JSON array) form, or None when ``rest`` is not one (then it is the shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _signal_ok(text: str) -> bool:
    if text.isdigit():
        return 0 < int(text) < 65
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    return name in signal.Signals.__members__ or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name) is not None


def _ports(words: list[str], change: str) -> list[str]:
    out = []
    for word in words:
        port, _, proto = word.partition("/")
        proto = (proto or "tcp").lower()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", port)
        if proto not in ("tcp", "udp", "sctp") or match is None:
            raise usage(f"invalid --change {change!r}: {word!r} is not PORT[-PORT][/tcp|udp|sctp]")
        low, high = int(match[1]), int(match[2] or match[1])
        if not 0 < low <= high <= 65535:
            raise usage(f"invalid --change {change!r}: port {port!r} is out of range")
        out += [f"{p}/{proto}" for p in range(low, high + 1)]
    return out


def apply_changes(config: dict[str, Any], changes: Sequence[str]) -> dict[str, Any]:
    """The image's run config (the ``config`` object of an image config) with Docker's ``--change`` lines
    applied in order; a new dict. ``$VAR`` in values is kept as written (Docker would substitute it)."""
    out = json.loads(json.dumps(config))
    cmd_set = False
    for change in changes:
        instruction, _, rest = change.strip().partition(" ")
        keyword, rest = instruction.upper(), rest.strip()
        if keyword not in CHANGE_COMMANDS:
            raise usage(f"invalid --change {change!r}: {instruction or '(empty)'} is not a valid change command "
                        f"(one of {', '.join(CHANGE_COMMANDS)})")
        if not rest and keyword not in ("CMD", "ENTRYPOINT"):
            raise usage(f"invalid --change {change!r}: {keyword} needs an argument")
        if keyword in ("CMD", "ENTRYPOINT"):
            argv = _json_list(rest)
            if argv is None:
                shell = out.get("Shell") or list(DEFAULT_SHELL)
                argv = [*shell, rest] if rest else []
            out["Cmd" if keyword == "CMD" else "Entrypoint"] = argv or None
            if keyword == "CMD":
                cmd_set = True
            elif not cmd_set:  # Dockerfile: a new ENTRYPOINT drops the Cmd it inherited
                out["Cmd"] = None
        elif keyword == "ENV":
            env = list(out.get("Env") or [])
            for key, value in _name_values(rest, change, legacy=True):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            out["Env"] = env
        elif keyword == "LABEL":
            labels = dict(out.get("Labels") or {})
            labels.update(_name_values(rest, change, legacy=True))
            out["Labels"] = labels
        elif keyword == "WORKDIR":
            path = posixpath.join(out.get("WorkingDir") or "/", rest)
            out["WorkingDir"] = posixpath.normpath(path).replace("//", "/")
        elif keyword == "USER":
            out["User"] = rest
        elif keyword == "EXPOSE":
            ports = dict(out.get("ExposedPorts") or {})
            ports.update({p: {} for p in _ports(_words(rest, change), change)})
            out["ExposedPorts"] = ports
        elif keyword == "VOLUME":
            paths = _json_list(rest)
            paths = _words(rest, change) if paths is None else paths
            if not paths or not all(paths):
                raise usage(f"invalid --change {change!r}: VOLUME needs non-empty paths")
            out["Volumes"] = {**(out.get("Volumes") or {}), **{p: {} for p in paths}}
        elif keyword == "STOPSIGNAL":
            if not _signal_ok(rest):
                raise usage(f"invalid --change {change!r}: {rest!r} is not a signal")
            out["StopSignal"] = rest
        elif keyword == "ONBUILD":
            out["OnBuild"] = [*(out.get("OnBuild") or []), rest]
    return {k: v for k, v in out.items() if v is not None}


# -- the one-image source ---------------------------------------------------------------------------------------


class CommitSource:
    """The committed image: its manifest and config in memory, the parent's blobs from the store (verified when
    they were stored), the new layer's blob from the file it was packed into (its digest computed as it was
    written, so it is verified by construction)."""

    def __init__(self, store: Store, parent: stored.StoredImage, what: str, manifest: Document, config: bytes,
                 layer: Descriptor, layer_path: Path) -> None:
        self.parent = StoreSource(store, parent)
        self.what = what
        self.manifest_doc = manifest
        self.config_raw = config
        self.layer = layer
        self.layer_path = layer_path

    def describe(self) -> str:
        return self.what

    def top(self) -> Document:
        return self.manifest_doc

    def manifest(self, desc: Descriptor) -> Document:
        raise not_found(f"{self.what} is one image: no manifest {desc.digest} in it")

    def config(self, desc: Descriptor) -> bytes:
        desc.digest.verify_bytes(self.config_raw, f"config of {self.what}")
        return self.config_raw

    def blob(self, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
        if desc.digest == self.layer.digest:
            return self.layer_path
        return self.parent.blob(desc, scratch, progress)


# -- commit -----------------------------------------------------------------------------------------------------


def _parent_image(store: Store, container: Container) -> stored.StoredImage:
    """The image the container was created from, by its ID (the reference may name another image since):
    under the name it was created from if that still names it, else any reference to it."""
    wanted = Digest.parse(container.spec.image_id)
    found: list[stored.StoredImage] = []
    for name, desc in store.refs():
        with contextlib.suppress(StrataError):
            image = stored.load(store, name, desc)
            if image.image_id == wanted:
                found.append(image)
    if not found:
        raise not_found(f"the image of container {container.name} ({wanted}) is no longer in the store (removed "
                        "with rmi --force?); it cannot be committed")
    found.sort(key=lambda i: (i.name != container.spec.image, i.name))
    image = found[0]
    for i, desc in enumerate(image.manifest.layers):
        if not store.has_blob(desc.digest):
            raise not_found(f"layer {i + 1} ({desc.digest}) of {image.name}, the image of container "
                            f"{container.name}, is missing from the store; run `puller fsck --repair`, then pull "
                            f"{image.name} again")
    return image


def _timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, as image configs date things (microseconds: what time.time() holds)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _created(container: Container, running: bool) -> str:
    """When the committed image was made: "now" for a running container; for a stopped one a time of the
    container's own that does not change (its finish, else start, else creation), so a commit is repeatable."""
    if running:
        return _timestamp(time.time())
    state = container.state()
    return _timestamp(state.finished or state.started or container.spec.created)


def build_config(parent: stored.StoredImage, diff_id: Digest, created: str, created_by: str,
                 message: str | None, author: str | None, changes: Sequence[str]) -> bytes:
    """The parent's config with the new layer's diff_id, a history entry, the changes, the new date."""
    doc: dict[str, Any] = json.loads(json.dumps(dict(parent.config.raw)))
    doc["created"] = created
    if author is not None:
        doc["author"] = author
    doc["config"] = apply_changes(doc.get("config") or {}, changes)
    doc["rootfs"] = {"type": "layers", "diff_ids": [*(str(d) for d in parent.config.diff_ids), str(diff_id)]}
    entry: dict[str, Any] = {"created": created, "created_by": created_by}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    doc["history"] = [*(doc.get("history") or []), entry]
    return json.dumps(doc, separators=(",", ":")).encode()


def build_manifest(parent: stored.StoredImage, config: bytes, layer: Descriptor) -> Document:
    layers = []
    for desc in parent.manifest.layers:
        entry = desc.to_json()
        entry["mediaType"] = OCI_LAYER_NAMES.get(desc.media_type, desc.media_type)
        layers.append(entry)
    layers.append(layer.to_json())
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": str(Digest.of_bytes(config)), "size": len(config)},
           "layers": layers}
    return Document.of(json.dumps(doc, separators=(",", ":")).encode(), OCI_MANIFEST)


def _no_space(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


def _pack_upper(store: Store, container: Container, dest: Path) -> tuple[Descriptor, Digest]:
    try:
        result = pack(container.path("upper"), dest, block=container.spec.id_block)
    except StrataError as e:
        if e.kind is Kind.STATE:  # a live pack met a change it cannot honestly record: nothing is stored
            raise StrataError(f"container {container.name} changed its layer while it was packed: {e}; commit it "
                              "paused", Kind.STATE) from None
        raise
    except OSError as e:
        if _no_space(e):
            raise StrataError(f"no space left on device for the layer of container {container.name} in the store "
                              f"at {store.root}", Kind.SYSTEM) from None
        if e.errno is None:  # tarfile: a file shrank while it was read (a live pack)
            raise StrataError(f"container {container.name} changed a file while it was packed ({e}); commit it "
                              "paused", Kind.STATE) from None
        raise StrataError(f"cannot pack the rw layer of container {container.name}: {e.strerror}: "
                          f"{e.filename or ''}".rstrip(": "), Kind.SYSTEM) from None
    return Descriptor(NEW_LAYER_TYPE, result.digest, result.size), result.diff_id


def commit(store: Store, opts: CommitOptions) -> Digest:
    """Commit the container's rw layer as a new image under ``opts.reference``; return the new image's ID."""
    ref = reference.parse(opts.reference)
    if ref.digest is not None:
        raise usage(f"invalid reference {opts.reference!r}: refusing to create a tag with a digest reference")
    apply_changes({}, opts.changes)  # a bad --change fails before anything is done
    if not store.exists():
        raise not_found(f"no such container: {opts.container}")
    container = find(store, opts.container)
    store.sweep_tmp()
    with store.in_use():  # GC must not take the new blobs and layer before the reference names them
        return _commit(store, container, str(ref), opts)


def _commit(store: Store, container: Container, name: str, opts: CommitOptions) -> Digest:
    parent = _parent_image(store, container)
    blob_tmp = store.temp_path("commit.blob")
    sink = StoreSink(store)
    ours: set[Digest] = set()
    try:
        with paused(container, opts.pause) as running:
            layer, diff_id = _pack_upper(store, container, blob_tmp)
        config = build_config(parent, diff_id, _created(container, running), " ".join(container.spec.argv),
                              opts.message, opts.author, opts.changes)
        manifest = build_manifest(parent, config, layer)
        ours = {d for d in (layer.digest, Digest.of_bytes(config), manifest.digest) if not store.has_blob(d)}
        source = CommitSource(store, parent, f"container {container.name}", manifest, config, layer, blob_tmp)
        resolved = resolve(source, None)
        copy(source, sink, resolved, name, jobs=1)
        return resolved.image.image_id
    except BaseException as e:
        _undo(store, sink, ours)
        if isinstance(e, OSError) and _no_space(e):
            raise StrataError(f"no space left on device in the store at {store.root} while committing container "
                              f"{container.name}", Kind.SYSTEM) from None
        raise
    finally:
        remove_tree(blob_tmp)


def _undo(store: Store, sink: StoreSink, ours: set[Digest]) -> None:
    """A failed commit keeps nothing: the layer it unpacked and the blobs it stored go, unless a reference
    names them by now (another commit of the same tree that finished meanwhile)."""
    with contextlib.suppress(StrataError, OSError):
        sink.abort()
    if not ours:
        return
    with contextlib.suppress(StrataError, OSError), store.lock():
        used: set[Digest] = set()
        for ref_name, desc in store.refs():
            with contextlib.suppress(StrataError):
                image = stored.load(store, ref_name, desc)
                used |= {desc.digest, image.image_id, *(d.digest for d in image.manifest.layers)}
        for digest in ours - used:
            store.blob_path(digest).unlink(missing_ok=True)
