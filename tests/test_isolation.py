"""The security review's escapes, each attempted again from inside a real container by tests/probe.c (a static
binary built here, bound read-only into the container), with the verdict taken on the host side.

Attacks aim only at things the test made: a pty of its own, a session keyring of its own holding a sentinel key, a
sentinel environment variable, temporary files. The device attack refuses to touch a node that is the host's own.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

import pytest

from tests.marks import as_root_and_user, needs_root, needs_tools
from tests.rootless import PYTHON
from tests.tools import ROOT, Tools, detached, popen_runner, runner_command, wait_until

pytestmark = [needs_root, needs_tools]

MARK = "strata-injected"



@pytest.fixture
def img(stored_test_image: str, no_leaks: None, executor: str) -> str:
    """The session test image, pulled; the test runs once per executor (ours, runc, crun): the isolation a user
    relies on must hold whichever runs the container."""
    return stored_test_image


def with_probe(probe: Path) -> tuple[str, str]:
    return ("-v", f"{probe}:/probe:ro")


def fields(out: str) -> dict[str, str]:
    """The probe's "key value" lines."""
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines()) if k}


# -- 1. the user's terminal --------------------------------------------------------------------------------------


def on_terminal(tools: Tools, *args: str, stdin_text: bytes = b"") -> tuple[int, str, str]:
    """Run ``runner ARGS`` with a pty of the test's own as its controlling terminal and stdio, as a user's shell
    would; return its exit code, what it printed, and whatever input is left pending on the terminal afterwards
    (where a TIOCSTI would have typed)."""
    master, slave = os.openpty()
    try:
        tools.hand_over(slave)  # the user's terminal is the user's
        proc = subprocess.Popen(["setsid", "--ctty", *runner_command(tools, *args)], stdin=slave, stdout=slave,
                                stderr=slave, cwd=ROOT, env=tools.environ())
        if stdin_text:
            os.write(master, stdin_text)
        output = b""
        deadline = time.monotonic() + 60
        while proc.poll() is None or select.select([master], [], [], 0)[0]:
            assert time.monotonic() < deadline, "the runner never finished"
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output += os.read(master, 65536)
                except OSError:
                    break
        tty.setraw(slave, termios.TCSANOW)  # pending input, line or not, becomes readable
        os.set_blocking(slave, False)
        try:
            pending = os.read(slave, 65536).decode(errors="replace")
        except BlockingIOError:
            pending = ""
        return proc.returncode, output.decode(errors="replace").replace("\r\n", "\n"), pending
    finally:
        os.close(master)
        os.close(slave)


def assert_no_terminal(out: str) -> None:
    got = fields(out)
    assert got["open-dev-tty"] == "ENXIO", out  # no controlling terminal behind /dev/tty
    assert got["session-leader"] == "yes", out
    for fd in range(3):
        assert got[f"fd{fd}"] == "pipe", out  # never the runner's own fds, never the user's terminal
        assert got[f"inject-fd{fd}"] == "ENOTTY", out


@as_root_and_user
def test_run_without_tty_cannot_reach_the_users_terminal(tools: Tools, img: str, probe: Path) -> None:
    code, out, pending = on_terminal(tools, "run", "--rm", *with_probe(probe), img, "/probe", "tty")
    assert code == 0, out
    assert_no_terminal(out)
    assert MARK not in pending and MARK not in out, (pending, out)


def test_run_interactive_without_tty_gets_a_pipe_not_the_terminal(tools: Tools, img: str, probe: Path) -> None:
    code, out, pending = on_terminal(tools, "run", "--rm", "-i", *with_probe(probe), img, "/probe", "tty")
    assert code == 0, out
    assert_no_terminal(out)
    assert MARK not in pending, pending
    # and -i still carries input through that pipe
    echoed = tools.runner("run", "--rm", "-i", img, "cat", stdin="typed ahead\n")
    assert (echoed.code, echoed.out) == (0, "typed ahead\n"), echoed.err


