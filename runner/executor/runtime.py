"""A second executor: the container's spec started by an OCI runtime (runc, crun, or another at a PATH), as podman's
``--runtime``. The spec, the -init layer, the rw layer, logs, ``stop`` and ``rm`` are the runner's own; only "start
a spec" changes hands.

How a start goes (containerd's shim does the same steps):

* the parent mounts the container's overlay on ``merged/`` in the host's mount namespace (a user's own without
  root; the runtime cannot: a runtime-spec root is a directory, not a mount plan), and binds the network files
  and the ``-v`` volumes onto it itself, with our executor's code (:func:`runner.isolation.rootfs.mount_volume`:
  each target resolved once inside the root, the clone moved onto that fd), since runc 1.1.5 and crun 1.8.1 look
  a bind's target up again for its read-only remount (CVE-2021-30465 class; :func:`own_volumes` says which
  volumes); :meth:`RuntimeExecutor.release` unmounts it all, idempotently, so ``rm`` after a killed runner finds
  nothing left;
* it writes ``oci/config.json``: the saved spec with what only our executor understands translated (the user
  resolved to uid/gid/additionalGids and HOME from the container's own /etc/passwd by the bounded reader
  :mod:`runner.isolation.user`, ``cgroupsPath`` made the group name our executor uses, ``root.path`` absolute, the
  volumes already bound left out: the runtime's recursive bind of the root carries them along, each with its own flags);
  the network files, /dev/init, /dev, /proc, /sys, the masked paths and seccomp are taken as written;
* ``RUNTIME --root STATE create`` with the container's stdio (pipes, or with -t a pty whose master comes back on
  ``--console-socket``), then ``RUNTIME start``; the runner is a child subreaper, so PID 1 becomes its child once
  ``create`` has exited and its exit status is ours to wait for, as with our own executor: the one supervise loop
  (:mod:`runner.executor.supervise`) attends both;
* ``kill`` and ``stop`` signal through ``RUNTIME kill`` (after the pidfd check of :mod:`runner.container.record`), and
  :meth:`RuntimeExecutor.release` runs ``RUNTIME delete --force``;
* a start failure is Docker's 127 (no such executable), 126 (not executable) or 125 (anything else), told by
  the runtime's one-line message.

crun refuses a cgroup v1+v2 hybrid whose v2 side has controllers ("cgroups in hybrid mode not supported"). crun is
therefore always run in a private mount namespace of its own with an empty tmpfs over ``/sys/fs/cgroup/unified``:
it sees cgroup v1 only, as runc uses it, and the host's mounts are untouched (scripts/bench's recipe).

Without root (docs/rootless.md) the runner runs as root of the user's namespace (shared.userns), and so does the
runtime it starts: runc and crun see a user namespace and bind the host's device nodes rather than make them. The
container shares that namespace (config.json asks for none of its own), as under our executor: the same ids
(uid 0 the user, the image's owners the subordinate ids), and ``exec``, ``stop`` and ``rm`` of any later command
reach it, since all of them join the one namespace. The differences: the overlay and the binds on it are mounted
in a private mount namespace of the runner's (:func:`own_mount_namespace`; the host's is not the user's to mount
in), which the runtime and the container inherit; config.json gets no cgroup (:func:`without_root`) and the
runtime is told to try none (:meth:`Runtime.rootless_flags`); ``pause`` is refused as our freezer refuses it; the
runtime's state is in the user's store, as root's is in root's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import linux
from runner.executor import process
from runner.executor.protocol import StartFailed, release_cgroup, signal_pidfd
from runner.executor.supervise import Started
from runner.isolation import freezer, rootfs, security, user
from runner.spec import NETWORK_FILES, STANDARD_DESTINATIONS, Spec, Volume
from shared import settings
from shared.errors import Kind, StrataError, usage
from shared.layer.safepath import SafeRoot, split
from shared.userns import rootless

OURS = "strata"  # the runner's own executor: the default
KNOWN = ("runc", "crun")
OCI_OURS = "runner-oci"  # our executor behind runc's command line (runner/oci)
UNIFIED = "/sys/fs/cgroup/unified"
BUNDLE_DIR = "oci"  # the runtime's bundle, in the container's directory
# what the runtime mounts after the root itself (a volume at, under or above one of these is left to it)
RUNTIME_DESTINATIONS = STANDARD_DESTINATIONS - {f"/etc/{n}" for n in NETWORK_FILES}
RECURSIVE_OPTIONS = frozenset({"rro", "rrw", "rnodev", "rdev", "rnosuid", "rsuid", "rnoexec", "rexec"})
SAVED_CONFIG = "config.json"  # the spec as the container's record saved it (runner/container/record.py)


def choose(option: str | None) -> str:
    """The runtime a new container is recorded with: ``--runtime``, else the settings file's, else ours ("").
    A name (runc, crun) is looked up on PATH, a path must be an executable; what is recorded is its absolute path,
    so that ``stop`` and ``rm`` later use the same binary whatever PATH is then."""
    name = option if option is not None else settings.load().runtime
    if name in ("", OURS):
        return ""
    found = shutil.which(name) if "/" not in name else (name if os.access(name, os.X_OK) else None)
    if found is None or not os.path.isfile(found):
        raise usage(f"OCI runtime {name!r} not found: give runc, crun, {OURS} or the path of an executable")
    return os.path.abspath(found)


@dataclass(frozen=True)
class Runtime:
    """One OCI runtime binary and the state directory the runner keeps for it in the store."""

    path: str
    state: Path

    @classmethod
    def of(cls, spec: Spec, store_root: Path) -> Runtime:
        name = os.path.basename(spec.runtime)
        return cls(spec.runtime, store_root / "runtime" / name)

    @property
    def hides_cgroup2(self) -> bool:
        """Whether to run it with cgroup v2 hidden (module doc): crun on a hybrid host with v2 controllers."""
        if "crun" not in os.path.basename(self.path):
            return False
        try:
            return bool(Path(UNIFIED, "cgroup.controllers").read_text().split())
        except OSError:
            return False

    def argv(self, *args: str) -> list[str]:
        return [self.path, *self.rootless_flags(), "--root", str(self.state), *args]

    def rootless_flags(self) -> list[str]:
        """Without root (module doc): no cgroup is tried at all, rather than tried and its EACCES forgiven. runc's
        ``--rootless=true`` (what its ``auto`` finds in a user namespace anyway), crun's cgroup manager
        ``disabled``; another runtime is given nothing it may not know."""
        if not rootless():
            return []
        name = os.path.basename(self.path)
        return ["--rootless=true"] if "runc" in name else ["--cgroup-manager=disabled"] if "crun" in name else []

    def preexec(self) -> Callable[[], None] | None:
        """In the forked child, before exec: the private mount namespace with v2 hidden, when needed."""
        if not self.hides_cgroup2:
            return None

        def hide() -> None:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            linux.mount("strata-hide-cgroup2", UNIFIED, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4k")

        return hide

    def call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run it with no stdio of ours; with ``check``, a failure is a one-line StrataError."""
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        done = subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              preexec_fn=self.preexec(), check=False)
        if check and done.returncode != 0:
            raise StrataError(f"{os.path.basename(self.path)} {args[0]}: {one_line(done.stderr)}", Kind.SYSTEM)
        return done


