"""The container's life as runc's verbs make it: create, start, run, kill, delete, pause, resume, update. Each
reads the state afresh (:mod:`runner.oci.state`) and takes the container's lock for what changes it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import linux
from runner.isolation import cgroups
from runner.oci import hooks
from runner.oci.state import FIFO, State, locked, make_dir, now_rfc3339, owner, remove_dir
from shared.errors import Kind, StrataError
from shared.store.files import atomic_write

if TYPE_CHECKING:
    from runner.oci.init import CreateOptions

STOP_WAIT = 10.0


@dataclass(frozen=True)
class Globals:
    """runc's global options, as a caller passes them."""

    root: Path
    systemd_cgroup: bool = False


def create(g: Globals, container_id: str, opts: CreateOptions) -> State:
    from runner.oci import config as oci_config  # create's and run's alone: the other verbs start without them
    from runner.oci import init

    bundle = opts.bundle.resolve()
    config = oci_config.load(bundle)
    with locked(g.root, container_id):
        d = make_dir(g.root, container_id)
        try:
            st = State(d, container_id, str(bundle), 0, 0, "", init.cgroups_path(config, container_id,
                                                                                 g.systemd_cgroup),
                       now_rfc3339(), owner(), dict(config.annotations))
            atomic_write(d / "config.json", (bundle / "config.json").read_bytes(), 0o600)
            init.create(config, st, opts, g.root / ".cache" / "seccomp")
            if opts.pid_file:
                try:
                    write_pid_file(opts.pid_file, st.pid)
                except BaseException:  # the container is made: it goes too (its init, its group)
                    with contextlib.suppress(StrataError):
                        _kill_and_wait(st)
                    cgroups.kill_all(st.group())
                    with contextlib.suppress(StrataError):
                        st.group().remove()
                    raise
        except BaseException:
            remove_dir(d)
            raise
    return st


def write_pid_file(path: str, pid: int) -> None:
    """runc's: written whole (a temporary file renamed), the pid alone."""
    target = Path(path).absolute()
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        tmp.write_text(str(pid))
        os.replace(tmp, target)
    except OSError as e:
        raise StrataError(f"cannot write --pid-file {path}: {e.strerror}", Kind.SYSTEM) from None


