"""``runner-oci create``: a caller's bundle made a container whose init waits for ``start`` (runc's create/start
split), with the runner's executor shape (:mod:`runner.executor.own`): a helper joins the namespaces config.json
names by path and makes the pid namespace, forks the init and exits; the parent puts the init in its cgroup and
says Go over one channel (:mod:`runner.executor.channel`); the init makes its other namespaces, reports, waits
while the prestart and createRuntime hooks run, builds the root (:mod:`runner.oci.mounts`), opens its terminal
(the master goes to the caller's console socket), checks that its command can be exec'd, says "created", and blocks
opening ``exec.fifo`` for writing. ``start`` opens it for reading: the init then runs the startContainer hooks,
becomes the process config.json describes (:func:`become`) and execs.

Unlike the runner's PID 1, the init outlives ``create``: it is the caller's (containerd's shim and conmon are child
subreapers and adopt it when the helper and ``create`` exit), so it does not die with us; ``run`` is a subreaper
itself and waits. Everything the command must not hold (the channel, the fifo, namespace fds) is close-on-exec or
closed before exec; the init is non-dumpable until exec, so the container cannot open its /proc/PID/exe (the
interpreter) or its fds while it waits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import resource
import signal
import socket
import stat
import struct
import subprocess  # noqa: F401 - hooks.run's, loaded before pivot_root: startContainer hooks run after it
import termios
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from runner import linux
from runner.executor import process
from runner.executor.channel import Channel, Failed, Go, Pty, Step
from runner.isolation import cgroups, devcgroup, seccomp, security, tty
from runner.oci import hooks, mounts
from runner.oci.config import Config, Process
from runner.oci.hooks import Hook
from runner.oci.state import FIFO, State
from shared import proc
from shared.errors import Kind, StrataError

NEW_NAMESPACES = {"mount": linux.CLONE_NEWNS, "uts": linux.CLONE_NEWUTS, "ipc": linux.CLONE_NEWIPC,
                  "network": linux.CLONE_NEWNET, "cgroup": linux.CLONE_NEWCGROUP}
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "mount")  # user first: it grants the others


@dataclass(frozen=True)
class CreateOptions:
    """``create``'s and ``run``'s options, as runc names them."""

    bundle: Path
    console_socket: str | None = None
    pid_file: str | None = None
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0  # fds 3 .. 3+N-1 of ours the container's process keeps (runc's --preserve-fds)





class CreateFailed(StrataError):
    """The container could not be made; everything made for it is gone again."""


def device_rules(config: Config) -> tuple[devcgroup.Rule, ...]:
    """config.json's device list, then (as runc appends them) the nodes every container gets and its
    ``linux.devices``; in the one shape the runner applies on v1 and v2: the last rule for all devices sets the
    default, the later rules of the other verdict are its exceptions (a later rule of the same verdict adds
    nothing, unless it undoes an earlier exception, which is refused)."""
    rules = [*config.device_rules, *(r for r in devcgroup.DOCKER_ALLOWED),
             *(devcgroup.Rule(True, d.type, d.major, d.minor) for d in config.devices if d.type in "cb")]
    last = max((i for i, r in enumerate(rules) if r.type == "a"), default=-1)
    default = rules[last].allow if last >= 0 else False  # runc's emulator starts from a white-list
    exceptions: list[devcgroup.Rule] = []
    for r in rules[last + 1:]:
        if r.allow != default:
            exceptions.append(r)
        elif any(e.type == r.type and e.major in (None, r.major) and e.minor in (None, r.minor) for e in exceptions):
            raise StrataError("config.json: linux.resources.devices: a rule that undoes an earlier one is not "
                              "supported by runner-oci", Kind.USAGE)
    return (devcgroup.Rule(default), *exceptions)


def cgroups_path(config: Config, container_id: str, systemd: bool) -> str:
    """The group's path: config.json's, or runc's default ``/ID`` under a parent of ours; with --systemd-cgroup
    the ``slice:prefix:name`` form made the cgroupfs path systemd would use (this machine may have no systemd: the
    tree is the same)."""
    path = config.cgroups_path
    if systemd:
        slice_, _, rest = (path or f"system.slice:runner-oci:{container_id}").partition(":")
        prefix, _, name = rest.partition(":")
        if not name:
            raise StrataError(f"config.json: linux.cgroupsPath {path!r} is not slice:prefix:name, as "
                              "--systemd-cgroup expects", Kind.USAGE)
        slice_ = slice_ or "system.slice"
        parts = slice_.removesuffix(".slice").split("-")
        nested = "/".join("-".join(parts[:i + 1]) + ".slice" for i in range(len(parts)))
        return f"/{nested}/{prefix}-{name}.scope" if prefix else f"/{nested}/{name}"
    return path or f"/runner-oci/{container_id}"


def create(config: Config, st: State, opts: CreateOptions, cache: Path) -> None:
    """Make the container (module doc) and record it in ``st`` (whose ``dir`` exists); on failure nothing of it is
    left but the directory, which the caller removes."""
    console_socket = opts.console_socket
    p = config.process
    if p is None:
        raise StrataError("config.json: process is missing: runner-oci create needs one", Kind.USAGE)
    if p.terminal and console_socket is None:
        raise StrataError("cannot allocate tty if runner-oci will detach without setting console socket",
                          Kind.USAGE)
    check_capabilities(p)
    program = None
    if config.seccomp is not None:
        program = seccomp.program_for_text(json.dumps(config.seccomp, sort_keys=True), frozenset(), cache,
                                           "linux.seccomp of config.json")
    group = cgroups.at_path(st.cgroup)
    group.create(config.limits, device_rules(config))
    os.mkfifo(st.dir / FIFO, 0o622)
    os.chmod(st.dir / FIFO, 0o622)  # not cut by our umask: an init in a user namespace of its own is no host root
    fifo = os.open(st.dir / FIFO, os.O_PATH | os.O_CLOEXEC)
    joined = {kind: _open_namespace(kind, path) for kind, path in config.namespaces if path}
    parent, child = Channel.pair()
    pid = 0
    try:
        pid = _fork(config, child, joined, fifo, program, opts, st)
        child.close()
        group.add(pid)
        stat_ = proc.read_stat(pid)
        st.pid, st.start_time, st.boot_id = pid, stat_.start_time if stat_ else 0, proc.boot_id()
        st.save()
        _converse(config, parent, st, console_socket)
    except BaseException:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cgroups.kill_all(group)
        with contextlib.suppress(StrataError):
            group.remove()
        raise
    finally:
        parent.close()
        child.close()
        os.close(fifo)
        for fd in joined.values():
            os.close(fd)


NS_GET_NSTYPE = 0xB703  # linux/nsfs.h: the CLONE_NEW* type of a namespace fd
NAMESPACE_FLAGS = {**NEW_NAMESPACES, "pid": linux.CLONE_NEWPID, "user": linux.CLONE_NEWUSER}


def check_capabilities(p: Process, where: str = "config.json: process.capabilities") -> None:
    """Every capability asked for is one runner-oci holds (the machine's bounding set may lack some: here root has
    no CAP_SYS_RESOURCE): else a refusal naming them, as runc's "unable to apply caps", never a container that
    quietly has fewer."""
    held = security.own_bounding_set()
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        missing = sorted(p.caps(kind) - held)
        if missing:
            names = ", ".join(f"CAP_{security.CAPABILITIES[n]}" for n in missing if n < len(security.CAPABILITIES))
            raise StrataError(f"{where}.{kind}: {names or missing} not held by runner-oci on this machine "
                              "(its bounding set): unable to apply caps: operation not permitted", Kind.SYSTEM)


def _open_namespace(kind: str, path: str) -> int:
    """A namespace config.json names by path, checked to be one of that type (the spec: a path of another type is
    an error; setns would take it for what it is)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise StrataError(f"config.json: linux.namespaces: cannot open the {kind} namespace {path}: {e.strerror}",
                          Kind.USAGE) from None
    try:
        found = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        found = -1
    if found != NAMESPACE_FLAGS[kind]:
        os.close(fd)
        raise StrataError(f"config.json: linux.namespaces: {path} is not a {kind} namespace", Kind.USAGE)
    return fd


