"""Docker's ``cp`` rules as pure functions: which argument is the container's, what a trailing ``/`` or ``/.``
asserts, and where a copy lands (moby's pkg/archive copy.go, ``PrepareArchiveCopy``, and the docs' table).

``docker cp`` moves an archive of SRC (entries named by SRC's base name) and extracts it into a directory on the
other side. Whether that directory is DEST itself or DEST's parent, and whether the archive's top entry is renamed
to DEST's base name, follows from what SRC is and whether DEST exists:

============================  ==========================================================================
SRC                           DEST
============================  ==========================================================================
file                          missing: created as DEST; missing and ends in ``/``: "no such directory";
                              a file: overwritten; a directory: the file goes into it under SRC's name
directory                     missing: created as DEST with SRC's content; a file: "cannot copy
                              directory"; a directory: SRC goes into it (``SRC/.``: SRC's content does)
============================  ==========================================================================

No I/O here: the callers resolve the paths (through :mod:`shared.layer.safepath`) and apply the :class:`Plan`.
"""

from __future__ import annotations

import posixpath
from typing import NamedTuple

from shared.errors import Kind, StrataError

NO_SUCH_DIRECTORY = "no such directory"  # moby's ErrDirNotExists
CANNOT_COPY_DIRECTORY = "cannot copy directory"  # moby's ErrCannotCopyDir


class Endpoint(NamedTuple):
    """One argument of ``cp``: ``container`` None for a local path (or ``-``)."""

    container: str | None
    path: str


def parse_arg(arg: str) -> Endpoint:
    """``CONTAINER:PATH`` or a local path, as Docker splits them: a local path holding ``:`` must start with
    ``/`` or ``.`` (``./file:name``); the first ``:`` separates the container's name."""
    if arg == "-" or arg.startswith(("/", ".")):
        return Endpoint(None, arg)
    name, sep, path = arg.partition(":")
    if not sep:
        return Endpoint(None, arg)
    if not name:
        raise StrataError(f"invalid argument {arg!r}: no container name before ':'", Kind.USAGE)
    return Endpoint(name, path)


def split_args(src: str, dest: str) -> tuple[Endpoint, Endpoint]:
    """Both arguments; exactly one names a container (Docker's words when not)."""
    a, b = parse_arg(src), parse_arg(dest)
    if a.container is None and b.container is None:
        raise StrataError("must specify at least one container source", Kind.USAGE)
    if a.container is not None and b.container is not None:
        raise StrataError("copying between containers is not supported", Kind.USAGE)
    if (a.container is not None and a.path == "-") or (b.container is not None and b.path == "-"):
        raise StrataError("'-' is a local stream, not a container path", Kind.USAGE)
    if (a.container is not None and not a.path) or (b.container is not None and not b.path):
        raise StrataError("path cannot be empty", Kind.USAGE)
    return a, b


def asserts_dir(path: str) -> bool:
    """A path ending in ``/`` or ``/.`` (or ``.`` alone) says it is a directory."""
    return path.endswith("/") or specifies_current_dir(path)


def specifies_current_dir(path: str) -> bool:
    """``DIR/.`` (or ``.``): the directory's content rather than the directory."""
    return posixpath.basename(path) == "."


def absolute(path: str, cwd: str = "/") -> str:
    """PATH made absolute against CWD and cleaned as Go's filepath.Clean, keeping a trailing ``/`` or ``/.``."""
    joined = posixpath.normpath(posixpath.join(cwd, path))
    if joined.startswith("//"):
        joined = "/" + joined.lstrip("/")
    if specifies_current_dir(path):
        return joined.rstrip("/") + "/."
    if path.endswith("/") and joined != "/":
        return joined + "/"
    return joined


def split_dir_entry(path: str) -> tuple[str, str]:
    """moby's SplitPathDirEntry: the parent and the entry, ``.`` kept as the entry of ``DIR/.``."""
    clean = posixpath.normpath(path) if path not in ("", "/") else "/"
    if specifies_current_dir(path):
        return clean, "."
    return posixpath.dirname(clean) or "/", posixpath.basename(clean) or "/"


class Plan(NamedTuple):
    """Where the archive is extracted and what its top entry is called there.

    ``into_parent``: extract into DEST's parent (else into DEST, a directory). ``top``: the name the archive's
    top entry takes; None when the top entry is dropped and its content goes straight into DEST (``SRC/.`` onto a
    directory)."""

    into_parent: bool
    top: str | None


def plan(src_is_dir: bool, src_path: str, src_name: str, dest_exists: bool, dest_is_dir: bool,
         dest_path: str) -> Plan:
    """Docker's PrepareArchiveCopy: SRC_NAME is the top entry's name in the archive (SRC's base name, or the name
    given with -L); the error messages are moby's."""
    dest_base = split_dir_entry(dest_path)[1]
    if dest_exists and dest_is_dir:
        if src_is_dir and specifies_current_dir(src_path):
            return Plan(False, None)
        return Plan(False, src_name)
    if dest_exists and src_is_dir:
        raise StrataError(CANNOT_COPY_DIRECTORY, Kind.USAGE)
    if not dest_exists and not src_is_dir and asserts_dir(dest_path):
        raise StrataError(NO_SUCH_DIRECTORY, Kind.NOT_FOUND)
    return Plan(True, dest_base)
