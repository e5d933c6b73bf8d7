"""Without root (issue 20): ``puller`` run by an ordinary user, in a user namespace of the user's subordinate ids.

Each test makes its own users (tests/rootless.py): one with subordinate ranges, one without, and runs the tools
as them with Debian's python3. What is checked: the store is the user's own (where, mode, owner), an image's
owners survive the trip into it (the same tree comparison against ``umoci unpack`` as tests/test_differential.py,
read inside the namespace), what a user namespace cannot make is said per layer and left out, one id without
ranges works and says so once, another user cannot read the store, a root store and a user's store are never
taken for each other, removal leaves nothing of the subordinate ids, containers run under our executor and under
runc and crun (``--runtime``) with the same confinement and leave nothing behind, and ``runner`` says in one line
what it cannot do yet.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.rootless import PYTHON, HostNetns, User, host_netns, user
from tests.scripts import image_script
from tests.tarmaker import HOSTILE, Entry, make_tar
from tests.terminal import Terminal
from tests.tools import Tools, mounts_under
from tests.treesnap import Node, differences, snapshot

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[User]:
    with user(tmp_path / "homes", ranges=True) as made:
        yield made


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[User]:
    """A user without subordinate ids."""
    with user(tmp_path / "homes", ranges=False) as made:
        yield made


@pytest.fixture(autouse=True)
def _homes(tmp_path: Path) -> None:
    (tmp_path / "homes").mkdir(mode=0o755)


def _store_of(u: User) -> Path:
    return u.home / ".local" / "share" / "strata"


def test_a_user_pulls_into_a_store_of_their_own(alice: User, test_image: str) -> None:
    pulled = alice.tool("puller", "pull", "--quiet", test_image)
    assert pulled.code == 0, pulled.err
    assert pulled.err == ""  # full ranges: nothing to say
    store = _store_of(alice)
    st = store.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, 0o700)
    assert json.loads((store / "strata.json").read_text()) == {"overlayXattrs": "user"}
    listed = alice.tool("puller", "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert listed.code == 0 and listed.out.split() == [test_image], listed.err
    # XDG_DATA_HOME moves it, as the XDG spec says
    elsewhere = alice.home / "data"
    moved = alice.tool("puller", "pull", "--quiet", test_image, XDG_DATA_HOME=str(elsewhere))
    assert moved.code == 0, moved.err
    assert (elsewhere / "strata" / "strata.json").exists()


def test_an_images_owners_survive_into_a_users_store(alice: User, tools: Tools, rich_image: str,
                                                     rich_layout: Path, tmp_path: Path) -> None:
    """The rich image (owners 0, 1000, 65534, setuid, caps, xattrs, whiteouts, an opaque dir) as the user's
    namespace sees it equals ``umoci unpack`` as root: only the two device nodes are missing, and said so."""
    import subprocess

    pulled = alice.tool("puller", "pull", "--quiet", rich_image)
    assert pulled.code == 0, pulled.err
    said = pulled.err.splitlines()
    assert len(said) == 1 and "left out 2 device nodes: a user namespace cannot make them" in said[0], said
    assert said[0].startswith("puller: warning: layer ")

    scratch = alice.home / "scratch"
    scratch.mkdir()
    os.chown(scratch, alice.uid, alice.gid)
    seen = alice.tool("tests.rootless_driver", "snapshot", str(_store_of(alice)), rich_image, str(scratch))
    assert seen.code == 0, seen.err
    ours = {path: Node(*fields[:7], tuple(fields[7]) if fields[7] else None,  # type: ignore[misc]
                       tuple((k, bytes.fromhex(v)) for k, v in fields[8]), fields[9])
            for path, fields in json.loads(seen.out).items()}

    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{rich_layout}:{image_script.RICH_TAG}", str(bundle)],
                   check=True, capture_output=True, text=True)
    theirs = snapshot(bundle / "rootfs")
    devices = {p for p, n in theirs.items() if n.type in ("char", "block")}
    assert devices == {"rich/char-null", "rich/block-loop0"}
    assert len(theirs) > 300
    diff = differences(ours, {p: n for p, n in theirs.items() if p not in devices})
    assert diff == [], "\n".join(diff)

    # on the host, every file of the store is the user's or one of its subordinate ids: none is root's
    strays = [p for p in _walk(_store_of(alice)) if not alice.owns(os.lstat(p).st_uid)]
    assert strays == []


def _walk(top: Path) -> Iterator[str]:
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            yield os.path.join(parent, name)


def test_without_ranges_one_id_is_mapped_and_the_user_is_told_once(bob: User, test_image: str) -> None:
    first = bob.tool("puller", "pull", "--quiet", test_image)
    assert first.code == 0, first.err
    said = first.err.splitlines()
    assert len(said) == 1 and said[0].startswith("puller: warning: ") and "/etc/subuid" in said[0], said
    again = bob.tool("puller", "images")
    assert again.code == 0 and again.err == "", again.err
    owners = {os.lstat(p).st_uid for p in _walk(_store_of(bob))}
    assert owners == {bob.uid}


def test_another_user_cannot_read_or_change_the_store(alice: User, bob: User, test_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    store = str(_store_of(alice))
    for args in (("images",), ("rmi", test_image), ("pull", test_image)):
        tried = bob.tool("puller", "--root", store, *args)
        assert tried.code != 0
        assert tried.err.startswith("puller: error: ") and len(tried.err.splitlines()) == 1, tried.err
        assert "Permission denied" in tried.err or "permission denied" in tried.err, tried.err
    assert alice.tool("puller", "images", "--quiet").out.strip() != ""


def test_a_root_store_and_a_users_store_are_never_taken_for_each_other(alice: User, tools: Tools,
                                                                        test_image: str, tmp_path: Path) -> None:
    # root's store, where the user may go: the format, not the mode, refuses it
    assert tools.puller("pull", "--quiet", test_image).code == 0
    os.chmod(tools.root, 0o777)
    tried = alice.tool("puller", "--root", str(tools.root), "pull", "--quiet", test_image)
    assert tried.code != 0
    assert "was made by root" in tried.err and len(tried.err.splitlines()) == 1, tried.err
    # the user's store, as root
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    as_root = Tools(_store_of(alice), tools.docker_config, tools.settings).puller("pull", "--quiet", test_image)
    assert as_root.code != 0
    assert "was made by a user without root" in as_root.err and len(as_root.err.splitlines()) == 1, as_root.err


def test_rmi_in_the_namespace_leaves_nothing_behind(alice: User, rich_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", rich_image).code == 0
    store = _store_of(alice)
    assert any(os.lstat(p).st_uid != alice.uid for p in _walk(store))  # the image's owners are subordinate ids
    removed = alice.tool("puller", "rmi", rich_image)
    assert removed.code == 0, removed.err
    left = [p for p in _walk(store / "layers")] + [p for p in _walk(store / "blobs") if os.path.isfile(p)]
    assert left == []


RUN = ("run", "--rm", "--network", "none")
DOCKER_CAPS = "00000000a80425fb"  # Docker's 14 default capabilities, as runc sets them


def test_a_user_runs_execs_logs_stops_and_removes_a_container(alice: User, test_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    ran = alice.tool("runner", *RUN, test_image, "sh", "-c", "id -u; cat /proc/self/uid_map; hostname")
    assert ran.code == 0, ran.err
    uid, map0, map1, _ = ran.out.split("\n", 3)
    assert uid == "0" and map0.split() == ["0", str(alice.uid), "1"] and map1.split()[0] == "1", ran.out
    started = alice.tool("runner", "run", "-d", "--name", "web", "--network", "none", test_image,
                         "sh", "-c", "echo up; exec sleep 300")
    assert started.code == 0, started.err
    exec_ = alice.tool("runner", "exec", "web", "sh", "-c", "echo in $(hostname); ps -o pid,comm | grep -c sleep")
    assert exec_.code == 0 and exec_.out.split() == ["in", started.out.strip()[:12], "1"], exec_.err
    assert alice.tool("runner", "logs", "web").out == "up\n"
    listed = alice.tool("runner", "ps", "--format", "{{.Names}} {{.Status}}")
    assert listed.out.startswith("web Up"), listed.out
    stopped = alice.tool("runner", "stop", "-t", "1", "web")
    assert stopped.code == 0, stopped.err
    assert alice.tool("runner", "rm", "web").code == 0
    assert alice.tool("runner", "ps", "-a", "-q").out == ""
    assert os.listdir(_store_of(alice) / "containers") == []


EXECUTORS = ("strata", "runc", "crun")  # ours, and the two OCI runtimes --runtime takes without root too


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_a_users_container_is_confined_as_roots(alice: User, test_image: str, runtime: str) -> None:
    """The same walls as a root-started container, inside the user's namespace, under each executor: Docker's
    capabilities (of the namespace), the seccomp filter, read-only /sys, masked /proc paths, no device node made, a
    /dev of bound host nodes (the host's owner, unmapped: nobody), no cgroup shown (an empty /sys/fs/cgroup, as
    there is none of the container's own), and nothing of the host's root that the container's root may change (a
    sentinel of root's, bound in, answers EPERM to chmod and EACCES to a write)."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    sentinels = alice.home / "sentinels"
    sentinels.mkdir(mode=0o755)
    (sentinels / "roots").write_text("root's\n")
    (sentinels / "roots").chmod(0o644)
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; touch /sys/x 2>&1; "
              " ls -l /proc/keys | cut -c1; ls -ln /dev/null | tr -s ' ' | cut -d' ' -f3;"
              " echo x > /dev/null && echo null-works; mknod /dev/sda b 8 0 2>&1;"
              " echo cgroups=$(ls -A /sys/fs/cgroup | wc -l); chmod 666 /s/roots 2>&1; echo changed > /s/roots")
    ran = alice.tool("runner", *RUN, "--runtime", runtime, "-v", f"{sentinels}:/s", test_image, "sh", "-c", script)
    assert ran.code != 0  # the write's
    lines = ran.out.splitlines()
    assert f"CapEff:\t{DOCKER_CAPS}" in lines and "Seccomp:\t2" in lines, ran.out
    assert any("/sys/x" in line and "Read-only file system" in line for line in lines), ran.out
    assert "c" in lines  # /proc/keys masked by /dev/null's bind, as Docker masks it
    assert "65534" in lines  # /dev/null is the host's node, its owner unmapped here
    assert "null-works" in lines
    assert any("mknod" in line and "Operation not permitted" in line for line in lines), ran.out
    assert "cgroups=0" in lines, ran.out
    assert any("chmod" in line and "Operation not permitted" in line for line in lines), ran.out
    assert "Permission denied" in ran.err, ran.err  # the shell's word on the redirection
    assert (sentinels / "roots").read_text() == "root's\n"
    assert stat.S_IMODE((sentinels / "roots").stat().st_mode) == 0o644


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_without_ranges_a_container_runs_as_the_user_alone(bob: User, test_image: str, runtime: str) -> None:
    assert bob.tool("puller", "pull", "--quiet", test_image).code == 0
    ran = bob.tool("runner", *RUN, "--runtime", runtime, test_image, "sh", "-c",
                   "id -u; chown 42 /etc/passwd 2>&1; ls -n /etc/passwd")
    assert ran.code == 0, ran.err
    out = ran.out.splitlines()
    assert out[0] == "0" and "Invalid argument" in out[1] and out[2].split()[2:4] == ["0", "0"], ran.out


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_commit_of_a_users_container(alice: User, test_image: str, runtime: str) -> None:
    """The rw layer packs with the image's owners and a whiteout; a running container cannot be frozen without
    a cgroup, which commit says in one line under each executor (runc and crun are not asked: they would find no
    freezer either), and --pause=false packs it live (podman's default)."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    made = alice.tool("runner", "run", "-d", "--name", "keep", "--network", "none", "--runtime", runtime,
                      test_image, "sh", "-c",
                      "mkdir /d && echo data > /d/f && chown -R 42:43 /d && rm /bin/true && exec sleep 300")
    assert made.code == 0, made.err
    waited = alice.tool("runner", "exec", "keep", "sh", "-c", "while [ ! -f /d/f ]; do sleep 0.05; done")
    assert waited.code == 0
    paused = alice.tool("runner", "commit", "keep", "localhost/c:1")
    assert paused.code == 125 and "--pause=false" in paused.err and len(paused.err.splitlines()) == 1, paused.err
    live = alice.tool("runner", "commit", "--pause=false", "keep", "localhost/c:1")
    assert live.code == 0, live.err
    ran = alice.tool("runner", *RUN, "localhost/c:1", "sh", "-c", "ls -ln /d/f; cat /d/f; ls /bin/true 2>&1")
    fields = ran.out.splitlines()[0].split()
    assert fields[2:4] == ["42", "43"] and ran.out.splitlines()[1] == "data", ran.out
    assert "No such file" in ran.out.splitlines()[2]
    assert alice.tool("runner", "rm", "-f", "keep").code == 0


RUNTIMES = ("runc", "crun")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_user_runs_a_container_under_a_runtime(alice: User, test_image: str, runtime: str) -> None:
    """``--runtime runc|crun`` without root: the runtime runs in the user's namespace (the container shares it:
    uid 0 is the user, the image's owners are subordinate ids) and create, start, exec, logs, ps, stop, kill and rm
    work as under our executor. After rm nothing is left: no container, runtime state, mount or process (but the
    keeper of the namespace), and nothing of root's in the user's home."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    made = alice.tool("runner", "create", "--name", "once", "--network", "none", "--runtime", runtime, test_image,
                      "sh", "-c", "id; cat /proc/self/uid_map; ls -ldn /root /home/strata; "
                      "touch /tmp/mine && chown 42:43 /tmp/mine && echo chowned")
    assert made.code == 0, made.err
    ran = alice.tool("runner", "start", "-a", "once")
    assert ran.code == 0, ran.err
    ident, map0, map1, home_dir, root_dir, chowned = ran.out.splitlines()  # ls sorts its arguments
    assert ident.startswith("uid=0(root) gid=0(root)"), ran.out
    assert alice.subuids is not None
    assert map0.split() == ["0", str(alice.uid), "1"] and map1.split() == ["1", str(alice.subuids[0]), "65536"], \
        ran.out
    assert root_dir.split()[0] == "drwx------" and root_dir.split()[2:4] == ["0", "0"], ran.out
    assert home_dir.split()[2:4] == ["1000", "1000"] and chowned == "chowned", ran.out
    mine = os.lstat(_store_of(alice) / "containers" / made.out.strip() / "upper" / "tmp" / "mine")
    assert (mine.st_uid, mine.st_gid) == (alice.subuids[0] + 41, _subgid_start(alice) + 42)
    assert alice.tool("runner", "rm", "once").code == 0

    started = alice.tool("runner", "run", "-d", "--name", "web", "--network", "none", "--runtime", runtime,
                         test_image, "sh", "-c", "echo up; exec sleep 300")
    assert started.code == 0, started.err
    exec_ = alice.tool("runner", "exec", "web", "sh", "-c",
                       "echo in $(hostname); id -u; ps -o pid,comm | grep -c sleep")
    assert exec_.code == 0 and exec_.out.split() == ["in", started.out.strip()[:12], "0", "1"], exec_.err
    assert alice.tool("runner", "logs", "web").out == "up\n"
    assert _status(alice, "web").startswith("Up"), _status(alice, "web")
    stopped = alice.tool("runner", "stop", "-t", "1", "web")
    assert stopped.code == 0, stopped.err
    assert _status(alice, "web").startswith("Exited (137)")  # sleep as PID 1 takes no SIGTERM: killed
    assert alice.tool("runner", "start", "web").code == 0 and _status(alice, "web").startswith("Up")
    assert alice.tool("runner", "kill", "web").code == 0
    assert _wait_for(lambda: _status(alice, "web").startswith("Exited (137)")), _status(alice, "web")
    removed = alice.tool("runner", "rm", "web")
    assert removed.code == 0, removed.err
    _nothing_left(alice, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_user_has_a_terminal_under_a_runtime(alice: User, test_image: str, runtime: str) -> None:
    """``run -it`` under a runtime: the pty comes back on the console socket, as for root."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    env = [f"{k}={v}" for k, v in alice.env(TERM="xterm").items()]
    term = Terminal(["env", "-i", *env, *alice.argv(PYTHON, "-m", "runner", "run", "--rm", "-it", "--network",
                                                   "none", "--runtime", runtime, test_image, "sh")])
    try:
        term.type("echo TYPED$((40+2)) $(tty); exit 7\r")
        out = term.read_until(b"TYPED42 /dev/pts/0")
    finally:
        code = term.close()
    assert b"TYPED42 /dev/pts/0" in out and code == 7
    _nothing_left(alice, runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rm_f_after_a_runtimes_monitor_was_killed_leaves_nothing(alice: User, test_image: str, runtime: str) -> None:
    """A killed monitor leaves the runtime's container running (as under root): the overlay lives on only in its
    mount namespace, and ``rm -f`` ends it all."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    started = alice.tool("runner", "run", "-d", "--name", "orphan", "--network", "none", "--runtime", runtime,
                         test_image, "sleep", "300")
    assert started.code == 0, started.err
    monitors = [p for p in _user_processes(alice, "python3") if "orphan" in _cmdline(p)]
    assert len(monitors) == 1, monitors
    os.kill(monitors[0], 9)
    assert _wait_for(lambda: not os.path.exists(f"/proc/{monitors[0]}"))
    assert _status(alice, "orphan").startswith("Up")
    removed = alice.tool("runner", "rm", "-f", "orphan")
    assert removed.code == 0, removed.err
    _nothing_left(alice, runtime)


