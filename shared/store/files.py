"""How the store writes and removes files, so that no reader ever sees half of anything.

A file is written to a temp name beside it and renamed over the old one (readers see the old file or the whole
new one); a tree is removed without following a symlink and without recursion; a lock is a flock(2) that dies
with its holder. The runner's own records (containers, networks, seccomp cache) and puller's credentials file
keep the same discipline through these.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.errors import Kind, StrataError
from shared.layer.safepath import remove_at


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """``indent=None`` for a large document written on a hot path: json indents in Python, and compact it encodes
    in C (a container's 28 kB config.json: ~1 ms of every run against ~0.2)."""
    atomic_write(path, json.dumps(obj, indent=indent, sort_keys=True).encode() + b"\n")


def read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.load(f)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a whole tree, however deep), never following a symlink in it; absent is fine.

    Not shutil.rmtree: its fd-based walk recurses, one frame and one fd per level, so a container that made a
    1,500-deep tree, or a layer 1,200 deep, raised RecursionError and could never be removed. This is
    :func:`shared.layer.safepath.remove_at` (iterative, constant fds), from the parent; ``path`` itself, the
    caller's, may lead through symlinks (a store root may be one). Failures are one-line StrataErrors, a mount
    point inside the tree among them (it is left alone, with its contents).
    """
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StrataError(f"cannot remove {path}: {e.strerror}", Kind.SYSTEM) from None
    try:
        remove_at(parent, path.name, str(path))
    finally:
        os.close(parent)


@contextlib.contextmanager
def flocked(path: Path, exclusive: bool = True) -> Iterator[None]:
    """flock(2) on PATH (made if missing) for the block: a holder that dies (kill -9) drops it with its last fd,
    so no lock outlives its process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
