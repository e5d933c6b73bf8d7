"""The exec stage's runner side: the job the stage reads and what its failures say (see :mod:`runner.container.exec`).

The stage itself is ``stage.c``, a small static program (``strata-exec``, built by scripts/setup next to this
file): it joins the container and forks the command there, as its header describes. A program rather than a second
interpreter: an interpreter exec'd from a sealed memfd cost ``runner exec`` ~80 ms of imports, three times all of
``runc exec``; the program starts in about a millisecond and maps no host library. It decides nothing: every value
it applies is resolved here, from the container's spec, by the code ``run`` uses (the user from the container's
own /etc/passwd, read safely through PID 1's root; the environment; the seccomp program from the store's cache;
capabilities, limits), and it reports a failure as numbers that :func:`says` puts in words. Its job is a sealed
memfd of tagged fields (``TAG``, length, bytes; numbers as u64), whatever a command line holds.

Two processes of ours, each holding only what it must:

    stage   never in the container's pid namespace, so nothing there can see or trace it: holds the runner's
            channel (:mod:`runner.executor.channel`), joins the container (cgroups, set by the runner before its
            Go, then every namespace at once through a pidfd of its PID 1), does every privileged step there
            (:func:`runner.executor.process.become`'s, in its order: working directory, keyring, rlimits, bounding
            set, seccomp, groups, gid, uid, capabilities, no_new_privs; the pty, whose master goes to the runner),
            closes every fd the command must not hold (the channel among them), forks the command, exits with its
            status. A failure before the fork goes to the runner as SetupFailed.
    command the one process of ours the container can see: from its first moment what the command will be (a
            tracer with CAP_SYS_PTRACE gains nothing the container did not have). It holds stdio, its terminal
            and the write end of the record pipe (close-on-exec) and execs; if it cannot, it writes one
            RECORD (which step, errno) and exits with Docker's code.

A container may steal the record pipe (pidfd_getfd on the stopped command) and hold or write it: the runner reads
it only after the stage has exited (the command is gone), without blocking, one record; it builds the message from
its own table and the command's name, and only when the exit status is the one that record means
(:func:`read_record`). The channel no process in the container ever held (the third review, issue 18).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from runner import linux
from runner.executor import process
from runner.executor.channel import Failed, SetupFailed
from runner.isolation import seccomp
from shared.errors import Kind, StrataError, usage

HELPER = Path(__file__).with_name("strata-exec")  # stage.c, built by scripts/setup
NAME = "strata-exec"  # its comm and its memfd's name: what the container may see of it
NAMESPACES = (linux.CLONE_NEWIPC | linux.CLONE_NEWUTS | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP
              | linux.CLONE_NEWPID | linux.CLONE_NEWNS)
WHAT = "exec in the container"

# stage.c's enum tag (tests/unit/test_stage_job.py keeps the two in step)
TAGS = {"runner": 1, "pidfd": 2, "channel": 3, "exe": 4, "record": 5, "namespaces": 6, "cwd": 7, "rlimit": 8,
        "capabilities": 9, "last_cap": 10, "no_new_privs": 11, "seccomp_flags": 12, "seccomp_filter": 13, "uid": 14,
        "gid": 15, "group": 16, "env": 17, "argv": 18, "tty": 19, "cap_sets": 20, "detach": 21}
_FIELD = struct.Struct("=II")
_NUMBER = struct.Struct("=Q")
_RLIMIT = struct.Struct("=QQQ")
_INFINITY = (1 << 64) - 1  # RLIM_INFINITY

# The command's failure record: which step failed, and its errno (0: not an OSError)
RECORD = struct.Struct("=ii")
STEP_SETUP, STEP_EXEC = 1, 2

# stage.c's enum step, past the record's two: what each says (after "cannot exec in the container: "), from the
# errno's text (E), the working directory (CWD) or the part of it made so far (AT); Python's words for each call
_SAYS = {3: "the stage's job is malformed", 4: "prctl(PR_SET_PDEATHSIG): {E}", 5: "prctl(PR_SET_DUMPABLE): {E}",
         6: "prctl(PR_SET_NAME): {E}", 7: "setns: {E}", 8: "{E}", 9: "{E}", 10: "{E}: {AT}", 11: "{E}: {CWD}",
         12: "{E}", 13: "working directory {CWD} is outside the container", 14: "keyctl(JOIN_SESSION_KEYRING): {E}",
         15: "{E}", 16: "prctl(PR_CAPBSET_DROP): {E}", 17: "prctl(PR_CAP_AMBIENT): {E}",
         18: "seccomp: cannot install the filter: {AT} bytes are not 1 to 4096 instructions",
         19: "seccomp: cannot install the filter: {E}", 20: "{E}: /proc/self/setgroups", 21: "{E}", 22: "{E}",
         23: "{E}", 24: "capset: {E}", 25: "prctl(PR_SET_NO_NEW_PRIVS): {E}"}
STEP_MKDIR, STEP_RLIMIT = 10, 15  # the two whose words need more than the errno's
_RLIMIT_WORDS = {errno.EINVAL: "current limit exceeds maximum limit", errno.EPERM: "not allowed to raise maximum limit"}


def job(namespaces: int, cwd: str, rlimits: Sequence[tuple[int, int, int]], capabilities: int, last_cap: int,
        no_new_privs: bool, program: seccomp.Program | None, ids: tuple[int, int, Sequence[int]],
        env: Mapping[str, str], argv: Sequence[str], tty: bool,
        cap_sets: tuple[int, int, int, int] | None = None, detach: bool = False) -> bytes:
    """The stage's job but for its fds (:func:`fds`): the namespaces to join and what the command will be, every
    value resolved (``capabilities`` a mask; ``ids`` uid, gid, groups; limits above 2**64-2 are unlimited).
    ``cap_sets`` (``runner-oci``): the four sets as masks, kept across the change of user; ``detach``: the stage
    says the command's pid on the channel and exits without waiting (a caller's shim adopts the command).
    A NUL byte no C string can carry (an image's Env may hold one) fails as the interpreter stage failed on it:
    its mkdir, or its execve before it could exec."""
    if "\0" in cwd:
        raise StrataError(f"cannot {WHAT}: embedded null byte", Kind.SYSTEM, exit_code=process.EXIT_RUNNER_ERROR)
    if any("\0" in text for text in (*argv, *env, *env.values())):
        raise StrataError(f"cannot {WHAT}: the command failed before its exec", Kind.SYSTEM,
                          exit_code=process.EXIT_RUNNER_ERROR)
    fields: list[tuple[str, bytes]] = [
        ("namespaces", _NUMBER.pack(namespaces)), ("cwd", os.fsencode(cwd)),
        ("capabilities", _NUMBER.pack(capabilities)), ("last_cap", _NUMBER.pack(last_cap)),
        ("uid", _NUMBER.pack(ids[0])), ("gid", _NUMBER.pack(ids[1]))]
    fields += [("rlimit", _RLIMIT.pack(kind, min(soft, _INFINITY), min(hard, _INFINITY)))
               for kind, soft, hard in rlimits]
    fields += [("group", _NUMBER.pack(g)) for g in ids[2]]
    fields += [("env", os.fsencode(f"{k}={v}")) for k, v in env.items()]
    fields += [("argv", os.fsencode(a)) for a in argv]
    if program is not None:
        fields += [("seccomp_flags", _NUMBER.pack(program.flags)), ("seccomp_filter", program.filter)]
    if cap_sets is not None:  # runner-oci: effective, permitted, inheritable, ambient as config.json gives them
        fields.append(("cap_sets", struct.pack("=4Q", *cap_sets)))
    fields += [(name, b"") for name, present in (("no_new_privs", no_new_privs), ("tty", tty), ("detach", detach))
               if present]
    return _encode(fields)


def fds(named: Mapping[str, int]) -> bytes:
    """The job's fds: runner (a pidfd of it), pidfd (of the container's PID 1), channel, exe, record."""
    return _encode([(name, _NUMBER.pack(fd)) for name, fd in named.items()])


def _encode(fields: Sequence[tuple[str, bytes]]) -> bytes:
    return b"".join(_FIELD.pack(TAGS[name], len(data)) + data for name, data in fields)


def says(failed: SetupFailed, cwd: str) -> Failed:
    """A stage's SetupFailed as the one line and exit code the runner reports: from this table, never from text
    of the stage's."""
    text = os.strerror(failed.errno) if 0 < failed.errno < 4096 else "unknown error"
    if failed.step == STEP_RLIMIT:
        text = _RLIMIT_WORDS.get(failed.errno, text)
    words = _SAYS.get(failed.step, "the stage failed at a step it has no name for ({STEP})")
    at = cwd[:failed.at] if failed.step == STEP_MKDIR else failed.at
    what = words.format(E=text, CWD=cwd, AT=at, STEP=failed.step)
    return Failed(f"cannot {WHAT}: {what}", process.EXIT_RUNNER_ERROR)