def _converse(config: Config, parent: Channel, st: State, console_socket: str | None) -> None:
    """Go, the runtime hooks, Go, and the init's report until it says "created"."""
    parent.send(Go())
    while True:
        message = parent.recv()
        if message is None:
            raise CreateFailed("the container's init exited before it was created", Kind.SYSTEM)
        if isinstance(message, Failed):
            raise CreateFailed(message.message, Kind.SYSTEM, exit_code=message.code)
        if isinstance(message, Step) and message.name == "namespaces":
            state = json.dumps(st.spec_state("creating")).encode()
            hooks.run(config.hooks.get("prestart", ()), state, "prestart")
            hooks.run(config.hooks.get("createRuntime", ()), state, "createRuntime")
            parent.send(Go())
        elif isinstance(message, Pty):
            try:
                send_console(console_socket, message.fd)
            finally:
                os.close(message.fd)
        elif isinstance(message, Step) and message.name == "created":
            return


def send_console(path: str | None, master: int) -> None:
    """The pty's master to the caller's ``--console-socket`` (a unix stream socket), as runc sends it: one
    message, SCM_RIGHTS, a name as its data (callers read only the fd)."""
    if path is None:
        raise CreateFailed("the container asked for a terminal and no --console-socket was given", Kind.USAGE)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            socket.send_fds(s, [b"/dev/ptmx"], [master])
        except OSError as e:
            raise CreateFailed(f"cannot send the terminal to --console-socket {path}: {e.strerror}",
                               Kind.SYSTEM) from None


