"""``runner-oci exec``: another process in a created or running container, through the runner's exec stage
(stage.c, :mod:`runner.executor.stage`): a static program exec'd from a sealed memfd, with no environment, that
joins every namespace of the init at once through a pidfd, becomes the process (its user, the four capability sets
as given, rlimits, seccomp, no_new_privs) outside the container's pid namespace and only then forks the command
there. No process holding the host's interpreter, fds or environment ever enters the container (the
CVE-2019-5736 shape), as for ``runner exec``.

``--detach`` (how containerd's shim, Docker and conmon exec): the stage says the command's pid and exits; the
command is then the caller's (a child subreaper), whose wait gets its status; ``--pid-file`` names it. Without it
the stage waits and its status is the command's, which ``exec`` returns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import stat
from pathlib import Path

from runner import linux
from runner.executor import stage
from runner.executor.channel import Channel, Failed, Go, Pty, SetupFailed, Step
from runner.executor.supervise import exit_code
from runner.isolation import cgroups, seccomp, security
from runner.oci import config as oci_config
from runner.oci import init, lifecycle
from runner.oci.config import Process
from runner.oci.state import State
from shared.errors import Kind, StrataError
from shared.layer import safepath

FLAGS = {"user": linux.CLONE_NEWUSER, "ipc": linux.CLONE_NEWIPC, "uts": linux.CLONE_NEWUTS,
         "network": linux.CLONE_NEWNET, "pid": linux.CLONE_NEWPID, "cgroup": linux.CLONE_NEWCGROUP,
         "mount": linux.CLONE_NEWNS}


def run(g: lifecycle.Globals, args: argparse.Namespace) -> int:
    st = State.read(g.root, args.id)
    status = st.status
    if status == "stopped":
        raise StrataError("cannot exec in a stopped container", Kind.STATE)
    if status == "paused" and not args.ignore_paused:
        raise StrataError("cannot exec in a paused container (use --ignore-paused to override)", Kind.STATE)
    config = oci_config.parse(st.config_doc(), Path(st.bundle))
    p = oci_config.process_from_file(args.process) if args.process else _from_args(config.process, args)
    if p.terminal and not args.console_socket:
        raise StrataError("exec with a terminal needs --console-socket", Kind.USAGE)
    pidfd = st.open_init()
    try:
        init.check_capabilities(p, "exec: process.capabilities")
        _check_command(st.pid, p)
        program = None
        if config.seccomp is not None:
            program = seccomp.program_for_text(json.dumps(config.seccomp, sort_keys=True), frozenset(),
                                               g.root / ".cache" / "seccomp", "linux.seccomp of config.json")
        job = _job(config, p, program, args.detach)
        ours, theirs = Channel.pair()
        record_r, record_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = stage.spawn(job, {"pidfd": pidfd, "channel": theirs.fileno(), "record": record_w}, (0, 1, 2))
        finally:
            theirs.close()
            os.close(record_w)
    finally:
        os.close(pidfd)
    try:
        return _attend(st, p, pid, ours, record_r, args)
    finally:
        ours.close()
        os.close(record_r)


def _from_args(base: Process | None, args: argparse.Namespace) -> Process:
    """runc's flags over the container's own process: the command, --cwd, -e, -u UID[:GID], -g, --cap, -t,
    --no-new-privs."""
    if base is None:
        raise StrataError("the container's config.json has no process to start from: give --process", Kind.USAGE)
    if not args.command:
        raise StrataError("exec needs a command (or --process)", Kind.USAGE)
    uid, gid = base.uid, base.gid
    if args.user:
        u, _, gr = args.user.partition(":")
        if not u.isdigit() or (gr and not gr.isdigit()):
            raise StrataError(f"exec --user {args.user!r}: give UID[:GID] in numbers", Kind.USAGE)
        uid, gid = int(u), int(gr) if gr else gid
    caps = dict(base.capabilities)
    for name in args.cap:
        number = security.CAPABILITIES.index(name.removeprefix("CAP_")) if name.removeprefix("CAP_") in \
            security.CAPABILITIES else None
        if number is None:
            raise StrataError(f"exec --cap: unknown capability {name!r}", Kind.USAGE)
        for kind in ("bounding", "effective", "permitted"):
            caps[kind] = caps.get(kind, frozenset()) | {number}
    return Process(tuple(args.command), (*base.env, *args.env), args.cwd or base.cwd, uid, gid,
                   tuple(int(x) for x in args.additional_gids) or base.additional_gids, base.umask, args.tty, None,
                   caps, base.rlimits, base.no_new_privileges or args.no_new_privs)


def _check_command(pid: int, p: Process) -> None:
    """runc finds the command before it starts it (``executable file not found in $PATH``, which callers map to
    127): so do we, in the container's root as its init sees it, every path resolved inside it (openat2
    RESOLVE_IN_ROOT): a symlink there cannot make us look at the host."""
    name = p.args[0]
    env = dict(e.split("=", 1) for e in p.env if "=" in e)
    paths = [name] if "/" in name else [os.path.join(d or ".", name) for d in env.get("PATH", "").split(":")] \
        if env.get("PATH") else []
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for path in paths:
            full = path if path.startswith("/") else os.path.join(p.cwd, path)
            try:
                fd = safepath.openat2(root, full.lstrip("/") or ".", os.O_PATH,
                                      safepath.RESOLVE_IN_ROOT | safepath.RESOLVE_NO_MAGICLINKS)
            except OSError:
                continue
            try:
                mode = os.fstat(fd).st_mode
            finally:
                os.close(fd)
            if stat.S_ISREG(mode) and mode & 0o111:
                return
    finally:
        os.close(root)
    raise StrataError(f'exec: "{name}": executable file not found in $PATH' if "/" not in name else
                      f"exec: {name}: no such file or directory", Kind.SYSTEM, exit_code=127)


def _job(config: oci_config.Config, p: Process, program: seccomp.Program | None, detach: bool) -> bytes:
    namespaces = sum(flag for kind, flag in FLAGS.items() if config.namespace(kind) is not None)
    try:
        rlimits = [(getattr(resource, kind), soft, hard) for kind, soft, hard in p.rlimits]
    except AttributeError as e:
        raise StrataError(f"cannot exec: {e}", Kind.SYSTEM) from None

    def mask(kind: str) -> int:
        return sum(1 << n for n in p.caps(kind) & security.own_bounding_set())

    return stage.job(namespaces, p.cwd, rlimits, mask("bounding"), security._last_cap(), p.no_new_privileges,
                     program, (p.uid, p.gid, p.additional_gids),
                     dict(e.split("=", 1) for e in p.env if "=" in e), p.args, p.terminal,
                     cap_sets=(mask("effective"), mask("permitted"), mask("inheritable"), mask("ambient")),
                     detach=detach)


def _attend(st: State, p: Process, pid: int, ours: Channel, record_r: int, args: argparse.Namespace) -> int:
    """The stage in the container's groups, Go, then what it says: the pty for the console socket, a failure,
    the detached command's pid; without --detach its exit status."""
    try:
        if cgroups.usable():
            cgroups.join_groups_of(st.pid, pid)
        ours.send(Go())
    except BaseException:
        ours.close()
        os.waitpid(pid, 0)
        raise
    command = 0
    while (message := ours.recv()) is not None:
        if isinstance(message, Pty):
            try:
                init.send_console(args.console_socket, message.fd)
            finally:
                os.close(message.fd)
        elif isinstance(message, SetupFailed):
            os.waitpid(pid, 0)
            raise StrataError(stage.says(message, p.cwd).message, Kind.SYSTEM)
        elif isinstance(message, Step) and message.name.startswith("pid "):
            command = int(message.name.split()[1])
    if args.detach:
        os.waitpid(pid, 0)
        if not command:
            raise StrataError("cannot exec: the stage ended before it started the command", Kind.SYSTEM)
        if args.pid_file:
            lifecycle.write_pid_file(args.pid_file, command)
        return 0
    if args.pid_file:
        lifecycle.write_pid_file(args.pid_file, pid)
    code = exit_code(os.waitpid(pid, 0)[1])
    failed = stage.read_record(record_r, p.args[0], code)
    if isinstance(failed, Failed):
        raise StrataError(failed.message, Kind.SYSTEM, exit_code=code)
    return code
