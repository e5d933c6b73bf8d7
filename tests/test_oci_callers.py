"""The real callers of an OCI runtime drive one (issue 23): Docker 20.10, containerd 1.6's ctr and podman 4.3, each
on private dirs with the runtime under test registered (tests/ocicallers.py). Today the runtime is runc, the
stand-in; ``RUNTIMES`` gets runner-oci once it exists, and every test here runs under each entry.

What each caller asks of the runtime (verbs, flags, fds, config.json fields) is written down in the recon,
/work/wt/oci-callers-recon.md; these tests check the user-visible outcome: exit codes, output, a typed-into
terminal, detached containers that exec, log, stop and go, and that nothing of the callers' outlives them."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.ocicallers import (
    Containerd,
    Docker,
    Podman,
    bench_docker,
    containerd_with,
    docker_archive,
    docker_with_runtime,
    podman_with,
)
from tests.terminal import Terminal
from tests.tools import RUNNER_OCI

pytestmark = [needs_root, needs_tools]

# name (as registered with Docker; "runc" is reserved there) -> path: runc, the reference, and runner-oci
RUNTIMES = {"oci-runc": "/usr/sbin/runc", "strata": RUNNER_OCI}


@pytest.fixture(scope="session")
def caller_archive(tmp_path_factory: pytest.TempPathFactory, test_layout: Path) -> Path:
    """The test image as a docker-archive named strata/test:1 (what all three callers load)."""
    return docker_archive(test_layout, tmp_path_factory.mktemp("callers") / "test.tar")


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def runtime(request: pytest.FixtureRequest) -> str:
    """The name of the runtime under test (RUNTIMES' key)."""
    return str(request.param)


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory, runtime: str, caller_archive: Path) -> Iterator[Docker]:
    """One dockerd for the module's Docker tests under RUNTIME, with the test image loaded."""
    with docker_with_runtime({runtime: RUNTIMES[runtime]}) as d:
        assert d.load(caller_archive) == "strata/test:1"
        yield d


def _remove_docker(docker: Docker, name: str) -> None:
    docker.cli("rm", "--force", name)


def test_docker_run_gives_the_exit_code_and_output(docker: Docker, runtime: str) -> None:
    result = docker.run("strata/test:1", "/bin/sh", "-c", "echo out; echo err >&2; exit 3", runtime=runtime)
    assert (result.code, result.out, result.err) == (3, "out\n", "err\n")


def test_docker_run_stdin(docker: Docker, runtime: str) -> None:
    result = docker.run("strata/test:1", "/bin/sh", "-c", "tr a-z A-Z; exit 0", runtime=runtime, options=["-i"],
                        input="typed\n")
    assert (result.code, result.out) == (0, "TYPED\n")


def test_docker_run_it_is_a_terminal_typed_into(docker: Docker, runtime: str) -> None:
    term = Terminal(docker.argv("run", "-it", "--rm", "--network", "none", "--runtime", runtime, "strata/test:1",
                                "/bin/sh"), env=docker.env)
    try:
        term.read_until(b"# ")
        term.type("tty; echo sum-$((6*7)); exit 5\n")
        seen = term.read_until(b"sum-42")
    finally:
        code = term.close()
    assert code == 5
    assert b"/dev/pts/0" in seen


def test_docker_detached_exec_logs_stop_rm(docker: Docker, runtime: str) -> None:
    name = f"c-{os.urandom(3).hex()}"
    script = "echo started; trap 'echo stopping; exit 0' TERM; while :; do sleep 0.1; done"
    try:
        started = docker.cli("run", "-d", "--runtime", runtime, "--network", "none", "--name", name, "strata/test:1",
                             "/bin/sh", "-c", script)
        assert started.code == 0, started.err
        ran = docker.cli("exec", name, "/bin/sh", "-c", "echo in-exec; cat /proc/1/cmdline | tr '\\0' ' '; exit 4")
        assert (ran.code, ran.out) == (4, f"in-exec\n/bin/sh -c {script} ")
        assert _until(lambda: docker.cli("logs", name).out == "started\n"), docker.cli("logs", name)
        stopped = docker.cli("stop", "--time", "10", name)
        assert stopped.code == 0, stopped.err
        assert docker.cli("inspect", "--format", "{{.State.ExitCode}}", name).out == "0\n"
        assert docker.cli("logs", name).out == "started\nstopping\n"
        assert docker.cli("rm", name).code == 0
        assert name not in docker.cli("ps", "--all", "--format", "{{.Names}}").out.split()
    finally:
        _remove_docker(docker, name)


def test_docker_exec_it(docker: Docker, runtime: str) -> None:
    name = f"c-{os.urandom(3).hex()}"
    try:
        assert docker.cli("run", "-d", "--runtime", runtime, "--network", "none", "--name", name, "strata/test:1",
                          "/bin/sleep", "600").code == 0
        term = Terminal(docker.argv("exec", "-it", name, "/bin/sh"), env=docker.env)
        try:
            term.read_until(b"# ")
            term.type("tty; echo sum-$((6*7)); exit 6\n")
            seen = term.read_until(b"sum-42")
        finally:
            code = term.close()
        assert code == 6
        assert b"/dev/pts/" in seen
    finally:
        _remove_docker(docker, name)


