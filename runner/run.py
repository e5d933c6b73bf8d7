"""``run``: create a container from a stored image and run its command as PID 1 in new namespaces.

Process model: the runner unshares only CLONE_NEWPID (which affects its children, not itself) and forks once;
the child is PID 1 of the new pid namespace. It unshares mount, uts, ipc, net and cgroup namespaces, builds the
root (see :mod:`runner.rootfs`), drops to the image's user and execs. Setup errors travel back over a close-on-exec
pipe, so the runner can tell "the command failed" (its exit code) from "we could not start it" (125, 126, 127 as
Docker). Signals the runner receives are forwarded to PID 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import cgroups, linux, logs, network, process, rootfs, seccomp, security, tty
from runner.container import Container, ContainerConfig, create, new_id
from shared import stored
from shared.errors import Kind, StrataError, usage
from shared.store import Store

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
NAMESPACES = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP


@dataclass(frozen=True)
class RunOptions:
    image: str
    command: Sequence[str] = ()
    name: str | None = None
    hostname: str | None = None
    env: Sequence[str] = ()
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    interactive: bool = False
    tty: bool = False
    remove: bool = False
    env_files: Sequence[str] = ()
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    privileged: bool = False
    security_opts: Sequence[str] = ()
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    read_only: bool = False
    volumes: Sequence[str] = ()
    tmpfs: Sequence[str] = ()
    init: bool = False
    detach: bool = False


def read_env_file(path: str) -> list[str]:
    """Docker's --env-file: one VAR=VALUE (taken as is, no quotes) or VAR (the runner's value) per line;
    blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise usage(f"cannot read env file {path}: {e.strerror}") from None
    return [line.lstrip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _merge_env(base: Sequence[str], overrides: Sequence[str]) -> tuple[str, ...]:
    """Docker's -e: ``KEY=VALUE`` sets, a bare ``KEY`` copies the runner's own value (or drops it if unset)."""
    env: dict[str, str] = {}
    for item in base:
        key, _, value = item.partition("=")
        env[key] = value
    for item in overrides:
        key, sep, value = item.partition("=")
        if not key:
            raise usage(f"invalid environment variable {item!r}")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
        else:
            env.pop(key, None)
    return tuple(f"{k}={v}" for k, v in env.items())


def create_container(store: Store, opts: RunOptions) -> Container:
    store.ensure()
    with store.in_use():  # the image's layers cannot be collected between finding and recording them
        return _create(store, opts)


def _create(store: Store, opts: RunOptions) -> Container:
    image = stored.find(store, opts.image)
    image.layer_records(store)  # every layer must be there before anything is created
    cfg = image.config
    if opts.entrypoint is not None:  # as Docker: a new entrypoint also drops the image's Cmd
        entrypoint: tuple[str, ...] = (opts.entrypoint,) if opts.entrypoint else ()
        cmd = tuple(opts.command)
    else:
        entrypoint = cfg.entrypoint
        cmd = tuple(opts.command) or cfg.cmd
    argv = entrypoint + cmd
    if not argv:
        raise usage(f"no command specified: {image.name} has no Entrypoint or Cmd; give one")
    workdir = opts.workdir or cfg.working_dir or "/"
    if not workdir.startswith("/"):
        raise usage(f"the working directory {workdir!r} is invalid: it needs to be an absolute path")
    privileges = security.Privileges.from_options(opts.cap_add, opts.cap_drop, opts.privileged, opts.security_opts)
    for spec in opts.volumes:
        rootfs.Volume.parse(spec)
    for spec in opts.tmpfs:
        rootfs.Tmpfs.parse(spec)
    if opts.cpus is not None and opts.cpus <= 0:
        raise usage("--cpus must be more than 0")
    env = [e for f in opts.env_files for e in read_env_file(f)] + list(opts.env)
    cid = new_id()
    config = ContainerConfig(
        id=cid, name=opts.name or cid[:12], image=image.name, image_id=str(image.image_id),
        chain_ids=tuple(str(c) for c in image.chain_ids), argv=argv, env=_merge_env(cfg.env, env),
        working_dir=workdir, user=opts.user if opts.user is not None else cfg.user,
        hostname=opts.hostname or cid[:12], interactive=opts.interactive, tty=opts.tty, auto_remove=opts.remove,
        capabilities=tuple(sorted(privileges.capabilities)), no_new_privileges=privileges.no_new_privileges,
        privileged=opts.privileged, seccomp=privileges.seccomp,
        memory=cgroups.Limits.parse_memory(opts.memory) if opts.memory else None,
        cpus=opts.cpus, pids_limit=opts.pids_limit, read_only=opts.read_only, volumes=tuple(opts.volumes),
        tmpfs=tuple(opts.tmpfs), init=opts.init)
    container = create(store, config)
    try:
        lowers = [store.diff_dir(c) for c in reversed(image.chain_ids)]
        rootfs.prepare(container, lowers)
    except BaseException:
        container.remove(force=True)
        raise
    return container


def _child(container: Container, layer_count: int, parent_fd: int, err_w: int, go_r: int,
           tty_sock: socket.socket | None, stdio: tuple[int, int, int], program: seccomp.Program | None) -> None:
    """PID 1 of the new pid namespace. Never returns: execs the command or _exits with Docker's code."""
    try:
        config = container.config
        process.private_stdio(*stdio)  # first of all: the runner's fds may be the user's terminal
        linux.die_with_parent(parent_fd)  # a killed runner takes its container along
        linux.set_undumpable()
        os.setsid()  # no controlling terminal: /dev/tty answers ENXIO, and TIOCSTI has no terminal to type into
        if os.read(go_r, 1) != b"g":  # the runner has put us in the container's cgroup (or gave up)
            os._exit(process.EXIT_RUNNER_ERROR)
        os.close(go_r)
        linux.unshare(NAMESPACES)
        socket.sethostname(config.hostname)
        network.loopback_up()
        rootfs.mount_and_pivot(container, layer_count)
        if tty_sock is not None:
            tty.become_terminal_child(tty_sock, console=True)
        process.become_and_exec(config, config.argv, err_w, parent_fd, program, tty=config.tty,
                                init=config.init)
    except BaseException as e:
        process.fail(err_w, e)


def start(container: Container, echo: bool = True,
          started: Callable[[str, int], None] = lambda error, code: None) -> int:
    """Run the container and wait for it; return its exit code (Docker's convention for ours). Its output goes
    to its log and, with ``echo``, to our stdout/stderr (or terminal). ``started`` is told ("", 0) once the
    command was exec'd, or the error that kept it from starting and the exit code that goes with it."""
    config = container.config
    layer_count = len(config.chain_ids)
    program = process.seccomp_program(container)
    group = cgroups.for_container(container.id)
    group.create(cgroups.Limits(config.memory, config.cpus, config.pids_limit))
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX) if config.tty else (None, None)
    stdio = process.Stdio(config.tty)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    me = os.pidfd_open(os.getpid())  # close-on-exec, like every fd Python opens
    try:
        linux.unshare(linux.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                for fd in (err_r, go_w):  # the runner's ends: holding go_w, we would wait for ourselves
                    os.close(fd)
                stdio.close()
                if parent_sock is not None:
                    parent_sock.close()
                _child(container, layer_count, me, err_w, go_r, child_sock, stdio.child, program)
        finally:
            if os.getpid() != 1:
                linux.setns(own_pidns, linux.CLONE_NEWPID)  # our later children stay in our namespace
        try:
            group.add(pid)
            os.write(go_w, b"g")
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            group.remove()
            stdio.close()
            raise
    finally:
        for fd in (own_pidns, me, err_w, go_r, go_w):
            os.close(fd)
        stdio.close_child_ends()
        if child_sock is not None:
            child_sock.close()
    previous = {sig: signal.signal(sig, lambda s, _f: _forward(pid, s)) for sig in FORWARDED_SIGNALS}
    log = logs.LogWriter(container.path(logs.LOG_NAME))
    try:
        master = tty.receive_master(parent_sock) if parent_sock is not None else None
        message = process.read_all(err_r)
        if not message:  # exec'd: only now may anything join it (exec, kill), and it is the command, not us
            container.record_running(pid)
            started("", 0)
        if master is not None:
            try:
                tty.relay(master, config.interactive and echo, log, echo)
            finally:
                os.close(master)
        else:
            stdio.feed(config.interactive and echo)
            logs.pump({stdio.stdout: "stdout", stdio.stderr: "stderr"}, log, echo)
        _, status = os.waitpid(pid, 0)
    finally:
        if parent_sock is not None:
            parent_sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(err_r)
        stdio.close()
        log.close()
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    cgroups.kill_all(group)  # nothing outlives PID 1 in its pid namespace, but be sure before rmdir
    group.remove()
    container.set_state(status="exited", exit_code=code, finished=time.time(), error=message)
    if message:
        started(message, code)
        raise StrataError(message, Kind.SYSTEM, exit_code=code)
    return code


def _forward(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def run(store: Store, opts: RunOptions) -> int:
    container = create_container(store, opts)
    if opts.detach:
        return detach(container)
    try:
        return start(container)
    finally:
        if opts.remove:
            container.remove(force=True)


def detach(container: Container) -> int:
    """``-d``: a monitor process (in a session of its own) owns the container, logs its output, records its exit
    and removes it if asked; we return once the command was exec'd, printing the container's ID."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    monitor = os.fork()
    if monitor == 0:
        os.close(ready_r)
        code = 0
        report = _Once(ready_w)
        try:
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            start(container, echo=False, started=report)
        except BaseException as e:  # nothing of the monitor may reach the user's terminal
            report(str(e) or type(e).__name__, process.EXIT_RUNNER_ERROR)
            code = 1
        finally:
            if container.config.auto_remove:
                with contextlib.suppress(BaseException):
                    container.remove(force=True)
            os._exit(code)
    os.close(ready_w)
    try:
        answer = process.read_all(ready_r)
    finally:
        os.close(ready_r)
    if answer != "ok":
        os.waitpid(monitor, 0)
        number, _, message = answer.partition(" ")
        raise StrataError(message or "the container's monitor died before the container started", Kind.SYSTEM,
                          exit_code=int(number) if number.isdigit() else process.EXIT_RUNNER_ERROR)
    print(container.id)
    return 0


class _Once:
    """Tells the waiting runner "ok" or the error, once: a second write could hit a reused fd number."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, error: str, code: int) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, (f"{code} {error}" if error else "ok").encode(errors="replace")[:4000])
        os.close(self.fd)
        self.fd = -1