@as_root_and_user
def test_exec_without_tty_cannot_reach_the_users_terminal(tools: Tools, img: str, probe: Path) -> None:
    with detached(tools, *with_probe(probe), img, "sleep", "1000") as cid:
        code, out, pending = on_terminal(tools, "exec", cid, "/probe", "tty")
        assert code == 0, out
        assert_no_terminal(out)
        assert MARK not in pending, pending
        piped = tools.runner("exec", "-i", cid, "cat", stdin="through the pipe\n")
        assert (piped.code, piped.out) == (0, "through the pipe\n"), piped.err


@as_root_and_user
def test_tty_container_has_its_own_terminal(tools: Tools, img: str, probe: Path) -> None:
    """With -t the container's terminal is a pty of its own; /dev/tty is that, and typing into it stays there."""
    code, out, pending = on_terminal(tools, "run", "--rm", "-t", *with_probe(probe), img, "/probe", "tty")
    assert code == 0, out
    got = fields(out)
    assert got["open-dev-tty"] == "ok" and got["fd0"] == "tty", out
    assert MARK not in pending, pending  # what it typed went into its own pty, not the user's


# -- 2. the host's session keyring ---------------------------------------------------------------------------------

# Runs the runner in a session keyring of its own holding a sentinel key; afterwards reports what the keyring holds.
KEYRING_WRAPPER = r"""
import ctypes, json, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
KEYCTL, ADD_KEY = 250, 248
SESSION = ctypes.c_int(-3)
assert libc.syscall(KEYCTL, 1, None) >= 0  # KEYCTL_JOIN_SESSION_KEYRING, anonymous
key = libc.syscall(ADD_KEY, b"user", b"strata-sentinel", b"host-secret", 11, SESSION)
assert key >= 0
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
buf = ctypes.create_string_buffer(64)
n = libc.syscall(KEYCTL, 11, key, buf, 64)  # KEYCTL_READ
found = libc.syscall(KEYCTL, 10, SESSION, b"user", b"strata-from-container", 0)  # KEYCTL_SEARCH
print(json.dumps({"code": proc.returncode, "out": proc.stdout, "err": proc.stderr,
                  "sentinel": buf.raw[:n].decode() if n > 0 else None, "added_on_host": found >= 0}))
"""