def start(g: Globals, container_id: str) -> State:
    """Open exec.fifo for reading: the init, blocked on its write end, writes a byte, becomes the process and
    execs; its end closes at the exec (close-on-exec), so the end of file says the command runs, and anything
    written before it is why it could not (:func:`runner.oci.init._wait_and_exec`). The init may also die while
    created: its pidfd says so, rather than a read that never ends. Then the poststart hooks."""
    with locked(g.root, container_id):
        st = State.read(g.root, container_id)
        status = st.status
        if status != "created":
            raise StrataError(f"cannot start a container that is {status}" if status != "running" else
                              "cannot start an already running container", Kind.STATE)
        pidfd = st.open_init()
        try:
            fifo = os.open(st.dir / FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            os.close(pidfd)
            raise StrataError("cannot start an already running container", Kind.STATE) from None
        try:
            said = _until_exec(fifo, pidfd, container_id)
        finally:
            os.close(fifo)
            os.close(pidfd)
        os.unlink(st.dir / FIFO)
    if said:  # the init's own words (process.failure's: "cannot start the container: ...", or exec's)
        raise StrataError(said, Kind.SYSTEM)
    poststart = hooks.of(st.config_doc(), "poststart")
    if poststart:
        with contextlib.suppress(StrataError):  # the spec: a poststart failure is a warning, the container runs
            hooks.run(poststart, json.dumps(st.spec_state("running")).encode(), "poststart")
    return st


def _until_exec(fifo: int, pidfd: int, container_id: str) -> str:
    """The init's byte, then what it wrote until the end of file (nothing: it exec'd)."""
    got, said = False, b""
    while True:
        ready = select.select([fifo, pidfd], [], [])[0]
        if fifo in ready:
            try:
                data = os.read(fifo, 4096)
            except BlockingIOError:
                data = None
            if data == b"" and got:  # every writer gone: the exec closed the init's end (or it died)
                return said.decode(errors="replace").strip()
            if data:
                said += data[1:] if not got else data
                got = True
                continue
        if pidfd in ready and not got:
            raise StrataError(f"container {container_id}'s init exited before it started", Kind.SYSTEM)
        time.sleep(0.001)


def run(g: Globals, container_id: str, opts: CreateOptions, detach: bool, keep: bool = False) -> int:
    """create + start; in the foreground (not ``--detach``) we are the init's subreaper and wait for its exit
    status, then delete it (unless ``--keep``), as ``runc run`` does. A terminal with no ``--console-socket`` is
    ours: its master comes to a socket of our own and we relay it to our stdio, in raw mode (runc's way)."""
    if detach:
        create(g, container_id, opts)
        _start_or_delete(g, container_id)
        return 0
    from runner.executor.process import handling  # run's alone, as create's imports
    from runner.isolation import tty

    linux.set_child_subreaper()
    init_pid, pending = [0], []

    def forward(sig: int, _frame: object) -> None:
        """From the first moment: a signal that comes before the init is known (the command may already be
        running when start returns) is passed on once it is, never taken by us."""
        if init_pid[0]:
            with contextlib.suppress(OSError):
                os.kill(init_pid[0], sig)
        else:
            pending.append(sig)

    terminal = opts.console_socket is None and _wants_terminal(opts.bundle)
    with handling(FORWARDED, forward):
        with _own_console() if terminal else contextlib.nullcontext() as console:
            if console is not None:
                opts = dataclasses.replace(opts, console_socket=console[1])
            st = create(g, container_id, opts)
            _start_or_delete(g, container_id)
            master = _take_master(console[0]) if console is not None else None
        init_pid[0] = st.pid
        for sig in pending:
            forward(sig, None)
        if master is not None:
            try:
                tty.relay(master, interactive=True)
            finally:
                os.close(master)
        code = _wait_for(st.pid)
    if not keep:
        delete(g, container_id, force=True)
    return code


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _start_or_delete(g: Globals, container_id: str) -> None:
    try:
        start(g, container_id)
    except BaseException:
        delete(g, container_id, force=True)
        raise


def _wants_terminal(bundle: Path) -> bool:
    from runner.oci import config as oci_config

    p = oci_config.load(bundle.resolve()).process
    return p is not None and p.terminal


@contextlib.contextmanager
def _own_console() -> Iterator[tuple[socket.socket, str]]:
    """A console socket of our own, in a private temporary directory, listening before create sends to it."""
    with tempfile.TemporaryDirectory(prefix="runner-oci-console-") as d:
        path = os.path.join(d, "console.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(path)
            server.listen(1)
            yield server, path


def _take_master(server: socket.socket) -> int:
    conn, _ = server.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    if not fds:
        raise StrataError("the container's terminal never came to our console socket", Kind.SYSTEM)
    return fds[0]


def _wait_for(pid: int) -> int:
    """The init's exit status (it is our child: we are its subreaper); others we adopted are reaped on the way."""
    try:
        while True:
            found, status = os.waitpid(-1, 0)
            if found == pid:
                code = os.waitstatus_to_exitcode(status)
                return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says
    except ChildProcessError:
        return 255


def parse_signal(text: str) -> int:
    """``9``, ``KILL``, ``SIGKILL`` (runc's ``kill`` takes all three)."""
    if text.isdigit():
        number = int(text)
        if not 0 < number < signal.NSIG:
            raise StrataError(f"invalid signal: {text}", Kind.USAGE)
        return number
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise StrataError(f"unknown signal {text!r}", Kind.USAGE) from None


def kill(g: Globals, container_id: str, sig: int, all_processes: bool) -> None:
    st = State.read(g.root, container_id)
    status = st.status
    if status == "stopped" and not all_processes:
        raise StrataError("container not running", Kind.STATE)
    if all_processes:
        group = st.group()
        if status == "paused" and sig == signal.SIGKILL:
            _freeze(group, False)
        for pid in group.procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return
    pidfd = st.open_init()
    try:
        signal.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)


def delete(g: Globals, container_id: str, force: bool) -> None:
    """A stopped (or, as runc, a created) container goes; a running one only with --force: every process in its
    group killed first. Then its group, the poststop hooks and its directory."""
    with locked(g.root, container_id):
        try:
            st = State.read(g.root, container_id)
        except StrataError as e:
            if e.kind is Kind.NOT_FOUND and force:
                return
            raise
        status = st.status
        if status in ("running", "paused") and not force:
            raise StrataError(f"cannot delete container {container_id} that is not stopped: {status}", Kind.STATE)
        group = st.group()
        if status != "stopped":
            if status == "paused":
                _freeze(group, False)
            with contextlib.suppress(StrataError):
                _kill_and_wait(st)
        if group.exists():
            cgroups.kill_all(group)
            with contextlib.suppress(StrataError):
                group.remove()
        poststop = hooks.of(st.config_doc(), "poststop")
        remove_dir(st.dir)
    if poststop:  # the spec: a poststop failure is a warning; the container is gone
        with contextlib.suppress(StrataError):
            hooks.run(poststop, json.dumps(st.spec_state("stopped")).encode(), "poststop")


def _kill_and_wait(st: State) -> None:
    pidfd = st.open_init()
    try:
        for pid in st.group().procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], STOP_WAIT)
    finally:
        os.close(pidfd)


def _freeze(group: cgroups.Cgroup, on: bool) -> None:
    if isinstance(group, cgroups.CgroupV1):
        path = group.file("freezer", "freezer.state")
        if path is None:
            raise StrataError("cannot pause: the freezer cgroup controller is not mounted", Kind.SYSTEM)
        path.write_text("FROZEN" if on else "THAWED")
        deadline = time.monotonic() + STOP_WAIT
        while on and path.read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                raise StrataError("cannot pause: the container's processes did not freeze", Kind.SYSTEM)
            time.sleep(0.005)
    elif isinstance(group, cgroups.CgroupV2):
        (group.dirs[0] / "cgroup.freeze").write_text("1" if on else "0")
    else:
        raise StrataError("cannot pause: without root a container has no cgroup to freeze", Kind.SYSTEM)


def pause(g: Globals, container_id: str, on: bool) -> None:
    with locked(g.root, container_id):
        st = State.read(g.root, container_id)
        status = st.status
        if on and status != "running":
            raise StrataError("container not running" if status != "paused" else "container already paused",
                              Kind.STATE)
        if not on and status != "paused":
            raise StrataError("container not paused", Kind.STATE)
        _freeze(st.group(), on)


def update(g: Globals, container_id: str, resources: dict[str, Any]) -> None:
    """``update``: the resources document (or the flags made into one) applied to the running group, checked as
    config.json's are (what we cannot change is refused by name)."""
    st = State.read(g.root, container_id)
    if st.status == "stopped":
        raise StrataError("container not running", Kind.STATE)
    from runner.oci import config as oci_config

    doc = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},  # a container's: a mount namespace of its own
           "linux": {"resources": resources, "namespaces": [{"type": "mount"}]}}
    limits = oci_config.parse(doc, Path(st.bundle)).limits
    st.group().apply(limits)
