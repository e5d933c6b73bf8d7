"""The commit packer against a tree that changes under it (issue 18, item 4): ``commit --pause=false`` packs a
running container's rw layer, whose names the container may swap between the packer's lstat and its open. The
packer must never open anything but the regular file it lstat'ed: not a device node (the store's upper dir is not
``nodev``, so the host's device would be read into the image), not a fifo (the commit would hang), not another
file; such a change fails the commit with one line and stores nothing.

Two levels: the packer itself, with the swap made exactly between its lstat and its open (certain, fast), and a
real container that swaps a host loop device's node and a fifo over its files in a tight loop while the host
commits it live, judged on the host (no committed layer holds the loop device's sentinel, no commit hangs)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from shared.errors import Kind, StrataError
from shared.layer.pack import pack
from tests.marks import needs_root, needs_tools
from tests.test_isolation import with_probe
from tests.tools import ROOT, Tools, detached, runner_command, wait_until

pytestmark = [needs_root]

SENTINEL = b"STRATA-HOST-DEVICE-SENTINEL-18-4"
SIZE = 4096


class Hang(Exception):
    pass


def _alarm(_sig: int, _frame: FrameType | None) -> None:
    raise Hang("the packer blocked")


def pack_with_swap(tmp_path: Path, swap: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pack a tree holding the regular file ``victim``, calling ``swap(victim)`` right after the packer's lstat of
    it (the moment a live container could act). An alarm turns a blocked open into an error (a hang detector)."""
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "victim"
    victim.write_bytes(b"v" * SIZE)
    real_stat = os.stat
    swapped: list[bool] = []

    def stat_then_swap(path: object, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(path, *args, **kwargs)  # type: ignore[arg-type]
        if path == "victim" and kwargs.get("dir_fd") is not None and not swapped:
            swapped.append(True)
            swap(victim)
        return st

    monkeypatch.setattr(os, "stat", stat_then_swap)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        pack(src, tmp_path / "blob", "none")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        monkeypatch.undo()
    assert swapped, "the packer never lstat'ed the victim"


def _replace_with(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def swap(victim: Path) -> None:
        tmp = victim.with_name("new")
        make(tmp)
        os.rename(tmp, victim)
    return swap


SWAPS: dict[str, Callable[[Path], None]] = {
    "char device": _replace_with(lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 5))),  # /dev/zero's
    "fifo": _replace_with(lambda p: os.mkfifo(p)),
    "symlink": _replace_with(lambda p: p.symlink_to("/etc/hostname")),
    "other file": _replace_with(lambda p: p.write_bytes(b"o" * SIZE)),
    "grown file": lambda p: p.write_bytes(b"g" * (SIZE * 2)),
    "shrunk file": lambda p: p.write_bytes(b"s" * (SIZE // 2)),
}


@pytest.mark.parametrize("what", list(SWAPS))
def test_packer_refuses_an_entry_changed_between_lstat_and_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                what: str) -> None:
    with pytest.raises(StrataError) as caught:
        pack_with_swap(tmp_path, SWAPS[what], monkeypatch)
    assert caught.value.kind == Kind.STATE, caught.value
    assert "victim changed while it was packed" in str(caught.value) and "\n" not in str(caught.value)


def test_packer_skips_an_entry_removed_between_lstat_and_open(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Gone is not changed: a name removed meanwhile is left out, as Docker's tar leaves out what vanished."""
    pack_with_swap(tmp_path, lambda victim: victim.unlink(), monkeypatch)
    assert b"victim" not in (tmp_path / "blob").read_bytes()


# -- a real container swapping the host's device node and a fifo in ----------------------------------------------


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A loop device over a temporary file full of the sentinel: (major, minor); detached afterwards."""
    backing = tmp_path / "sentinel.img"
    backing.write_bytes(SENTINEL * ((1 << 20) // len(SENTINEL)))
    made = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    dev = made.stdout.strip()
    try:
        rdev = os.stat(dev).st_rdev
        yield os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def commit_live(tools: Tools, ref: str) -> subprocess.CompletedProcess[str]:
    """``runner commit --pause=false``; the timeout only detects a hang (a commit blocked on a fifo)."""
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    try:
        return subprocess.run(runner_command(tools, "commit", "--pause=false", "racer", ref), capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"commit {ref} hung: the packer opened a fifo the container swapped in")


def layer_bytes(tools: Tools, ref: str) -> bytes:
    shown = tools.puller("inspect", ref)
    assert shown.code == 0, shown.err
    digest = json.loads(shown.out)[0]["Layers"][-1]["Digest"].removeprefix("sha256:")
    return gzip.decompress((tools.root / "blobs" / "sha256" / digest).read_bytes())


@needs_tools
def test_live_commit_never_reads_a_swapped_in_device_or_fifo(tools: Tools, test_image: str, probe: Path,
                                                            loop_device: tuple[int, int]) -> None:
    """The container renames a node of the host's loop device (over the sentinel) and a fifo over its regular
    files in a tight loop; each live commit either stores a layer without the sentinel or fails in one line,
    storing nothing. Our executor: runc and crun refuse the mknod with the devices cgroup, the packer is the
    same whichever executor ran the container."""
    assert tools.puller("pull", "--quiet", test_image).code == 0
    major, minor = loop_device
    blobs = tools.root / "blobs" / "sha256"
    with detached(tools, "--name", "racer", *with_probe(probe), test_image, "/probe", "swap", str(major),
                  str(minor)):
        wait_until(lambda: tools.runner("logs", "racer").out != "", "the swapping")
        assert tools.runner("logs", "racer").out == "swapping\n"
        before = len(list(blobs.iterdir()))
        stored, refused = 0, 0
        for i in range(8):
            done = commit_live(tools, f"localhost/race:{i}")
            if done.returncode == 0:
                stored += 1
                assert SENTINEL not in layer_bytes(tools, f"localhost/race:{i}"), "the host's device was read"
                continue
            assert done.returncode == 125 and done.stderr.count("\n") == 1, done.stderr
            assert "changed while it was packed" in done.stderr, done.stderr
            assert tools.puller("inspect", f"localhost/race:{i}").code != 0, "a failed commit stored its reference"
            refused += 1
        running = tools.runner("inspect", "-f", "{{.State.Status}}", "racer").out.strip()
        assert running == "running", tools.runner("logs", "racer").out  # the probe never gave up
    assert refused > 0, "the packer never met a swap: the attack did not happen"
    assert len(list(blobs.iterdir())) <= before + 3 * stored, "a failed commit left blobs"
