"""The last steps of every process that runs inside a container (PID 1 of ``run``, and ``exec``): become the
container's user with its capabilities, in its working directory and environment, close every other fd, exec.
Failures reach the runner as one line (:func:`failure`), with Docker's exit codes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from runner import linux
from runner.isolation import seccomp, security, user
from runner.logs import writer as logs
from runner.spec import DEFAULT_PATH, Spec
from shared.errors import Kind, StrataError

# Docker's exit codes for failures of its own (docker run reference, "Exit status")
EXIT_RUNNER_ERROR = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class ExecFailed(Exception):
    """exec itself failed: 126 or 127, not 125."""


def exec_env(spec: Spec, home: str, extra: Sequence[str] = (), tty: bool = False) -> dict[str, str]:
    """The spec's environment (complete but for HOME, which only the resolved user tells), plus ``exec -e``."""
    env = dict(e.split("=", 1) for e in [*spec.env, *extra] if "=" in e)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", spec.hostname)
    env.setdefault("HOME", home)
    if tty:
        env.setdefault("TERM", "xterm")
    return env


def become(spec: Spec, program: seccomp.Program | None, user_spec: str | None = None, workdir: str | None = None,
           extra_env: Sequence[str] = (), tty: bool = False) -> dict[str, str]:
    """In the container's namespaces and root: become what its command will be (its user, working directory, a
    session keyring of its own, limits, bounding set, seccomp filter, credentials, capabilities, no_new_privs if
    asked); return the command's environment. PID 1 of ``run`` does this as itself. ``exec``'s stage (stage.c, a
    program of its own: runner/executor/stage.py) takes the same steps in the same order, with the values the runner
    resolved, before it forks the command into the container's pid namespace, so that no process of ours the
    container can see (and with CAP_SYS_PTRACE, trace) ever holds more than the container does: a change here is a
    change there."""
    who = user.resolve(spec.user if user_spec is None else user_spec, Path("/"))
    env = exec_env(spec, who.home, extra_env, tty)
    cwd = workdir or spec.cwd
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
    if not os.getcwd().startswith("/"):  # runc CVE-2024-21626: cwd must be inside the container
        raise StrataError(f"working directory {cwd} is outside the container", Kind.SYSTEM)
    linux.join_new_session_keyring()
    privileges = spec.privileges
    for limit in spec.rlimits:  # while we may still raise them
        hard = resource.RLIM_INFINITY if limit.hard >= (1 << 64) - 1 else limit.hard
        soft = resource.RLIM_INFINITY if limit.soft >= (1 << 64) - 1 else limit.soft
        resource.setrlimit(getattr(resource, limit.type), (soft, hard))
    security.limit_bounding_set(privileges)
    if program is not None:  # while we hold CAP_SYS_ADMIN; what follows is all allowed by Docker's profile
        seccomp.install(program)
    if not groups_denied():
        os.setgroups(list(who.groups))
    os.setgid(who.gid)
    os.setuid(who.uid)
    security.set_capabilities(privileges, who.uid)
    return env


