"""The last steps of every process that runs inside a container (PID 1 of ``run``, and ``exec``): become the
container's user with its capabilities, in its working directory and environment, close every other fd, exec.
Failures reach the runner as one line over ``err_fd``, with Docker's exit codes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from runner import security, user
from runner.container import ContainerConfig
from shared.errors import Kind, StrataError

# Docker's exit codes for failures of its own (docker run reference, "Exit status")
EXIT_RUNNER_ERROR = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecFailed(Exception):
    """exec itself failed: 126 or 127, not 125."""


def exec_env(config: ContainerConfig, home: str, extra: Sequence[str] = (), tty: bool = False) -> dict[str, str]:
    env = dict(e.split("=", 1) for e in [*config.env, *extra] if "=" in e)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", config.hostname)
    env.setdefault("HOME", home)
    if tty:
        env.setdefault("TERM", "xterm")
    return env


def become_and_exec(config: ContainerConfig, argv: Sequence[str], err_fd: int, user_spec: str | None = None,
                    workdir: str | None = None, extra_env: Sequence[str] = (), tty: bool = False,
                    init: bool = False) -> NoReturn:
    """In the container's namespaces and root: drop to the user, keep only its capabilities, exec ``argv``."""
    who = user.resolve(config.user if user_spec is None else user_spec, Path("/"))
    env = exec_env(config, who.home, extra_env, tty)
    cwd = workdir or config.working_dir
    os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)
    if not os.getcwd().startswith("/"):  # runc CVE-2024-21626: cwd must be inside the container
        raise StrataError(f"working directory {cwd} is outside the container", Kind.SYSTEM)
    privileges = security.Privileges(frozenset(config.capabilities), config.no_new_privileges, config.privileged)
    security.limit_bounding_set(privileges)
    os.setgroups(list(who.groups))
    os.setgid(who.gid)
    os.setuid(who.uid)
    security.set_capabilities(privileges, who.uid)
    os.closerange(3, err_fd)
    os.closerange(err_fd + 1, 1 << 16)
    reset_signals()
    if init and "/" not in argv[0] and not any(
            os.access(os.path.join(d, argv[0]), os.X_OK) for d in env["PATH"].split(":")):
        raise ExecFailed(argv[0], FileNotFoundError(errno.ENOENT, "not found"))  # tini would only say it failed
    full = ["/dev/init", "--", *argv] if init else list(argv)
    try:
        os.execvpe(full[0], full, env)
    except OSError as e:
        raise ExecFailed(argv[0], e) from None


def reset_signals() -> None:
    """Ignored signals stay ignored across exec: Python ignores SIGPIPE and SIGXFSZ, and a shell that started
    the runner with & or nohup ignores INT, QUIT or HUP. The container's processes start with every default."""
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def fail(err_fd: int, error: BaseException, what: str = "start the container") -> NoReturn:
    """Report why we could not exec, on one line, and _exit with Docker's code for it."""
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
    with contextlib.suppress(OSError):
        os.write(err_fd, message.encode(errors="replace")[:4000])
    os._exit(code)


def read_all(fd: int) -> str:
    """Everything until EOF: an error pipe closes empty when exec succeeded (close-on-exec)."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