def _decode(step: int, number: int, name: str) -> tuple[str, int]:
    """A record as Docker's message and exit code, from our table: nothing of the record's but two numbers."""
    cause = OSError(number, os.strerror(number)) if 0 < number < 4096 else None
    if step == STEP_EXEC and cause is not None:
        return process.failure(process.ExecFailed(name, cause), WHAT)
    return process.failure(cause or RuntimeError("the command failed before its exec"), WHAT)


def read_record(fd: int, name: str, code: int) -> Failed | None:
    """After the stage has exited (the command is gone): at most one record, without waiting (a copy the
    container stole and holds must not stall us, and what it wrote is never more than RECORD.size bytes to us);
    believed only if the command exited with the code it means (a forged record cannot turn a success into a
    failure). ``fd`` stays open: the caller closes it."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, RECORD.size)
    except BlockingIOError:
        data = b""
    if len(data) != RECORD.size:
        return None
    step, number = RECORD.unpack(data)
    message, meant = _decode(step, number, name)
    return Failed(message, code) if meant == code else None


def spawn(job: bytes, named: dict[str, int], stdio: process.Stdio | tuple[int, int, int]) -> int:
    """The stage, exec'd from a sealed copy of itself with its job in a sealed memfd (module doc); its pid. It gets
    the container's stdio as 0, 1 and 2, the fds given (inheritable for the spawn: they are closed here or by the
    caller right after), every signal at its default, no environment; any other fd it finds it closes first."""
    exe = me = job_fd = -1
    moved: list[int] = []

    def above_stdio(fd: int) -> int:
        """A runner started with stdio closed holds some of its own fds as 0, 1 or 2, where the spawn puts the
        container's stdio: such a one goes above them (the copy is closed here after the spawn)."""
        if fd >= 3:
            return fd
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
        return moved[-1]

    try:
        try:
            exe = linux.sealed_copy(str(HELPER), NAME)
        except FileNotFoundError:
            raise StrataError(f"cannot start the exec stage: {HELPER} is missing (scripts/setup builds it "
                              "from stage.c)", Kind.SYSTEM) from None
        me = os.pidfd_open(os.getpid())
        job_fd = os.memfd_create("strata-exec-job", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        given = {name: above_stdio(fd) for name, fd in {**named, "runner": me, "exe": exe, "job": job_fd}.items()}
        job_at = given.pop("job")
        write_job(job_fd, fds(given) + job)
        for fd in (*given.values(), job_at):
            os.set_inheritable(fd, True)
        child = [above_stdio(fd) for fd in (stdio if isinstance(stdio, tuple) else stdio.child)]
        return os.posix_spawn(f"/proc/self/fd/{given['exe']}", [NAME, str(job_at)], {},
                              file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(child)],
                              setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as e:
        raise StrataError(f"cannot start the exec stage: {e.strerror or e}", Kind.SYSTEM) from None
    finally:
        for fd in (me, job_fd, exe, *moved):
            if fd >= 0:
                os.close(fd)


def write_job(fd: int, job: bytes) -> None:
    """The stage's job in a sealed memfd, which it reads to its end: any size a command line may have (a pipe
    would hold 64 KiB before the stage runs), and nothing can change it once sealed."""
    limit = 8 * os.sysconf("SC_ARG_MAX")  # our argv, with room for the fields' heads
    if len(job) > limit:
        raise usage(f"exec: the command and its environment are too large ({len(job)} bytes; at most {limit})")
    view = memoryview(job)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
