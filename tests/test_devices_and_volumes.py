"""Devices and volumes (issue 18, items 1 and 2), attacked from inside real containers by tests/probe.c.

1. A device node the container makes or finds (CAP_MKNOD is Docker's default) is refused by the devices cgroup
   (v1) or a BPF device program (v2) unless Docker's allow list has it, whatever the mount flags say; and a ``:ro``
   volume is read-only and ``nodev`` all the way down, its submounts included.
2. A volume's target is resolved once: a symlink another container swaps in a shared volume during the start
   cannot make a ``:ro`` volume land read-write.

The only device attacked is a loop device over a file the test made (detached in a ``finally``); the host side
judges by that file's bytes and by the volume sources' contents.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.isolation import cgroups, devcgroup
from tests.marks import as_root_and_user, needs_root, needs_tools
from tests.tools import ROOT, Tools, detached, mounts_under, runner_command, wait_until

pytestmark = [needs_root, needs_tools]

SENTINEL = b"strata-loop-sentinel-0123456789"
UNIFIED = Path("/sys/fs/cgroup/unified")



@pytest.fixture
def own_img(stored_test_image: str, no_leaks: None) -> str:
    """The session test image, pulled, for a test of our executor alone."""
    return stored_test_image


@pytest.fixture
def img(own_img: str, executor: str) -> str:
    """The same, the test running once per executor (ours, runc, crun)."""
    return own_img


def with_probe(probe: Path) -> tuple[str, str]:
    return ("-v", f"{probe}:/probe:ro")


def fields(out: str) -> dict[str, str]:
    """The probe's "key value" lines (the last of each key)."""
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines()) if k}


@dataclass(frozen=True)
class Loop:
    path: str
    major: int
    minor: int
    backing: Path


@contextmanager
def loop_device(tmp_path: Path) -> Iterator[Loop]:
    """A loop device over a 1 MiB file that starts with SENTINEL; detached whatever happens."""
    backing = tmp_path / "loop.img"
    backing.write_bytes(SENTINEL.ljust(1 << 20, b"\0"))
    made = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    path = made.stdout.strip()
    try:
        rdev = os.stat(path).st_rdev
        yield Loop(path, os.major(rdev), os.minor(rdev), backing)
    finally:
        subprocess.run(["losetup", "-d", path], check=True)


def untouched(loop: Loop) -> bool:
    return loop.backing.read_bytes() == SENTINEL.ljust(1 << 20, b"\0")


# -- 1. device nodes ------------------------------------------------------------------------------------------------


@as_root_and_user
def test_block_node_on_a_dev_tmpfs_cannot_be_opened(tools: Tools, img: str, probe: Path, tmp_path: Path,
                                                    executor: str) -> None:
    """``--tmpfs /t:dev`` is honoured as Docker honours it (the mount allows device nodes), and CAP_MKNOD makes a
    node there for the host's loop device: the devices cgroup refuses the open (EPERM), read-only or read-write.
    A user's container has no devices cgroup: its mknod is refused (EPERM: a user namespace makes no node, and a
    tmpfs it mounts is nodev whatever its options say)."""
    with loop_device(tmp_path) as loop:
        result = tools.runner("run", "--rm", *with_probe(probe), "--tmpfs", "/t:dev", img, "/probe", "blockdev",
                              "/t/disk", str(loop.major), str(loop.minor))
    assert result.code == 0, result.err
    got = fields(result.out)
    if tools.rootless:
        assert got["mknod"] == "EPERM" and got["open"] == "ENOENT", result.out
        assert untouched(loop), result.out
        return
    assert got["mknod"] == "ok", result.out  # Docker's list allows mknod of any node ("b *:* m")
    assert got["open"] == "EPERM" and got["open-ro"] == "EPERM", result.out
    assert SENTINEL.decode()[:32] not in result.out and untouched(loop), result.out


