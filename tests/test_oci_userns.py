"""runner-oci with a user namespace of the container's own (``linux.uidMappings``/``gidMappings``, what Docker's
--userns-remap and podman's --userns write): root inside is an unprivileged host id, the maps are the config's,
device nodes are the host's bound (a user namespace may make none), and root inside cannot act on the host's
root-owned files. A file in tmp is the sentinel, never a host file."""

from __future__ import annotations

import os
from pathlib import Path

from tests.marks import needs_root, needs_tools
from tests.ocibundle import Oci

pytestmark = [needs_root, needs_tools]
BASE = 100000


def _reachable(path: Path) -> None:
    """The bundle (and the sentinel's dir) reachable by root inside, an unprivileged host id: o+x up the test's tmp
    dirs (pytest makes them 0700), as a caller's bundle of a remapped container must be (runc's rule too)."""
    for d in (path, *path.parents):
        if d == Path("/tmp") or d == Path("/"):
            break
        os.chmod(d, os.stat(d).st_mode | 0o011)
    for name in ("proc", "sys", "dev", "host"):  # mount points: root inside may make none in the host root's tree
        (path / name).mkdir(exist_ok=True)


def _userns(doc: dict[str, object]) -> None:
    linux = doc["linux"]
    assert isinstance(linux, dict)
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": BASE, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": BASE, "size": 65536}]


def test_root_inside_is_the_mapped_host_id(oci: Oci, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host\n")
    os.chmod(sentinel, 0o644)
    script = ("id -u; cat /proc/self/uid_map /proc/self/gid_map; echo ok > /dev/null && echo null-works; "
              "echo inside > /host/sentinel 2>/dev/null && echo wrote || echo refused")

    def edit(doc: dict[str, object]) -> None:
        _userns(doc)
        mounts = doc["mounts"]
        assert isinstance(mounts, list)
        mounts.append({"destination": "/host", "type": "bind", "source": str(tmp_path), "options": ["rbind"]})

    _reachable(oci.bundle / "rootfs")
    oci.config(["sh", "-c", script], edit)
    done = oci("run", "--bundle", str(oci.bundle), "u1", check=False)
    lines = done.stdout.split()
    assert done.returncode == 0, done.stderr
    assert lines[0] == "0" and lines[1:4] == ["0", str(BASE), "65536"] and lines[4:7] == ["0", str(BASE), "65536"]
    assert "null-works" in lines and lines[-1] == "refused", done.stdout  # root inside is no root of the host's
    assert sentinel.read_text() == "host\n"


def test_the_init_runs_as_the_mapped_id_on_the_host(oci: Oci) -> None:
    _reachable(oci.bundle / "rootfs")
    oci.config(["sleep", "30"], _userns)
    oci("create", "--bundle", str(oci.bundle), "u2")
    pid = oci.state("u2")["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(BASE)] * 4, status
    oci("start", "u2")
    oci("kill", "u2", "KILL")
