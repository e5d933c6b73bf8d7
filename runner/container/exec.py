"""``exec``: run another command in a running container: its namespaces, its cgroup, its user, environment,
capabilities, seccomp filter and limits (by being in its cgroup), optionally with a terminal of its own.

No process that holds the host's interpreter, environment or fds ever enters the container's pid namespace (the
CVE-2019-5736 shape, where container root opens ``/proc/PID/exe`` of the runtime while it joins). The runner starts
a *stage* (stage.c, :mod:`runner.executor.stage`): a small static program exec'd from a sealed memfd copy of
itself, with an empty environment and only the fds it needs. The runner resolves everything first, by the code
``run`` uses (the user from the container's own /etc/passwd, read through PID 1's root; environment, seccomp
program, capabilities, limits), puts the stage in the container's cgroups and says Go; the stage makes itself
non-dumpable and joins, through a pidfd naming the container's PID 1 (so a reused pid cannot stand in for it), all
its namespaces at once. setns() of a pid namespace applies to children only: the stage, outside it, becomes what
the command will be (user, limits, seccomp, capabilities), closes every other fd, and only then forks the command,
the only process of ours the container can see, which holds nothing the container does not (CAP_SYS_PTRACE in the
container gains nothing by tracing it) and execs.

The job reaches the stage in a sealed memfd (whatever a command line holds). What comes back comes on a
:class:`runner.executor.channel.Channel` that no process in the container ever holds: the pty's master (Pty), then at
most one SetupFailed (numbers, which the runner's table puts in words), then end of file. The runner relays the
command's terminal or output meanwhile with the one supervise loop (:mod:`runner.executor.supervise`; no signal is
forwarded: ``exec`` has no ``--sig-proxy``, as Docker's) and, once the stage has exited, reads the channel's last
word and at most one record of the command's failed exec (:func:`runner.executor.stage.read_record`); a container
that steals and holds or floods a pipe of the command's can neither stall that nor write it
(tests/test_exec_stage.py).
"""

from __future__ import annotations

import os
import resource
import select
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import linux
from runner.container.record import Container
from runner.executor import process, stage
from runner.executor.channel import Channel, Failed, Go, Message, Pty, SetupFailed
from runner.executor.supervise import Started, supervise
from runner.isolation import cgroups, security, user
from shared.errors import Kind, StrataError, usage


@dataclass(frozen=True)
class ExecOptions:
    """``runner exec``'s options, as Docker's."""

    command: Sequence[str]
    interactive: bool = False
    tty: bool = False
    user: str | None = None
    env: Sequence[str] = ()
    workdir: str | None = None


def exec_in(container: Container, opts: ExecOptions) -> int:
    if not opts.command:
        raise usage("exec needs a command")
    if container.state().paused:  # a frozen PID 1 would hold the exec's stage frozen too: Docker's refusal
        raise StrataError(f"Container {container.id} is paused, unpause the container before exec", Kind.STATE)
    pidfd = container.open_process()
    try:
        pid1 = container.state().pid
        job = _job(container, opts, pid1, pidfd)
        ours, theirs = Channel.pair()
        record_r, record_w = os.pipe2(os.O_CLOEXEC)
        stdio = process.Stdio(opts.tty)
        try:
            pid = stage.spawn(job, {"pidfd": pidfd, "channel": theirs.fileno(), "record": record_w}, stdio)
        except BaseException:
            stdio.close()
            ours.close()
            os.close(record_r)
            raise
        finally:
            stdio.close_child_ends()
            theirs.close()
            os.close(record_w)
    finally:
        os.close(pidfd)
    return _attend(container, opts, Started(pid, stdio), ours, record_r, pid1)


