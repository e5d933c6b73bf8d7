"""A hostile bundle under runner-oci: a rootfs whose mount destinations are symlinks out of it (absolute, and
../../ relative, to a sentinel directory in the test's tmp, never a real host path), /dev, /proc and /sys as such
symlinks, a file bind whose destination is one, device nodes under a symlinked directory. Whatever runner-oci
makes of it (a container whose mounts land inside its root, or a create refused in one line), nothing of it ever
lands outside the rootfs: the sentinels are unchanged (no file, directory, node, mode or owner changed), and the
host's mount table has nothing under the test's tmp, while the container runs and after its delete."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.marks import needs_root, needs_tools
from tests.ocibundle import Oci, host_mountinfo, wait_for

pytestmark = [needs_root, needs_tools]


def snapshot(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under TOP: kind, mode, owner, device, size and a file's bytes."""
    out: dict[str, tuple[Any, ...]] = {}
    for d, dirs, files in os.walk(top):
        for name in [*dirs, *files, "."]:
            p = Path(d, name)
            st = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out[str(p.relative_to(top))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, st.st_dev,
                                            st.st_rdev, st.st_size, data)
    return out


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    """A directory outside the rootfs a hostile symlink points at, with a file and a subdirectory in it."""
    s = tmp_path / "sentinel"
    (s / "sub").mkdir(parents=True)
    (s / "hosts").write_text("sentinel hosts\n")
    (s / "sub" / "keep").write_text("keep\n")
    before = snapshot(s)
    yield s
    assert snapshot(s) == before, "something of the container landed in the sentinel outside its rootfs"


def _no_mounts_under(tmp: Path) -> None:
    leaked = [line for line in host_mountinfo().splitlines() if str(tmp) in line]
    assert leaked == [], f"mounts under the test's tmp in the host's mount table: {leaked}"


def _hostile_run(oci: Oci, prepare: Callable[[Path], None], edit: Callable[[dict[str, Any]], None] | None = None,
                 command: str = "ls / > /dev/null; echo ran", sentinel: Path | None = None) -> str:
    """The bundle's rootfs changed by PREPARE (with the SENTINEL's decoy in it), run detached (checked while it
    runs), deleted; the outcome: "ran" or create's one-line refusal."""
    root = oci.bundle / "rootfs"
    if sentinel is not None:
        decoy(root, sentinel)
    prepare(root)
    oci.config(["sh", "-c", f"{command}; echo end; exec sleep 60"], edit)
    done = oci("run", "-d", "--bundle", str(oci.bundle), "c1", check=False)
    out = oci.last_out
    if done.returncode != 0:
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
        outcome = done.stderr.strip()
    else:
        outcome = "ran"
        wait_for(lambda: out.read_text().endswith("end\n"), "the container's command")
        _no_mounts_under(oci.tmp)
        oci.seen = out.read_text().removesuffix("end\n")
    oci("delete", "--force", "c1")
    _no_mounts_under(oci.tmp)
    return outcome


def _replace(path: Path, target: str) -> None:
    """PATH (in the rootfs) made a symlink to TARGET, whatever it was."""
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def decoy(root: Path, sentinel: Path) -> None:
    """The sentinel's path made inside ROOT too, as the symlinks resolve there: a runtime that resolves them in
    the root (runc's securejoin, our openat2 RESOLVE_IN_ROOT) mounts onto this copy and runs; one that follows
    them as the host would lands in the sentinel."""
    inside = root / str(sentinel).lstrip("/")
    (inside / "sub").mkdir(parents=True)
    (inside / "hosts").write_text("decoy hosts\n")
    (inside / "sub" / "keep").write_text("decoy\n")


def _up(root: Path, sentinel: Path) -> str:
    """A relative symlink target that climbs out of ROOT/x to SENTINEL (more ../ than the depth: / stops them)."""
    return "../" * (len(root.parts) + 3) + str(sentinel).lstrip("/")


