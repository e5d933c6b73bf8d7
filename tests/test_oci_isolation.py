"""The runner's isolation tests again, under real Docker 20.10 with runner-oci registered as its runtime (issue 23:
"every isolation test that runs under ``runner run`` also runs under Docker-with-our-runtime"), and runc beside it
as the reference. One dockerd for the module (tests/ocicallers.py, private dirs, its own network and mount
namespaces) with both runtimes registered; every test runs once per runtime (``--runtime NAME``), the same probe
(tests/probe.c, bound read-only at /probe) and the same assertion for both. Where runc on this machine fails an
assertion the test says so and keeps it for runner-oci.

The dockerd is started in a session keyring of the test's own holding a sentinel key, and with a secret in its
environment: both reach containerd, its shim and the runtime, as the user's session and environment reach the
runner, so the keyring and exec attacks aim at what the runtime really holds. Host nodes, sentinels and mounts of
the tests are made in the dockerd's own mount namespace and undone after each test; containers are removed after
each test (``docker rm -f``), the dockerd and everything of it when the module ends, also on failure.

Runner test -> Docker counterpart here (N/A: why none applies)

test_isolation.py
  run_without_tty_cannot_reach_the_users_terminal   -> test_run_without_tty_cannot_reach_the_users_terminal
  run_interactive_without_tty_gets_a_pipe...         -> test_run_interactive_without_tty_gets_a_pipe
  exec_without_tty_cannot_reach_the_users_terminal  -> test_exec_without_tty_cannot_reach_the_users_terminal
  tty_container_has_its_own_terminal                -> test_tty_container_has_its_own_terminal
  default_seccomp_refuses_keyctl                    -> test_default_seccomp_refuses_keyctl
  container_session_keyring_is_its_own              -> test_container_session_keyring_is_its_own
  exec_session_keyring_is_its_own                   -> test_exec_session_keyring_is_its_own
  new_user_namespaces_are_refused                   -> test_new_user_namespaces_are_refused
  seccomp_shows_in_proc_status                      -> test_seccomp_shows_in_proc_status
  exec_child_exposes_no_host_binary_or_environment  -> test_exec_child_exposes_no_host_binary_or_environment
  exec_is_killed_with_its_runner                    N/A: Docker's exec outlives a killed ``docker exec`` CLI by
                                                    design (the runtime is called with --detach; the shim owns it)
  device_nodes_and_masks_are_the_containers_own     -> test_device_nodes_and_masks_are_the_containers_own
  read_only_volume_inodes_cannot_change             -> test_read_only_volume_inodes_cannot_change
  mknod_node_stays_unusable                         -> test_mknod_node_stays_unusable
  cgroup_limits_are_visible_read_only               -> test_cgroup_limits_are_visible_read_only
test_hostile_rootfs.py
  reader/resolve unit tests (10)                    N/A: the runner's /etc/passwd reader, no container
  run_image_with_fifo_passwd, exec_after_passwd_... N/A: Docker resolves ``-u`` itself (dockerd opens the
                                                    container's /etc/passwd and /etc/group at every run and exec,
                                                    numeric users too); the runtime gets numbers only
test_devices_and_volumes.py
  block_node_on_a_dev_tmpfs_cannot_be_opened        -> test_block_node_on_a_dev_tmpfs_cannot_be_opened
  privileged_keeps_every_device                     -> test_privileged_keeps_every_device
  dev_tmpfs_is_refused_where_no_devices_cgroup...   N/A: dockerd needs the cgroup file systems to run at all
  read_only_volume_is_read_only_and_nodev_in_...    -> test_read_only_volume_is_read_only_and_nodev_in_submounts
  cgroup_v2_device_program_refuses_...              N/A: the runner's cgroup backend alone, no container
  volume_target_swapped_during_start_never_...      -> test_volume_target_swapped_during_start_never_lands_rw
test_seccomp.py (the attack checks; the profile compiler, cache and option parsing are unit logic: N/A)
  default_profile_refuses_what_docker_refuses       -> test_default_profile_refuses_what_docker_refuses
  without_a_filter_the_same_calls_reach_the_kernel  -> test_unconfined_calls_reach_the_kernel
  x86_compat_syscalls_meet_the_same_policy          -> (in test_default_profile_refuses_what_docker_refuses)
  sys_admin_allows_namespaces_and_clone3            -> test_cap_add_sys_admin_allows_namespaces_and_clone3
  dropping_a_default_capability_drops_its_syscalls  -> test_cap_drop_drops_its_syscalls
  custom_profile_file_is_enforced                   -> test_custom_profile_file_is_enforced
  in_a_users_namespace_the_profile_refuses_the_same N/A: Docker here runs as root (no rootless dockerd)
test_exec_stage.py
  exec_child_gives_a_ptracing_container_nothing     -> test_exec_child_gives_a_ptracing_container_nothing
  exec_child_is_the_containers_from_its_first_...   -> test_exec_child_is_the_containers_from_its_first_moment
  exec_keeps_the_containers_security_options        -> test_exec_keeps_the_containers_security_options
  exec_error_pipe_cannot_be_held_or_flooded_...     -> test_exec_error_pipe_cannot_be_held_or_flooded
  exec_with_a_large_environment_does_not_hang       -> test_exec_with_a_large_environment_does_not_hang
  the_stage_holds_only_its_own_fds                  -> test_the_container_holds_only_its_own_fds
  exec_finds_the_command..., a_step_of_the_stage..., the_stage_refuses_a_job..., the_stage_goes_nowhere...
                                                    N/A: the stage's own protocol and ``runner exec``'s messages
test_network_isolation.py (7)                       N/A: the runner's own networks (bridge, pasta, stores,
                                                    locks); Docker's networking is libnetwork's, not the runtime's
                                                    (this dockerd runs --bridge=none, --iptables=false)
test_pid_identity.py
  start_time..., zombie... (unit)                   N/A: the runner's /proc reader
  a_reused_pid_is_left_alone                        -> test_a_reused_pid_is_left_alone (the runtime's state.json
                                                    under Docker's --root forged while the container runs)
  open_process_pins..., signals_stop_and_rm_reach...
                                                    N/A: the runner's own pidfd API; stop, kill and rm of a
                                                    verified container through Docker are test_oci_callers'
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import stat
import subprocess
import sys
import termios
import time
import tty
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.proc import read_stat
from tests.marks import needs_root, needs_tools
from tests.ocicallers import Docker, Result, docker_archive, docker_with_runtime
from tests.test_devices_and_volumes import SENTINEL, loop_device, untouched
from tests.test_exec_stage import host_handle
from tests.test_isolation import DEVICE_TARGETS, HOST_NODES, MARK, fields, host_interpreters, snapshot
from tests.tools import RUNNER_OCI, wait_until

pytestmark = [needs_root, needs_tools]

# "runc" is a name Docker keeps for itself
RUNTIMES: dict[str, str | os.PathLike[str]] = {"strata": RUNNER_OCI, "oci-runc": "/usr/sbin/runc"}
IMAGE = "strata/test:1"
KEYCTL, ADD_KEY = 250, 248
KEY_SPEC_SESSION_KEYRING = -3


@dataclass
class Host:
    """The module's dockerd and what it was started with: the sentinel key in its session keyring, the secret in
    its environment, its pid (its mount namespace is where the tests put their host-side sentinels)."""

    docker: Docker
    key: int
    secret: str
    tmp: Path

    @property
    def pid(self) -> int:
        return int((self.tmp / "docker.pid").read_text())

    def in_mounts(self, script: str) -> subprocess.CompletedProcess[str]:
        """SCRIPT (sh) in dockerd's mount namespace: what the runtimes it starts see as the host's file system."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "sh", "-c", script], capture_output=True,
                              text=True, timeout=60)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _keyctl(*args: object) -> int:
    return int(_libc.syscall(KEYCTL, *args))


