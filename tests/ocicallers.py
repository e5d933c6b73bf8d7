"""The real callers of an OCI runtime (issue 23), each started on private dirs with a runtime of the test's choosing:
Debian's Docker 20.10 (``docker_with_runtime``), containerd 1.6 with ctr (``containerd_with``) and podman 4.3 with
conmon (``podman_with``). Tests run runc through them today and ``runner-oci`` once it exists, by passing its path.

Each caller lives in a throwaway network namespace and a mount namespace of its own with a tmpfs over /run (Docker:
scripts/bench-docker's DockerPeer; containerd and podman: a holder process, ``_Private``, that every command of theirs
enters with nsenter), so nothing of theirs lands in /run/containerd, /run/runc, /var/lib/*, /etc/containers or the
machine's network; their own dirs are under the test's TMP. Their containers run in a cgroup of the harness's own
(a --cgroup-parent / ctr --cgroup), so close() can end every process in it by pid and remove it.

Cleanup, also on failure or Ctrl-C: the caller's own stop (dockerd SIGTERM; ``podman rm -af``; containerd SIGTERM),
then SIGKILL to every process whose command line names TMP (daemons, shims, conmon: all started from here) and to
every process left in the harness's cgroup (the containers), the cgroup removed in every hierarchy, the holder ended
(its mount namespace and the mounts in it go with it), the network namespace deleted, TMP removed.

Findings behind the settings here (the recon, /work/wt/oci-callers-recon.md): podman asks for RLIMIT_NOFILE and
RLIMIT_NPROC 1048576 as root, above this machine's hard limits, and root here lacks CAP_SYS_RESOURCE, so its
containers.conf sets ``default_ulimits``; ctr is given ``--cgroup`` so containerd's default /default/ID is not used.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "strata/test:1"  # the name docker_archive gives the test image
CALL_TIMEOUT = 120.0
READY_TIMEOUT = 60.0
CTR = "/usr/bin/ctr"
CONTAINERD = "/usr/bin/containerd"
PODMAN = "/usr/bin/podman"
PODMAN_RUNROOT = "/run/podman"  # podman wants <= 50 characters; this /run is the holder's private tmpfs


class CallerError(RuntimeError):
    """A caller could not be started, or a set-up command of the harness failed (a test fails, never skips)."""


@dataclass(frozen=True)
class Result:
    """What one command of a caller gave: its exit code and output."""

    code: int
    out: str
    err: str


_BENCH_DOCKER: ModuleType | None = None


def bench_docker() -> ModuleType:
    """scripts/bench-docker as a module (its DockerPeer and cgroup helpers), loaded once."""
    global _BENCH_DOCKER
    if _BENCH_DOCKER is None:
        loader = importlib.machinery.SourceFileLoader("bench_docker", str(ROOT / "scripts" / "bench-docker"))
        spec = importlib.util.spec_from_loader(loader.name, loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        _BENCH_DOCKER = module
    return _BENCH_DOCKER


def _run(argv: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None, input: str | None = None,
         timeout: float = CALL_TIMEOUT) -> Result:
    """ARGV's exit code and output; a hang is a CallerError naming the command (subprocess kills it)."""
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(args, env=env, input=input, capture_output=True, text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CallerError(f"{' '.join(args)} did not finish in {timeout:.0f} s") from exc
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _checked(result: Result, what: str) -> Result:
    if result.code != 0:
        raise CallerError(f"{what} failed ({result.code}): {result.err.strip()[-2000:]}")
    return result


def docker_archive(layout: Path, dest: Path, tag: str = "test", name: str = IMAGE) -> Path:
    """oci:LAYOUT:TAG as a docker-archive at DEST named NAME (what docker load, podman load and ctr images import
    all take)."""
    _checked(_run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{dest}:{name}"]),
             "skopeo copy")
    return dest


def qualified(name: str) -> str:
    """NAME as containerd and podman spell it: a name without a registry is docker.io's."""
    first = name.split("/", 1)[0]
    return name if "/" in name and ("." in first or ":" in first or first == "localhost") else f"docker.io/{name}"


class _Private:
    """A network namespace (lo up) and a holder process in a mount namespace of its own (propagation private, a
    tmpfs over /run and /dev/shm); ``enter`` puts a command in both."""

    def __init__(self, tmp: Path, label: str) -> None:
        self.tmp = tmp
        self.netns = f"oci-{label}-{os.urandom(4).hex()}"
        self.holder: subprocess.Popen[bytes] | None = None
        self.netns_made = False

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        _checked(_run(["ip", "netns", "add", self.netns]), "ip netns add")
        self.netns_made = True
        _checked(_run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"]), "lo up")
        script = ("mount -t tmpfs -o mode=0755 oci-callers /run && mount -t tmpfs -o mode=1777 oci-callers /dev/shm"
                  " && echo ready && exec sleep infinity")
        self.holder = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount",
                                        "--propagation", "private", "sh", "-c", script],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline() != b"ready\n":
            raise CallerError("the private mount namespace could not be set up")
        self.holder.stdout.close()

    def enter(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", *(os.fspath(a) for a in argv)]

    def close(self, cgroup: str) -> None:
        """Everything of the caller's (module doc), then the holder, the namespace and TMP."""
        bench_docker().kill_naming(self.tmp)
        bench_docker().remove_cgroup(cgroup, kill=True)
        if self.holder is not None:
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait()
            self.holder = None
        if self.netns_made:
            _run(["ip", "netns", "del", self.netns])
            self.netns_made = False
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- Docker ----------------------------------------------------------------------------------------------------


class Docker:
    """Debian's docker CLI talking to a dockerd of the harness's (DockerPeer) with the test's runtimes registered."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer  # a DockerPeer (scripts/bench-docker, loaded at run time): .cgroup, .netns, .tmp

    @property
    def env(self) -> dict[str, str]:
        return dict(self.peer.env)

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        """The CLI's argv (run it with .env; e.g. on a tests/terminal.py Terminal for -it)."""
        return list(self.peer.cli(*args))

    def cli(self, *args: str | os.PathLike[str], input: str | None = None,
            timeout: float = CALL_TIMEOUT) -> Result:
        return _run(self.argv(*args), env=self.env, input=input, timeout=timeout)

    def load(self, archive: Path) -> str:
        out = _checked(self.cli("load", "-i", archive), "docker load").out
        return out.strip().rsplit("Loaded image: ", 1)[-1].strip()

    def run(self, image: str, *cmd: str, runtime: str, options: Sequence[str] = (),
            input: str | None = None) -> Result:
        """``docker run --rm --network none --runtime RUNTIME [OPTIONS] IMAGE CMD...``."""
        return self.cli("run", "--rm", "--network", "none", "--runtime", runtime, *options, image, *cmd,
                        input=input)


@contextlib.contextmanager
def docker_with_runtime(runtimes: dict[str, str | os.PathLike[str]]) -> Iterator[Docker]:
    """dockerd 20.10 with RUNTIMES (name -> executable path) in its daemon.json, on a short private dir of its own
    made under /tmp and removed after (a pytest tmp path is too long: its containerd's debug socket must fit a unix
    socket path's 104 characters, or containerd never comes up)."""
    module = bench_docker()
    config = {"runtimes": {name: {"path": os.fspath(path)} for name, path in runtimes.items()}}
    short = Path(tempfile.mkdtemp(prefix="ocidk-", dir="/tmp"))
    peer = module.DockerPeer(short / "d", config)
    try:
        try:
            peer.start()
        except module.DockerError as exc:
            if "timeout waiting for containerd to start" not in str(exc):
                raise CallerError(str(exc)) from exc
            # dockerd gives its own containerd a fixed time to come up, which a loaded 2-core machine can miss:
            # once more on fresh dirs (a second miss is a failure)
            peer.close()
            module.remove_cgroup(peer.cgroup, kill=True)
            peer = module.DockerPeer(short / "again", config)
            try:
                peer.start()
            except module.DockerError as again:
                raise CallerError(str(again)) from again
        yield Docker(peer)
    finally:
        peer.close()
        module.remove_cgroup(peer.cgroup, kill=True)  # a container dockerd did not stop (it was killed)
        shutil.rmtree(short, ignore_errors=True)


# -- containerd ------------------------------------------------------------------------------------------------


class Containerd:
    """ctr talking to a containerd of the harness's; every container goes in the harness's cgroup."""

    def __init__(self, private: _Private, cgroup: str) -> None:
        self.private = private
        self.cgroup = cgroup
        self.address = private.tmp / "containerd.sock"
        self.daemon: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """containerd itself (its config is in the private dir), ready to answer."""
        tmp = self.private.tmp
        with open(tmp / "containerd.log", "ab") as log:
            self.daemon = subprocess.Popen(self.private.enter([CONTAINERD, "--config", tmp / "config.toml"]),
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while self.ctr("version", timeout=10).code != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                tail = (tmp / "containerd.log").read_text(errors="replace")[-2000:]
                raise CallerError(f"containerd did not come up:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        """containerd alone: its shims, and the tasks they hold, keep running (as after a crash or an upgrade)."""
        if self.daemon is not None:
            if self.daemon.poll() is None:
                self.daemon.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.daemon.wait(timeout=20)
            if self.daemon.poll() is None:
                self.daemon.kill()
            self.daemon.wait()
            self.daemon = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return self.private.enter([CTR, "--address", self.address, *args])

    def ctr(self, *args: str | os.PathLike[str], input: str | None = None,
            timeout: float = CALL_TIMEOUT) -> Result:
        return _run(self.argv(*args), input=input, timeout=timeout)

    def load(self, archive: Path, name: str = IMAGE) -> str:
        """``ctr images import``; the image's name as containerd spells it (docker.io/NAME)."""
        _checked(self.ctr("images", "import", "--digests", archive), "ctr images import")
        return qualified(name)

    def run(self, image: str, cid: str, *cmd: str, runtime: str | os.PathLike[str], detach: bool = False,
            options: Sequence[str] = ()) -> Result:
        """``ctr run --runc-binary RUNTIME --cgroup <ours>/CID (--rm | -d) [OPTIONS] IMAGE CID CMD...``."""
        mode = "-d" if detach else "--rm"
        return self.ctr("run", "--runc-binary", os.fspath(runtime), "--cgroup", f"{self.cgroup}/{cid}", mode,
                        *options, image, cid, *cmd)

    def exec(self, cid: str, exec_id: str, *cmd: str, options: Sequence[str] = ()) -> Result:
        return self.ctr("task", "exec", "--exec-id", exec_id, *options, cid, *cmd)

    def remove(self, cid: str) -> None:
        """Kill CID's task, delete it and the container (each step may find nothing to do)."""
        self.ctr("task", "kill", "-s", "SIGKILL", cid)
        deadline = time.monotonic() + 20
        while self.ctr("task", "rm", cid).code != 0 and time.monotonic() < deadline:
            if self.ctr("task", "ls", "-q").out.split().count(cid) == 0:
                break
            time.sleep(0.2)
        self.ctr("containers", "rm", cid)


def _containerd_config(tmp: Path) -> str:
    return (f'version = 2\nroot = "{tmp}/root"\nstate = "{tmp}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{tmp}/containerd.sock"\n[ttrpc]\n  address = "{tmp}/containerd.sock.ttrpc"\n'
            f'[debug]\n  address = "{tmp}/debug.sock"\n  level = "warn"\n')


@contextlib.contextmanager
def containerd_with(tmp: Path) -> Iterator[Containerd]:
    """containerd 1.6 on TMP (root, state, sockets; made and removed here), cri off, in a private netns and mount
    namespace; the runtime is ctr run's ``--runc-binary`` (Containerd.run's RUNTIME), kept for the task's life."""
    for tool in (CTR, CONTAINERD):
        if not os.access(tool, os.X_OK):
            raise CallerError(f"{tool} is missing: scripts/setup installs Debian's containerd")
    private = _Private(tmp, "ctr")
    cgroup = f"oci-callers-ctr-{os.urandom(4).hex()}"
    client = Containerd(private, cgroup)
    try:
        private.start()
        (tmp / "config.toml").write_text(_containerd_config(tmp))
        client.start()
        yield client
    finally:
        client.stop()
        private.close(cgroup)


# -- podman ----------------------------------------------------------------------------------------------------


class Podman:
    """podman with the test's runtime (``--runtime``), cgroupfs, and root, runroot, tmpdir, configs of its own."""

    def __init__(self, private: _Private, runtime: str, cgroup: str, env: dict[str, str]) -> None:
        self.private = private
        self.runtime = runtime
        self.cgroup = cgroup
        self.env = env

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        t = self.private.tmp
        return self.private.enter([PODMAN, "--root", t / "root", "--runroot", PODMAN_RUNROOT, "--tmpdir", t / "tmp",
                                   "--runtime", self.runtime, "--cgroup-manager", "cgroupfs",
                                   "--events-backend", "file", *args])

    def cli(self, *args: str | os.PathLike[str], input: str | None = None,
            timeout: float = CALL_TIMEOUT) -> Result:
        return _run(self.argv(*args), env=self.env, input=input, timeout=timeout)

    def load(self, archive: Path, name: str = IMAGE) -> str:
        _checked(self.cli("load", "-i", archive), "podman load")
        return qualified(name)

    def run(self, image: str, *cmd: str, options: Sequence[str] = (), input: str | None = None) -> Result:
        """``podman run --pull=never --rm --network none --cgroup-parent <ours> [OPTIONS] IMAGE CMD...``."""
        return self.cli("run", "--pull=never", "--rm", "--network", "none", "--cgroup-parent", self.cgroup,
                        *options, image, *cmd, input=input)


def _podman_configs(tmp: Path) -> dict[str, str]:
    """containers.conf and storage.conf of TMP's own (no /etc/containers or /var/lib/containers); the env that
    makes podman read them."""
    conf, storage = tmp / "containers.conf", tmp / "storage.conf"
    conf.write_text("[containers]\n"
                    'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
                    f'[network]\nnetwork_config_dir = "{tmp}/net"\n'
                    f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'events_logfile_path = "{tmp}/events.log"\ntmp_dir = "{tmp}/tmp"\n'
                    f'volume_path = "{tmp}/volumes"\nstatic_dir = "{tmp}/root/libpod"\n')
    storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp}/root"\nrunroot = "{PODMAN_RUNROOT}"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_REGISTRIES_CONF": str(tmp / "registries.conf")}


@contextlib.contextmanager
def podman_with(tmp: Path, runtime: str | os.PathLike[str]) -> Iterator[Podman]:
    """podman 4.3 on TMP (made and removed here) with RUNTIME as its OCI runtime, in a private netns and mount
    namespace (podman's shm lock segment goes in the holder's /dev/shm)."""
    if not os.access(PODMAN, os.X_OK):
        raise CallerError(f"{PODMAN} is missing: scripts/setup installs Debian's podman")
    private = _Private(tmp, "pm")
    cgroup = f"oci-callers-pm-{os.urandom(4).hex()}"
    client: Podman | None = None
    try:
        private.start()
        (tmp / "registries.conf").write_text("unqualified-search-registries = []\n")
        client = Podman(private, os.fspath(runtime), cgroup, _podman_configs(tmp))
        yield client
    finally:
        if client is not None:
            with contextlib.suppress(CallerError):
                client.cli("rm", "--all", "--force", "--time", "0", timeout=60)
        private.close(cgroup)

