"""runner-oci driven as its callers drive it, for tests/test_oci_runtime.py and tests/test_oci_hostile.py: a bundle
made from the test image's rootfs (umoci unpack of the session's layout) and ``runner-oci spec``, a fresh ``--root``
per test, and a cleanup that deletes every container the test made, reaps what was ours to reap and removes the
cgroups runner-oci made (their parent too), also when the test fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runner import linux
from tests.cgroups import processes_mentioning
from tests.tools import RUNNER_OCI

CGROUP_PARENT = "ocitest-strata"  # not strata-*: no_leaks on another worker would count it as its own


def unpack_rootfs(layout: Path, dest: Path) -> Path:
    """The test image (busybox) unpacked once: DEST/rootfs, to be copied into each bundle."""
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:test", str(dest)], check=True, capture_output=True)
    return dest / "rootfs"


class Oci:
    """One test's runner-oci: its ``--root``, one bundle (``config`` edits it) and the ids it created."""

    def __init__(self, tmp: Path, rootfs: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "state"
        self.bundle = tmp / "bundle"
        self.bundle.mkdir()
        shutil.copytree(rootfs, self.bundle / "rootfs", symlinks=True)
        self.ids: list[str] = []
        self.calls = 0
        self.seen = ""  # what a test keeps of a container's output
        self.last_out = tmp / "out.0"  # the stdout of the last call (a detached container's, after it returned)
        subprocess.run([RUNNER_OCI, "spec", "--bundle", str(self.bundle)], check=True)
        self.doc: dict[str, Any] = json.loads((self.bundle / "config.json").read_text())
        self.doc["process"]["terminal"] = False
        self.doc["root"]["readonly"] = False
        self.doc["process"]["rlimits"] = []
        self.write()

    def config(self, args: Sequence[str], edit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """config.json with ARGS as the command, then EDIT applied to the document."""
        self.doc["process"]["args"] = list(args)
        if edit is not None:
            edit(self.doc)
        self.write()
        return self.doc

    def write(self) -> None:
        (self.bundle / "config.json").write_text(json.dumps(self.doc))

    def cgroup_path(self, container_id: str) -> str:
        return f"/{CGROUP_PARENT}/{self.tmp.name}/{container_id}"

    def argv(self, *args: str) -> list[str]:
        return [RUNNER_OCI, "--root", str(self.root), *args]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 30, check: bool = True,
                 **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if args and args[0] in ("create", "run") and args[-1] not in self.ids:
            self.ids.append(args[-1])
            self.doc["linux"]["cgroupsPath"] = self.cgroup_path(args[-1])
            self.write()
        # files, not pipes: a created container's process holds the stdio it was given (the caller's, as with
        # runc), so a pipe would not reach EOF until it exits
        self.calls += 1
        self.last_out = self.tmp / f"out.{self.calls}"
        with open(self.last_out, "w+") as out, open(self.tmp / f"err.{self.calls}", "w+") as err:
            done = subprocess.run(self.argv(*args), input=input, stdout=out, stderr=err, text=True, timeout=timeout,
                                  check=False, **kwargs)
            out.seek(0)
            err.seek(0)
            done.stdout, done.stderr = out.read(), err.read()
        if check and done.returncode != 0:
            raise AssertionError(f"runner-oci {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def state(self, container_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self("state", container_id).stdout)
        return doc

    def status(self, container_id: str) -> str:
        return str(self.state(container_id)["status"])

    def cgroup_dirs(self, container_id: str) -> list[Path]:
        """Every directory of the container's group (v1: one per hierarchy it lives in)."""
        rel = self.cgroup_path(container_id).lstrip("/")
        return [d / rel for d in Path("/sys/fs/cgroup").iterdir() if (d / rel).is_dir()]

    def cleanup(self) -> list[str]:
        """Delete every container (by runner-oci, then whatever is left by pid), reap our children, remove the
        groups; what had to be cleaned by force is returned (a test may assert it is nothing)."""
        leftovers = []
        for cid in self.ids:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self("delete", "--force", cid, check=False, timeout=30)
        for line in processes_mentioning(self.bundle):
            leftovers.append(line)
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
        reap()
        base = f"{CGROUP_PARENT}/{self.tmp.name}"
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            group = hierarchy / base
            if not group.is_dir():
                continue
            for d in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
                if d.is_dir():
                    leftovers.append(str(d))
                    _rmdir(d)
            _rmdir(group)
            with contextlib.suppress(OSError):
                (hierarchy / CGROUP_PARENT).rmdir()
        return leftovers


def _rmdir(d: Path) -> None:
    for _ in range(100):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def reap() -> None:
    """Our exited children (the containers' inits we adopted as subreaper), without waiting for live ones."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


@contextlib.contextmanager
def subreaper() -> Iterator[None]:
    """This process adopts orphans (a created container's init, as a shim or conmon would) while inside."""
    linux.set_child_subreaper()
    try:
        yield
    finally:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 0, what="PR_SET_CHILD_SUBREAPER")
        reap()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_child(pid: int, timeout: float = 10.0) -> int:
    """The exit status (as a shell's $?) of PID, a child of ours (adopted as subreaper)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not exit")
        time.sleep(0.02)


def host_mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()
