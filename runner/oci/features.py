"""``runner-oci features`` (runtime-spec features.md: what a caller may ask of this runtime, from the same tables
config.json is checked against) and ``runner-oci spec`` (a config.json to start from, runc's example)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.isolation import seccomp
from runner.isolation.security import CAPABILITIES, MASKED_PATHS, READONLY_PATHS
from runner.oci import mounts
from runner.oci.hooks import HOOK_KINDS
from shared.errors import Kind, StrataError

VERSION_MIN, VERSION_MAX = "1.0.0", "1.3.0"  # any 1.x is read (config.py); 1.3.0: the schema the tests check


def features() -> dict[str, Any]:
    return {
        "ociVersionMin": VERSION_MIN, "ociVersionMax": VERSION_MAX, "hooks": list(HOOK_KINDS),
        "mountOptions": sorted({*mounts.FLAGS, *mounts.PROPAGATION, *mounts.RECURSIVE}),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": [f"CAP_{c}" for c in CAPABILITIES],
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(seccomp.ACTIONS), "operators": sorted(seccomp.OPERATORS),
                        "archs": sorted(seccomp.ARCHES), "knownFlags": sorted(seccomp.FLAGS),
                        "supportedFlags": sorted(seccomp.FLAGS)},
            "apparmor": {"enabled": False}, "selinux": {"enabled": False}, "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"io.github.strata.runner-oci.executor": "strata"},
    }


def example(rootless: bool = False) -> dict[str, Any]:
    """runc spec's example: ``sh`` on a terminal in ./rootfs (read-only), runc's three capabilities, Docker's
    masked and read-only paths, the standard mounts."""
    caps = sorted(f"CAP_{c}" for c in ("AUDIT_WRITE", "KILL", "NET_BIND_SERVICE")) if not rootless else []
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
                    "cwd": "/", "capabilities": {s: caps for s in ("bounding", "effective", "permitted")},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runner-oci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": [f"/{p}" for p in MASKED_PATHS],
            "readonlyPaths": [f"/{p}" for p in READONLY_PATHS],
        },
    }


def write_spec(bundle: Path, rootless: bool) -> None:
    """``spec``: BUNDLE/config.json, refused if one is there (runc's rule)."""
    path = bundle / "config.json"
    try:
        with open(path, "x") as f:
            f.write(json.dumps(example(rootless), indent="\t") + "\n")
    except FileExistsError:
        raise StrataError(f"File {path} exists. Remove it first", Kind.STATE) from None
    except OSError as e:
        raise StrataError(f"cannot write {path}: {e.strerror}", Kind.SYSTEM) from None