def _join_new_session_keyring() -> None:
    assert _keyctl(1, None) >= 0, os.strerror(ctypes.get_errno())  # KEYCTL_JOIN_SESSION_KEYRING, anonymous


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, test_layout: Path) -> Iterator[Host]:
    tmp = tmp_path_factory.mktemp("oci-isolation")
    archive = docker_archive(test_layout, tmp / "test.tar")
    secret = f"strata-secret-{os.urandom(6).hex()}"
    _join_new_session_keyring()  # this process's, inherited by dockerd and everything it starts
    key = int(_libc.syscall(ADD_KEY, b"user", b"strata-sentinel", b"host-secret", 11, KEY_SPEC_SESSION_KEYRING))
    assert key >= 0
    os.environ["STRATA_PROBE_SECRET"] = secret
    try:
        with contextlib.ExitStack() as stack:
            docker = stack.enter_context(docker_with_runtime(RUNTIMES))
            os.environ.pop("STRATA_PROBE_SECRET", None)
            assert docker.load(archive) == IMAGE
            yield Host(docker, key, secret, Path(docker.peer.tmp))  # dockerd's own dir (exec-root, pid file)
    finally:
        os.environ.pop("STRATA_PROBE_SECRET", None)
        _join_new_session_keyring()  # the sentinel's keyring goes with dockerd


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def names(host: Host) -> Iterator[list[str]]:
    """Names for the test's containers, each removed after it however it ends."""
    made: list[str] = []
    yield made
    for name in made:
        host.docker.cli("rm", "--force", name)


# What fails on this machine, measured (strict: a fix makes the test fail until the entry goes). runc is the reference
# the brief asks for beside ours; each of its failures is a weakness of runc 1.1 as Debian ships it, not of the test.
KNOWN_FAILURES = {
    ("oci-runc", "test_custom_profile_file_is_enforced"):
        "runc calls getcwd after loading the filter: 'failed to verify if current working directory is safe'",
    ("oci-runc", "test_exec_child_exposes_no_host_binary_or_environment[cap-sys-ptrace]"):
        "runc:[2:INIT] is the host's runc binary and its environment is readable (CAP_SYS_PTRACE)",
    ("oci-runc", "test_exec_child_gives_a_ptracing_container_nothing"):
        "runc:[2:INIT] is seized with all capabilities and no filter: open_by_handle_at creates a file on the host",
    ("oci-runc", "test_exec_child_is_the_containers_from_its_first_moment[nnp]"): "the same as runc's above",
    ("oci-runc", "test_exec_child_is_the_containers_from_its_first_moment[user]"): "the same as runc's above",
    ("oci-runc", "test_read_only_volume_is_read_only_and_nodev_in_submounts"):
        "runc makes only the top of an rbind,ro volume read-only: a submount under it stays writable",
    ("oci-runc", "test_exec_error_pipe_cannot_be_held_or_flooded[hold]"):
        "the container holds runc exec's pipes: docker exec, then docker logs of the container, hang (dockerd wedged)",
    ("oci-runc", "test_a_reused_pid_is_left_alone[other boot]"):
        "runc records no boot ID: a pid and start time from another boot are trusted, and docker kill kills it",
}

