"""Users of the tests' own making, to run the tools without root (issue 20).

Each user is made with ``useradd`` for one test session (or one test) and removed with ``userdel``, which also
drops its lines of ``/etc/subuid`` and ``/etc/subgid``; its home is a temp dir of the test's. A user "with ranges"
gets the 65536 subordinate ids useradd hands out (login.defs' SUB_UID_COUNT); one "without" gets none. The tools
run as the user with Debian's ``/usr/bin/python3`` (this machine's ``python3`` may be a root-only install), the
checkout and the .venv's packages on its path, as ``scripts/test unit`` runs the unit tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from shared.proc import read_stat
from tests.tools import ROOT, Result, Tools

PYTHON = "/usr/bin/python3"
# useradd refuses, not waits, while another holds /etc/passwd.lock: the workers take turns by an advisory flock
# on /etc/passwd, opened read-only (nothing of the machine's is written by it, and nothing is left behind)
_LOCK = Path("/etc/passwd")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path
    subuids: tuple[int, int] | None  # (start, count)

    def env(self, **extra: str) -> dict[str, str]:
        sites = sorted((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
        return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(self.home), "LANG": "C.UTF-8",
                "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, sites)]), "PYTHONDONTWRITEBYTECODE": "1",
                "USER": self.name, "LOGNAME": self.name, **extra}

    def argv(self, *args: str) -> list[str]:
        # a login's credentials: its bounding set stays full, or setuid newuidmap could not map anything
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", *args]

    def run(self, *args: str, timeout: float = 120, netns: str | None = None, **env: str) -> Result:
        """``args`` as this user, in the checkout (so ``-m puller`` is this checkout's); in the test's network
        namespace NETNS, if given, as if that were the user's host: its network namespace alone (nsenter), not
        ``ip netns exec``'s, which also mounts a sysfs of its own without the host's cgroup mounts, and runc and
        crun look for those even when they make no group."""
        where = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []
        proc = subprocess.run([*where, *self.argv(*args)], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=self.env(**env), stdin=subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def tool(self, tool: str, *args: str, netns: str | None = None, **env: str) -> Result:
        return self.run(PYTHON, "-m", tool, *args, netns=netns, **env)

    def owns(self, uid: int) -> bool:
        """Is ``uid`` (as the host sees it) the user's own or one of its subordinate ids?"""
        if uid == self.uid:
            return True
        return self.subuids is not None and self.subuids[0] <= uid < self.subuids[0] + self.subuids[1]


@dataclass(frozen=True)
class UserTools(Tools):
    """The two CLIs against a store of USER's, run as that user (in its one namespace) with Debian's python3: the
    same calls as root's :class:`Tools`, so a battery's attacks run unchanged both ways (conftest's ``who``)."""

    user: User
    rootless: ClassVar[bool] = True

    def command(self, tool: str, *args: str) -> list[str]:
        return self.user.argv(PYTHON, "-m", tool, "--root", str(self.root), *args)

    def environ(self, **extra: str) -> dict[str, str]:
        return self.user.env(DOCKER_CONFIG=str(self.docker_config), STRATA_CONFIG=str(self.settings), **extra)

    def as_owner(self, *argv: str) -> list[str]:
        return self.user.argv(*argv)

    def hand_over(self, target: Path | int) -> None:
        os.chown(target, self.user.uid, self.user.gid)

    def leftovers(self) -> list[str]:
        """The user's processes but the keeper of its namespace (a container's run as its subordinate ids among
        them): what a test left running, as ``pid argv``. Not a zombie: it holds nothing (a monitor that exited is
        the machine's init's to reap, which may take a moment)."""
        keeper = Path(f"/tmp/strata-run-{self.user.uid}/userns.pid")
        kept = int(keeper.read_text().split()[0]) if keeper.exists() else None
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != kept and (uid := _uid_of(int(entry))) is not None \
                    and self.user.owns(uid):
                with contextlib.suppress(OSError):
                    if getattr(read_stat(int(entry)), "state", "Z") != "Z":
                        argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                        found.append(f"{entry} {argv.decode(errors='replace').strip()}")
        return found

    def end_leftovers(self) -> None:
        """SIGKILL each of :meth:`leftovers`, by its pid: a test that failed leaves nothing to the next one."""
        for line in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), 9)


@contextlib.contextmanager
def _useradd_lock() -> Iterator[None]:
    with open(_LOCK) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _subuids(name: str) -> tuple[int, int] | None:
    for path in ("/etc/subuid", "/etc/subgid"):
        lines = Path(path).read_text().splitlines() if Path(path).exists() else []
        found = [line.split(":") for line in lines if line.startswith(f"{name}:")]
        if not found:
            return None
    start, count = found[0][1:]
    return int(start), int(count)


