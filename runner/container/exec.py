"""``exec``: run another command in a running container: its namespaces, its cgroup, its user, environment,
capabilities, seccomp filter and limits (by being in its cgroup), optionally with a terminal of its own.

No process that holds the host's interpreter, environment or fds ever enters the container's pid namespace (the
CVE-2019-5736 shape, where container root opens ``/proc/PID/exe`` of the runtime while it joins). The runner starts
a *stage* (:mod:`runner.executor.stage`) exec'd from a sealed memfd copy of the interpreter, with an empty environment
and only the fds it needs; the stage makes itself non-dumpable, joins the container's cgroup and, through a pidfd
naming the container's PID 1 (so a reused pid cannot stand in for it), all its namespaces at once. setns() of a
pid namespace applies to children only: the stage, outside it, becomes what the command will be (user, limits,
seccomp, capabilities; :func:`runner.executor.process.become`), closes every other fd, and only then forks the command,
the only process of ours the container can see, which holds nothing the container does not (CAP_SYS_PTRACE in the
container gains nothing by tracing it) and execs.

The job reaches the stage in a sealed memfd (whatever a command line holds). What comes back comes on a
:class:`runner.executor.channel.Channel` that no process in the container ever holds: the pty's master (Pty), then at
most one Failed (one line, built by the stage from its own table), then end of file when the stage exits. The runner
relays the command's terminal or output meanwhile with the one supervise loop (:mod:`runner.executor.supervise`;
no signal is forwarded: ``exec`` has no ``--sig-proxy``, as Docker's) and reads the channel's last word once the
stage has exited; a container that steals and holds or floods a pipe of the command's can neither stall that nor
write it (tests/test_exec_stage.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.container.record import Container
from runner.executor import process
from runner.executor.channel import Channel, Failed, Message, Pty
from runner.executor.supervise import Started, from_returncode, supervise
from shared.errors import Kind, StrataError, usage

# The stage's first lines: read the job from the sealed memfd named in argv (to its end), then import the runner from
# where this one came from (``-I`` keeps PYTHON* variables and the working directory out of sys.path).
_BOOT = ("import json,os,sys;f=int(sys.argv[1]);j=json.loads(b''.join(iter(lambda:os.read(f,1<<16),b'')));"
         "sys.path.insert(0,j['path']);import runner.executor.stage as s;s.main(j)")
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class ExecOptions:
    command: Sequence[str]
    interactive: bool = False
    tty: bool = False
    user: str | None = None
    env: Sequence[str] = ()
    workdir: str | None = None


@dataclass
class Stage(Started):
    """The exec stage, as the supervise loop attends it: its exit status is the command's."""

    popen: subprocess.Popen[bytes] = field(kw_only=True)

    def wait(self) -> int:
        return from_returncode(self.popen.wait())


def exec_in(container: Container, opts: ExecOptions) -> int:
    if not opts.command:
        raise usage("exec needs a command")
    ours, theirs = Channel.pair()
    stdio = process.Stdio(opts.tty)
    try:
        popen = _spawn(container, opts, theirs, stdio)
    except BaseException:
        stdio.close()
        ours.close()
        raise
    finally:
        stdio.close_child_ends()
        theirs.close()
    stage = Stage(popen.pid, stdio, popen=popen)
    try:
        if opts.tty:
            first = _recv(ours)
            if isinstance(first, Pty):
                stage.master = first.fd
            else:  # it failed (or ended) before the command had its terminal: nothing to relay
                stage.close()
                return _result(first, stage.wait())
        code = supervise(stage, opts.interactive, None, True, forward_signals=False)
        return _result(_recv(ours), code)
    finally:
        ours.close()
        stage.close()


def _spawn(container: Container, opts: ExecOptions, theirs: Channel, stdio: process.Stdio) \
        -> subprocess.Popen[bytes]:
    """The stage, exec'd from a sealed copy of our interpreter with its job in a sealed memfd (module doc)."""
    pidfd = exe = me = job_fd = -1
    try:
        pidfd = container.open_process()
        exe = process.sealed_interpreter()
        me = os.pidfd_open(os.getpid())
        job_fd = os.memfd_create("strata-exec-job", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        _write_job(job_fd, {"path": _PACKAGE_PARENT, "spec": container.spec.to_oci(), "bundle": str(container.dir),
                            "seccomp_cache": str(container.store.root / "cache" / "seccomp"),
                            "pid1": container.state().pid, "runner": me, "pidfd": pidfd, "job": job_fd,
                            "chan": theirs.fileno(), "exe": exe, "command": list(opts.command), "user": opts.user,
                            "env": list(opts.env), "workdir": opts.workdir, "tty": opts.tty})
        return subprocess.Popen([sys.executable, "-I", "-c", _BOOT, str(job_fd)], executable=f"/proc/self/fd/{exe}",
                                pass_fds=[pidfd, me, job_fd, exe, theirs.fileno()], env={}, stdin=stdio.child[0],
                                stdout=stdio.child[1], stderr=stdio.child[2])
    except OSError as e:
        raise StrataError(f"cannot start the exec stage: {e.strerror or e}", Kind.SYSTEM) from None
    finally:
        for fd in (pidfd, me, job_fd, exe):
            if fd >= 0:
                os.close(fd)


def _write_job(fd: int, job: dict[str, object]) -> None:
    """The stage's job in a sealed memfd, which it reads to its end: any size a command line may have (a pipe
    would hold 64 KiB before the stage runs), and nothing can change it once sealed."""
    data, limit = json.dumps(job).encode(), 8 * os.sysconf("SC_ARG_MAX")  # our argv, escaped: é is \u00e9
    if len(data) > limit:
        raise usage(f"exec: the command and its environment are too large ({len(data)} bytes; at most {limit})")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    os.lseek(fd, 0, os.SEEK_SET)


def _result(last: Message | None, code: int) -> int:
    """The stage's last word on the channel (Failed, or end of file) and its exit code: the command's code, or
    the failure that kept it from running."""
    if isinstance(last, Failed):
        raise StrataError(last.message, Kind.SYSTEM, exit_code=code)
    return code


def _recv(chan: Channel) -> Message | None:
    try:
        return chan.recv()
    except (OSError, ValueError) as e:
        raise StrataError(f"cannot read the exec stage's report: {e}", Kind.SYSTEM) from None