# A race runc loses in some runs, not all (so not strict): ours must win every one.
RACES = {
    ("oci-runc", "test_volume_target_swapped_during_start_never_lands_rw"):
        "runc makes dockerd's /etc/hostname, hosts, resolv.conf mount points inside the read-only volume's source "
        "when the swap lands it on /etc (seen in 1 of 3 runs; in the others it refuses every start)",
}


@pytest.fixture
def d(host: Host, runtime: str, names: list[str], probe: Path, request: pytest.FixtureRequest) -> Iterator[Ctx]:
    name = request.node.name.replace(f"[{runtime}-", "[").replace(f"[{runtime}]", "")
    why = KNOWN_FAILURES.get((runtime, name))
    if why is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=why))
    elif (runtime, name) in RACES:
        request.applymarker(pytest.mark.xfail(strict=False, reason=RACES[(runtime, name)]))
    yield Ctx(host, runtime, names, probe)


@dataclass
class Ctx:
    """One test's view: run and detach containers under RUNTIME with the probe bound in."""

    host: Host
    runtime: str
    names: list[str]
    probe: Path

    @property
    def docker(self) -> Docker:
        return self.host.docker

    def run_argv(self, *args: str, rm: bool = True) -> list[str]:
        return self.docker.argv("run", *(["--rm"] if rm else []), "--network", "none", "--runtime", self.runtime,
                                "-v", f"{self.probe}:/probe:ro", *args)

    def run(self, *args: str, input: str | None = None) -> Result:
        """``docker run --rm --network none --runtime R -v PROBE:/probe:ro ARGS`` (options, image, command)."""
        return self.docker.cli(*self.run_argv(*args)[1:], input=input)

    def detach(self, *args: str) -> str:
        name = f"c-{os.urandom(4).hex()}"
        self.names.append(name)
        started = self.docker.cli(*self.run_argv("-d", "--name", name, *args, rm=False)[1:])
        assert started.code == 0, started.err
        return name

    def exec(self, name: str, *args: str, input: str | None = None) -> Result:
        return self.docker.cli("exec", *(["-i"] if input is not None else []), name, *args, input=input)

    def logs(self, name: str) -> str:
        return self.docker.cli("logs", name).out


# -- 1. the user's terminal --------------------------------------------------------------------------------------


