"""OCI runtimes as executors (``--runtime``, the settings file's ``runtime``) and ``runner bundle``.

The behaviour battery (test_runner, test_lifecycle) runs under each executor through the ``executor`` fixture;
here: a bundle run by runc and by crun as they are, that nothing is left after ``rm`` whichever executor ran the
container (mounts, cgroups, the runtime's state, processes), and how the runtime is chosen and recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cgroups import processes_mentioning, strata_cgroups
from tests.marks import needs_root, needs_tools
from tests.tools import EXECUTORS, Tools, mounts_under, one_line_error, runtime_option, runtime_state_dirs, wait_until

pytestmark = [needs_root, needs_tools]

HIDE_CGROUP2 = 'mount -t tmpfs -o size=4k strata-test /sys/fs/cgroup/unified && exec "$@"'


@pytest.fixture
def img(tools: Tools, test_image: str) -> str:
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    return test_image


def runtime_argv(tool: str, state: Path, *args: str) -> list[str]:
    """TOOL --root STATE ARGS, crun in a private mount namespace with cgroup v2 hidden (this host's hybrid)."""
    argv = [tool, "--root", str(state), *args]
    if tool == "crun" and Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_CGROUP2, "sh", *argv]
    return argv


@pytest.mark.parametrize("tool", ["runc", "crun"])
def test_bundle_runs_under_runc_and_crun_as_it_is(tools: Tools, img: str, tmp_path: Path, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    bundle = tmp_path / "bundle"
    made = tools.runner("bundle", "--hostname", "bundled", "-e", "GREETING=hello", "-u", "nobody", img,
                        str(bundle), "sh", "-c", 'echo "$GREETING $(hostname) $(id -u) $HOME"; cat /etc/hostname; '
                                              "exit 7")
    assert made.code == 0, made.err
    assert made.out.strip() == str(bundle)
    assert (bundle / "config.json").is_file() and (bundle / "rootfs" / "bin").exists()
    assert not (tools.root / "containers").exists() or not any((tools.root / "containers").iterdir())
    assert mounts_under(tools.root) == []
    state = tmp_path / "state"
    cid = f"strata-bundle-{os.getpid()}"
    try:
        done = subprocess.run(runtime_argv(tool, state, "run", "--bundle", str(bundle), cid), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    finally:
        subprocess.run(runtime_argv(tool, state, "delete", "--force", cid), capture_output=True, check=False)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "hello bundled 65534 /nonexistent\nbundled\n", done.stderr


def test_bundle_refuses_a_directory_with_files(tools: Tools, img: str, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    one_line_error(tools.runner("bundle", img, str(tmp_path / "full")), 125, "is not an empty directory")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_after_rm_nothing_is_left(tools: Tools, img: str, executor: str) -> None:
    """A detached container removed while it runs, and a stopped one: no mount, cgroup, runtime state or
    process of theirs stays, under every executor."""
    if executor != "strata" and shutil.which(runtime_option(executor)) is None:
        pytest.skip(f"{executor} is not installed")
    before = strata_cgroups()
    ids = []
    for name in ("running", "stopped"):
        result = tools.runner("run", "-d", "--runtime", runtime_option(executor), "--name", name, "-m", "64m", img,
                              "sleep", "600")
        assert result.code == 0, result.err
        ids.append(result.out.strip())
    assert mounts_under(tools.root) != [] or executor == "strata"  # a runtime's root is mounted by the parent
    assert tools.runner("stop", "-t", "1", "stopped").code == 0
    assert tools.runner("rm", "-f", "running", "stopped").code == 0
    assert mounts_under(tools.root) == []
    assert runtime_state_dirs(tools.root) == []
    assert not any((tools.root / "containers").iterdir())
    # this test's containers' groups (named after them): other tests' may come and go meanwhile (pytest -n)
    wait_until(lambda: {g for g in strata_cgroups() - before if g.name.removeprefix("strata-") in ids} == set()
               and processes_mentioning(tools.root) == [], "cgroups and processes gone", timeout=10)
    for cid in ids:
        assert not list(Path("/sys/fs/cgroup").glob(f"*/strata-{cid}")), "a runtime's group at a hierarchy's root"


def test_the_runtime_is_recorded_and_the_option_beats_the_settings(tools: Tools, img: str) -> None:
    tools.configure(runtime="runc")
    made = tools.runner("create", "--name", "by-settings", img, "true")
    assert made.code == 0, made.err
    spec = json.loads(tools.runner("inspect", "by-settings").out)[0]["Spec"]
    assert spec["annotations"]["io.strata.runtime"] == shutil.which("runc")
    made = tools.runner("create", "--runtime", "strata", "--name", "ours", img, "true")
    assert made.code == 0, made.err
    spec = json.loads(tools.runner("inspect", "ours").out)[0]["Spec"]
    assert "io.strata.runtime" not in spec["annotations"]
    started = tools.runner("start", "-a", "by-settings")
    assert started.code == 0, started.err
    assert tools.runner("rm", "by-settings", "ours").code == 0
    assert runtime_state_dirs(tools.root) == [] and mounts_under(tools.root) == []


def test_an_unknown_runtime_is_refused_before_anything_is_made(tools: Tools, img: str) -> None:
    one_line_error(tools.runner("run", "--runtime", "no-such-runtime", img, "true"), 125,
                   "OCI runtime 'no-such-runtime' not found")
    assert not (tools.root / "containers").exists() or not any((tools.root / "containers").iterdir())
