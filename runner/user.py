"""``USER`` / ``--user`` resolution from the container's own /etc/passwd and /etc/group, read as plain files.

Never through NSS: NSS would load libraries the image controls (the moby CVE-2019-14271 lesson). Rules as
Docker's (moby/sys/user GetExecUser): a numeric uid needs no passwd entry; a name must exist; without a group the
user's primary gid is used; supplementary groups are those whose member list names the user, and the primary gid
is always among them (GHSA-rc4r-wh2q-q6c4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.errors import Kind, StrataError


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve(spec: str, root: Path = Path("/")) -> ExecUser:
    """``spec`` is ``user[:group]`` with names or numbers; ``root`` is where the container's /etc is."""
    user, _, group = (spec or "0").partition(":")
    passwd = [r for r in _rows(root / "etc/passwd") if len(r) >= 7]
    groups = [r for r in _rows(root / "etc/group") if len(r) >= 4]
    entry = next((r for r in passwd if r[0] == user or (user.isdigit() and r[2] == user)), None)
    if entry is None and not user.isdigit():
        raise StrataError(f"unable to find user {user}: no matching entries in passwd file", Kind.NOT_FOUND)
    uid = int(user) if user.isdigit() else int(entry[2])  # type: ignore[index]
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"
    name = entry[0] if entry else None
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            grow = next((r for r in groups if r[0] == group), None)
            if grow is None:
                raise StrataError(f"unable to find group {group}: no matching entries in group file", Kind.NOT_FOUND)
            gid = int(grow[2])
    extra = [int(r[2]) for r in groups if name and name in r[3].split(",") and r[2].isdigit()] if not group else []
    return ExecUser(uid, gid, tuple(dict.fromkeys([gid, *extra])), home or "/")