# -- the processes ---------------------------------------------------------------------------------------------


def _fork(config: Config, chan: Channel, joined: dict[str, int], fifo: int, program: seccomp.Program | None,
          opts: CreateOptions, st: State) -> int:
    """The helper joins and unshares the pid namespace, forks the init and exits (its pid comes back on a pipe);
    the init is then the caller's (module doc). With a user namespace of the container's own, the helper makes it
    first and waits while we write its maps (a process may not write its own beyond its one id)."""
    said_r, said_w = os.pipe2(os.O_CLOEXEC)
    mapped_r, mapped_w = os.pipe2(os.O_CLOEXEC)
    try:
        helper = os.fork()
        if helper == 0:
            os.close(said_r)
            os.close(mapped_w)
            _helper(config, chan, joined, fifo, program, opts, st, said_w, mapped_r)
        os.close(said_w)
        said_w = -1
        if config.uid_map:
            _write_maps(helper, config, os.read(said_r, 4096).decode(errors="replace"))
            os.write(mapped_w, b"1")
        os.waitpid(helper, 0)
        said = os.read(said_r, 4096).decode(errors="replace")
    finally:
        for fd in (said_r, said_w, mapped_r, mapped_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    if not said.startswith("pid "):
        raise CreateFailed(f"cannot make the container's namespaces: {said or 'the helper died'}", Kind.SYSTEM)
    return int(said.split()[1])


def _write_maps(helper: int, config: Config, said: str) -> None:
    """linux.uidMappings and gidMappings, into the helper's new user namespace (we are root in the host's)."""
    if said != "userns":
        os.waitpid(helper, 0)
        raise CreateFailed(f"cannot make the container's user namespace: {said or 'the helper died'}", Kind.SYSTEM)
    try:
        for name, lines in (("uid_map", config.uid_map), ("gid_map", config.gid_map)):
            with open(f"/proc/{helper}/{name}", "w") as f:
                f.write("".join(f"{inside} {outside} {size}\n" for inside, outside, size in lines))
    except OSError as e:
        os.kill(helper, signal.SIGKILL)
        os.waitpid(helper, 0)
        raise CreateFailed(f"config.json: linux.uidMappings/gidMappings: cannot write them: {e.strerror}",
                           Kind.USAGE) from None


def _helper(config: Config, chan: Channel, joined: dict[str, int], fifo: int, program: seccomp.Program | None,
            opts: CreateOptions, st: State, said: int, mapped: int) -> NoReturn:
    try:
        for kind in JOIN_ORDER:
            if kind in joined:
                linux.setns(joined[kind], 0)
        # nothing of runner-oci's but the channel, the fifo and stdio goes on (its lock on the container, above all:
        # the init outlives this command and would hold it)
        process.close_fds(chan.fileno(), fifo, said, mapped, *range(3, 3 + opts.preserve_fds))
        if config.namespace("user") == "":  # after the joins: a namespace of the host's is joined from the host's
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(said, b"userns")
            if os.read(mapped, 1) != b"1":
                os._exit(1)
            os.setresgid(0, 0, 0)  # root of the new namespace (as runc's init), whatever host ids that is
            os.setresuid(0, 0, 0)
        os.close(mapped)
        if config.namespace("pid") == "":
            linux.unshare(linux.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            os.close(said)
            _init(config, chan, fifo, program, opts, st)
        os.write(said, f"pid {pid}".encode())
        os._exit(0)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(said, process.failure(e, "join the namespaces")[0].encode())
        os._exit(1)


def _init(config: Config, chan: Channel, fifo: int, program: seccomp.Program | None, opts: CreateOptions,
          st: State) -> NoReturn:
    """The container's init (module doc). Never returns: execs the command, or reports and _exits."""
    p = config.process
    assert p is not None
    try:
        linux.set_undumpable()
        os.setsid()
        if not isinstance(chan.recv(), Go):  # create put us in the cgroup (or gave up)
            os._exit(1)
        flags = sum(f for kind, f in NEW_NAMESPACES.items() if config.namespace(kind) == "")
        linux.unshare(flags)
        if flags & linux.CLONE_NEWNET:
            linux.loopback_up()
        if config.hostname is not None and config.namespace("uts") == "":
            socket.sethostname(config.hostname)
        if config.domainname is not None and config.namespace("uts") == "":
            with open("/proc/sys/kernel/domainname", "w") as f:
                f.write(config.domainname)
        chan.send(Step("namespaces"))
        if not isinstance(chan.recv(), Go):  # the hooks ran
            os._exit(1)
        saved = _root(config, p, chan, opts.no_pivot, st)
        os.chdir(p.cwd)  # a command named relative to the working directory is found from there, as runc finds it
        path = lookpath(p.args[0], _env(p))
        if p.oom_score_adj is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(p.oom_score_adj))
        set_rlimits(p)
        chan.send(Step("created"))
        chan.close()
    except BaseException as e:
        message, code = process.failure(e)
        with contextlib.suppress(OSError):
            chan.send(Failed(message, 127 if isinstance(e, process.ExecFailed) else code))
        os._exit(code)
    _wait_and_exec(p, path, fifo, program, opts, saved, config.hooks.get("startContainer", ()))


def _root(config: Config, p: Process, chan: Channel, no_pivot: bool, st: State) -> State:
    """The mounts (the createContainer hooks between them and pivot_root, with the host's paths still there), the
    root, the terminal."""
    group = cgroups.at_path(st.cgroup)
    if config.namespace("mount") == "":
        mounts.prepare_root(config)
        mounts.mount_all(config, group, p.terminal)
    # our pid as the host numbers it (the hooks' state gives that one): the host's /proc is still there to ask,
    # which we can read in a user namespace of our own too (state.json is root's, 0600)
    saved = dataclasses.replace(st, pid=int(os.readlink("/proc/self")))
    hooks.run(config.hooks.get("createContainer", ()), json.dumps(saved.spec_state("creating")).encode(),
              "createContainer")
    mounts.pivot(config, no_pivot)
    with contextlib.suppress(OSError):  # before finish makes the root read-only (runc's createCwd, then finalize)
        os.makedirs(p.cwd, exist_ok=True)
    if not os.path.isdir(p.cwd):  # runc finds it in create, before the command waits for start
        raise StrataError(f'chdir to cwd ("{p.cwd}") set in config.json failed: not a directory', Kind.SYSTEM)
    mounts.finish(config)
    if p.terminal:
        slave = tty.open_terminal(lambda master: chan.send(Pty(master)), console=True)
        if p.console_size:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", p.console_size[0], p.console_size[1], 0, 0))
        tty.take_terminal(slave)
    return saved


def _env(p: Process) -> dict[str, str]:
    return dict(e.split("=", 1) for e in p.env if "=" in e)


def lookpath(name: str, env: dict[str, str]) -> str:
    """Where the command is, as runc's create finds it (exec.LookPath with the container's PATH): a missing one
    fails ``create`` with the words callers map to 127 and 126."""
    candidates = [name] if "/" in name else [os.path.join(d or ".", name) for d in
                                              env.get("PATH", "").split(":")] if env.get("PATH") else []
    denied = None
    for c in candidates:
        try:
            st = os.stat(c)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(c, os.X_OK):
            return c
        denied = c
    if denied is not None:
        raise StrataError(f'exec: "{name}": permission denied', Kind.SYSTEM, exit_code=process.EXIT_NOT_EXECUTABLE)
    where = f'exec: "{name}": stat {name}: no such file or directory' if "/" in name else \
        f'exec: "{name}": executable file not found in $PATH'
    raise StrataError(where, Kind.SYSTEM, exit_code=process.EXIT_NOT_FOUND)


def _wait_and_exec(p: Process, path: str, fifo: int, program: seccomp.Program | None, opts: CreateOptions, st: State,
                   starting: Sequence[Hook]) -> NoReturn:
    """Blocked until ``start`` reads exec.fifo; then the startContainer hooks, :func:`become`, exec. The fifo's
    write end stays open until the exec closes it (close-on-exec): ``start`` waits for that end of file, so the
    poststart hooks run once the command does, and a failure before the exec is written there for ``start`` to
    say (and to the container's stderr), besides its exit status."""
    told = -1
    try:
        told = os.open(f"/proc/self/fd/{fifo}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(told, b"0")
        os.close(fifo)
        if starting:
            hooks.run(starting, json.dumps(st.spec_state("running")).encode(), "startContainer")
        env = _env(p)
        become(p, program, opts.no_new_keyring)
        process.reset_signals()
        process.close_fds(told, *range(3, 3 + opts.preserve_fds))
        try:
            os.execve(path, list(p.args), env)
        except OSError as e:
            raise process.ExecFailed(p.args[0], e) from None
    except BaseException as e:
        message, code = process.failure(e)
        for fd in (told, 2):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.write(fd, (message if fd == told else f"runner-oci: {message}\n").encode()[:4000])
        os._exit(code)


def set_rlimits(p: Process) -> None:
    """config.json's rlimits, set by the init in create as runc sets them on its init before it is ready: one the
    kernel refuses fails create, where callers read it, not the command after start."""
    infinity = (1 << 64) - 1
    for kind, soft, hard in p.rlimits:
        try:
            resource.setrlimit(getattr(resource, kind), (resource.RLIM_INFINITY if soft >= infinity else soft,
                                                         resource.RLIM_INFINITY if hard >= infinity else hard))
        except (OSError, ValueError) as e:
            raise StrataError(f"error setting rlimits for ready process: {kind}: {getattr(e, 'strerror', e) or e}",
                              Kind.SYSTEM) from None


def become(p: Process, program: seccomp.Program | None, no_new_keyring: bool) -> None:
    """What the process config.json describes: umask, a session keyring (unless --no-new-keyring), the
    bounding set, the user and groups with the effective, permitted and inheritable sets kept across the change
    of user (runc's KEEPCAPS), the ambient set, no_new_privs, the seccomp filter (before the change of user, while
    we hold CAP_SYS_ADMIN, or with no_new_privs last, as runc). :func:`check_capabilities` made sure in create
    that we hold every capability asked for."""
    os.umask(0o022 if p.umask is None else p.umask)
    if not no_new_keyring:
        linux.join_new_session_keyring()
    os.chdir(p.cwd)
    if not os.getcwd().startswith("/"):  # runc CVE-2024-21626
        raise StrataError(f"working directory {p.cwd} is outside the container", Kind.SYSTEM)
    security.keep_bounding(p.caps("bounding"))
    linux.prctl(security.PR_SET_KEEPCAPS, 1, what="PR_SET_KEEPCAPS")
    if program is not None and not p.no_new_privileges:
        seccomp.install(program)
    if not process.groups_denied():
        os.setgroups(list(p.additional_gids))
    os.setgid(p.gid)
    os.setuid(p.uid)
    security.set_capability_sets(p.caps("effective"), p.caps("permitted"), p.caps("inheritable"))
    linux.prctl(security.PR_SET_KEEPCAPS, 0, what="PR_SET_KEEPCAPS")
    security.raise_ambient(p.caps("ambient"))
    if p.no_new_privileges:
        security.set_no_new_privileges()
        if program is not None:
            seccomp.install(program)