def test_privileged_keeps_every_device(tools: Tools, own_img: str, probe: Path, tmp_path: Path) -> None:
    """--privileged: every device, as Docker (the device attack above then works, on the test's own loop). Ours
    only: runc and crun are handed the same allow-all rule they always were."""
    with loop_device(tmp_path) as loop:
        result = tools.runner("run", "--rm", "--privileged", *with_probe(probe), "--tmpfs", "/t:dev", own_img, "/probe",
                              "blockdev", "/t/disk", str(loop.major), str(loop.minor))
    assert result.code == 0, result.err
    assert fields(result.out)["open"] == "ok" and "strata-loop-sentinel" in result.out, result.out
    assert not untouched(loop)


def in_private_namespace(tools: Tools, setup: str, args: list[str], after: str) -> subprocess.CompletedProcess[str]:
    """``runner ARGS`` in a private mount namespace of its own, after SETUP and followed by AFTER (shell): the
    mounts a test makes there are never on the host, and vanish with it."""
    command = " ".join(shlex.quote(a) for a in runner_command(tools, *args))
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f"{setup} && {{ {command}; echo runner-exit $?; {after}; }}"],
                          cwd=ROOT, env=tools.environ(), capture_output=True, text=True, timeout=120)


def test_dev_tmpfs_is_refused_where_no_devices_cgroup_is_mounted(tools: Tools, own_img: str) -> None:
    """Where the cgroup file systems are not mounted (as under ``ip netns exec``, which mounts a fresh /sys) the
    allow list cannot be applied: every mount the container can write stays nodev, and ``--tmpfs DST:dev``, the one
    mount that would allow nodes, is refused with a one-line error rather than mounted unguarded."""
    result = in_private_namespace(tools, "umount -l /sys/fs/cgroup", ["run", "--rm", "--tmpfs", "/t:dev", own_img,
                                                                       "true"], "true")
    assert "runner-exit 125" in result.stdout, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("runner: error: "), result.stderr
    assert "--tmpfs /t with dev needs the devices cgroup, which is not mounted here" in result.stderr


@as_root_and_user
def test_read_only_volume_is_read_only_and_nodev_in_its_submounts(tools: Tools, img: str, probe: Path,
                                                                   tmp_path: Path, executor: str) -> None:
    """``-v SRC:/host:ro`` where a tmpfs is mounted under SRC (as a devtmpfs is under ``-v /:/host:ro``), holding a
    node of the host's loop device: inside, the submount is read-only and nodev too. The container can neither
    write a file there, nor make a node, nor open the existing one (EACCES from nodev, or EPERM from the devices
    cgroup). The node is 0666: as a user, whom its mode lets in, nodev alone refuses it."""
    src = tmp_path / "src"
    (src / "dev").mkdir(parents=True)
    with loop_device(tmp_path) as loop:
        setup = (f"mount -t tmpfs -o mode=755,size=1m strata-test {src / 'dev'} && "
                 f"mknod -m 666 {src / 'dev' / 'disk'} b {loop.major} {loop.minor}")
        script = ("/probe blockdev /host/dev/disk; /probe create /host/dev/file; "
                  f"/probe blockdev /host/dev/mine {loop.major} {loop.minor}; /probe create /host/top")
        result = in_private_namespace(tools, setup, ["run", "--rm", *with_probe(probe), "-v", f"{src}:/host:ro",
                                                     img, "sh", "-c", script], f"ls -A {src / 'dev'} {src}")
    assert result.returncode == 0 and "runner-exit 0" in result.stdout, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    first_open = lines[0].split()
    assert first_open[0] == "open" and first_open[1] in ("EACCES", "EPERM"), result.stdout
    assert lines[1].split()[1] in ("EACCES", "EPERM"), result.stdout  # open-ro
    assert "create EROFS" in lines and "mknod EROFS" in lines, result.stdout
    assert "create ok" not in lines and "mknod ok" not in lines, result.stdout
    assert SENTINEL.decode()[:32] not in result.stdout and untouched(loop), result.stdout
    listing = lines[lines.index("runner-exit 0") + 1:]
    assert listing == [f"{src}:", "dev", "", f"{src / 'dev'}:", "disk"], result.stdout  # nothing was added


# -- the BPF device program (cgroup v2) -------------------------------------------------------------------------------