def on_terminal(ctx: Ctx, argv: list[str]) -> tuple[int, str, str]:
    """ARGV (a docker command) with a pty of the test's own as controlling terminal and stdio; its exit code, output
    and whatever input is pending on the terminal afterwards (where a TIOCSTI would have typed)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(["setsid", "--ctty", *argv], stdin=slave, stdout=slave, stderr=slave,
                                env=ctx.docker.env)
        output = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            assert time.monotonic() < deadline, "docker never finished"
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output += os.read(master, 65536)
                except OSError:
                    break
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(slave, False)
        try:
            pending = os.read(slave, 65536).decode(errors="replace")
        except BlockingIOError:
            pending = ""
        return proc.returncode, output.decode(errors="replace").replace("\r\n", "\n"), pending
    finally:
        os.close(master)
        os.close(slave)


def assert_no_terminal(out: str, stdin: str) -> None:
    """No controlling terminal, and no terminal on any of its stdio (Docker's: STDIN is /dev/null without -i)."""
    got = fields(out)
    assert got["open-dev-tty"] == "ENXIO", out
    assert got["session-leader"] == "yes", out
    assert got["fd0"] == stdin, out
    for fd in range(3):
        assert got[f"fd{fd}"] != "tty", out
        assert got[f"inject-fd{fd}"] == "ENOTTY", out


def test_run_without_tty_cannot_reach_the_users_terminal(d: Ctx) -> None:
    code, out, pending = on_terminal(d, d.run_argv(IMAGE, "/probe", "tty"))
    assert code == 0, out
    assert_no_terminal(out, "chardev")
    assert MARK not in pending and MARK not in out, (pending, out)


def test_run_interactive_without_tty_gets_a_pipe(d: Ctx) -> None:
    code, out, pending = on_terminal(d, d.run_argv("-i", IMAGE, "/probe", "tty"))
    assert code == 0, out
    assert_no_terminal(out, "pipe")
    assert MARK not in pending, pending
    echoed = d.run("-i", IMAGE, "cat", input="typed ahead\n")
    assert (echoed.code, echoed.out) == (0, "typed ahead\n"), echoed.err


def test_exec_without_tty_cannot_reach_the_users_terminal(d: Ctx) -> None:
    name = d.detach(IMAGE, "sleep", "1000")
    code, out, pending = on_terminal(d, d.docker.argv("exec", name, "/probe", "tty"))
    assert code == 0, out
    assert_no_terminal(out, "chardev")
    assert MARK not in pending, pending
    piped = d.exec(name, "cat", input="through the pipe\n")
    assert (piped.code, piped.out) == (0, "through the pipe\n"), piped.err


def test_tty_container_has_its_own_terminal(d: Ctx) -> None:
    code, out, pending = on_terminal(d, d.run_argv("-t", IMAGE, "/probe", "tty"))
    assert code == 0, out
    got = fields(out)
    assert got["open-dev-tty"] == "ok" and got["fd0"] == "tty", out
    assert MARK not in pending, pending


# -- 2. the session keyring of the runtime's caller ----------------------------------------------------------------


def keyring_after(host: Host) -> tuple[str | None, bool]:
    """The sentinel key's content, and whether a key the container added is in the dockerd's session keyring."""
    buf = ctypes.create_string_buffer(64)
    n = _keyctl(11, host.key, buf, 64)  # KEYCTL_READ
    found = _keyctl(10, KEY_SPEC_SESSION_KEYRING, b"user", b"strata-from-container", 0)  # KEYCTL_SEARCH
    return (buf.raw[:n].decode() if n > 0 else None), found >= 0


def test_default_seccomp_refuses_keyctl(d: Ctx) -> None:
    got = d.run(IMAGE, "/probe", "keyring")
    assert got.code == 0, got.err
    out = fields(got.out)
    assert out["search"] == "EPERM" and out["add"] == "EPERM", got.out
    assert keyring_after(d.host) == ("host-secret", False)


def test_container_session_keyring_is_its_own(d: Ctx) -> None:
    got = d.run("--security-opt", "seccomp=unconfined", IMAGE, "/probe", "keyring")
    assert got.code == 0, got.err
    out = fields(got.out)
    assert out["search"] == "ENOKEY" and "read" not in out, got.out
    assert out["add"] == "ok", got.out
    assert keyring_after(d.host) == ("host-secret", False)


def test_exec_session_keyring_is_its_own(d: Ctx) -> None:
    name = d.detach("--security-opt", "seccomp=unconfined", IMAGE, "sleep", "1000")
    got = d.exec(name, "/probe", "keyring")
    assert got.code == 0, got.err
    out = fields(got.out)
    assert out["search"] == "ENOKEY" and out["add"] == "ok", got.out
    assert keyring_after(d.host) == ("host-secret", False)


# -- seccomp: Docker's default profile, as dockerd hands it to the runtime -------------------------------------------


def test_new_user_namespaces_are_refused(d: Ctx) -> None:
    confined = d.run(IMAGE, "/probe", "unshare-user")
    assert confined.code == 0, confined.err
    assert fields(confined.out) == {"unshare": "EPERM", "clone": "EPERM"}, confined.out
    name = d.detach(IMAGE, "sleep", "1000")
    execd = d.exec(name, "/probe", "unshare-user")
    assert fields(execd.out) == {"unshare": "EPERM", "clone": "EPERM"}, execd.out
    unconfined = d.run("--security-opt", "seccomp=unconfined", IMAGE, "/probe", "unshare-user")
    assert fields(unconfined.out)["unshare"] == "ok", unconfined.out


def test_seccomp_shows_in_proc_status(d: Ctx) -> None:
    """Seccomp 2 for run and exec, 0 unconfined and privileged. --privileged asks for all 38 capabilities, and
    root here lacks CAP_SYS_RESOURCE: runc refuses it (``unable to apply caps``); the check holds where it starts."""
    assert "Seccomp:\t2" in d.run(IMAGE, "cat", "/proc/self/status").out
    name = d.detach(IMAGE, "sleep", "1000")
    assert "Seccomp:\t2" in d.exec(name, "cat", "/proc/self/status").out
    assert "Seccomp:\t0" in d.run("--security-opt", "seccomp=unconfined", IMAGE, "cat", "/proc/self/status").out
    privileged = d.run("--privileged", IMAGE, "cat", "/proc/self/status")
    if privileged.code == 0:
        assert "Seccomp:\t0" in privileged.out
    else:
        assert "operation not permitted" in privileged.err.lower(), privileged.err


def syscalls(result: Result) -> dict[str, str]:
    assert result.code == 0, result.err
    return fields(result.out)


# Docker 20.10's profile allows AF_VSOCK and AF_ALG (the kernel: no AF_ALG); chroot EFAULT, getcwd ERANGE
DOCKER_REFUSES = {
    "unshare-user": "EPERM", "unshare-uts": "EPERM", "clone-newuser": "EPERM", "clone3": "ENOSYS",
    "keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM",
    "personality-query": "ok", "personality-read_implies_exec": "EPERM", "personality-addr_no_randomize": "EPERM",
    "socket-vsock": "ok", "socket-alg": "errno97", "socket-inet": "ok", "socket-unix": "ok",
    "mount": "EPERM", "umount2": "EPERM", "setns": "EPERM", "sethostname": "EPERM", "reboot": "EPERM", "bpf": "EPERM",
    "chroot": "errno14", "getcwd": "errno34", "i386-getpid": "ok", "i386-unshare-user": "EPERM",
}


def test_default_profile_refuses_what_docker_refuses(d: Ctx) -> None:
    """Docker's profile as dockerd builds it for the default capabilities, every arch of its archMap included (a
    32-bit call meets the same rules): the runtime must load it as given."""
    name = d.detach(IMAGE, "sleep", "1000")
    for got in (syscalls(d.run(IMAGE, "/probe", "syscalls")), syscalls(d.exec(name, "/probe", "syscalls"))):
        assert got == DOCKER_REFUSES, got


def test_unconfined_calls_reach_the_kernel(d: Ctx) -> None:
    """The control: without the filter the kernel answers (no CAP_SYS_ADMIN: EPERM from the kernel for mount and
    sethostname, but clone3, keyctl and the personalities reach it)."""
    got = syscalls(d.run("--security-opt", "seccomp=unconfined", IMAGE, "/probe", "syscalls"))
    assert got["clone3"] != "ENOSYS" and got["keyctl"] != "EPERM" and got["unshare-user"] == "ok", got
    assert got["personality-read_implies_exec"] == "ok" and got["socket-vsock"] != "EPERM", got


def test_cap_add_sys_admin_allows_namespaces_and_clone3(d: Ctx) -> None:
    got = syscalls(d.run("--cap-add", "SYS_ADMIN", IMAGE, "/probe", "syscalls"))
    assert got["unshare-uts"] == "ok" and got["sethostname"] == "EINVAL", got  # allowed: the kernel's answer
    assert got["clone3"] not in ("ok", "ENOSYS", "EPERM"), got
    assert got["keyctl"] == "EPERM", got  # not even CAP_SYS_ADMIN gets the keyring


def test_cap_drop_drops_its_syscalls(d: Ctx) -> None:
    assert syscalls(d.run("--cap-drop", "SYS_CHROOT", IMAGE, "/probe", "syscalls"))["chroot"] == "EPERM"


def test_custom_profile_file_is_enforced(d: Ctx, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]}))
    got = syscalls(d.run("--security-opt", f"seccomp={profile}", IMAGE, "/probe", "syscalls"))
    assert got["getcwd"] == "errno42" and got["unshare-uts"] == "EPERM", got  # allowed, then no CAP_SYS_ADMIN
    assert got["keyctl"] != "EPERM" and got["clone3"] != "ENOSYS", got


