"""``exec``: run another command in a running container: its namespaces, its cgroup, its user, environment,
capabilities, seccomp filter and limits (by being in its cgroup), optionally with a terminal of its own.

No process that holds the host's interpreter, environment or fds ever enters the container's pid namespace (the
CVE-2019-5736 shape, where container root opens ``/proc/PID/exe`` of the runtime while it joins). The runner starts
a *stage* (:mod:`runner.stage`) exec'd from a sealed memfd copy of the interpreter, with an empty environment and
only the fds it needs; the stage makes itself non-dumpable, joins the container's cgroup and, through a pidfd
naming the container's PID 1 (so a reused pid cannot stand in for it), all its namespaces at once. setns() of a
pid namespace applies to children only: the stage, outside it, becomes what the command will be (user, limits,
seccomp, capabilities; :func:`runner.process.become`), closes every other fd, and only then forks the command, the
only process of ours the container can see, which holds nothing the container does not (CAP_SYS_PTRACE in the
container gains nothing by tracing it) and execs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner import logs, process, tty
from runner.container import Container
from shared.errors import Kind, StrataError, usage

# The stage's first lines: read the job from the fd named in argv, then import the runner from where this one came
# from (``-I`` keeps PYTHON* variables and the working directory out of sys.path).
_BOOT = ("import json,os,sys;j=json.loads(os.read(int(sys.argv[1]),1<<20));sys.path.insert(0,j['path']);"
         "import runner.stage as s;s.main(j)")
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class ExecOptions:
    command: Sequence[str]
    interactive: bool = False
    tty: bool = False
    user: str | None = None
    env: Sequence[str] = ()
    workdir: str | None = None


def exec_in(container: Container, opts: ExecOptions) -> int:
    if not opts.command:
        raise usage("exec needs a command")
    pidfd = container.open_process()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    job_r, job_w = os.pipe2(os.O_CLOEXEC)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX) if opts.tty else (None, None)
    stdio = process.Stdio(opts.tty)
    exe = me = -1
    try:
        exe = process.sealed_interpreter()
        me = os.pidfd_open(os.getpid())
        job = {"path": _PACKAGE_PARENT, "root": str(container.store.root), "id": container.id,
               "runner": me, "pidfd": pidfd, "job": job_r, "err": err_w, "exe": exe,
               "tty_sock": child_sock.fileno() if child_sock is not None else -1,
               "command": list(opts.command), "user": opts.user, "env": list(opts.env), "workdir": opts.workdir,
               "tty": opts.tty}
        os.write(job_w, json.dumps(job).encode())
        os.close(job_w)
        job_w = -1
        passed = [pidfd, me, err_w, job_r, exe] + ([child_sock.fileno()] if child_sock is not None else [])
        stage = subprocess.Popen([sys.executable, "-I", "-c", _BOOT, str(job_r)], executable=f"/proc/self/fd/{exe}",
                                 pass_fds=passed, env={}, stdin=stdio.child[0], stdout=stdio.child[1],
                                 stderr=stdio.child[2])
    except OSError as e:
        stdio.close()
        if parent_sock is not None:
            parent_sock.close()
        os.close(err_r)
        raise StrataError(f"cannot start the exec stage: {e.strerror or e}", Kind.SYSTEM) from None
    finally:
        for fd in (pidfd, me, err_w, job_r, job_w, exe):
            if fd >= 0:
                os.close(fd)
        stdio.close_child_ends()
        if child_sock is not None:
            child_sock.close()
    try:
        master = tty.receive_master(parent_sock) if parent_sock is not None else None
        message = process.read_all(err_r)
        if master is not None:
            try:
                tty.relay(master, opts.interactive)
            finally:
                os.close(master)
        else:
            stdio.feed(opts.interactive)
            logs.pump({stdio.stdout: "stdout", stdio.stderr: "stderr"}, None, True)
        code = stage.wait()
    finally:
        os.close(err_r)
        stdio.close()
        if parent_sock is not None:
            parent_sock.close()
    code = 128 - code if code < 0 else code
    if message:
        raise StrataError(message, Kind.SYSTEM, exit_code=code)
    return code
