"""``runner top CONTAINER [ps OPTIONS]``: the container's processes as Docker's top shows them: the host's ``ps``
(procps) with the options given (``-ef`` by default: ``UID PID PPID C STIME TTY TIME CMD``), host pids, its lines
kept when their PID column names one of the container's processes, printed as Docker's CLI prints them
(tabwriter, minimum width 20).

Which processes are the container's (:func:`pids_of`): those of its cgroup, found through PID 1's own
/proc/PID/cgroup (so a container an OCI runtime grouped elsewhere is found too); without root a container has no
cgroup, and they are those in PID 1's pid namespace (/proc/*/ns/pid).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runner.container.record import Container
from runner.isolation import cgroups
from shared.errors import Kind, StrataError, usage
from shared.format import tabwrite
from shared.userns import rootless


def running_pid(container: Container) -> int:
    """PID 1's host pid, checked to be the recorded process; Docker's error when it is not running."""
    fd = container.verified_pidfd()
    if fd is None:
        raise StrataError(f"Container {container.id} is not running", Kind.STATE)
    os.close(fd)
    return container.state().pid


def groups_of(pid: int) -> dict[str, Path]:
    """controller -> the directory of the group PID is in ("" is cgroup v2's), from /proc/PID/cgroup and the
    cgroup mounts of /proc/self/mountinfo; empty without root (a user's groups are not the container's)."""
    if rootless():
        return {}
    mounts = cgroups.controller_mounts()
    v2 = cgroups.is_v2()
    out: dict[str, Path] = {}
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if v2 and not controllers and "" in mounts:  # a hybrid's v2 side holds no controller: v1 alone counts
            out["v2"] = mounts[""] / path.lstrip("/")
        for controller in controllers.split(",") if controllers and not v2 else ():
            if controller in mounts:
                out[controller] = mounts[controller] / path.lstrip("/")
    return out


def pids_of(container: Container, pid1: int) -> list[int]:
    """The host pids of the container's processes (module doc), sorted."""
    groups = groups_of(pid1)
    group = groups.get("v2") or groups.get("pids") or groups.get("memory")
    if group is not None:
        try:
            return sorted(int(p) for p in (group / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            return []
    try:
        ns = os.stat(f"/proc/{pid1}/ns/pid").st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}/ns/pid").st_ino == ns:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return sorted(found)


def parse_ps(output: str, pids: Sequence[int]) -> tuple[list[str], list[list[str]]]:
    """Docker's parsePSOutput: the titles, and the rows of PIDS (a row's last column keeps its spaces: the
    command); a thread's line (PID "-", as ``-L`` or ``m`` print them) goes with the process above it."""
    lines = output.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise StrataError("Couldn't find PID field in ps output", Kind.SYSTEM)
    at = titles.index("PID")
    wanted = {str(p) for p in pids}
    rows: list[list[str]] = []
    keep = False
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= at:
            continue
        if fields[at] != "-":
            keep = fields[at] in wanted
        if keep:
            rows.append([*fields[:len(titles) - 1], " ".join(fields[len(titles) - 1:])])
    return titles, rows


def top(container: Container, ps_args: Sequence[str]) -> list[str]:
    """The lines ``runner top`` prints."""
    args = list(ps_args) or ["-ef"]
    for arg in args:  # Docker's validatePSArgs: a custom title naming the PID column is refused
        for key, value in re.findall(r"(\S*)=\s*(PID\S*)", arg):
            if key != "pid":
                raise usage(f'specifying "{key}={value}" is not allowed')
    pids = pids_of(container, running_pid(container))
    # ps cuts lines at $COLUMNS when it is set: Docker's daemon runs it with none (whole command lines)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = _ps([*args, "-q", ",".join(map(str, pids))], env)
    if done.returncode != 0:  # some options (f) do not go with -q: Docker runs it again without
        done = _ps(args, env)
        if done.returncode != 0:
            raise StrataError(f"ps: {(done.stderr.splitlines() or ['exit status ' + str(done.returncode)])[0]}",
                              Kind.SYSTEM)
    titles, rows = parse_ps(done.stdout, pids)
    return tabwrite(["\t".join(titles), *("\t".join(r) for r in rows)], minwidth=20, padding=3)


def _ps(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ps", *args], capture_output=True, text=True, check=False, env=env)
    except OSError as e:  # no procps on this host
        raise StrataError(f"cannot run ps (procps): {e.strerror}", Kind.SYSTEM) from None