def test_cgroup_v2_device_program_refuses_what_the_list_does_not_allow(probe: Path, tmp_path: Path) -> None:
    """This machine is cgroup v1 with a v2 hierarchy beside it (/sys/fs/cgroup/unified). A BPF device program works
    on any v2 group whatever controllers it has: the v2 backend's group gets Docker's list as a program, and a
    process in it may make a node (``b *:* m``) but not open it, while /dev/null stays usable."""
    assert (UNIFIED / "cgroup.controllers").exists(), "no cgroup v2 hierarchy at /sys/fs/cgroup/unified"
    group = cgroups.CgroupV2(f"strata-test-devices-{os.getpid()}", root=UNIFIED)
    rules = devcgroup.default_rules(privileged=False)
    with loop_device(tmp_path) as loop:
        os.close(os.open(loop.path, os.O_RDONLY))  # outside the group, the same device opens
        group.create(cgroups.Limits(), rules)
        try:
            procs = str(group.dirs[0] / "cgroup.procs")

            def join() -> None:
                with open(procs, "w") as f:
                    f.write("0")

            node = tmp_path / "disk"
            attack = subprocess.run([str(probe), "blockdev", str(node), str(loop.major), str(loop.minor)],
                                    preexec_fn=join, capture_output=True, text=True, timeout=30)
            null = subprocess.run([str(probe), "create", "/dev/null"], preexec_fn=join, capture_output=True,
                                  text=True, timeout=30)
        finally:
            group.remove()
            if group.parent.exists() and not any(p.is_dir() for p in group.parent.iterdir()):
                group.parent.rmdir()  # the test made it
    got = fields(attack.stdout)
    assert got["mknod"] == "ok" and got["open"] == "EPERM" and got["open-ro"] == "EPERM", attack.stdout
    assert stat.S_ISBLK(os.lstat(node).st_mode) and untouched(loop)
    assert fields(null.stdout) == {"create": "ok", "write": "ok"}, null.stdout
    assert not group.exists()


# -- 2. the volume target is resolved once ---------------------------------------------------------------------------

STARTS = 24


@as_root_and_user
def test_volume_target_swapped_during_start_never_lands_read_write(tools: Tools, img: str, probe: Path,
                                                                  tmp_path: Path, executor: str) -> None:
    """The CVE-2021-30465 shape. An attacker container shares /shared with the victim and swaps two symlinks there
    (RENAME_EXCHANGE in a loop): /shared/a -> /etc and /shared/b -> /shared. The victim mounts ``-v RO:/shared/a:ro``.
    Resolved twice, the bind could land on /etc while the read-only remount hit /shared (a mount root too): the
    volume then sat at the victim's /etc read-write. Resolved once, it is read-only wherever it lands (inside the
    container). The victim writes through every place it may be; the host judges by RO's contents. Under runc and
    crun (which, as installed here, look the target up again for the remount) the runner binds the volumes itself
    on the host side, so afterwards no mount under the store may be left in the host's mount table."""
    shared, ro = tmp_path / "shared", tmp_path / "ro"
    shared.mkdir()
    ro.mkdir()
    (ro / "keep").write_text("keep\n")
    for made in (shared, ro, ro / "keep"):  # a user's own: only the mount stands between the victim and them
        tools.hand_over(made)
    swap = "ln -s /etc /shared/a && ln -s /shared /shared/b && exec /probe exchange /shared/a /shared/b 600"
    started, errors = 0, []
    with detached(tools, *with_probe(probe), "-v", f"{shared}:/shared", img, "sh", "-c", swap):
        wait_until(lambda: (shared / "a").is_symlink() and (shared / "b").is_symlink(), "the attacker's symlinks")
        for _ in range(STARTS):
            victim = tools.runner("run", "--rm", "-v", f"{shared}:/shared", "-v", f"{ro}:/shared/a:ro", img, "sh",
                                  "-c", "echo pwned > /etc/pwned; echo pwned > /shared/a/pwned; true")
            started += victim.code == 0
            errors += [victim.err.strip()] if victim.code != 0 else []
            if sorted(os.listdir(ro)) != ["keep"]:
                break
    assert sorted(os.listdir(ro)) == ["keep"], f"a read-only volume was written (after {started} starts)"
    assert started == STARTS, f"only {started} of {STARTS} starts succeeded: {errors[:3]}"
    assert mounts_under(tools.root) == [], "mounts left behind"