def _subgid_start(u: User) -> int:
    line = next(ln for ln in Path("/etc/subgid").read_text().splitlines() if ln.startswith(f"{u.name}:"))
    return int(line.split(":")[1])


def _status(u: User, name: str) -> str:
    listed = u.tool("runner", "ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}")
    assert listed.code == 0, listed.err
    return listed.out.strip()


def _wait_for(done: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _nothing_left(u: User, runtime: str) -> None:
    """After rm: no container, no runtime state, no mount naming the home (here, or in a process of the user's:
    the overlay lived in mount namespaces of the user's own), no process of the user's or its subordinate ids but
    the keeper of its namespace, and nothing in the home owned by root."""
    store = _store_of(u)
    assert os.listdir(store / "containers") == []
    assert not (store / "runtime" / runtime).exists() or os.listdir(store / "runtime" / runtime) == []
    keeper = int(Path(f"/tmp/strata-run-{u.uid}/userns.pid").read_text().split()[0])
    assert _wait_for(lambda: _processes_of(u) == [keeper]), [(p, _cmdline(p)) for p in _processes_of(u)]
    assert mounts_under(u.home) == []
    assert str(u.home) not in Path(f"/proc/{keeper}/mountinfo").read_text()
    assert [p for p in _walk(u.home) if os.lstat(p).st_uid == 0] == []
    # and nothing of the user's in /run (runc's and crun's default state dirs) or left at the top of /tmp (the
    # console socket's dir) but its run-time directory
    assert [p for p in _walk(Path("/run")) if _owned_by(u, p)] == []
    assert [n for n in os.listdir("/tmp") if _owned_by(u, f"/tmp/{n}") and n != f"strata-run-{u.uid}"] == []


def _owned_by(u: User, path: str) -> bool:
    try:
        return u.owns(os.lstat(path).st_uid)
    except FileNotFoundError:  # another test's, gone meanwhile
        return False


def _processes_of(u: User) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if u.owns(os.stat(f"/proc/{entry}").st_uid):
                    found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


@pytest.mark.parametrize(("options", "says"), [
    (("-m", "64m", "--network", "none"), "resource limits (-m, --cpus, --pids-limit, ...) need a cgroup"),
    (("--pids-limit", "10", "--network", "none"), "need a cgroup this user can write"),
    (("-p", "80:80"), "cannot publish on port 80 without root: this host lets users bind from 1024 up"),
])
def test_what_needs_root_is_refused_in_one_line(alice: User, test_image: str, options: tuple[str, ...],
                                                says: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    ran = alice.tool("runner", "run", "--rm", *options, test_image, "true")
    assert ran.code == 125 and says in ran.err and len(ran.err.splitlines()) == 1, ran.err
    assert alice.tool("runner", "ps", "-a", "-q").out == ""


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_host_network_gets_the_hosts_sys_read_only(alice: User, test_image: str, runtime: str) -> None:
    """sysfs may be mounted only by the namespace that owns the network namespace: the host's /sys is bound
    instead, read-only in every submount (runc 1.1.5 would fail on its sysfs: runner/executor/runtime.py gives both
    runtimes the bind)."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    ran = alice.tool("runner", "run", "--rm", "--network", "host", "--runtime", runtime, test_image, "sh", "-c",
                     "ls /sys/class/net | grep -qx lo && echo has-lo; touch /sys/x 2>&1; "
                     "touch /sys/fs/cgroup/x 2>&1")
    assert ran.code != 0
    lines = ran.out.splitlines()
    assert lines[0] == "has-lo" and all("Read-only file system" in line for line in lines[1:]), ran.out


def test_a_bundle_made_by_a_user(alice: User, test_image: str) -> None:
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    target = alice.home / "bundle"
    made = alice.tool("runner", "bundle", test_image, str(target))
    assert made.code == 0, made.err
    assert json.loads((target / "config.json").read_text())["root"]["path"] == "rootfs"
    assert (target / "rootfs" / "bin" / "busybox").is_file()


def test_one_namespace_for_all_of_a_users_commands(alice: User, test_image: str) -> None:
    """The first command leaves a keeper; later ones join its namespace (so exec reaches what run made)."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    keeper = Path(f"/tmp/strata-run-{alice.uid}/userns.pid")
    pid = int(keeper.read_text().split()[0])
    first = os.readlink(f"/proc/{pid}/ns/user")
    ran = alice.tool("runner", *RUN, test_image, "readlink", "/proc/self/ns/user")
    assert ran.out.strip() == first
    assert stat.S_IMODE(os.stat(keeper.parent).st_mode) == 0o700


@pytest.mark.parametrize("planted", ["symlink", "fifo", "open directory", "someone else's"])
def test_a_run_directory_planted_by_another_user_is_refused(alice: User, bob: User, test_image: str,
                                                            tmp_path: Path, planted: str) -> None:
    """/tmp/strata-run-UID is a name anyone can take first: what is not the user's own private directory is
    refused in one line, and nothing there is followed or written."""
    run_dir = Path(f"/tmp/strata-run-{alice.uid}")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    owner = bob.uid
    if planted == "symlink":
        run_dir.symlink_to(decoy)
    elif planted == "fifo":
        os.mkfifo(run_dir, 0o600)
    else:
        run_dir.mkdir(mode=0o700)
        if planted == "open directory":
            owner = alice.uid
            run_dir.chmod(0o755)
    os.lchown(run_dir, owner, owner)
    tried = alice.tool("puller", "images")
    assert tried.code != 0
    assert "refusing the run-time directory" in tried.err and len(tried.err.splitlines()) == 1, tried.err
    assert os.listdir(decoy) == []


def _extract(u: User, tmp_path: Path, *entries: Entry) -> tuple[dict[str, object], Path]:
    """The unpacker on a tar of ``entries``, as ``u`` in its namespace, into a fresh dir of the user's."""
    work = u.home / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, u.uid, u.gid)
    tar = tmp_path / "layer.tar"
    tar.write_bytes(make_tar(*entries))
    tar.chmod(0o644)
    dest = work / f"dest{len(os.listdir(work))}"
    done = u.tool("tests.rootless_driver", "extract", str(tar), str(dest))
    assert done.code == 0, done.err
    return json.loads(done.out), dest


@pytest.mark.parametrize(("case", "entries", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_layer_unpacked_by_a_user_writes_nothing_outside(alice: User, tmp_path: Path, case: str,
                                                                   entries: list[Entry], message: str) -> None:
    outside = alice.home / "outside"  # the user's own: a file the user could write, were the unpacker fooled
    outside.mkdir()
    (outside / "victim").write_bytes(b"safe")
    os.chown(outside, alice.uid, alice.gid)
    os.chown(outside / "victim", alice.uid, alice.gid)
    resolved = [Entry(e.name, e.kind, e.data, e.mode, e.uid, e.gid, e.link.replace("OUTSIDE", str(outside)))
                for e in entries]
    said, _ = _extract(alice, tmp_path, *resolved)
    assert said.get("kind") == "HOSTILE" and message in str(said.get("error")), said
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_bytes() == b"safe" and os.stat(outside / "victim").st_nlink == 1
    assert not (alice.home / "work" / "escaped").exists() and not (alice.home / "escaped").exists()


def test_what_a_namespace_cannot_make_is_left_out_and_counted(alice: User, tmp_path: Path) -> None:
    said, dest = _extract(alice, tmp_path, Entry("dev/", "dir"), Entry("dev/null", "chr", dev=(1, 3)),
                          Entry("dev/loop0", "blk", dev=(7, 0)), Entry("dev/also-null", "hardlink", link="dev/null"),
                          Entry("fifo", "fifo"), Entry("f", data=b"x", xattrs={"trusted.secret": b"1",
                                                                                 "user.kept": b"2"}))
    assert said == {"left_out": ["3 device nodes", "1 trusted.* xattrs"]}
    assert sorted(os.listdir(dest / "dev")) == []
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert os.getxattr(dest / "f", "user.kept") == b"2"


def test_owners_beyond_the_users_ranges_are_refused_and_one_id_owns_all(alice: User, bob: User,
                                                                         tmp_path: Path) -> None:
    said, _ = _extract(alice, tmp_path, Entry("far", data=b"x", uid=70000))
    assert said.get("kind") == "UNSUPPORTED", said
    assert "owned by 70000:0, beyond the 65537 ids this user's namespace maps" in str(said.get("error"))
    said, dest = _extract(bob, tmp_path, Entry("d/", "dir", uid=42), Entry("d/f", data=b"x", uid=1000, gid=1000),
                          Entry("d/.wh.gone"))
    assert said == {"left_out": []}
    assert {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in _walk(dest)} == {(bob.uid, bob.gid)}
    assert stat.S_ISCHR(os.lstat(dest / "d" / "gone").st_mode)  # the whiteout, made in the namespace


@pytest.fixture
def host() -> Iterator[HostNetns]:
    with host_netns() as made:
        yield made


def _user_processes(u: User, named: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
                if os.stat(f"/proc/{entry}").st_uid == u.uid and os.path.basename(argv0) == named:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_the_default_network_of_a_user_is_pastas(alice: User, test_image: str, host: HostNetns) -> None:
    """Out through pasta to the host's address, as the user; the host's loopback stays out of reach (as under
    root's bridge); --dns is the container's resolver; pasta ends with the container."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    servers = [host.serve("hello from the host\n", host.SERVER, 18081),
               host.serve("hello from the host\n", "127.0.0.1", 18082)]
    try:
        get = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc'
        ran = alice.tool("runner", "run", "--rm", "--dns", "10.77.0.53", test_image, "sh", "-c",
                         f"{get} {host.SERVER} 18081 | tail -1; {get} {host.GATEWAY} 18082 | grep -c hello; "
                         f"{get} 127.0.0.1 18082 | grep -c hello; grep nameserver /etc/resolv.conf",
                         netns=host.name)
        assert ran.out.splitlines() == ["hello from the host", "0", "0", "nameserver 10.77.0.53"], \
            (ran.out, ran.err)
    finally:
        for server in servers:
            server.kill()
            server.wait()
    assert _user_processes(alice, "pasta") == []


@pytest.mark.parametrize("runtime", EXECUTORS)
def test_a_user_publishes_a_port_through_pasta(alice: User, test_image: str, host: HostNetns, runtime: str) -> None:
    """Under each executor: a runtime joins the namespace pasta serves by its /proc path, as root's joins a
    bridge's."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    started = alice.tool("runner", "run", "-d", "--name", "web", "-p", "18090:80", "--runtime", runtime, test_image,
                         "sh", "-c",
                         "mkdir -p /www && echo hello from the container > /www/index.html && "
                         "exec httpd -f -p 80 -h /www", netns=host.name)
    assert started.code == 0, started.err
    assert host.get(18090) == "hello from the container\n"
    assert alice.tool("runner", "port", "web", netns=host.name).out == "80/tcp -> 0.0.0.0:18090\n"
    listed = alice.tool("runner", "ps", "--format", "{{.Names}} {{.Ports}}", netns=host.name)
    assert listed.out == "web 0.0.0.0:18090->80/tcp\n", listed
    assert len(_user_processes(alice, "pasta")) == 1
    assert alice.tool("runner", "rm", "-f", "web", netns=host.name).code == 0
    assert _user_processes(alice, "pasta") == []
    assert host.get(18090, tries=1) is None


def test_a_users_containers_reach_each_other_by_name_on_a_user_network(alice: User, test_image: str,
                                                                        host: HostNetns, probe: Path) -> None:
    """A user network lives in a network namespace of the store's (runner/net/sandbox.py): containers on it
    reach each other by name and the host's address through pasta, not the host's loopback; -p is forwarded
    from the user's side; ``connect`` adds a second network; after the last container and ``network rm``
    nothing of it runs, and no record is left in the run-time directory."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    for net in ("front", "back"):
        assert alice.tool("runner", "network", "create", net, netns=host.name).code == 0
    serve = ("mkdir -p /www && echo hello from {0} > /www/index.html && exec httpd -f -p 80 -h /www")
    for name, net, extra in (("db", "back", ()), ("web", "front", ("-p", "18091:80"))):
        started = alice.tool("runner", "run", "-d", "--name", name, "--network", net, *extra, test_image, "sh",
                             "-c", serve.format(name), netns=host.name)
        assert started.code == 0, started.err
    shutil.copy(probe, alice.home / "probe")  # busybox's nc has no UDP: the probe echoes datagrams
    started = alice.tool("runner", "run", "-d", "--name", "echo", "--network", "front", "-p", "18092:9999/udp", "-v",
                         f"{alice.home / 'probe'}:/probe:ro", test_image, "/probe", "udp-echo", "9999",
                         netns=host.name)
    assert started.code == 0, started.err
    server = host.serve("hello from the host\n", host.SERVER, 18081)
    try:
        get = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc'
        ran = alice.tool("runner", "run", "--rm", "--network", "front", test_image, "sh", "-c",
                         f"{get} web 80 | tail -1; {get} db 80 | grep -c hello; {get} {host.SERVER} 18081 | tail -1;"
                         f" {get} {host.GATEWAY} 18081 | grep -c hello", netns=host.name)
        assert ran.out.splitlines() == ["hello from web", "0", "hello from the host", "0"], (ran.out, ran.err)
        assert host.get(18091) == "hello from web\n"
        assert _udp(host, 18092, "ping") == "echo:ping"
        assert alice.tool("runner", "port", "web", netns=host.name).out == "80/tcp -> 0.0.0.0:18091\n"
        assert alice.tool("runner", "network", "connect", "back", "web", netns=host.name).code == 0
        ran = alice.tool("runner", "exec", "web", "sh", "-c", f"{get} db 80 | tail -1", netns=host.name)
        assert ran.out == "hello from db\n", (ran.out, ran.err)
        assert alice.tool("runner", "network", "disconnect", "back", "web", netns=host.name).code == 0
        ran = alice.tool("runner", "exec", "web", "sh", "-c", "grep -cw db /etc/hosts", netns=host.name)
        assert ran.out == "0\n", (ran.out, ran.err)
        busy = alice.tool("runner", "network", "rm", "back", netns=host.name)
        assert busy.code != 0 and "active endpoints (db)" in busy.err
    finally:
        server.kill()
        server.wait()
    assert alice.tool("runner", "rm", "-f", "web", "db", "echo", netns=host.name).code == 0
    assert host.get(18091, tries=1) is None
    assert alice.tool("runner", "network", "rm", "front", "back", netns=host.name).code == 0
    assert _user_processes(alice, "pasta") == []
    assert len(_user_processes(alice, "sleep")) == 1  # the user namespace's keeper alone
    assert not list(Path(f"/tmp/strata-run-{alice.uid}").glob("netns-*.json"))


def _udp(host: HostNetns, port: int, text: str) -> str | None:
    """What a UDP server on 127.0.0.1:PORT of the host's namespace answers to TEXT (None: nothing in 5 s)."""
    code = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)\n"
            "for _ in range(25):\n"
            "    s.sendto(sys.argv[2].encode(), ('127.0.0.1', int(sys.argv[1])))\n"
            "    try: print(s.recv(4096).decode(), end=''); sys.exit(0)\n"
            "    except OSError: pass\n"
            "sys.exit(1)\n")
    done = host.run(sys.executable, "-c", code, str(port), text)
    return done.stdout if done.returncode == 0 else None


def test_a_dead_network_namespace_is_replaced_and_its_endpoints_swept(alice: User, test_image: str,
                                                                      host: HostNetns) -> None:
    """The keeper of the store's network namespace killed (as a restart would): the next change makes a new
    one, the endpoint that went with the old one is dropped from the records, and names resolve again."""
    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    assert alice.tool("runner", "network", "create", "net", netns=host.name).code == 0
    assert alice.tool("runner", "run", "-d", "--name", "old", "--network", "net", test_image, "sleep", "300",
                      netns=host.name).code == 0
    [record] = Path(f"/tmp/strata-run-{alice.uid}").glob("netns-*.json")
    keeper, pasta = json.loads(record.read_text())["keeper"], json.loads(record.read_text())["pasta"]
    os.kill(keeper, 9)
    ran = alice.tool("runner", "run", "--rm", "--network", "net", "--name", "new", test_image, "sh", "-c",
                     "ip -o -4 addr show eth0 | wc -l; grep -c old /etc/hosts", netns=host.name)
    assert ran.out.splitlines() == ["1", "0"], (ran.out, ran.err)
    assert pasta not in _user_processes(alice, "pasta")
    inspected = json.loads(alice.tool("runner", "network", "inspect", "net", netns=host.name).out)
    assert inspected[0]["Containers"] == {}, inspected
    assert alice.tool("runner", "rm", "-f", "old", netns=host.name).code == 0
    assert alice.tool("runner", "network", "rm", "net", netns=host.name).code == 0
    assert _user_processes(alice, "pasta") == []


@pytest.mark.parametrize("forged", ["another boot", "another start time"])
def test_a_pasta_record_naming_another_process_is_left_alone(alice: User, test_image: str, forged: str) -> None:
    """pasta.json carried over a restart (or naming a pid reused since) must not make ``rm`` signal whatever
    process of the user's has that pid now: the boot and the start time are checked, through a pidfd."""
    from shared.proc import boot_id, read_stat

    assert alice.tool("puller", "pull", "--quiet", test_image).code == 0
    started = alice.tool("runner", "run", "-d", "--network", "none", test_image, "sleep", "300")
    assert started.code == 0, started.err
    cid = started.out.strip()
    sentinel = subprocess.Popen(alice.argv("sleep", "300"))
    try:
        stat = read_stat(sentinel.pid)
        assert stat is not None
        record = {"pid": sentinel.pid, "ports": [],
                  "started": stat.start_time if forged == "another boot" else stat.start_time + 1,
                  "boot": "0" * 8 if forged == "another boot" else boot_id()}
        path = _store_of(alice) / "containers" / cid / "pasta.json"
        wrote = alice.run(PYTHON, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(path),
                          json.dumps(record))
        assert wrote.code == 0, wrote.err
        assert alice.tool("runner", "rm", "-f", cid).code == 0
        assert sentinel.poll() is None, "rm signalled a process the record only named"
    finally:
        sentinel.kill()
        sentinel.wait()