# -- 3. the runtime's binary, environment and fds during exec --------------------------------------------------------


def host_binaries() -> set[str]:
    """dev:ino of every host file a process of the runtime's could have as its exe."""
    found = set(host_interpreters())
    for path in ("/usr/sbin/runc", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/dockerd", "/usr/bin/containerd",
                 os.path.realpath(sys.executable)):
        if os.path.exists(path):
            st = os.stat(path)
            found.add(f"{st.st_dev}:{st.st_ino}")
    return found


@pytest.mark.parametrize("caps", [(), ("--cap-add", "SYS_PTRACE")], ids=["default-caps", "cap-sys-ptrace"])
def test_exec_child_exposes_no_host_binary_or_environment(d: Ctx, caps: tuple[str, ...]) -> None:
    """The probe watches the container's /proc for every process that is not one of its programs (the runtime's
    exec child before its exec) and opens its exe, environ and fds. The secret is in the runtime's environment
    (dockerd's, passed on). Never the host's binary, never the secret; without CAP_SYS_PTRACE not even a look."""
    name = d.detach(*caps, IMAGE, "/probe", "watch", "120", d.host.secret)
    for _ in range(60):
        assert d.exec(name, "true").code == 0
        if any(ln.startswith("obs ") for ln in d.logs(name).splitlines()):
            break
    d.exec(name, "touch", "/tmp/probe-stop")
    wait_until(lambda: "watched " in d.logs(name), "the watcher to finish", timeout=60)
    report = d.logs(name)
    observations = [dict(kv.split("=", 1) for kv in ln.split()[3:]) | {"comm": ln.split()[2]}
                    for ln in report.splitlines() if ln.startswith("obs ")]
    assert observations, f"the watcher never caught an exec child: the attack had no window\n{report}"
    host = host_binaries()
    for o in observations:
        assert o["environ"] != "LEAKED", report
        assert ":".join(o["exe"].split(":")[:2]) not in host, f"the container opened a host binary\n{report}"
    if not caps:
        for o in observations:
            if o["comm"] == o["after"]:  # caught before its exec
                assert o["exe"] in ("EACCES", "EPERM", "ENOENT", "ESRCH") and o["environ"] != "read", report


# -- 4. host device inodes -------------------------------------------------------------------------------------------


def test_device_nodes_and_masks_are_the_containers_own(d: Ctx, tmp_path: Path) -> None:
    """The host's nodes, in dockerd's mount namespace, are sentinels (fresh nodes with the same numbers bound over
    them) for the test; container root chmods, chowns, touches and sets an xattr on every device node and masked
    path: none of it reaches them."""
    sentinels = tmp_path / "host-dev"
    sentinels.mkdir()
    binds = []
    for path, (major, minor) in HOST_NODES.items():
        node = sentinels / Path(path).name
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        node.chmod(0o666)
        binds.append((node, path))
    before = {node.name: snapshot(str(node)) for node in sentinels.iterdir()}
    bound = d.host.in_mounts(" && ".join(f"mount --bind {node} {path}" for node, path in binds))
    try:
        assert bound.returncode == 0, bound.stderr
        result = d.run(IMAGE, "sh", "-c", f"/probe devices 0:0 {' '.join(DEVICE_TARGETS)}; "
                                          "echo x > /dev/null && head -c 3 /dev/zero | od -An -tx1")
    finally:
        d.host.in_mounts("; ".join(f"umount {path}" for _, path in binds))
    assert result.code == 0, result.err
    out = result.out.splitlines()
    assert {node.name: snapshot(str(node)) for node in sentinels.iterdir()} == before, result.out
    for target in ("/dev/null", "/dev/zero", "/dev/tty"):
        assert f"{target} chmod ok" in out and f"{target} chown ok" in out, result.out
    for target in ("/proc/keys", "/proc/timer_list"):
        assert f"{target} chmod ok" in out or f"{target} chmod EROFS" in out, result.out
    assert out[-1].split() == ["00", "00", "00"], result.out