def one_line(text: str) -> str:
    """A runtime's error, on one line: runc's logrus ``msg="..."`` when there is one, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "failed with no message"
    last = lines[-1]
    if 'msg="' in last:
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return last[:500]


def start_error(spec: Spec, runtime_message: str) -> StartFailed:
    """A start failure as our executor words it when the command cannot be exec'd (Docker's 126 and 127);
    anything else with the runtime's own words and 125."""
    code = exit_code_for(runtime_message)
    name = spec.argv[0] if spec.argv else ""
    if code == process.EXIT_NOT_FOUND:
        return StartFailed(f"exec: {name!r}: executable file not found", Kind.SYSTEM, exit_code=code)
    if code == process.EXIT_NOT_EXECUTABLE:
        return StartFailed(f"exec: {name!r}: Permission denied", Kind.SYSTEM, exit_code=code)
    tool = os.path.basename(spec.runtime)
    return StartFailed(f"{tool}: {runtime_message.removeprefix(f'{tool} create failed: ')}", Kind.SYSTEM,
                       exit_code=code)


def exit_code_for(message: str) -> int:
    """Docker's codes for a start failure, from the runtime's words (runc's and crun's)."""
    lower = message.lower()
    if ("executable file" in lower and "not found" in lower) or ("no such file" in lower and "exec" in lower):
        return process.EXIT_NOT_FOUND
    if "permission denied" in lower or "is a directory" in lower or "open executable" in lower:  # crun's EPERM
        return process.EXIT_NOT_EXECUTABLE
    return process.EXIT_RUNNER_ERROR


