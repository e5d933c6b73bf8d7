"""Unpacking a layer before the layers below it are in: all of it but what needs them, then that, once they are.

A layer's tar needs its lower layers for two things only (:mod:`shared.layer.unpack`): a directory the tar makes
only as a parent (the diff dir's root too, unless the tar has ``./``) takes the metadata of the topmost lower that
shows it, and a hard link to a file the layer does not hold is a copy of the lower's. So a layer can be unpacked
while the layers below it still download (:mod:`shared.layer.parallel`): a :class:`DeferredWriter` makes such a
directory bare (0700, root's) and notes it, and :func:`apply_lowers` gives it its metadata once the lowers are
committed, as the ordinary writer would have, in the same order: the lower's metadata first, then whatever the
tar's own entries for that directory said (so a later ``./`` or ``d/`` entry still wins, and the lower's xattrs
it does not name stay). A hard link into a lower cannot wait (later entries may link to it in turn): the
writer raises :class:`NeedsLowers`, and the layer is unpacked again the ordinary way once its lowers are in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from shared.digest import Digest
from shared.layer import compress
from shared.layer.safepath import SafeRoot
from shared.layer.tarstream import TarStream
from shared.layer.unpack import DiffWriter, DirMeta, Lowers, apply_tar, unpacking, xattrs_of
from shared.layer.whiteout import OverlayFormat

if TYPE_CHECKING:
    import io
    import tarfile


class NeedsLowers(Exception):
    """The tar asks for what only the lower layers hold (a hard link into one): unpack it after them."""


class Applied(NamedTuple):
    """What one of the tar's own entries for a directory set on it: applied again after the lower's metadata."""

    uid: int
    gid: int
    mode: int
    xattrs: tuple[tuple[str, bytes], ...]  # as set: names escaped, those the format cannot hold left out


# The directories made as parents, by path ((): the root), each with what the tar's own entries then set on it
Pending = dict[tuple[str, ...], list[Applied]]


class DeferredWriter(DiffWriter):
    """A :class:`DiffWriter` with no lowers to read: what needs them is noted in :attr:`pending`."""

    def __init__(self, dest: Path, fmt: OverlayFormat, ids: int | None = None) -> None:
        super().__init__(dest, Lowers((), fmt), fmt, ids)
        self.pending: Pending = {}

    def init_root(self) -> None:
        self.pending[()] = []

    def _make_implicit(self, parent_fd: int, name: str, parts: list[str]) -> None:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        self.pending[tuple(parts)] = []

    def _metadata_dir(self, fd: int, key: tuple[str, ...], member: tarfile.TarInfo) -> None:
        super()._metadata_dir(fd, key, member)
        applied = self.pending.get(key)
        if applied is not None:
            xattrs = tuple((self.fmt.escape_xattr(name), value) for name, value in xattrs_of(member).items()
                           if self.fmt.privileged or not name.startswith("trusted."))
            applied.append(Applied(member.uid, member.gid, member.mode & 0o7777, xattrs))

    def _removed(self, path: tuple[str, ...]) -> None:
        for key in [k for k in self.pending if k[:len(path)] == path]:
            del self.pending[key]

    def _copy_up(self, dir_fd: int, name: str, member: tarfile.TarInfo, target: list[str]) -> None:
        raise NeedsLowers(f"hard link {member.name!r} to {member.linkname!r}, which this layer does not hold")


class Unpacked(NamedTuple):
    """A layer unpacked by :func:`unpack_deferred`: its tar's digest and size, what its format could not hold,
    and what waits for its lowers."""

    diff_id: Digest
    size: int
    left_out: tuple[str, ...]
    pending: Pending


def unpack_deferred(raw: io.RawIOBase, dest: Path, what: str, fmt: OverlayFormat, ids: int | None) -> Unpacked:
    """Unpack the compressed layer arriving on ``raw`` into the new directory ``dest`` with a
    :class:`DeferredWriter`; errors are said as :func:`shared.layer.unpack.unpack_blob` says them, and
    :class:`NeedsLowers` passes through. The caller checks the diff_id and applies the lowers."""
    os.mkdir(dest, 0o700)
    with unpacking(what), compress.open_stream(raw) as stream:
        reader = TarStream(stream)
        writer = DeferredWriter(dest, fmt, ids)
        left_out = apply_tar(reader, writer)
        reader.drain()
    return Unpacked(reader.digest(), reader.count, left_out, writer.pending)


def apply_lowers(dest: Path, pending: Pending, lowers: Sequence[Path], fmt: OverlayFormat) -> None:
    """Give the directories a :class:`DeferredWriter` made as parents in ``dest`` the metadata they would have
    had: the topmost lower's (top first in ``lowers``; 0755 root's where none shows them), then again what the
    tar's own entries set, then the lower's mtime where the tar gave none (the writer set the tar's already)."""
    low = Lowers(lowers, fmt)
    root = SafeRoot(dest)
    try:
        for key in sorted(pending):  # parents first: each is opened from the root, through no symlink
            fd = os.dup(root.fd) if not key else root.open_dir(list(key))
            try:
                meta = low.dir_meta(list(key)) or DirMeta(0o755, 0, 0, None)
                _apply(fd, meta.uid, meta.gid, meta.mode, tuple(meta.xattrs.items()))
                for applied in pending[key]:
                    _apply(fd, *applied)
                if not pending[key] and meta.mtime_ns is not None:
                    os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
            finally:
                os.close(fd)
    finally:
        root.close()
        low.close()


def _apply(fd: int, uid: int, gid: int, mode: int, xattrs: tuple[tuple[str, bytes], ...]) -> None:
    # as DiffWriter applies them: chown first (it clears setuid, setgid and security.capability)
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    for name, value in xattrs:
        os.setxattr(fd, name, value)


def pending_to_json(pending: Pending) -> list[Any]:
    """:data:`Pending` as JSON can carry it (from an unpacking process to the one that commits the layer)."""
    return [[list(key), [[a.uid, a.gid, a.mode, [[n, v.hex()] for n, v in a.xattrs]] for a in applied]]
            for key, applied in pending.items()]


def pending_from_json(doc: list[Any]) -> Pending:
    return {tuple(key): [Applied(int(u), int(g), int(m), tuple((str(n), bytes.fromhex(v)) for n, v in x))
                         for u, g, m, x in applied] for key, applied in doc}