def identity(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_read_only_volume_inodes_cannot_change(d: Ctx, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    sentinel = shared / "sentinel"
    sentinel.write_text("keep\n")
    before = snapshot(str(sentinel))
    result = d.run("-v", f"{shared}:/v:ro", IMAGE, "/probe", "devices", identity("/dev/null"), "/v/sentinel")
    assert result.code == 0, result.err
    for op in ("chmod", "chown", "utime", "setxattr"):
        assert f"/v/sentinel {op} EROFS" in result.out, result.out
    assert snapshot(str(sentinel)) == before


def test_mknod_node_stays_unusable(d: Ctx) -> None:
    """A node for /dev/mem made with CAP_MKNOD cannot be opened: nodev (EACCES) or the devices cgroup (EPERM)."""
    result = d.run(IMAGE, "sh", "-c", "mknod /dev/mine c 1 1 && head -c 1 /dev/mine >/dev/null")
    assert result.code != 0, (result.out, result.err)
    assert "Permission denied" in result.err or "Operation not permitted" in result.err, result.err


def test_cgroup_limits_are_visible_read_only(d: Ctx) -> None:
    result = d.run("-m", "64m", "--pids-limit", "50", IMAGE, "sh", "-c",
                   "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; "
                   "grep -E ':(memory|pids):' /proc/self/cgroup; "
                   "touch /sys/fs/cgroup/memory/x 2>&1; mkdir /sys/fs/cgroup/pids/y 2>&1; "
                   "grep ' /sys/fs/cgroup' /proc/self/mountinfo | cut -d' ' -f5,6")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == str(64 * 1024 * 1024) and lines[1] == "50", result.out
    assert "Read-only file system" in lines[4] and "Read-only file system" in lines[5], result.out
    mounts = dict(line.split() for line in lines[6:])
    assert mounts["/sys/fs/cgroup/memory"].startswith("ro,") and mounts["/sys/fs/cgroup/pids"].startswith("ro,")


# -- devices and volumes ---------------------------------------------------------------------------------------------


def test_block_node_on_a_dev_tmpfs_cannot_be_opened(d: Ctx, tmp_path: Path) -> None:
    """``--tmpfs /t:exec,dev``: a mount that allows device nodes, and CAP_MKNOD makes one there for the test's loop
    device: the devices cgroup refuses the open (EPERM), read-only or read-write."""
    with loop_device(tmp_path) as loop:
        result = d.run("--tmpfs", "/t:dev", IMAGE, "/probe", "blockdev", "/t/disk", str(loop.major),
                       str(loop.minor))
        assert result.code == 0, result.err
        got = fields(result.out)
        assert got["mknod"] == "ok", result.out
        assert got["open"] == "EPERM" and got["open-ro"] == "EPERM", result.out
        assert SENTINEL.decode() not in result.out and untouched(loop), result.out


def test_privileged_keeps_every_device(d: Ctx, tmp_path: Path) -> None:
    """--privileged: every device, as Docker (the attack above then works, on the test's own loop). runc here
    cannot start a privileged container at all (root lacks CAP_SYS_RESOURCE): it must refuse, not half-start."""
    with loop_device(tmp_path) as loop:
        result = d.run("--privileged", "--tmpfs", "/t:dev", IMAGE, "/probe", "blockdev", "/t/disk",
                       str(loop.major), str(loop.minor))
        if result.code != 0:
            assert "operation not permitted" in result.err.lower(), result.err
            assert untouched(loop)
            return
        assert fields(result.out)["open"] == "ok" and "strata-loop-sentinel" in result.out, result.out
        assert not untouched(loop)


def test_read_only_volume_is_read_only_and_nodev_in_submounts(d: Ctx, tmp_path: Path) -> None:
    """``-v SRC:/host:ro`` where a tmpfs is mounted under SRC (in dockerd's mount namespace) holding a node of the
    test's loop device: inside, the submount is read-only and nodev too."""
    src = tmp_path / "src"
    (src / "dev").mkdir(parents=True)
    with loop_device(tmp_path) as loop:
        setup = d.host.in_mounts(f"mount -t tmpfs -o mode=755,size=1m strata-test {src / 'dev'} && "
                                 f"mknod -m 666 {src / 'dev' / 'disk'} b {loop.major} {loop.minor}")
        try:
            assert setup.returncode == 0, setup.stderr
            script = ("/probe blockdev /host/dev/disk; /probe create /host/dev/file; "
                      f"/probe blockdev /host/dev/mine {loop.major} {loop.minor}; /probe create /host/top")
            result = d.run("-v", f"{src}:/host:ro", IMAGE, "sh", "-c", script)
            listing = d.host.in_mounts(f"ls -A {src / 'dev'} {src}").stdout
        finally:
            d.host.in_mounts(f"umount {src / 'dev'}")
        assert result.code == 0, result.err
        lines = result.out.splitlines()
        assert lines[0].split()[0] == "open" and lines[0].split()[1] in ("EACCES", "EPERM"), result.out
        assert lines[1].split()[1] in ("EACCES", "EPERM"), result.out
        assert "create EROFS" in lines and "mknod EROFS" in lines, result.out
        assert "create ok" not in lines and "mknod ok" not in lines, result.out
        assert SENTINEL.decode() not in result.out and untouched(loop), result.out
    assert listing.splitlines() == [f"{src}:", "dev", "", f"{src / 'dev'}:", "disk"], listing


STARTS = 12


def test_volume_target_swapped_during_start_never_lands_rw(d: Ctx, tmp_path: Path) -> None:
    """The CVE-2021-30465 shape: an attacker container swaps /shared/a (-> /etc) and /shared/b (-> /shared) in a
    loop while victims start with ``-v RO:/shared/a:ro``; RO is never written (a start may be refused)."""
    shared, ro = tmp_path / "shared", tmp_path / "ro"
    shared.mkdir()
    ro.mkdir()
    (ro / "keep").write_text("keep\n")
    swap = "ln -s /etc /shared/a && ln -s /shared /shared/b && exec /probe exchange /shared/a /shared/b 600"
    d.detach("-v", f"{shared}:/shared", IMAGE, "sh", "-c", swap)
    wait_until(lambda: (shared / "a").is_symlink() and (shared / "b").is_symlink(), "the attacker's symlinks")
    started, errors = 0, []
    for _ in range(STARTS):
        victim = d.run("-v", f"{shared}:/shared", "-v", f"{ro}:/shared/a:ro", IMAGE, "sh", "-c",
                       "echo pwned > /etc/pwned; echo pwned > /shared/a/pwned; true")
        started += victim.code == 0
        errors += [victim.err.strip()] if victim.code != 0 else []
        if sorted(os.listdir(ro)) != ["keep"]:
            break
    assert sorted(os.listdir(ro)) == ["keep"], f"a read-only volume was written (after {started} starts)"
    # Under Docker a start may be refused, one line: where the volume landed on /etc (resolved once, read-only),
    # dockerd's /etc/resolv.conf bind that follows cannot make its mount point (runner-oci), or the runtime sees
    # the swap and stops (runc refuses every start here). A refusal is safe; a read-write landing is not.
    assert all("OCI runtime create failed" in e for e in errors), errors[:3]


# -- the exec stage ---------------------------------------------------------------------------------------------------

EXECS = 40


def ptrace_attack(ctx: Ctx, name: str, *exec_opts: str) -> str:
    wait_until(lambda: "own " in ctx.logs(name), "the probe to start", timeout=60)
    for _ in range(EXECS):
        ctx.docker.cli("exec", *exec_opts, name, "/bin/true", timeout=60)  # its outcome is not the verdict
        if "victims " in ctx.logs(name):
            break
    else:
        ctx.exec(name, "touch", "/tmp/probe-stop")
    wait_until(lambda: "victims " in ctx.logs(name), "the probe to finish", timeout=60)
    return ctx.logs(name)


def victims(report: str) -> list[dict[str, str]]:
    return [dict(kv.split("=", 1) for kv in line.split()[2:]) for line in report.splitlines()
            if line.startswith("victim ")]


def sentinel_dir(ctx: Ctx, tmp_path: Path) -> Path:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    assert os.stat(sentinel).st_dev == os.stat(ctx.host.tmp).st_dev, "the sentinel must share dockerd's file system"
    return sentinel


def test_exec_child_gives_a_ptracing_container_nothing(d: Ctx, tmp_path: Path) -> None:
    """PID 1 (CAP_SYS_PTRACE) seizes every process that appears in its pid namespace, the runtime's exec child
    first, and injects open_by_handle_at of a host dir of the test's (through /etc/hosts' file system) and a file
    creation there. What it catches holds the container's capabilities under its filter, and the file never is."""
    sentinel = sentinel_dir(d, tmp_path)
    name = d.detach("--cap-add", "SYS_PTRACE", IMAGE, "/probe", "ptrace-exec", "120", host_handle(sentinel))
    report = ptrace_attack(d, name)
    assert not (sentinel / "ptrace-created").exists(), f"the container created a file on the host\n{report}"
    own = dict(kv.split("=", 1) for kv in report.split("own ", 1)[1].split("\n", 1)[0].split())
    caught = victims(report)
    assert caught, f"no process of the runtime's caught\n{report}"
    for v in caught:
        assert v.get("handle") != "ok", f"open_by_handle_at reached the host\n{report}"
        assert v["CapEff"] == own["CapEff"], f"a process of the runtime held more than the container\n{report}"
        assert v["Seccomp"] == "2", f"a process of the runtime ran without the container's filter\n{report}"


@pytest.mark.parametrize("opts", [("--security-opt", "no-new-privileges"), ("-u", "1000")], ids=["nnp", "user"])
def test_exec_child_is_the_containers_from_its_first_moment(d: Ctx, tmp_path: Path, opts: tuple[str, ...]) -> None:
    """The same with no_new_privs asked for (the caught process has it) and with another user (it holds no more
    than PID 1: Docker asks for the default sets with ``-u 1000`` too, and the exec of a non-root user drops them;
    the runner's own stage computes none for a user, which is what its test checks)."""
    sentinel = sentinel_dir(d, tmp_path)
    run_opts = opts if opts[0] != "-u" else ()
    exec_opts = opts if opts[0] == "-u" else ()
    name = d.detach("--cap-add", "SYS_PTRACE", *run_opts, IMAGE, "/probe", "ptrace-exec", "120",
                    host_handle(sentinel))
    report = ptrace_attack(d, name, *exec_opts)
    assert not (sentinel / "ptrace-created").exists(), report
    own = dict(kv.split("=", 1) for kv in report.split("own ", 1)[1].split("\n", 1)[0].split())
    caught = victims(report)
    assert caught, f"no process of the runtime's caught\n{report}"
    for v in caught:
        assert v["Seccomp"] == "2", report
        if exec_opts:  # Docker's process.json for -u 1000 names the default sets: the exec drops them (as runc's)
            assert int(v["CapEff"], 16) & ~int(own["CapEff"], 16) == 0, report  # never more than PID 1's
        else:
            assert v["NoNewPrivs"] == "1", report


@pytest.mark.parametrize(("opts", "want"), [
    (("--security-opt", "no-new-privileges"), {"Seccomp": "2", "NoNewPrivs": "1"}),
    (("--security-opt", "seccomp=unconfined"), {"Seccomp": "0", "NoNewPrivs": "0"}),
    (("--cap-drop", "ALL", "--cap-add", "CHOWN"), {"Seccomp": "2", "CapEff": "0000000000000001"}),
], ids=["nnp", "unconfined", "one-cap"])
def test_exec_keeps_the_containers_security_options(d: Ctx, opts: tuple[str, ...], want: dict[str, str]) -> None:
    name = d.detach(*opts, IMAGE, "sleep", "1000")
    pid1 = d.exec(name, "cat", "/proc/1/status")
    mine = d.exec(name, "cat", "/proc/self/status")
    assert pid1.code == mine.code == 0, pid1.err + mine.err

    def status(out: str) -> dict[str, str]:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}

    assert {k: status(mine.out)[k] for k in want} == want, mine.out
    for key in ("CapEff", "CapPrm", "CapBnd", "Seccomp", "NoNewPrivs"):
        assert status(mine.out)[key] == status(pid1.out)[key], (key, pid1.out, mine.out)


@pytest.mark.parametrize(("mib", "hold"), [("512", "300"), ("0", "300"), ("0", "10")], ids=["flood", "hold", "forge"])
def test_exec_error_pipe_cannot_be_held_or_flooded(d: Ctx, mib: str, hold: str) -> None:
    """PID 1 (CAP_SYS_PTRACE) steals every pipe the runtime's exec child holds before its exec, writes a forged
    two-line message and MIB MiB to them, and holds them: ``docker exec`` still returns (bounded: a hang fails),
    and none of the container's text becomes its error."""
    name = d.detach("--cap-add", "SYS_PTRACE", IMAGE, "/probe", "errpipe", hold, mib)
    bound = 60 if hold == "300" and mib == "0" else 120
    start = time.monotonic()
    proc = subprocess.Popen(d.docker.argv("exec", name, "/bin/true"), env=d.docker.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=bound)
        hung = False
    except subprocess.TimeoutExpired:
        proc.kill()  # ours, by pid
        _, err = proc.communicate()
        hung = True
    report = d.logs(name)
    assert "stole 0" not in report, f"the probe caught nothing of the runtime's: the attack did not run\n{report}"
    assert not hung, f"docker exec never returned ({time.monotonic() - start:.0f} s): the container holds the " \
                     f"runtime's pipes\n{report}"
    assert "FORGED" not in err, f"the container wrote the exec's message\n{err}"


def test_exec_with_a_large_environment_does_not_hang(d: Ctx) -> None:
    name = d.detach(IMAGE, "sleep", "1000")
    env = [a for i in range(100) for a in ("-e", f"V{i}={'x' * 1000}")]
    result = d.docker.cli("exec", *env, name, "sh", "-c", "echo ${#V99}", timeout=60)
    assert (result.code, result.out) == (0, "1000\n"), result.err


def test_the_container_holds_only_its_own_fds(d: Ctx) -> None:
    """Whatever the caller leaves open in the runtime (the shim's fd 3, conmon's), run and exec get their stdio and
    nothing else: ``ls /proc/self/fd`` lists 0 1 2 and its own directory fd."""
    ran = d.run(IMAGE, "ls", "/proc/self/fd")
    assert (ran.code, ran.out.split()) == (0, ["0", "1", "2", "3"]), ran
    name = d.detach(IMAGE, "sleep", "1000")
    execd = d.exec(name, "ls", "/proc/self/fd")
    assert (execd.code, execd.out.split()) == (0, ["0", "1", "2", "3"]), execd
    pid1 = d.exec(name, "ls", "/proc/1/fd")
    assert (pid1.code, pid1.out.split()) == (0, ["0", "1", "2"]), pid1



# -- pid identity: a runtime's state that names a reused pid ----------------------------------------------------------

# Each forges the runtime's record of the container's PID 1 to name the test's sentinel: (runtime, forgery) -> fields
# (runner-oci: state.json "pid", "start_time", "boot_id"; runc: state.json "init_process_pid", "init_process_start").
PID_FORGERIES = ["reused pid", "other boot"]


def forged(runtime: str, state: dict[str, object], forgery: str, pid: int, start: int) -> dict[str, object]:
    if runtime == "oci-runc":
        return {**state, "init_process_pid": pid} | ({"init_process_start": start} if forgery == "other boot" else {})
    return {**state, "pid": pid} | ({"start_time": start, "boot_id": str(uuid.uuid4())}
                                    if forgery == "other boot" else {})


@pytest.mark.parametrize("forgery", PID_FORGERIES)
def test_a_reused_pid_is_left_alone(d: Ctx, forgery: str) -> None:
    """A running container whose recorded PID 1 is now the test's sentinel (a pid reused, or a pid and start time
    recorded in another boot): docker kill, kill -s STOP/USR1 and exec reach the runtime, which must neither signal
    nor join the sentinel. runc records no boot: a pid and start time from another boot are trusted."""
    name = d.detach(IMAGE, "sleep", "600")
    cid = d.docker.cli("inspect", "--format", "{{.Id}}", name).out.strip()
    state_file = d.host.tmp / "exec" / "runtime-runc" / "moby" / cid / "state.json"  # Docker's --root, any runtime
    recorded = state_file.read_text()
    sentinel = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        stat_ = read_stat(sentinel.pid)
        assert stat_ is not None
        state_file.write_text(json.dumps(forged(d.runtime, json.loads(recorded), forgery, sentinel.pid,
                                                stat_.start_time)))
        try:
            for args in (("kill", name), ("kill", "-s", "STOP", name), ("kill", "-s", "USR1", name),
                         ("exec", name, "true")):
                d.docker.cli(*args)  # refused or not, the verdict is the sentinel's
                assert_untouched(sentinel, stat_.start_time)
        finally:
            if state_file.parent.exists():  # gone where the runtime took the forgery for its exit (the container's
                state_file.write_text(recorded)  # own processes then go with the harness's cgroup at the end)
    finally:
        sentinel.kill()  # ours, by pid
        sentinel.wait()


def assert_untouched(proc: subprocess.Popen[bytes], start_time: int) -> None:
    """Still there, the same process, not stopped, no signal pending."""
    assert proc.poll() is None, "the sentinel was killed"
    stat_ = read_stat(proc.pid)
    assert stat_ is not None and stat_.start_time == start_time and stat_.state in ("S", "R"), stat_
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    assert int(status["SigPnd"], 16) == 0 and int(status["ShdPnd"], 16) == 0, status
