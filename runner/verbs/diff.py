"""``runner diff``: the container's rw layer (the overlay's upper dir) as Docker's ``docker diff`` prints it, by
moby's rules for overlay2 (pkg/archive ``OverlayChanges``):

* the upper dir is walked depth first, names in byte order within a directory (Go's filepath.Walk), and
  nothing is sorted afterwards: a directory comes before what it holds;
* a 0/0 character device (overlay's whiteout) is ``D`` of its name; a directory marked opaque (removed and made
  again) is ``D`` too, its new content ``A``/``C`` below it, as moby reports it;
* anything else is ``C`` when a lower layer (the -init layer, then the image's, top first) has the path, else
  ``A``; a directory the lower layer has with the same size, mode and mtime is no change at all;
* the parent of an ``A`` or ``D`` is ``C``, printed before it, unless already printed.

The upper dir is read fd by fd without following a symlink (:class:`shared.layer.safepath.DirWalk`); a lower
layer's path is looked up the same way, never through one of its symlinks.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Iterator

from runner.container.record import Container
from shared.errors import StrataError
from shared.layer.safepath import SafeRoot, lstat_at, proc_path, sorted_walk
from shared.layer.whiteout import OverlayFormat
from shared.store.layout import store_overlay


def changes(container: Container) -> list[str]:
    """``KIND /path`` lines, in Docker's order."""
    lowers = [str(container.path("init")), *(os.path.realpath(container.path("l") / str(i))
                                             for i in range(len(container.spec.chain_ids)))]
    roots = [SafeRoot(p) for p in lowers]
    out: list[str] = []
    changed_dirs: set[str] = set()
    try:
        with SafeRoot(container.path("upper")) as upper:
            for path, st, opaque in _walk(upper.fd, store_overlay()):
                if OverlayFormat.is_whiteout(st) or opaque:
                    kind = "D"
                else:
                    lower = _lookup(roots, path)
                    if lower is not None and stat.S_ISDIR(lower.st_mode) and stat.S_ISDIR(st.st_mode) \
                            and _same_dir(st, lower):
                        continue
                    kind = "A" if lower is None else "C"
                if stat.S_ISDIR(st.st_mode):
                    changed_dirs.add(path)
                parent = posixpath.dirname(path)
                if kind in ("A", "D") and parent not in changed_dirs and parent != "/":
                    out.append(f"C {parent}")
                    changed_dirs.add(parent)
                out.append(f"{kind} {path}")
    finally:
        for r in roots:
            r.close()
    return out


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    """moby's test for a directory that only holds changes: size, mode and mtime equal (a time with no
    nanoseconds on either side compares by seconds: tar's times have none)."""
    if a.st_size != b.st_size or a.st_mode != b.st_mode:
        return False
    sec_a, ns_a = divmod(a.st_mtime_ns, 1_000_000_000)
    sec_b, ns_b = divmod(b.st_mtime_ns, 1_000_000_000)
    return sec_a == sec_b and (ns_a == ns_b or ns_a == 0 or ns_b == 0)


def _lookup(roots: list[SafeRoot], path: str) -> os.stat_result | None:
    """The first lower layer's lstat of PATH, never through a symlink of the layer's."""
    parts = [p for p in path.split("/") if p]
    for root in roots:
        try:
            fd = root.open_dir(parts[:-1])
        except (OSError, StrataError):  # missing, or a symlink or file on the way: the layer has no such path
            continue
        try:
            st = lstat_at(fd, parts[-1])
        finally:
            os.close(fd)
        if st is not None:
            return st
    return None


def _walk(top_fd: int, fmt: OverlayFormat) -> Iterator[tuple[str, os.stat_result, bool]]:
    """(``/path``, lstat, opaque) of every entry below ``top_fd``, depth first, names in byte order."""
    for walk, name, st in sorted_walk(top_fd, lambda st: True):
        opaque = False
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                opaque = os.getxattr(proc_path(walk.fd, name), fmt.opaque_xattr, follow_symlinks=False) == b"y"
        yield "/" + walk.rel(name), st, opaque