def test_docker_run_of_a_missing_command_says_why(docker: Docker, runtime: str) -> None:
    """dockerd reads the runtime's --log JSON for the message and maps "no such file or directory" in it to 127."""
    result = docker.run("strata/test:1", "/nonexistent", runtime=runtime)
    assert result.code == 127, result
    assert "OCI runtime create failed" in result.err and "/nonexistent" in result.err, result.err
    assert "no such file or directory" in result.err, result.err


def test_docker_top_pause_unpause_update(docker: Docker, runtime: str) -> None:
    name = f"c-{os.urandom(3).hex()}"
    try:
        assert docker.cli("run", "-d", "--runtime", runtime, "--network", "none", "--name", name, "strata/test:1",
                          "/bin/sleep", "600").code == 0
        top = docker.cli("top", name)
        assert top.code == 0 and "/bin/sleep 600" in top.out, top
        assert docker.cli("pause", name).code == 0
        assert docker.cli("inspect", "--format", "{{.State.Status}}", name).out == "paused\n"
        assert docker.cli("unpause", name).code == 0
        assert docker.cli("exec", name, "/bin/true").code == 0
        updated = docker.cli("update", "--memory", "64m", "--memory-swap", "128m", name)
        assert updated.code == 0, updated.err
        assert docker.cli("inspect", "--format", "{{.HostConfig.Memory}}", name).out == f"{64 << 20}\n"
    finally:
        _remove_docker(docker, name)


def _until(check: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# -- containerd ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory, caller_archive: Path) -> Iterator[tuple[Containerd, str]]:
    """One containerd for the module's ctr tests, with the test image imported: (client, image name)."""
    with containerd_with(tmp_path_factory.mktemp("containerd") / "c") as c:
        yield c, c.load(caller_archive)


def test_ctr_run_gives_the_exit_code_and_output(containerd: tuple[Containerd, str], runtime: str) -> None:
    client, image = containerd
    cid = f"c-{os.urandom(3).hex()}"
    try:
        result = client.run(image, cid, "/bin/sh", "-c", "echo out; exit 3", runtime=RUNTIMES[runtime])
        assert (result.code, result.out) == (3, "out\n"), result.err
    finally:
        client.remove(cid)
    assert cid not in client.ctr("containers", "ls", "-q").out.split()


def test_ctr_detached_task_execs_and_is_killed(containerd: tuple[Containerd, str], runtime: str) -> None:
    client, image = containerd
    cid = f"c-{os.urandom(3).hex()}"
    try:
        script = "trap 'exit 0' TERM; while :; do sleep 0.1; done"  # PID 1 ignores a SIGTERM it has no handler for
        started = client.run(image, cid, "/bin/sh", "-c", script, runtime=RUNTIMES[runtime], detach=True)
        assert started.code == 0, started.err
        ran = client.exec(cid, "e1", "/bin/sh", "-c", "echo in-exec; cat /proc/1/cmdline | tr '\\0' ' '; exit 4")
        assert (ran.code, ran.out) == (4, f"in-exec\n/bin/sh -c {script} "), ran.err
        assert "RUNNING" in client.ctr("task", "ls").out
        assert client.ctr("task", "kill", "-s", "SIGTERM", cid).code == 0
        assert _until(lambda: "STOPPED" in client.ctr("task", "ls").out), client.ctr("task", "ls")
        assert client.ctr("task", "rm", cid).code == 0
    finally:
        client.remove(cid)


def test_ctr_task_outlives_a_containerd_restart(containerd: tuple[Containerd, str], runtime: str) -> None:
    """containerd stopped and started again while a task runs (its shim keeps it): the runtime's state under the
    shim's --root is read afresh, so exec, kill and delete of the task still work, with the same init."""
    client, image = containerd
    cid = f"c-{os.urandom(3).hex()}"
    try:
        started = client.run(image, cid, "/bin/sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done",
                             runtime=RUNTIMES[runtime], detach=True)
        assert started.code == 0, started.err
        pid1 = "cut -d' ' -f22 /proc/1/stat"  # PID 1's start time: the same init before and after
        before = client.exec(cid, "e1", "/bin/sh", "-c", pid1)
        assert before.code == 0 and before.out.strip().isdigit(), before
        client.restart()
        after = client.exec(cid, "e2", "/bin/sh", "-c", pid1)
        assert (after.code, after.out) == (0, before.out), after.err
        assert client.ctr("task", "kill", "-s", "SIGTERM", cid).code == 0
        assert _until(lambda: "STOPPED" in client.ctr("task", "ls").out), client.ctr("task", "ls")
        assert client.ctr("task", "rm", cid).code == 0
    finally:
        client.remove(cid)


# -- podman ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, runtime: str,
           caller_archive: Path) -> Iterator[tuple[Podman, str]]:
    """One podman store for the module's podman tests under RUNTIME, with the test image loaded."""
    with podman_with(tmp_path_factory.mktemp("podman") / "p", RUNTIMES[runtime]) as p:
        yield p, p.load(caller_archive)