@contextlib.contextmanager
def user(home_parent: Path, ranges: bool) -> Iterator[User]:
    """A new user, removed again with every file it left under ``home_parent`` (root removes what subordinate
    ids own)."""
    name = f"strata-t{secrets.token_hex(4)}"
    home = home_parent / name
    counts = [] if ranges else ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
    with _useradd_lock():
        done = subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell",
                               "/usr/sbin/nologin", "--user-group", *counts, name], capture_output=True, text=True)
    assert done.returncode == 0, f"useradd: {done.stderr.strip()}"
    entry = pwd.getpwnam(name)
    made = User(name, entry.pw_uid, entry.pw_gid, home, _subuids(name))
    try:
        home.mkdir(mode=0o700)
        os.chown(home, made.uid, made.gid)
        reachable(home)  # the user must reach its home (pytest's base temp is root's, 0700)
        assert (made.subuids is not None) == ranges, f"useradd gave {name} ranges {made.subuids}, wanted {ranges}"
        yield made
    finally:
        _kill_processes_of(made)  # the keeper of its namespace and its containers' processes among them
        run_dir = Path(f"/tmp/strata-run-{made.uid}")  # shared/rundir.py's fallback, before the uid is free
        if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
            run_dir.unlink()
        elif run_dir.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(run_dir)], capture_output=True)
        with _useradd_lock():
            subprocess.run(["userdel", name], capture_output=True, text=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(home)], capture_output=True)


def reachable(path: Path) -> None:
    """Every directory above PATH, up to /tmp, searchable (not readable) by anyone: so a user reaches a path of
    the test's in pytest's base temp, which is root's and 0700, while what the test made there keeps its owner
    and mode."""
    for parent in path.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)


def _kill_processes_of(u: User) -> None:
    """A test that failed may leave a process of its user (or of its subordinate ids, in a container); each is
    ended by its pid, never by name."""
    for _ in range(50):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and (uid := _uid_of(int(p))) is not None
                and u.owns(uid)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.05)
    print(f"processes of {u.name} outlived SIGKILL", file=sys.stderr)


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class HostNetns:
    """A throwaway network namespace that stands for the user's host (the network rule: nothing is added to the
    machine's own): ``v0`` holds the host's address ``ADDRESS`` and a second one, ``SERVER``, where the host's
    services listen; its default route goes via ``GATEWAY`` (the veth's peer), which pasta needs to copy."""

    name: str
    ADDRESS = "10.77.0.1"
    SERVER = "10.77.0.2"
    GATEWAY = "10.77.0.254"

    def serve(self, body: str, address: str, port: int) -> subprocess.Popen[bytes]:
        """A server of the test's (as root) in the namespace that answers every connection with BODY and closes
        it (not http.server, whose bind looks the address up in a DNS this namespace cannot reach). Ended by its
        pid (``ip netns exec`` execs); listening once this returns."""
        code = ("import socket, sys\n"
                "s = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
                "print('ready', flush=True)\n"
                "while True:\n"
                "    c, _ = s.accept()\n"
                "    c.settimeout(2)\n"
                "    try: c.recv(4096); c.sendall(sys.argv[3].encode())\n"
                "    except OSError: pass\n"
                "    c.close()\n")
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c", code, address, str(port),
                                 f"HTTP/1.0 200 OK\r\n\r\n{body}"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *args], capture_output=True, text=True,
                              timeout=30)

    def get(self, port: int, tries: int = 50) -> str | None:
        """The body an HTTP server on 127.0.0.1:PORT of this namespace answers (a client of the test's own, not
        curl, which a fresh Debian may lack); None if nothing answers after TRIES tenths of a second."""
        code = ("import socket, sys, time\n"
                "for _ in range(int(sys.argv[2])):\n"
                "    try:\n"
                "        with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2) as c:\n"
                "            c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
                "            while chunk := c.recv(65536): data += chunk\n"
                "        if data: print(data.split(b'\\r\\n\\r\\n', 1)[-1].decode(), end=''); sys.exit(0)\n"
                "    except OSError: pass\n"
                "    time.sleep(0.1)\n"
                "sys.exit(1)\n")
        done = self.run(sys.executable, "-c", code, str(port), str(tries))
        return done.stdout if done.returncode == 0 else None


@contextlib.contextmanager
def host_netns() -> Iterator[HostNetns]:
    name = f"strata-t{secrets.token_hex(4)}"
    ns = HostNetns(name)
    steps = [["ip", "netns", "add", name],
             ["ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
             ["ip", "-n", name, "addr", "add", f"{ns.ADDRESS}/24", "dev", "v0"],
             ["ip", "-n", name, "addr", "add", f"{ns.SERVER}/24", "dev", "v0"],
             ["ip", "-n", name, "addr", "add", f"{ns.GATEWAY}/24", "dev", "v1"],
             *(["ip", "-n", name, "link", "set", dev, "up"] for dev in ("lo", "v0", "v1")),
             ["ip", "-n", name, "route", "add", "default", "via", ns.GATEWAY, "dev", "v0"]]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            assert done.returncode == 0, f"{' '.join(step)}: {done.stderr.strip()}"
        yield ns
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:  # what the test left running there, by pid
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