def _attend(container: Container, opts: ExecOptions, started: Started, ours: Channel, record_r: int,
            pid1: int) -> int:
    """Admit the stage to the container's cgroups, say Go, relay, wait; the command's exit code (the stage's
    exit status is the command's), or its failure."""
    try:
        try:
            _admit(container, started.pid, pid1)
            ours.send(Go())
        except BaseException:
            ours.close()  # the stage reads end of file and exits
            os.waitpid(started.pid, 0)
            raise
        if opts.tty:
            first = _recv(ours)
            if isinstance(first, Pty):
                started.master = first.fd
            else:  # it failed (or ended) before the command had its terminal: nothing to relay
                started.close()
                return _result(first, started.wait(), opts, container, record_r)
        code = supervise(started, opts.interactive, None, True, forward_signals=False)
        return _result(_recv(ours), code, opts, container, record_r)
    finally:
        ours.close()
        started.close()
        os.close(record_r)


def _job(container: Container, opts: ExecOptions, pid1: int, pidfd: int) -> bytes:
    """Everything the stage applies, resolved here by the code ``run`` uses (runner.executor.process.become's
    steps, the values only): the stage decides nothing."""
    spec = container.spec
    who = _user(container, opts.user if opts.user is not None else spec.user, pid1, pidfd)
    try:
        rlimits = [(getattr(resource, limit.type), limit.soft, limit.hard) for limit in spec.rlimits]
    except AttributeError as e:
        raise StrataError(f"cannot {stage.WHAT}: {e}", Kind.SYSTEM) from None
    privileges = spec.privileges
    capabilities = sum(1 << n for n in privileges.numbers() & security.own_bounding_set())
    namespaces = stage.NAMESPACES | (linux.CLONE_NEWUSER if spec.id_block is not None else 0)
    return stage.job(namespaces, opts.workdir or spec.cwd, rlimits, capabilities, security._last_cap(),
                     privileges.no_new_privileges,
                     process.seccomp_program(spec, container.store.root / "cache" / "seccomp"),
                     (who.uid, who.gid, who.groups), process.exec_env(spec, who.home, opts.env, opts.tty),
                     opts.command, opts.tty)


def _user(container: Container, spec: str, pid1: int, pidfd: int) -> user.ExecUser:
    """``user[:group]`` from the container's /etc/passwd and /etc/group, read safely (user.read_etc) inside PID 1's
    root as the host sees it. Checked after: PID 1 still runs, so its pid named it and no process that took the
    pid over."""
    try:
        who = user.resolve(spec, Path(f"/proc/{pid1}/root"))
    except StrataError as e:
        raise StrataError(f"cannot {stage.WHAT}: {e}", Kind.SYSTEM, exit_code=process.EXIT_RUNNER_ERROR) from None
    if select.select([pidfd], [], [], 0)[0]:  # readable once it has exited
        raise StrataError(f"container {container.name} is not running", Kind.STATE)
    return who


def _admit(container: Container, stage_pid: int, pid1: int) -> None:
    """The stage in the container's cgroups, before its Go (so before it joins anything). A runtime's container
    is where its PID 1 is (runc and crun place it differently); without root a container has none (a runtime's
    PID 1 stays in the user's groups, where the stage already is; ours adds to a NoCgroup: nothing)."""
    spec = container.spec
    try:
        if spec.runtime and cgroups.usable():
            cgroups.join_groups_of(pid1, stage_pid)
        elif not spec.runtime:
            cgroups.for_container(spec.id).add(stage_pid)
    except StrataError as e:
        raise StrataError(f"cannot {stage.WHAT}: {e}", Kind.SYSTEM, exit_code=process.EXIT_RUNNER_ERROR) from None


def _result(last: Message | None, code: int, opts: ExecOptions, container: Container, record_r: int) -> int:
    """The stage's last word on the channel (SetupFailed, or end of file) and its exit code: the command's code, or
    the failure that kept it from running (the stage's step, or the command's record)."""
    if isinstance(last, SetupFailed):
        last = stage.says(last, opts.workdir or container.spec.cwd)
    elif last is None:
        last = stage.read_record(record_r, opts.command[0], code)
    if isinstance(last, Failed):
        raise StrataError(last.message, Kind.SYSTEM, exit_code=code)
    return code


def _recv(chan: Channel) -> Message | None:
    try:
        return chan.recv()
    except (OSError, ValueError) as e:
        raise StrataError(f"cannot read the exec stage's report: {e}", Kind.SYSTEM) from None