def _mounts_on_etc(doc: dict[str, Any], bundle: Path) -> None:
    (bundle / "hosts").write_text("from the bundle\n")
    doc["mounts"] += [{"destination": "/etc/hosts", "type": "bind", "source": str(bundle / "hosts"),
                       "options": ["rbind", "ro"]},
                      {"destination": "/etc/newdir/deeper", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
                      {"destination": "/etc/sub", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}]


def _out(oci: Oci) -> str:
    return oci.seen


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_etc_as_a_symlink_out_of_the_rootfs(oci: Oci, sentinel: Path, how: str) -> None:
    outcome = _hostile_run(oci, lambda root: _replace(root / "etc", str(sentinel) if how == "absolute"
                                                      else _up(root, sentinel)),
                           lambda d: _mounts_on_etc(d, oci.bundle),
                           "cat /etc/hosts; echo sub: $(ls /etc/sub); echo ran", sentinel)
    assert outcome == "ran"
    assert _out(oci) == "from the bundle\nsub:\nran\n"  # the decoy's sub covered by the tmpfs, in the root


def test_etc_as_a_symlink_to_a_path_the_root_lacks(oci: Oci, sentinel: Path) -> None:
    """runc makes the missing target inside the root; runner-oci may refuse instead (in one line), never follow."""
    outcome = _hostile_run(oci, lambda root: _replace(root / "etc", str(sentinel)),
                           lambda d: _mounts_on_etc(d, oci.bundle))
    assert outcome == "ran" or "etc" in outcome


@pytest.mark.parametrize("where", ["dev", "proc", "sys"])
def test_a_standard_mount_point_as_a_symlink_out_of_the_rootfs(oci: Oci, sentinel: Path, where: str) -> None:
    outcome = _hostile_run(oci, lambda root: _replace(root / where, str(sentinel)),
                           command=f"test -e /{where}/sub/keep && echo decoy-seen; echo ran", sentinel=sentinel)
    # runc resolves them in the root and runs; runner-oci does for /proc and refuses /dev and /sys (SafeRoot
    # will not open a symlinked /dev for its nodes, nor /sys for the cgroup mount): safe, in one line naming it
    assert (outcome == "ran" and _out(oci) == "ran\n") or f"'{where}' is a symlink" in outcome, outcome


def test_dev_entries_as_symlinks_out(oci: Oci, sentinel: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["mounts"] = [m for m in d["mounts"] if m["destination"] != "/dev"]  # the rootfs's own /dev is used

    def prepare(root: Path) -> None:
        (root / "dev").mkdir(exist_ok=True)
        _replace(root / "dev" / "pts", _up(root, sentinel))
        _replace(root / "dev" / "shm", str(sentinel / "sub"))
        _replace(root / "dev" / "null", str(sentinel / "hosts"))

    outcome = _hostile_run(oci, prepare, edit, sentinel=sentinel)
    assert outcome == "ran" or outcome.endswith(("shm", "pts", "null")), outcome  # refused naming the entry


def test_device_nodes_under_a_symlinked_directory(oci: Oci, sentinel: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["mounts"] = [m for m in d["mounts"] if not m["destination"].startswith("/dev")]
        d["linux"]["devices"] = [{"path": "/dev/sub/null", "type": "c", "major": 1, "minor": 3},
                                 {"path": "/dev/hosts", "type": "c", "major": 1, "minor": 5}]

    def prepare(root: Path) -> None:
        (root / "dev").mkdir(exist_ok=True)
        _replace(root / "dev" / "sub", str(sentinel / "sub"))
        _replace(root / "dev" / "hosts", str(sentinel / "hosts"))

    assert _hostile_run(oci, prepare, edit, "echo x > /dev/sub/null && echo ran", sentinel) == "ran"
    assert _out(oci) == "ran\n"


def test_a_file_bind_onto_a_symlink_to_a_host_file(oci: Oci, sentinel: Path) -> None:
    (oci.bundle / "hostname").write_text("container\n")

    def edit(d: dict[str, Any]) -> None:
        d["mounts"].append({"destination": "/etc/hostname", "type": "bind", "source": str(oci.bundle / "hostname"),
                            "options": ["rbind", "rw"]})

    outcome = _hostile_run(oci, lambda root: _replace(root / "etc" / "hostname", str(sentinel / "hosts")), edit,
                           "echo written > /etc/hostname; cat /etc/hostname", sentinel)
    assert outcome == "ran" and _out(oci) == "written\n"
    assert (oci.bundle / "hostname").read_text() == "written\n"  # the bind went where it was meant to


def test_a_bind_destination_whose_parent_is_a_symlink_chain(oci: Oci, sentinel: Path) -> None:
    def prepare(root: Path) -> None:
        (root / "a").symlink_to("b/c")
        (root / "b").mkdir()
        (root / "b" / "c").symlink_to(_up(root, sentinel))

    def edit(d: dict[str, Any]) -> None:
        d["mounts"].append({"destination": "/a/sub/keep", "type": "bind", "source": str(oci.bundle / "hostname"),
                            "options": ["rbind", "ro"]})
        d["mounts"].append({"destination": "/a/new", "type": "tmpfs", "source": "tmpfs"})

    (oci.bundle / "hostname").write_text("bound\n")
    assert _hostile_run(oci, prepare, edit, "cat /a/sub/keep", sentinel) == "ran"
    assert _out(oci) == "bound\n"


def test_a_masked_path_symlinked_out(oci: Oci, sentinel: Path) -> None:
    def prepare(root: Path) -> None:
        (root / "data").mkdir(exist_ok=True)
        _replace(root / "data" / "secret", str(sentinel / "hosts"))
        _replace(root / "data" / "dir", str(sentinel / "sub"))

    def edit(d: dict[str, Any]) -> None:
        d["linux"]["maskedPaths"] += ["/data/secret", "/data/dir"]
        d["linux"]["readonlyPaths"] += ["/data/dir"]

    assert _hostile_run(oci, prepare, edit, sentinel=sentinel) == "ran"


@pytest.mark.parametrize("how", ["symlink", "path-with-symlink", "missing"])
def test_a_root_path_that_is_a_symlink_or_missing_is_refused(oci: Oci, sentinel: Path, how: str) -> None:
    """runc's rule ("invalid rootfs: not an absolute path, or a symlink"): a bundle's root.path is the directory
    itself, never a link that could name the host's / or another tree."""
    import shutil

    elsewhere = oci.tmp / "elsewhere"
    shutil.move(oci.bundle / "rootfs", elsewhere)
    if how == "symlink":
        (oci.bundle / "rootfs").symlink_to(elsewhere)
    elif how == "path-with-symlink":
        (oci.bundle / "link").symlink_to(oci.tmp)
        oci.doc["root"]["path"] = str(oci.bundle / "link" / "elsewhere")
    oci.config(["sh", "-c", "touch /escaped"])
    done = oci("run", "--bundle", str(oci.bundle), "c1", check=False)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1 and "root.path" in done.stderr
    assert not (elsewhere / "escaped").exists() and not (oci.tmp / "state" / "c1").exists()