def groups_denied() -> bool:
    """A user namespace that maps one id (a user without subordinate ids) had setgroups(2) denied before its
    map was written, as the kernel requires: no group but the user's exists there to set, so the process keeps
    the one it has (podman's rootless containers do the same)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except FileNotFoundError:
        return False


def close_fds(*keep: int) -> None:
    """Close every fd above stdio but ``keep``: what the command must not inherit (close-on-exec or not)."""
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def exec_command(argv: Sequence[str], env: dict[str, str], init: bool = False) -> NoReturn:
    """Exec ``argv`` with every signal at its default (with ``init``, ``argv`` is behind ``/dev/init --``)."""
    reset_signals()
    command = argv[2:] if init else argv
    if init and "/" not in command[0] and not any(
            os.access(os.path.join(d, command[0]), os.X_OK) for d in env["PATH"].split(":")):
        raise ExecFailed(command[0], FileNotFoundError(errno.ENOENT, "not found"))  # tini would only say it failed
    try:
        os.execvpe(argv[0], list(argv), env)
    except OSError as e:
        raise ExecFailed(command[0], e) from None


def become_and_exec(spec: Spec, argv: Sequence[str], err_fd: int, parent_fd: int,
                    program: seccomp.Program | None, tty: bool = False, init: bool = False) -> NoReturn:
    """PID 1 of ``run``, in a session of its own with stdio that are not the host's: :func:`become`, then exec.
    ``parent_fd`` names the process (a pidfd) whose death must take this one along; ``err_fd`` is the one fd kept
    open (close-on-exec), on which the caller reports a failure."""
    env = become(spec, program, tty=tty)
    linux.die_with_parent(parent_fd)  # a change of credentials cleared it
    close_fds(err_fd)
    exec_command(argv, env, init)


def seccomp_program(spec: Spec, cache_dir: Path) -> seccomp.Program | None:
    """The spec's ``linux.seccomp`` as a BPF program, made before anything enters the container (compiled once per
    profile, capabilities, kernel and libseccomp, then taken from ``cache_dir``, the store's cache), so that inside
    only one seccomp(2) call remains. None when the spec has no filter (unconfined, --privileged)."""
    if spec.seccomp is None:
        return None
    return seccomp.program_for_text(json.dumps(spec.seccomp, sort_keys=True), spec.capabilities, cache_dir,
                                    "linux.seccomp of the container's config.json")


class Stdio:
    """The container's stdin, stdout and stderr: pipes (or, with -t, placeholders until its pty), never one of
    the runner's own fds. The runner keeps the other ends."""

    def __init__(self, tty: bool) -> None:
        if tty:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.child: tuple[int, int, int] = (r, w, w)
            self.stdin, self.stdout, self.stderr = -1, -1, -1
        else:
            in_r, self.stdin = os.pipe2(os.O_CLOEXEC)
            self.stdout, out_w = os.pipe2(os.O_CLOEXEC)
            self.stderr, err_w = os.pipe2(os.O_CLOEXEC)
            self.child = (in_r, out_w, err_w)

    def close_child_ends(self) -> None:
        for fd in set(self.child):
            os.close(fd)

    def feed(self, interactive: bool) -> None:
        """-i without -t: our stdin goes to the container's through the pipe; otherwise it reads end of input."""
        if self.stdin >= 0:
            if interactive:
                logs.feed(sys.stdin.fileno(), self.stdin)
            else:
                os.close(self.stdin)
            self.stdin = -1

    def close(self) -> None:
        """The runner's ends; idempotent."""
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd >= 0:
                os.close(fd)
        self.stdin, self.stdout, self.stderr = -1, -1, -1


def private_stdio(stdin: int, stdout: int, stderr: int) -> None:
    """Make these fds 0, 1 and 2, first thing after fork: until then they are the runner's, which may be the
    user's terminal (TIOCSTI) or a host file (fchmod)."""
    for target, fd in enumerate((stdin, stdout, stderr)):
        os.dup2(fd, target)


def reset_signals() -> None:
    """Ignored signals stay ignored across exec: Python ignores SIGPIPE and SIGXFSZ, and a shell that started
    the runner with & or nohup ignores INT, QUIT or HUP. The container's processes start with every default."""
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


@contextlib.contextmanager
def handling(signals: Sequence[int], handler: Callable[[int, object], None]) -> Iterator[None]:
    """While the block runs, ``handler`` takes ``signals`` instead of us (the runner passing them on to a container:
    supervise's forwarding, attach's --sig-proxy); the handlers that were there before come back after it,
    however it ends."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def failure(error: BaseException, what: str = "start the container") -> tuple[str, int]:
    """Why we could not exec, on one line, and Docker's exit code for it."""
    code = EXIT_RUNNER_ERROR
    if isinstance(error, ExecFailed):
        name, cause = error.args
        if cause.errno == errno.ENOENT:
            code, message = EXIT_NOT_FOUND, f"exec: {name!r}: executable file not found"
        else:
            code, message = EXIT_NOT_EXECUTABLE, f"exec: {name!r}: {cause.strerror}"
    elif isinstance(error, OSError):
        message = f"cannot {what}: {error.strerror}" + (f": {error.filename}" if error.filename else "")
    else:
        message = f"cannot {what}: {error}"
    return message, code
