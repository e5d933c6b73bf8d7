"""The run-time directory of a user without root (issue 20): what lives only while the machine runs (the pid of
the process that keeps the user's namespace, its lock).

``$XDG_RUNTIME_DIR/strata`` where logind made ``$XDG_RUNTIME_DIR`` (a tmpfs of the user's, 0700, gone at logout).
Where it did not (no logind, as on this machine, or a CI runner), ``/tmp/strata-run-UID``, as podman falls back
to ``/tmp/podman-run-UID``: /tmp is shared, so another user may have made that name first, as a symlink to a
place of theirs, a fifo, or a directory they can read. It is used only when it is a directory (not a link), owned
by the user, with no permission for anyone else; otherwise the tool refuses in one line naming it, and never
follows, reads or writes anything there. Files in it are opened with O_NOFOLLOW and checked the same way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shared.errors import Kind, StrataError


def run_dir(uid: int, env: dict[str, str] | None = None, owner: int | None = None) -> Path:
    """The run-time directory of the user UID (on the host), made if missing, checked before use. OWNER is the
    uid it must show (default UID; 0 once the process is in the user's namespace, where UID shows as 0)."""
    env = dict(os.environ) if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        base, path = Path(runtime), Path(runtime) / "strata"
    else:
        base, path = Path("/tmp"), Path(f"/tmp/strata-run-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise StrataError(f"cannot make the run-time directory {path}: {e.strerror}", Kind.SYSTEM) from None
    check_private(path, uid if owner is None else owner, is_dir=True, under=base)
    return path


def check_private(path: Path, uid: int, is_dir: bool, under: Path | None = None) -> os.stat_result:
    """``path`` must be what it says (a directory or a regular file, never a link), the user's, and closed to
    everyone else: what another user planted in a shared place is refused, not used."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise StrataError(f"cannot use {path}: {e.strerror}", Kind.SYSTEM) from None
    kind = "directory" if is_dir else "regular file"
    wrong = None
    if not (stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)):
        wrong = f"is not a {kind}" + (" (a symlink)" if stat.S_ISLNK(st.st_mode) else "")
    elif st.st_uid != uid:
        wrong = f"belongs to uid {st.st_uid}, not to this user ({uid})"
    elif st.st_mode & 0o077:
        wrong = f"is open to others (mode {stat.S_IMODE(st.st_mode):04o})"
    if wrong is not None:
        where = f" in {under}" if under is not None else ""
        raise StrataError(f"refusing the run-time {kind} {path}{where}: it {wrong}; remove it, or set "
                          "XDG_RUNTIME_DIR to a directory of your own", Kind.SYSTEM)
    return st