# -- the bundle the runtime runs -----------------------------------------------------------------------------------


def own_volumes(spec: Spec) -> list[Volume]:
    """The volumes the runner binds itself before ``create`` (after the network files, as our executor): those
    whose target is apart from every mount the runtime makes after the root (/proc, /dev, /sys and what is under
    them, /dev/init). A volume at, under or above one of those stays the runtime's, in config.json's order, as
    before: bound first, the runtime's own mount would cover it (or, above one, be made inside it)."""
    def apart(target: str) -> bool:
        t = "/" + "/".join(split(target))
        return not any(t == d or t.startswith(d + "/") or d.startswith(t + "/") for d in RUNTIME_DESTINATIONS)

    return [v for v in spec.volumes if apart(v.target)]


def _runner_mounts(spec: Spec) -> set[tuple[str, str]]:
    """(source, destination) of the binds :func:`mount_rootfs` makes: the network files and :func:`own_volumes`."""
    return {(os.path.join(spec.bundle, n), f"/etc/{n}") for n in NETWORK_FILES} | \
        {(v.source, v.target) for v in own_volumes(spec)}


def runtime_config(spec: Spec, rootfs: Path, netns: int | None = None, mounted: bool = False) -> dict[str, Any]:
    """The saved config.json translated for a runtime (module doc). ``rootfs`` holds the mounted tree, whose
    /etc/passwd and /etc/group name the user; ``netns``, an fd of ours, the network namespace to join (the
    runtime opens it by its /proc path, runtime-spec's namespace ``path``); ``mounted``: the binds
    :func:`mount_rootfs` makes are on ``rootfs`` already, and are left out of the mounts (``runner bundle``
    keeps them: nobody binds them for it)."""
    doc: dict[str, Any] = json.loads(Path(spec.bundle, SAVED_CONFIG).read_text())
    if netns is not None:
        for ns in doc["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/proc/{os.getpid()}/fd/{netns}"
    who = user.resolve(spec.user, rootfs)
    # runc and crun open these in the container at every start, even for a numeric user; a fifo there blocks
    # them for ever, /dev/zero or a 10 GB file keeps them reading. Our executor only reads what it needs, and so
    # does runner-oci (ours behind runc's command line: it takes the uid and gids given and opens neither).
    for name in () if os.path.basename(spec.runtime) == OCI_OURS else ("passwd", "group"):
        problem = user.read_etc(name, rootfs).problem
        if problem is not None:
            raise StrataError(f"{problem}: {os.path.basename(spec.runtime)} would read it at start; refusing "
                              "to run this image under a runtime", Kind.USAGE)
    proc = doc["process"]
    proc["user"] = {"uid": who.uid, "gid": who.gid, "additionalGids": [g for g in who.groups if g != who.gid]}
    env = process.exec_env(spec, who.home, tty=spec.terminal)
    proc["env"] = [f"{k}={v}" for k, v in env.items()]
    # as our executor: never more than the runner's own bounding set (a runtime asked for more fails in capset),
    # and a user other than root holds none but the bounding set
    own = {f"CAP_{security.CAPABILITIES[n]}" for n in security.own_bounding_set() if n < len(security.CAPABILITIES)}
    proc["capabilities"] = {k: [c for c in v if c in own] if k == "bounding" or who.uid == 0 else []
                            for k, v in proc["capabilities"].items()}
    for volume in spec.volumes:  # as Docker's -v (and our executor): a missing source is created
        if not os.path.exists(volume.source):
            os.makedirs(volume.source, exist_ok=True)
    ours = _runner_mounts(spec) if mounted else set()
    doc["mounts"] = [m for m in doc["mounts"] if not (m["type"] == "bind" and (m["source"], m["destination"]) in ours)]
    for mount in doc["mounts"]:
        # a file has no submounts, so the recursive options (rro, rnodev, ...) say nothing more for it than the
        # plain ones; and crun 1.8 opens their target as a directory (O_DIRECTORY), failing a file bind
        if mount["type"] == "bind" and not os.path.isdir(mount["source"]):
            mount["options"] = [o for o in mount.get("options") or () if o not in RECURSIVE_OPTIONS]
    doc["root"]["path"] = str(rootfs)
    # the allow list as this runner derives it (Docker's; all for --privileged), also for a config.json an older
    # runner wrote
    doc["linux"].setdefault("resources", {})["devices"] = [r.to_oci() for r in spec.device_rules()]
    return doc


def without_root(doc: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """What a container of a user's gets from a runtime instead, as from our executor (docs/rootless.md): no
    cgroup (no ``cgroupsPath``, no ``resources``: limits were refused at create, and the devices cgroup is not the
    user's to write; the container opens only host nodes bound in, which the runtimes do themselves in a user
    namespace); an empty read-only tmpfs at /sys/fs/cgroup (the runtimes would show the user's own groups, which
    here are the host's whole tree); with ``--network host`` the host's /sys bound read-only in every submount
    (sysfs may be mounted only by the owner of the network namespace: runc 1.1.5 fails, crun falls back to this
    bind); devpts without ``gid=5`` where no group 5 is mapped (a user without ranges)."""
    doc["linux"].pop("cgroupsPath", None)
    doc["linux"].pop("resources", None)
    ro = [] if spec.privileged else ["ro"]
    for mount in doc["mounts"]:
        if mount["destination"] == "/sys/fs/cgroup":
            mount.update(type="tmpfs", source="tmpfs", options=["nosuid", "nodev", "noexec", "mode=755", "size=64k",
                                                                *ro])
        elif mount["destination"] == "/sys" and spec.network.mode.kind == "host":
            mount.update(type="bind", source="/sys",
                         options=["rbind", "rnosuid", "rnodev", "rnoexec", *(["rro"] if ro else [])])
        elif mount["destination"] == "/dev/pts" and not rootfs.gid_mapped(5):
            mount["options"] = [o for o in mount["options"] if o != "gid=5"]
    return doc


def mount_rootfs(spec: Spec, binds: bool = False) -> Path:
    """The overlay on merged/, in this process's mount namespace (the host's as root, a private one of the user's
    without root: :func:`own_mount_namespace`); with ``binds``, the network files and
    :func:`own_volumes` bound on it, in our executor's order (idempotent: a mount already there is kept, and with
    it what was bound when it was made; a failure leaves nothing mounted).

    Each volume is a private clone (:func:`runner.isolation.rootfs.mount_volume`): nothing mounted under its source on
    the host reaches it. Where merged/ is itself shared (a host whose / is), the volumes go where the overlay went and
    leave with it: the unmount of :meth:`RuntimeExecutor.release` detaches the whole tree."""
    merged = Path(spec.bundle, "merged")
    if os.path.ismount(merged):
        return merged
    here = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        os.chdir(spec.bundle)  # the mount data names the layers relative to it (rootfs.overlay_data)
        linux.mount("overlay", "merged", "overlay", 0 if spec.privileged else linux.MS_NODEV,
                    rootfs.overlay_data(spec))
    finally:
        os.fchdir(here)
        os.close(here)
    try:
        with SafeRoot(merged) as root:
            if binds:
                rootfs.mount_network_files(root, Path(spec.bundle))
                for volume in own_volumes(spec):
                    rootfs.mount_volume(root, volume, spec.privileged)
    except BaseException as e:
        linux.umount2(str(merged), linux.MNT_DETACH)
        if isinstance(e, OSError):  # worded as our executor words a mount that fails in its child
            raise StrataError(process.failure(e)[0], Kind.SYSTEM, exit_code=process.EXIT_RUNNER_ERROR) from None
        raise
    return merged


def own_mount_namespace() -> None:
    """A private mount namespace for this process, for the overlay of a runtime's container or a bundle. Without
    root the runner may mount nothing in the host's namespace (it is the initial user namespace's), so the overlay
    and the binds on it go in one of the user's, which ``RUNTIME create`` (a child) inherits and hands on to the
    container: they live as long as its last process and the runner's, and vanish with both."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)


# -- the executor -------------------------------------------------------------------------------------------------


class RuntimeExecutor:
    """:class:`runner.executor.protocol.Executor` through an OCI runtime (module doc)."""

    def __init__(self, spec: Spec, store_root: Path) -> None:
        self.spec = spec
        self.rt = Runtime.of(spec, store_root)

    def create(self, netns: int | None) -> Started:
        """The bundle (overlay, binds, config.json), then ``RUNTIME create`` and ``RUNTIME start``."""
        self.release()  # a previous start's state: a stopped container is started anew, as ours
        if rootless():
            own_mount_namespace()
        try:
            merged = mount_rootfs(self.spec, binds=True)
        except StrataError as e:  # a volume that cannot be bound: as a start that fails in our executor's child
            raise StartFailed(str(e), e.kind, e.exit_code) from None
        try:
            bundle = Path(self.spec.bundle, BUNDLE_DIR)
            bundle.mkdir(mode=0o700, exist_ok=True)
            doc = runtime_config(self.spec, merged, netns, mounted=True)
            (bundle / "config.json").write_text(json.dumps(without_root(doc, self.spec) if rootless() else doc))
        except BaseException:
            self.release()
            raise
        with contextlib.suppress(OSError):
            linux.set_child_subreaper()
        stdio = process.Stdio(self.spec.terminal)
        try:
            pid, master = _create(self.spec, self.rt, bundle, stdio)
            done = self.rt.call("start", self.spec.id, check=False)
            if done.returncode != 0:
                if master is not None:
                    os.close(master)
                raise start_error(self.spec, one_line(done.stderr))
        except StrataError as e:
            stdio.close()
            self.release()
            raise StartFailed(str(e), e.kind, e.exit_code) from None
        return Started(pid, stdio, master)

    def kill(self, pidfd: int, sig: int) -> None:
        """``RUNTIME kill ID SIGNAL``; when the runtime refuses (it no longer knows the container, or finds it
        stopped: it is exiting, its owner deleted it, a second SIGKILL of stop), through the pidfd, which still
        pins that process."""
        if self.rt.call("kill", self.spec.id, str(sig), check=False).returncode != 0:
            signal_pidfd(pidfd, sig)

    def pause(self) -> None:
        """``RUNTIME pause ID``: the runtime freezes the groups it made, wherever it made them (crun puts a
        relative cgroupsPath at the root of each v1 hierarchy, runc under its own group): the runner's freezer
        would look for them where our executor makes them. One a killed commit left paused stays so. Without root
        there is no group to freeze: refused as our executor refuses it, before the runtime is asked."""
        if rootless():
            raise StrataError(freezer.NO_CGROUP, Kind.SYSTEM)
        if not self.is_paused():
            self.rt.call("pause", self.spec.id)

    def resume(self) -> None:
        """``RUNTIME resume ID`` when the runtime says the container is paused."""
        if self.is_paused():
            self.rt.call("resume", self.spec.id)

    def is_paused(self) -> bool:
        done = self.rt.call("state", self.spec.id, check=False)
        try:
            return done.returncode == 0 and json.loads(done.stdout).get("status") == "paused"
        except (ValueError, AttributeError):  # not JSON, or not an object: a runtime that knows no such state
            return False

    def release(self) -> None:
        """What a runtime-started container holds on the host: the runtime's state (``delete --force`` kills what
        is left), the overlay mount and the volumes on it (one lazy unmount detaches the tree), then its cgroup.
        Idempotent; a runtime that no longer knows the container is not an error."""
        rt = self.rt
        if (rt.state / self.spec.id).exists():
            done = rt.call("delete", "--force", self.spec.id, check=False)
            if done.returncode != 0 and (rt.state / self.spec.id).exists():
                raise StrataError(f"{os.path.basename(rt.path)} delete: {one_line(done.stderr)}", Kind.SYSTEM)
        merged = Path(self.spec.bundle, "merged")
        if os.path.ismount(merged):
            linux.umount2(str(merged), linux.MNT_DETACH)
        release_cgroup(self.spec.id)


def _create(spec: Spec, rt: Runtime, bundle: Path, stdio: process.Stdio) -> tuple[int, int | None]:
    """``RUNTIME create``: PID 1 waits in the runtime's init for ``start``. Returns its pid and, with -t, the
    pty's master (received on the console socket). The runtime's own messages share the container's stdio
    (runc and crun write them to their stderr); before ``start`` nothing else writes there, so on a failure what
    the pipes hold is the runtime's error."""
    rt.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    pid_file = bundle / "pid"
    pid_file.unlink(missing_ok=True)
    args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
    console_dir = tempfile.mkdtemp(prefix="strata-console-") if spec.terminal else None
    listener = None
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    try:
        if console_dir is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            listener.bind(os.path.join(console_dir, "console.sock"))
            listener.listen(1)
            args += ["--console-socket", os.path.join(console_dir, "console.sock")]
            child_io = (subprocess.DEVNULL, subprocess.DEVNULL, errors_w)
        else:
            child_io = stdio.child
        proc = subprocess.Popen(rt.argv(*args, spec.id), stdin=child_io[0], stdout=child_io[1],
                                stderr=child_io[2], preexec_fn=rt.preexec(), close_fds=True)
        os.close(errors_w)
        errors_w = -1
        master = None
        if listener is not None:
            master = _receive_console(listener, proc)
        code = proc.wait()
        stdio.close_child_ends()
        if code != 0:
            message = one_line(_drain(errors_r) + (_drain(stdio.stderr) if stdio.stderr >= 0 else ""))
            if master is not None:
                os.close(master)
            raise start_error(spec, message)
        return int(pid_file.read_text().strip()), master
    finally:
        for fd in (errors_r, errors_w):
            if fd >= 0:
                os.close(fd)
        if listener is not None:
            listener.close()
        if console_dir is not None:
            shutil.rmtree(console_dir, ignore_errors=True)


def _receive_console(listener: socket.socket, proc: subprocess.Popen[bytes]) -> int | None:
    """The pty master the runtime sends (runtime-spec's console socket), or None if it exited first."""
    listener.settimeout(0.05)
    while True:
        try:
            conn, _ = listener.accept()
            break
        except TimeoutError:
            if proc.poll() is not None:
                return None
    with conn:
        conn.settimeout(10)
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    return fds[0] if fds else None


def _drain(fd: int) -> str:
    """What a pipe holds now, without waiting for a writer that may still hold it."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