def in_keyring(tools: Tools, *args: str) -> dict[str, object]:
    import json

    proc = subprocess.run([sys.executable, "-c", KEYRING_WRAPPER, *runner_command(tools, *args)], capture_output=True,
                          text=True, cwd=ROOT, env=tools.environ(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@as_root_and_user
def test_default_seccomp_refuses_keyctl(tools: Tools, img: str, probe: Path) -> None:
    got = in_keyring(tools, "run", "--rm", *with_probe(probe), img, "/probe", "keyring")
    assert got["code"] == 0, got
    out = fields(str(got["out"]))
    assert out["search"] == "EPERM" and out["add"] == "EPERM", got  # Docker's profile refuses keyctl and add_key
    assert got["sentinel"] == "host-secret" and got["added_on_host"] is False, got


@as_root_and_user
def test_container_session_keyring_is_its_own(tools: Tools, img: str, probe: Path) -> None:
    """Even with seccomp off, the container joins a fresh session keyring: the host's keys are not in it, and
    what it adds lands in its own."""
    got = in_keyring(tools, "run", "--rm", "--security-opt", "seccomp=unconfined", *with_probe(probe), img,
                     "/probe", "keyring")
    assert got["code"] == 0, got
    out = fields(str(got["out"]))
    assert out["search"] == "ENOKEY" and "read" not in out, got
    assert out["add"] == "ok", got
    assert got["sentinel"] == "host-secret" and got["added_on_host"] is False, got


@as_root_and_user
def test_exec_session_keyring_is_its_own(tools: Tools, img: str, probe: Path) -> None:
    with detached(tools, "--security-opt", "seccomp=unconfined", *with_probe(probe), img, "sleep", "1000") as cid:
        got = in_keyring(tools, "exec", cid, "/probe", "keyring")
    assert got["code"] == 0, got
    out = fields(str(got["out"]))
    assert out["search"] == "ENOKEY" and out["add"] == "ok", got
    assert got["sentinel"] == "host-secret" and got["added_on_host"] is False, got


# -- seccomp: Docker's default profile on run and exec -------------------------------------------------------------


@as_root_and_user
def test_new_user_namespaces_are_refused(tools: Tools, img: str, probe: Path) -> None:
    confined = tools.runner("run", "--rm", *with_probe(probe), img, "/probe", "unshare-user")
    assert confined.code == 0, confined.err
    assert fields(confined.out) == {"unshare": "EPERM", "clone": "EPERM"}, confined.out
    with detached(tools, *with_probe(probe), img, "sleep", "1000") as cid:
        execd = tools.runner("exec", cid, "/probe", "unshare-user")
        assert fields(execd.out) == {"unshare": "EPERM", "clone": "EPERM"}, execd.out
    unconfined = tools.runner("run", "--rm", "--security-opt", "seccomp=unconfined", *with_probe(probe), img,
                              "/probe", "unshare-user")
    assert fields(unconfined.out)["unshare"] == "ok", unconfined.out  # the profile, not something else, refused it


def test_seccomp_shows_in_proc_status(tools: Tools, img: str) -> None:
    """Seccomp: 2 (filter mode) for the container and exec'd processes, 0 when unconfined, as with Docker."""
    assert "Seccomp:\t2" in tools.runner("run", "--rm", img, "cat", "/proc/self/status").out
    off = tools.runner("run", "--rm", "--security-opt", "seccomp=unconfined", img, "cat", "/proc/self/status")
    assert "Seccomp:\t0" in off.out
    assert "Seccomp:\t0" in tools.runner("run", "--rm", "--privileged", img, "cat", "/proc/self/status").out


# -- 3. the host interpreter, environment and fds during exec --------------------------------------------------------


def exec_until_seen(tools: Tools, cid: str, secret: str, attempts: int = 60) -> str:
    """Exec into the container until its watcher has seen one of our processes before it exec'd (the window the
    attack needs), then stop the watcher and return its report."""
    env = {"STRATA_PROBE_SECRET": secret}
    for _ in range(attempts):
        result = tools._run("runner", ("exec", cid, "true"), env_extra=env)
        assert result.code == 0, result.err
        if "after=strata-exec" in tools.runner("logs", cid).out:
            break
    tools.runner("exec", cid, "touch", "/tmp/probe-stop")
    wait_until(lambda: "watched " in tools.runner("logs", cid).out, "the watcher to finish")
    return tools.runner("logs", cid).out


def host_interpreters() -> set[str]:
    """dev:ino of every host file the runner's processes could have as their exe."""
    paths = {os.path.realpath(p) for p in (sys.executable, shutil.which("python3") or sys.executable, PYTHON)}
    return {f"{os.stat(p).st_dev}:{os.stat(p).st_ino}" for p in paths}


@as_root_and_user
@pytest.mark.parametrize("caps", [(), ("--cap-add", "SYS_PTRACE")], ids=["default-caps", "cap-sys-ptrace"])
def test_exec_child_exposes_no_host_binary_or_environment(tools: Tools, img: str, probe: Path,
                                                          caps: tuple[str, ...]) -> None:
    secret = f"strata-secret-{os.urandom(6).hex()}"
    with detached(tools, *caps, *with_probe(probe), img, "/probe", "watch", "120", secret) as cid:
        report = exec_until_seen(tools, cid, secret)
    observations = [dict(kv.split("=", 1) for kv in ln.split()[3:]) | {"comm": ln.split()[2]}
                    for ln in report.splitlines() if ln.startswith("obs ")]
    before_exec = [o for o in observations if o["comm"] == o["after"] == "strata-exec"]
    assert before_exec, f"the watcher never caught an exec child before its exec: the attack had no window\n{report}"
    assert all(o["comm"] == "strata-exec" for o in observations), report  # nothing else of ours is ever visible
    host = host_interpreters()
    for o in observations:
        assert o["environ"] != "LEAKED", report
        assert ":".join(o["exe"].split(":")[:2]) not in host, f"the container opened the host interpreter\n{report}"
    if not caps:  # non-dumpable: without CAP_SYS_PTRACE not even a look at its exe, environ or fds
        for o in before_exec:
            assert o["exe"] == o["environ"] == "EACCES" and o["fds"].endswith("/0"), report
    else:  # CAP_SYS_PTRACE may look: what it finds is the sealed copy, and an environment without the host's
        assert any("memfd:strata-exec" in o["exe"] for o in before_exec), report


@as_root_and_user
def test_exec_is_killed_with_its_runner(tools: Tools, img: str) -> None:
    """An exec'd process whose runner is killed does not linger, as root or as another user (a change of user
    clears the parent-death signal; it is set again after it)."""
    with detached(tools, img, "sleep", "1000") as cid:
        for user in ("0", "strata"):
            marker = str(2000 + int.from_bytes(os.urandom(2), "big") % 5000)
            proc = popen_runner(tools, "exec", "-u", user, cid, "sleep", marker)
            wait_until(lambda m=marker: bool(sleepers(m)), f"exec'd sleep {marker} to start")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            wait_until(lambda m=marker: not sleepers(m), f"sleep {marker} (-u {user}) to die with its runner")


def sleepers(marker: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                    found.append(int(p.name))
            except OSError:
                continue
    return found


# -- 4. host device inodes -------------------------------------------------------------------------------------------


def identity(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def snapshot(path: str) -> tuple[int, int, int, int, int]:
    st = os.stat(path)
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns


DEVICE_TARGETS = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/proc/kcore",
                  "/proc/keys", "/proc/timer_list")


HOST_NODES = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7), "/dev/random": (1, 8),
              "/dev/urandom": (1, 9), "/dev/tty": (5, 0)}


@as_root_and_user
def test_device_nodes_and_masks_are_the_containers_own(tools: Tools, img: str, probe: Path, tmp_path: Path,
                                                       executor: str) -> None:
    """Container root (CAP_CHOWN, CAP_FOWNER) chmods, chowns, touches and sets an xattr on every device node and
    every path masked with /dev/null: none of it may reach a node of the host's. The runner runs in a private mount
    namespace in which the host's nodes are sentinels (fresh nodes with the same numbers, bound over them), so the
    attack never points at a real host file. Ours and runc give the container nodes of its own; crun masks with
    the host's /dev/null read-only (EROFS), which holds as well. A user's container has the host's nodes bound in
    (a user namespace makes none): its root, the user, may change neither their mode, nor owner, nor a trusted
    xattr (EPERM); it may touch their times, as the user may the host's 0666 nodes (docs/rootless.md)."""
    sentinels = tmp_path / "host-dev"
    sentinels.mkdir()
    binds = []
    for path, (major, minor) in HOST_NODES.items():
        node = sentinels / Path(path).name
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        node.chmod(0o666)  # as the host's are (mknod's mode is cut by the umask)
        binds.append(f"mount --bind {node} {path}")
    before = {node.name: snapshot(str(node)) for node in sentinels.iterdir()}
    command = " ".join(shlex.quote(a) for a in runner_command(
        tools, "run", "--rm", *with_probe(probe), img, "sh", "-c",
        f"/probe devices 0:0 {' '.join(DEVICE_TARGETS)}; echo x > /dev/null && head -c 3 /dev/zero | od -An -tx1"))
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             " && ".join(binds) + f" && exec {command}"],
                            cwd=ROOT, env=tools.environ(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    if tools.rootless:
        assert {node.name: snapshot(str(node))[:3] for node in sentinels.iterdir()} == \
            {name: seen[:3] for name, seen in before.items()}, result.stdout
        for target in ("/dev/null", "/dev/zero", "/dev/tty", "/proc/keys", "/proc/timer_list"):
            for op in ("chmod", "chown", "setxattr"):
                assert f"{target} {op} EPERM" in out, result.stdout
        assert out[-1].split() == ["00", "00", "00"], result.stdout
        return
    assert {node.name: snapshot(str(node)) for node in sentinels.iterdir()} == before, result.stdout
    for target in ("/dev/null", "/dev/zero", "/dev/tty"):
        assert f"{target} chmod ok" in out and f"{target} chown ok" in out, result.stdout  # it changed its own node
    for target in ("/proc/keys", "/proc/timer_list"):  # masked: its own node, or the host's read-only
        assert (f"{target} chmod ok" in out or f"{target} chmod EROFS" in out), result.stdout
    assert out[-1].split() == ["00", "00", "00"], result.stdout  # the nodes still work


@as_root_and_user
def test_read_only_volume_inodes_cannot_change(tools: Tools, img: str, probe: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    sentinel = shared / "sentinel"
    sentinel.write_text("keep\n")
    for made in (shared, sentinel):  # a user's own: only :ro stands between the container and them
        tools.hand_over(made)
    before = snapshot(str(sentinel))
    result = tools.runner("run", "--rm", *with_probe(probe), "-v", f"{shared}:/v:ro", img, "/probe", "devices",
                          identity("/dev/null"), "/v/sentinel")
    assert result.code == 0, result.err
    for op in ("chmod", "chown", "utime", "setxattr"):
        assert f"/v/sentinel {op} EROFS" in result.out, result.out
    assert snapshot(str(sentinel)) == before


@as_root_and_user
def test_mknod_node_stays_unusable(tools: Tools, img: str, executor: str) -> None:
    """A node made in /dev with CAP_MKNOD (Docker's default) for a device the container was not given (/dev/mem)
    cannot be opened: our /dev is nodev once the default devices are bound (EACCES); runc and crun leave /dev
    dev and refuse in the devices cgroup (EPERM). Reading one byte is all the attempt does. A user's container
    has no such node to open: a user namespace may not make it (EPERM)."""
    result = tools.runner("run", "--rm", img, "sh", "-c", "mknod /dev/mine c 1 1 && head -c 1 /dev/mine >/dev/null")
    # runner-oci builds /dev with our executor's code (nodev once the nodes are bound): EACCES as ours
    refusal = ("Permission denied" if executor in ("strata", "runner-oci") and not tools.rootless
               else "Operation not permitted")
    assert result.code != 0 and refusal in result.err, (result.out, result.err)


# -- the container sees its own limits -------------------------------------------------------------------------------


def test_cgroup_limits_are_visible_read_only(tools: Tools, img: str, executor: str) -> None:
    """Each hierarchy is the container's own group, read-only. The tmpfs holding them is read-only under ours;
    runc and crun leave that tmpfs writable as Docker's containers show it on cgroup v1 (a directory made there is
    only in the container's mount namespace, and no controller is in it)."""
    result = tools.runner("run", "--rm", "-m", "64m", "--pids-limit", "50", img, "sh", "-c",
                          "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; "
                          "grep -E ':(memory|pids):' /proc/self/cgroup; "
                          "touch /sys/fs/cgroup/memory/x 2>&1; mkdir /sys/fs/cgroup/pids/y 2>&1; "
                          "grep ' /sys/fs/cgroup' /proc/self/mountinfo | cut -d' ' -f5,6")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == str(64 * 1024 * 1024) and lines[1] == "50", result.out
    assert all(line.endswith(":/") for line in lines[2:4]), result.out  # its own group is the root it sees
    assert "Read-only file system" in lines[4] and "Read-only file system" in lines[5], result.out
    mounts = dict(line.split() for line in lines[6:])
    assert mounts["/sys/fs/cgroup/memory"].startswith("ro,") and mounts["/sys/fs/cgroup/pids"].startswith("ro,")
    # runner-oci mounts a cgroup mount with our executor's code (rootfs.mount_cgroups): read-only as ours
    assert mounts["/sys/fs/cgroup"].startswith("ro," if executor in ("strata", "runner-oci") else "rw,"), mounts
