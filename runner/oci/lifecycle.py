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
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import linux
from runner.executor.supervise import exit_code
from runner.isolation import cgroups, tty
from runner.oci import config as oci_config
from runner.oci import init
from runner.oci.init import CreateOptions
from runner.oci.state import FIFO, State, check_id, locked, make_dir, not_found, now_rfc3339, owner, remove_dir
from shared.errors import Kind, StrataError
from shared.store.files import atomic_write

STOP_WAIT = 10.0


@dataclass(frozen=True)
class Globals:
    """runc's global options, as a caller passes them."""

    root: Path
    systemd_cgroup: bool = False
    debug: bool = False


def create(g: Globals, container_id: str, opts: CreateOptions, foreground: bool = False) -> State:
    bundle = opts.bundle.resolve()
    config = oci_config.load(bundle)
    with locked(g.root, container_id):
        d = make_dir(g.root, container_id)
        try:
            st = State(d, container_id, str(bundle), 0, 0, "", init.cgroups_path(config, container_id,
                                                                                 g.systemd_cgroup),
                       now_rfc3339(), owner(), dict(config.annotations))
            atomic_write(d / "config.json", (bundle / "config.json").read_bytes(), 0o600)
            init.create(config, st, opts, g.root / ".cache" / "seccomp", foreground)
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
    """Open exec.fifo for reading: the init, blocked on its write end, reads it and execs. The init may die
    meanwhile (killed while created): its pidfd says so, rather than a read that never ends."""
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
            while True:
                ready = select.select([fifo, pidfd], [], [])[0]
                if fifo in ready:
                    data = os.read(fifo, 1)
                    if data:
                        break
                if pidfd in ready:
                    raise StrataError(f"container {container_id}'s init exited before it started", Kind.SYSTEM)
                time.sleep(0.001)
        finally:
            os.close(fifo)
            os.close(pidfd)
        os.unlink(st.dir / FIFO)
    hooks = _config(st).hooks.get("poststart", ())
    if hooks:
        with contextlib.suppress(StrataError):  # the spec: a poststart failure is a warning, the container runs
            init.run_hooks(hooks, json.dumps(st.spec_state("running")).encode(), "poststart")
    return st


def _config(st: State) -> oci_config.Config:
    return oci_config.parse(st.config_doc(), Path(st.bundle))


def run(g: Globals, container_id: str, opts: CreateOptions, detach: bool, keep: bool = False) -> int:
    """create + start; in the foreground (not ``--detach``) we are the init's subreaper and wait for its exit
    status, then delete it (unless ``--keep``), as ``runc run`` does."""
    if not detach:
        linux.set_child_subreaper()
    with _own_console(opts, detach) as (opts, master):
        st = create(g, container_id, opts, foreground=not detach)
        try:
            start(g, container_id)
        except BaseException:
            delete(g, container_id, force=True)
            raise
        if detach:
            return 0
        forward = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2]
        for sig in forward:
            signal.signal(sig, lambda n, _f: _signal(st, n))
        try:
            if master:
                tty.relay(master(), interactive=True)
            while True:
                pid, status = os.waitpid(-1, 0)
                if pid == st.pid:
                    code = exit_code(status)
                    break
        except ChildProcessError:
            code = 255
        finally:
            for sig in forward:
                signal.signal(sig, signal.SIG_DFL)
    if not keep:
        delete(g, container_id, force=True)
    return code


@contextlib.contextmanager
def _own_console(opts: CreateOptions, detach: bool) -> Iterator[tuple[CreateOptions, Callable[[], int] | None]]:
    """``run`` in the foreground of a process with a terminal and no --console-socket (``runc spec`` then ``runc
    run``): runc's own console, a socket of ours that takes the pty master, which :func:`run` then relays to and
    from our stdio."""
    if detach or opts.console_socket is not None:
        yield opts, None
        return
    process = oci_config.load(opts.bundle.resolve()).process
    if process is None or not process.terminal:
        yield opts, None
        return
    with tempfile.TemporaryDirectory(prefix="runner-oci-console-") as d, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as server:
        server.bind(f"{d}/console.sock")
        server.listen(1)
        masters: list[int] = []

        def take() -> int:
            conn, _ = server.accept()  # create has sent it by now: the connection is queued
            with conn:
                masters.extend(socket.recv_fds(conn, 64, 1)[1])
            if not masters:
                raise StrataError("run: no terminal came back from the container", Kind.SYSTEM)
            return masters[0]

        try:
            yield dataclasses.replace(opts, console_socket=f"{d}/console.sock"), take
        finally:
            for fd in masters:
                os.close(fd)


def _signal(st: State, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        os.kill(st.pid, sig)


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
        hooks = _config(st).hooks.get("poststop", ()) if st.config_doc() else ()
        remove_dir(st.dir)
    if hooks:  # the spec: a poststop failure is a warning; the container is gone
        with contextlib.suppress(StrataError):
            init.run_hooks(hooks, json.dumps(st.spec_state("stopped")).encode(), "poststop")


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
    doc = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "linux": {"resources": resources}}
    limits = oci_config.parse(doc, Path(st.bundle)).limits
    st.group().apply(limits)


def spec_state_text(g: Globals, container_id: str) -> str:
    st = State.read(g.root, check_id(container_id))
    return json.dumps(st.runc_state(), indent=2)


def require(g: Globals, container_id: str) -> State:
    try:
        return State.read(g.root, container_id)
    except StrataError as e:
        if e.kind is Kind.NOT_FOUND:
            raise not_found(container_id) from None
        raise


def stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
