"""What the runner leaves in the machine's cgroups and process table, as the leak checks see it. Other tests run
beside a test (pytest -n, other sessions): a leak is an empty group that stays, or a process naming the test's
own store root, never merely a group that is new."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_CONTROLLERS = ("memory", "cpu", "pids", "devices", "cpuacct", "blkio")


def own_groups() -> dict[str, Path]:
    """controller -> this process's group in it (v1), where the runner nests ``strata-ID`` groups."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for controller in names.split(","):
                own[controller] = path
    return {c: Path("/sys/fs/cgroup", c, own[c].lstrip("/")) for c in CGROUP_CONTROLLERS if c in own}


def own_cgroup_dirs() -> list[Path]:
    """This process's group in each controller the runner uses (v1)."""
    return list(own_groups().values())


def container_cgroup(controller: str, container_id: str) -> Path:
    """Where the runner puts a container's group in CONTROLLER: under the runner's (and so this process's) own."""
    return own_groups()[controller] / f"strata-{container_id}"


def strata_cgroups() -> set[Path]:
    return {d for base in own_cgroup_dirs() if base.is_dir() for d in base.glob("strata-*") if d.is_dir()}


def empty_cgroups(groups: set[Path]) -> list[Path]:
    """The GROUPS that hold no process, sorted. A leak is an empty group nobody removed: a group with processes
    is a live container, of this test (whose processes ``processes_mentioning`` finds by the store root) or of
    another test session on the machine, which is not this test's to judge."""
    out = []
    for group in groups:
        try:
            if not (group / "cgroup.procs").read_text().strip():
                out.append(group)
        except OSError:  # removed meanwhile
            continue
    return sorted(out)


def processes_mentioning(path: Path) -> list[str]:
    """Processes (not this one) whose command line names PATH (a runner or monitor), or whose mount table does (a
    container's: its /etc/hosts is bound from the store)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            mounts = (proc / "mountinfo").read_text(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if str(path) in cmdline or str(path) in mounts:
            found.append(f"{proc.name}: {cmdline.strip() or '(no cmdline)'}")
    return found