def test_podman_run_gives_the_exit_code_and_output(podman: tuple[Podman, str]) -> None:
    client, image = podman
    result = client.run(image, "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.code, result.out, result.err) == (3, "out\n", "err\n")


def test_podman_run_of_a_missing_command_says_why(podman: tuple[Podman, str]) -> None:
    """podman reads the runtime's stderr (no --log here) and maps "no such file or directory" in it to 127."""
    client, image = podman
    result = client.run(image, "/nonexistent")
    assert result.code == 127, result
    assert "/nonexistent" in result.err and "no such file or directory" in result.err, result.err


def test_podman_detached_exec_logs_stop_rm(podman: tuple[Podman, str]) -> None:
    client, image = podman
    name = f"c-{os.urandom(3).hex()}"
    script = "echo started; trap 'echo stopping; exit 0' TERM; while :; do sleep 0.1; done"
    try:
        started = client.cli("run", "--pull=never", "-d", "--network", "none", "--cgroup-parent", client.cgroup,
                             "--name", name, image, "/bin/sh", "-c", script)
        assert started.code == 0, started.err
        ran = client.cli("exec", name, "/bin/sh", "-c", "echo in-exec; exit 4")
        assert (ran.code, ran.out) == (4, "in-exec\n"), ran.err
        assert _until(lambda: client.cli("logs", name).out == "started\n"), client.cli("logs", name)
        assert client.cli("stop", "--time", "10", name).code == 0
        assert client.cli("logs", name).out == "started\nstopping\n"
        assert client.cli("rm", name).code == 0
    finally:
        client.cli("rm", "--force", "--time", "0", name)


# -- the harness itself ----------------------------------------------------------------------------------------


def _ours_left(tmp: Path, cgroup: str) -> list[str]:
    """What of a caller's is still here: processes naming TMP, its cgroup, TMP itself."""
    left = [f"process {p.name}" for p in Path("/proc").iterdir()
            if p.name.isdigit() and _names(p, tmp)]
    left += [f"cgroup {d}" for d in bench_docker().cgroup_dirs(cgroup)]
    return left + ([f"dir {tmp}"] if tmp.exists() else [])


def _names(proc: Path, tmp: Path) -> bool:
    try:
        return os.fsencode(tmp) in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class _Failed(Exception):
    """What the cleanup test raises inside a caller's context, as a failing test would."""


def test_each_caller_is_gone_after_a_failure_with_a_container_running(tmp_path: Path, caller_archive: Path) -> None:
    """A failing test leaves its containers running and raises: leaving the context must still end everything,
    the containers' own processes (which name no dir of ours) included."""
    made, pids = [], []
    with pytest.raises(_Failed), docker_with_runtime({"oci-runc": RUNTIMES["oci-runc"]}) as d:
        d.load(caller_archive)
        assert d.cli("run", "-d", "--runtime", "oci-runc", "--network", "none", "--name", "left", "strata/test:1",
                     "sleep", "600").code == 0
        pids.append(int(d.cli("inspect", "--format", "{{.State.Pid}}", "left").out))
        docker_cgroup, made = d.peer.cgroup, [*made, d.peer.netns]
        raise _Failed
    assert _ours_left(tmp_path / "d", docker_cgroup) == []
    with pytest.raises(_Failed), containerd_with(tmp_path / "c") as c:
        image = c.load(caller_archive)
        assert c.run(image, "left", "sleep", "600", runtime=RUNTIMES["oci-runc"], detach=True).code == 0
        pids.append(int(c.ctr("task", "ls").out.split()[-2]))
        ctr_cgroup, made = c.cgroup, [*made, c.private.netns]
        assert bench_docker().cgroup_dirs(ctr_cgroup) != []
        raise _Failed
    assert _ours_left(tmp_path / "c", ctr_cgroup) == []
    with pytest.raises(_Failed), podman_with(tmp_path / "p", RUNTIMES["oci-runc"]) as p:
        image = p.load(caller_archive)
        assert p.cli("run", "--pull=never", "-d", "--network", "none", "--cgroup-parent", p.cgroup, "--name", "left",
                     image, "sleep", "600").code == 0
        pids.append(int(p.cli("inspect", "--format", "{{.State.Pid}}", "left").out))
        podman_cgroup, made = p.cgroup, [*made, p.private.netns]
        raise _Failed
    assert _ours_left(tmp_path / "p", podman_cgroup) == []
    assert _netns() & set(made) == set()
    assert len(pids) == 3 and all(pid > 0 for pid in pids)
    assert _until(lambda: not any(_running(pid) for pid in pids)), [pid for pid in pids if _running(pid)]


def _running(pid: int) -> bool:
    """PID is alive (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
