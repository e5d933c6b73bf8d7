"""runner/isolation/seccomp.py: Docker's profile format, parsed and checked; filters built by libseccomp and enforced by
the kernel.

Each filter test forks a child that loads the filter and then makes real syscalls through libc's ``syscall()``,
sending the errno of each (0 when it succeeded) back over a pipe; the parent asserts. Syscall numbers come from
libseccomp, so nothing here is tied to x86_64. Needs root (a filter without no_new_privs needs CAP_SYS_ADMIN):
without it the tests fail, they do not skip.

The behaviour tests run three ways (the ``loader`` fixture): libseccomp's own seccomp_load on the context the module
builds (the reference: what load() did before programs existed), load(), and program() in the parent through a cache
then install() in the child (what the runner does). test_install_hands_the_kernel_what_seccomp_load_does reads the
installed filter back from the kernel to show the last two are byte for byte the first.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.isolation import seccomp, seccomp_default, security
from runner.isolation.seccomp import Arg, Filter, Profile, Rule
from shared.errors import Kind, StrataError
from tests.marks import needs_root, needs_tools
from tests.rootless import User

PODMAN_PROFILE = Path("/usr/share/containers/seccomp.json")  # Debian package golang-github-containers-common

CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
AF_INET, AF_INET6, AF_UNIX, AF_ALG, AF_VSOCK = 2, 10, 1, 38, 40
SOCK_STREAM = 1
READ_IMPLIES_EXEC = 0x0400000
ADDR_NO_RANDOMIZE = 0x0040000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

Probe = Callable[[], dict[str, int]]
# Called in the parent with a profile and capabilities; returns what the child calls to put the filter in place
Loader = Callable[[Profile, frozenset[str]], Callable[[], None]]


@pytest.fixture(autouse=True)
def _root() -> None:
    assert os.geteuid() == 0, "these tests load seccomp filters without no_new_privs: run them as root"


def nr(name: str) -> int:
    number = int(seccomp.library().seccomp_syscall_resolve_name(name.encode()))
    assert number >= 0, f"{name} is not a syscall on this arch"
    return number


def call(name: str, *args: int) -> int:
    """errno of the raw syscall, 0 when it succeeded (a clone child exits at once)."""
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(nr(name)), *(ctypes.c_ulong(a) for a in args))
    if result == 0 and name in ("clone", "fork"):
        os._exit(0)
    if result < 0:
        return ctypes.get_errno()
    if name == "socket":
        os.close(result)
    return 0


def by_seccomp_load(profile: Profile, caps: frozenset[str]) -> Callable[[], None]:
    """The reference: libseccomp's seccomp_load on the context load() compiles, as load() did before programs."""
    def child() -> None:
        if not profile.enabled:
            return
        lib = seccomp.library()
        lib.seccomp_load.restype, lib.seccomp_load.argtypes = ctypes.c_int, [ctypes.c_void_p]
        with seccomp.filter_context(profile, caps) as ctx:
            rc = lib.seccomp_load(ctx)
        assert rc == 0, f"seccomp_load: {os.strerror(-rc)}"

    return child


def by_load(profile: Profile, caps: frozenset[str]) -> Callable[[], None]:
    return lambda: seccomp.load(profile, caps)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the first test compiles each program, the later ones install the cached copy."""
    return tmp_path_factory.mktemp("cache") / "seccomp"


@pytest.fixture(params=["seccomp_load", "load", "program+install"])
def loader(request: pytest.FixtureRequest, cache_dir: Path) -> Loader:
    if request.param == "seccomp_load":
        return by_seccomp_load
    if request.param == "load":
        return by_load

    def by_install(profile: Profile, caps: frozenset[str]) -> Callable[[], None]:
        prog = seccomp.program(profile, caps, cache_dir)  # in the parent, as the runner does before entering
        return (lambda: None) if prog is None else (lambda: seccomp.install(prog))

    return by_install


def in_child(profile: Profile | None, probe: Probe, caps: frozenset[str] = security.DOCKER_DEFAULT_CAPS,
             enter: Callable[[], None] | None = None, loader: Loader = by_load) -> dict[str, int]:
    """Fork; the child runs ``enter`` (if any), puts ``profile`` in place with ``loader`` (None: no filter) and runs
    ``probe``; its results come back as JSON."""
    put_in_place = None if profile is None else loader(profile, caps)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        try:
            os.close(r)
            if enter is not None:
                enter()
            if put_in_place is not None:
                put_in_place()
            os.write(w, json.dumps(probe()).encode())
        except BaseException:
            os.write(w, json.dumps({"child failed": traceback.format_exc()}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, int] = json.loads(out)
    assert "child failed" not in result, result
    return result


def run_true() -> int:
    """fork + execve, the way Python starts a program; the exit status of /bin/true."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            os.execv("/bin/true", ["true"])
        finally:
            os._exit(127)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def no_new_privs() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("NoNewPrivs:")).split()[1])


def seccomp_filters() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Seccomp_filters:")).split()[1])


# ---- Docker's default profile -------------------------------------------------------------------------------


def docker_refusals() -> dict[str, int]:
    """The probe of Docker's refusals: what each call answered under the filter (in the child)."""
    return {
        "unshare": call("unshare", CLONE_NEWUSER),
        "clone newuser": call("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        "clone3": call("clone3", 0, 0),
        "keyctl": call("keyctl", 0, 0xFFFFFFFFFFFFFFFD, 0),  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
        "add_key": call("add_key", 0, 0, 0, 0, 0),
        "request_key": call("request_key", 0, 0, 0, 0),
        "personality query": call("personality", 0xFFFFFFFF),
        "personality read_implies_exec": call("personality", READ_IMPLIES_EXEC),
        "personality addr_no_randomize": call("personality", ADDR_NO_RANDOMIZE),
        "socket vsock": call("socket", AF_VSOCK, SOCK_STREAM, 0),
        "socket alg": call("socket", AF_ALG, 5, 0),  # SOCK_SEQPACKET
        "socket inet": call("socket", AF_INET, SOCK_STREAM, 0),
        "socket inet6": call("socket", AF_INET6, SOCK_STREAM, 0),
        "socket unix": call("socket", AF_UNIX, SOCK_STREAM, 0),
        "mount": call("mount", 0, 0, 0, 0, 0),
        "umount2": call("umount2", 0, 0),
        "setns": call("setns", 0xFFFF, 0),
        "sethostname": call("sethostname", 0, 0),
        "reboot": call("reboot", 0, 0, 0, 0),
        "bpf": call("bpf", 0, 0, 0),
        "chroot": call("chroot", 0),  # CAP_SYS_CHROOT is a default: allowed (EFAULT from the NULL path)
        "ptrace": call("ptrace", 0xFFFF, 0, 0, 0),  # allowed from kernel 4.8 (EIO: no such request)
    }


def check_docker_refusals(got: dict[str, int]) -> None:
    assert got.pop("socket inet6") in (0, errno.EAFNOSUPPORT)  # the kernel may lack IPv6
    assert got.pop("ptrace") != errno.EPERM  # allowed from kernel 4.8: the kernel's answer to a bogus request
    assert got == {
        "unshare": errno.EPERM, "clone newuser": errno.EPERM, "clone3": errno.ENOSYS,
        "keyctl": errno.EPERM, "add_key": errno.EPERM, "request_key": errno.EPERM,
        "personality query": 0, "personality read_implies_exec": errno.EPERM,
        "personality addr_no_randomize": errno.EPERM,
        "socket vsock": errno.EPERM, "socket alg": errno.EPERM,
        "socket inet": 0, "socket unix": 0,
        "mount": errno.EPERM, "umount2": errno.EPERM, "setns": errno.EPERM, "sethostname": errno.EPERM,
        "reboot": errno.EPERM, "bpf": errno.EPERM,
        "chroot": errno.EFAULT,
    }


def test_default_profile_refuses_what_docker_refuses(loader: Loader) -> None:
    check_docker_refusals(in_child(seccomp_default.PROFILE, docker_refusals, loader=loader))


@needs_root
@needs_tools
def test_in_a_users_namespace_the_profile_refuses_the_same(rootless_user: User) -> None:
    """As a user, the runner loads the filter as root of the user's namespace (CAP_SYS_ADMIN there, no
    no_new_privs needed): the same program, the same answers (tests/rootless_driver.py, the same probe)."""
    done = rootless_user.tool("tests.rootless_driver", "seccomp")
    assert done.code == 0, done.err
    check_docker_refusals(json.loads(done.out))


def test_without_a_filter_the_same_calls_reach_the_kernel() -> None:
    """The control: what the filter answered above is the filter's, not the kernel's."""
    def probe() -> dict[str, int]:
        return {"clone3": call("clone3", 0, 0), "keyctl": call("keyctl", 0xFFFF), "mount": call("mount", 0, 0, 0, 0, 0),
                "personality": call("personality", 0xFFFFFFFF)}

    got = in_child(None, probe)
    assert got["clone3"] != errno.ENOSYS and got["keyctl"] != errno.EPERM and got["mount"] != errno.EPERM
    assert got["personality"] == 0


def test_default_profile_lets_ordinary_programs_run(tmp_path: Path, loader: Loader) -> None:
    (tmp_path / "file").write_text("contents")

    def probe() -> dict[str, int]:
        fd = os.open(tmp_path / "file", os.O_RDONLY)
        data = os.read(fd, 100)
        os.close(fd)
        spawned = subprocess.run(["/bin/sh", "-c", "echo hi"], capture_output=True, check=False)
        pid = os.posix_spawn("/bin/true", ["true"], {})  # glibc tries clone3 first: ENOSYS makes it use clone
        return {
            "getpid": int(os.getpid() > 0), "read": int(data == b"contents"), "fork+exec": run_true(),
            "subprocess": spawned.returncode if spawned.stdout == b"hi\n" else -1,
            "posix_spawn": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]),
            "threads": _thread_works(), "no_new_privs": no_new_privs(),
        }

    assert in_child(seccomp_default.PROFILE, probe, loader=loader) == {
        "getpid": 1, "read": 1, "fork+exec": 0, "subprocess": 0, "posix_spawn": 0, "threads": 1,
        "no_new_privs": 0,  # Docker does not set it unless asked: setuid programs keep working
    }


def _thread_works() -> int:
    import threading

    box: list[int] = []
    t = threading.Thread(target=lambda: box.append(1))
    t.start()
    t.join()
    return len(box)


def test_after_load_the_runner_can_still_become_the_user_and_exec(tmp_path: Path, loader: Loader) -> None:
    """What runner/executor/process.py and the exec stage (runner/executor/stage.c, the same calls) do after
    seccomp.load: groups, gid, uid, capabilities, non-dumpable, parent-death signal, close every fd, fork, and in the
    child a new session, the parent check, reset signals, exec. All of it must be allowed by the profile it just
    loaded (tests/test_exec_stage.py runs the stage itself under it)."""
    from runner.executor import process

    out = tmp_path / "out"

    def probe() -> dict[str, int]:
        fd = os.open(out, os.O_WRONLY)  # as the container's stdio: opened by root, before the user changes
        privileges = security.Privileges()
        security.limit_bounding_set(privileges)
        os.setgroups([65534])
        os.setgid(65534)
        os.setuid(65534)
        security.set_capabilities(privileges, 65534)
        assert _libc.prctl(1, 9, 0, 0, 0) == 0  # PR_SET_PDEATHSIG, as runner/linux.py die_with_parent
        os.close(os.pidfd_open(os.getppid()))  # which also watches its parent through a pidfd
        assert _libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE 0, as the stage after the change of user
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            try:
                assert _libc.prctl(1, 9, 0, 0, 0) == 0 and os.getppid() > 0  # the exec child's parent check
                os.setsid()
                process.reset_signals()
                os.dup2(fd, 1)
                os.closerange(3, 1 << 16)
                os.execve("/bin/sh", ["sh", "-c", "id -u; echo done"], {"PATH": "/bin"})
            finally:
                os._exit(127)
        return {"exit": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}

    out.touch()
    assert in_child(seccomp_default.PROFILE, probe, loader=loader) == {"exit": 0}
    assert out.read_text() == "65534\ndone\n"


def int80(number: int, ebx: int = 0) -> int:
    """A 32-bit x86 syscall from this 64-bit process (``int 0x80``): the kernel and seccomp see arch x86, so
    only the archMap's sub-arches let it through. Returns what the kernel put in eax (-errno on failure)."""
    code = (b"\x53" + b"\xb8" + number.to_bytes(4, "little") + b"\xbb" + ebx.to_bytes(4, "little")
            + b"\xcd\x80\x5b\xc3")  # push rbx; mov eax, N; mov ebx, A; int 0x80; pop rbx; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    function = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    return int(function())


I386_GETPID, I386_UNSHARE = 20, 310


def test_x86_compat_syscalls_meet_the_same_policy(loader: Loader) -> None:
    assert seccomp.native_arch() == "x86_64", "this test speaks x86 machine code"

    def probe() -> dict[str, int]:
        return {"getpid": int(int80(I386_GETPID) == os.getpid()), "unshare": -int80(I386_UNSHARE, CLONE_NEWUSER)}

    assert in_child(seccomp_default.PROFILE, probe, loader=loader) == {"getpid": 1, "unshare": errno.EPERM}

    native_only = Profile.from_json(allow())  # no archMap: the native arch alone, anything else is killed
    put_in_place = loader(native_only, security.DOCKER_DEFAULT_CAPS)
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            put_in_place()
            int80(I386_GETPID)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


FRESH_PROCESS = """
import ctypes, json, os, sys
from pathlib import Path
from runner.isolation import seccomp, seccomp_default, security
text = None if sys.argv[2] == "default" else open(sys.argv[2]).read()
profile = seccomp_default.PROFILE if text is None else seccomp.Profile.from_json(text)
if sys.argv[3] == "install":  # compiled (and cached) before entering, installed after, as the runner does
    prog = seccomp.program(profile, security.DOCKER_DEFAULT_CAPS, Path(sys.argv[4]))

class NoImports:
    def find_spec(self, name, path=None, target=None):
        raise ImportError(f"imported {name} after entering the root")

os.chroot(sys.argv[1])
os.chdir("/")
sys.meta_path.insert(0, NoImports())
if sys.argv[3] == "install":
    seccomp.install(prog)
else:
    seccomp.load(profile, security.DOCKER_DEFAULT_CAPS)
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({"unshare uts": ctypes.get_errno() if libc.unshare(0x04000000) else 0}))
"""


@pytest.mark.parametrize("how", ["load", "install"])
@pytest.mark.parametrize("profile", ["default", str(PODMAN_PROFILE)])
def test_load_needs_nothing_from_the_filesystem(tmp_path: Path, profile: str, how: str) -> None:
    """The runner loads the filter after pivot_root, where a lazy import or a dlopen would find the image's
    files: everything load() and install() need was imported and opened with the module. A fresh interpreter
    imports it, enters an empty root, refuses every import from there on, and loads (or installs the program it
    compiled before entering)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(empty), profile, how, str(tmp_path / "cache")],
                            capture_output=True,
                            text=True, check=False, cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"unshare uts": errno.EPERM if profile == "default" else 0}  # podman: ok


def test_sys_admin_allows_namespaces_and_clone3(loader: Loader) -> None:
    def probe() -> dict[str, int]:
        return {"unshare uts": call("unshare", CLONE_NEWUTS), "sethostname": call("sethostname", 0, 0),
                "clone3": call("clone3", 0, 0), "keyctl": call("keyctl", 0xFFFF)}

    got = in_child(seccomp_default.PROFILE, probe, security.DOCKER_DEFAULT_CAPS | {"SYS_ADMIN"}, loader=loader)
    assert got["unshare uts"] == 0
    assert got["sethostname"] == 0  # in its own UTS namespace, an empty name
    assert got["clone3"] not in (0, errno.ENOSYS, errno.EPERM)  # the kernel's answer to a NULL argument
    assert got["keyctl"] == errno.EPERM  # not even CAP_SYS_ADMIN gets the keyring


def test_dropping_a_default_capability_drops_its_syscalls(loader: Loader) -> None:
    def probe() -> dict[str, int]:
        return {"chroot": call("chroot", 0)}

    assert in_child(seccomp_default.PROFILE, probe, loader=loader) == {"chroot": errno.EFAULT}
    assert in_child(seccomp_default.PROFILE, probe, security.DOCKER_DEFAULT_CAPS - {"SYS_CHROOT"},
                    loader=loader) == {"chroot": errno.EPERM}


def test_conditions_evaluated_as_moby_does() -> None:
    profile = Profile("SCMP_ACT_ERRNO", syscalls=(
        Rule(("a",), includes=Filter(caps=("CAP_SYS_ADMIN", "CAP_NET_ADMIN"))),  # all of them
        Rule(("b",), excludes=Filter(caps=("CAP_SYS_ADMIN", "CAP_NET_ADMIN"))),  # none of them
        Rule(("c",), includes=Filter(arches=("amd64", "x32"))),
        Rule(("d",), excludes=Filter(arches=("amd64",))),
        Rule(("e",), includes=Filter(min_kernel=(4, 8))),
        Rule(("f",), includes=Filter(min_kernel=(6, 99))),
        Rule(("g",), excludes=Filter(min_kernel=(6, 1))),
        Rule(("h",), includes=Filter(arches=("arm64",)), excludes=Filter(caps=("CAP_SYS_ADMIN",))),
    ))

    def names(caps: set[str], native: str = "x86_64", kernel: tuple[int, int] = (6, 1)) -> str:
        return "".join(r.names[0] for r in profile.rules_for(frozenset(caps), native, kernel))

    assert names(set()) == "bce"
    assert names({"SYS_ADMIN"}) == "ce"
    assert names({"SYS_ADMIN", "NET_ADMIN"}) == "ace"
    assert names(set(), "aarch64") == "bdeh"
    assert names(set(), kernel=(6, 0)) == "bceg"
    assert names(set(), kernel=(7, 0)) == "bcef"
    assert seccomp.kernel_version() >= (3, 0)
    assert seccomp.native_arch() in seccomp.ARCHES.values()


def test_default_profile_as_docker_builds_it() -> None:
    p = seccomp_default.PROFILE
    assert p.default_action == "SCMP_ACT_ERRNO" and p.default_errno_ret == errno.EPERM
    assert p.architectures_for("x86_64") == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert p.architectures_for("aarch64") == ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")
    defaults = p.rules_for(security.DOCKER_DEFAULT_CAPS, "x86_64", (6, 1))
    clone = [r for r in defaults if "clone" in r.names]
    assert clone == [Rule(("clone",), args=(Arg(0, 0x7E020000, "SCMP_CMP_MASKED_EQ", 0),),
                          excludes=Filter(caps=("CAP_SYS_ADMIN",), arches=("s390", "s390x")))]
    sockets = sorted((a.op, a.value) for r in defaults if r.names == ("socket",) for a in r.args)
    assert ("SCMP_CMP_LT", 12) in sockets and ("SCMP_CMP_EQ", 40) not in sockets and ("SCMP_CMP_EQ", 38) not in sockets
    assert not any(n in r.names for r in defaults for n in ("keyctl", "add_key", "request_key", "unshare", "mount"))


# ---- custom profiles ------------------------------------------------------------------------------------------


def test_custom_profile_file_is_enforced(tmp_path: Path, loader: Loader) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}],
    }))
    privileges = security.Privileges.from_options(security_opts=[f"seccomp={path}"])
    assert privileges.seccomp is not None
    profile = Profile.from_json(privileges.seccomp)

    def probe() -> dict[str, int]:
        try:
            os.getcwd()
        except OSError as e:
            return {"getcwd": e.errno or 0, "unshare": call("unshare", CLONE_NEWUTS)}
        return {"getcwd": 0}

    assert in_child(profile, probe, loader=loader) == {"getcwd": 42, "unshare": 0}  # default ALLOW: even unshare


def test_legacy_format_and_every_operator(loader: Loader) -> None:
    """Old profiles: "name" and top-level "architectures". Each op on a syscall whose arguments the kernel
    ignores (seccomp sees the registers all the same); two conditions on one argument are ORed, as runc does."""
    def errno_rule(name: str, ret: int | None, *args: tuple[int, str, int]) -> dict[str, object]:
        rule: dict[str, object] = {"name": name, "action": "SCMP_ACT_ERRNO",
                                   "args": [{"index": i, "op": op, "value": v} for i, op, v in args]}
        if ret is not None:
            rule["errnoRet"] = ret
        return rule

    rules = [
        errno_rule("getpid", 11, (0, "SCMP_CMP_NE", 5)),
        errno_rule("getppid", 12, (0, "SCMP_CMP_LT", 5)),
        errno_rule("getuid", 13, (1, "SCMP_CMP_LE", 5)),
        errno_rule("getgid", 14, (5, "SCMP_CMP_EQ", 5)),
        errno_rule("geteuid", 15, (0, "SCMP_CMP_GE", 5)),
        errno_rule("getegid", 16, (0, "SCMP_CMP_GT", 5)),
        {"name": "gettid", "action": "SCMP_ACT_ERRNO", "errnoRet": 17,
         "args": [{"index": 0, "value": 0xF0, "valueTwo": 0x30, "op": "SCMP_CMP_MASKED_EQ"}]},
        errno_rule("getpgrp", None, (0, "SCMP_CMP_EQ", 1), (0, "SCMP_CMP_EQ", 2)),  # one argument: ORed; EPERM
        errno_rule("getsid", 19, (1, "SCMP_CMP_EQ", 1), (2, "SCMP_CMP_EQ", 2)),  # two arguments: ANDed
        errno_rule("no_such_syscall_anywhere", 20),  # skipped, as runc does
        {"name": "getpid", "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
    ]
    profile = Profile.from_json(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    }))
    assert profile.architectures and not profile.arch_map

    def probe() -> dict[str, int]:
        return {
            "ne 4": call("getpid", 4), "ne 5": call("getpid", 5),
            "lt 4": call("getppid", 4), "lt 5": call("getppid", 5),
            "le 5": call("getuid", 0, 5), "le 6": call("getuid", 0, 6),
            "eq 5": call("getgid", 0, 0, 0, 0, 0, 5), "eq 6": call("getgid", 0, 0, 0, 0, 0, 6),
            "ge 5": call("geteuid", 5), "ge 4": call("geteuid", 4),
            "gt 6": call("getegid", 6), "gt 5": call("getegid", 5),
            "masked 0x3f": call("gettid", 0x3F), "masked 0x70": call("gettid", 0x70),
            "or 1": call("getpgrp", 1), "or 2": call("getpgrp", 2), "or 3": call("getpgrp", 3),
            "and 1 2": call("getsid", 0, 1, 2), "and 1 3": call("getsid", 0, 1, 3),
        }

    assert in_child(profile, probe, loader=loader) == {
        "ne 4": 11, "ne 5": 0, "lt 4": 12, "lt 5": 0, "le 5": 13, "le 6": 0, "eq 5": 14, "eq 6": 0,
        "ge 5": 15, "ge 4": 0, "gt 6": 16, "gt 5": 0, "masked 0x3f": 17, "masked 0x70": 0,
        "or 1": errno.EPERM, "or 2": errno.EPERM, "or 3": 0, "and 1 2": 19, "and 1 3": 0,
    }


def test_podman_profile_as_its_package_ships_it(loader: Loader) -> None:
    """A profile written by a real peer (podman's, same format; Debian's golang-github-containers-common). Its
    default is ENOSYS; its refusals say EPERM through errnoRet; it carries keys Docker ignores ("errno",
    "defaultErrno"), and so do we."""
    assert PODMAN_PROFILE.exists(), f"{PODMAN_PROFILE} is missing: apt-get install golang-github-containers-common"
    profile = Profile.from_json(PODMAN_PROFILE.read_text(), str(PODMAN_PROFILE))
    assert profile.default_errno_ret == errno.ENOSYS

    def probe() -> dict[str, int]:
        return {"getpid": call("getpid"), "kexec_load": call("kexec_load", 0, 0, 0, 0),
                "add_key": call("add_key", 0, 0, 0, 0, 0), "fork+exec": run_true(),
                "socket": call("socket", AF_INET, SOCK_STREAM, 0)}

    assert in_child(profile, probe, loader=loader) == {"getpid": 0, "kexec_load": errno.EPERM, "add_key": errno.ENOSYS,
                                        "fork+exec": 0, "socket": 0}


def test_empty_profile_means_no_filter(loader: Loader) -> None:
    for text in ("{}", "null", '{"defaultAction": ""}'):
        assert not Profile.from_json(text).enabled
        assert seccomp.program(Profile.from_json(text), security.DOCKER_DEFAULT_CAPS) is None

    def probe() -> dict[str, int]:
        return {"unshare": call("unshare", CLONE_NEWUTS), "filters": seccomp_filters()}

    assert in_child(Profile.from_json("{}"), probe, loader=loader) == {"unshare": 0, "filters": 0}


# ---- programs: compiled once, installed with one syscall ------------------------------------------------------


PTRACE_ATTACH, PTRACE_SECCOMP_GET_FILTER, PTRACE_SECCOMP_GET_METADATA = 16, 0x420C, 0x420D
_libc.ptrace.restype = ctypes.c_long


class SeccompMetadata(ctypes.Structure):
    _fields_ = [("filter_off", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def installed(put_in_place: Callable[[], None]) -> tuple[bytes, int, list[str]]:
    """What the kernel holds after a child ran ``put_in_place``: the filter's instructions and flags as ptrace reads
    them back (PTRACE_SECCOMP_GET_FILTER keeps the program as it was handed in), and the seccomp lines of its
    /proc/PID/status (no_new_privs and the speculation mitigations the SPEC_ALLOW flag decides)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            os.close(ready_r)
            os.close(hold_w)
            put_in_place()
            os.write(ready_w, b"1")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        assert os.read(ready_r, 1) == b"1"
        assert _libc.ptrace(ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(pid), None, None) == 0
        _, status = os.waitpid(pid, 0)
        assert os.WIFSTOPPED(status)
        get_filter = ctypes.c_long(PTRACE_SECCOMP_GET_FILTER)
        count = _libc.ptrace(get_filter, ctypes.c_long(pid), ctypes.c_void_p(0), None)
        assert count > 0, os.strerror(ctypes.get_errno())
        buffer = ctypes.create_string_buffer(count * 8)
        assert _libc.ptrace(get_filter, ctypes.c_long(pid), ctypes.c_void_p(0), buffer) == count
        metadata = SeccompMetadata(0, 0)
        assert _libc.ptrace(ctypes.c_long(PTRACE_SECCOMP_GET_METADATA), ctypes.c_long(pid),
                            ctypes.c_void_p(ctypes.sizeof(metadata)), ctypes.byref(metadata)) == ctypes.sizeof(metadata)
        lines = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                 if line.startswith(("NoNewPrivs", "Seccomp", "Speculation"))]
        return buffer.raw, metadata.flags, lines
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(hold_w)


FLAGGED = json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                      "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                "SECCOMP_FILTER_FLAG_TSYNC"],
                      "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]})


@pytest.mark.parametrize(("profile", "caps"), [
    ("default", security.DOCKER_DEFAULT_CAPS),
    ("default", security.DOCKER_DEFAULT_CAPS | {"SYS_ADMIN"}),
    ("default", frozenset()),
    (str(PODMAN_PROFILE), security.DOCKER_DEFAULT_CAPS),
    (FLAGGED, security.DOCKER_DEFAULT_CAPS),
], ids=["default", "sys_admin", "no caps", "podman", "flags"])
def test_install_hands_the_kernel_what_seccomp_load_does(profile: str, caps: frozenset[str],
                                                         cache_dir: Path) -> None:
    """Byte for byte: the program (compiled, then read back from the cache) and its flags, installed, are what
    libseccomp's seccomp_load puts in the kernel for the same context."""
    if profile == "default":
        parsed = seccomp_default.PROFILE
    elif profile.startswith("/"):
        parsed = Profile.from_json(Path(profile).read_text())
    else:
        parsed = Profile.from_json(profile)
    cold = seccomp.program(parsed, caps, cache_dir)
    warm = seccomp.program(parsed, caps, cache_dir)
    assert cold is not None and cold == warm
    reference = installed(by_seccomp_load(parsed, caps))
    assert installed(lambda: seccomp.install(warm)) == reference
    assert installed(by_load(parsed, caps)) == reference
    assert reference[0] == warm.filter
    if profile == FLAGGED:  # the kernel reports LOG alone; TSYNC is not ours to pass (one thread)
        assert warm.flags == 2 | 4 and reference[1] == 2
    else:
        assert warm.flags == 0 and reference[1] == 0
    assert "NoNewPrivs:\t0" in reference[2] and "Seccomp_filters:\t1" in reference[2]


def default_program(cache: Path, caps: frozenset[str] = security.DOCKER_DEFAULT_CAPS) -> seccomp.Program:
    prog = seccomp.program(seccomp_default.PROFILE, caps, cache)
    assert prog is not None
    return prog


MISSING = r"^seccomp: libseccomp\.so\.2 is missing"


def no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, compiling fails: what program() returns came from the cache, or it raises."""
    def missing() -> ctypes.CDLL:
        raise StrataError("seccomp: libseccomp.so.2 is missing (in this test)", Kind.SYSTEM)

    monkeypatch.setattr(seccomp, "library", missing)


def refuses_unshare(prog: seccomp.Program) -> None:
    """The program installed: the default profile's answers (call() needs the library, to name the syscalls)."""
    def probe() -> dict[str, int]:
        return {"unshare": call("unshare", CLONE_NEWUSER), "getpid": call("getpid")}

    assert in_child(seccomp_default.PROFILE, probe, loader=lambda _p, _c: lambda: seccomp.install(prog)) == {
        "unshare": errno.EPERM, "getpid": 0}


def test_cache_is_written_once_and_then_used_without_the_library(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / "seccomp"  # neither exists
    umask = os.umask(0o277)  # one that takes the owner's bits: the directory is 0700 all the same
    try:
        first = default_program(cache)
    finally:
        os.umask(umask)
    assert (cache.stat().st_mode & 0o777) == 0o700
    (entry,) = cache.iterdir()
    assert entry.suffix == ".bpf" and len(entry.stem) == 64 and entry.read_bytes().endswith(first.filter)
    assert not entry.stat().st_mode & 0o077
    compiled = seccomp.program(seccomp_default.PROFILE, security.DOCKER_DEFAULT_CAPS)  # no cache
    assert compiled == first

    with monkeypatch.context() as m:
        no_library(m)
        second = default_program(cache)
        with pytest.raises(StrataError, match=MISSING):  # what a miss would do now
            default_program(cache, security.DOCKER_DEFAULT_CAPS | {"SYS_ADMIN"})
    assert second == first and second.filter is not first.filter
    assert list(cache.iterdir()) == [entry]
    refuses_unshare(second)


def test_cache_key_covers_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    default_program(cache)
    default_program(cache, frozenset(sorted(security.DOCKER_DEFAULT_CAPS, reverse=True)))  # same set: same key
    assert len(list(cache.iterdir())) == 1
    with_admin = default_program(cache, security.DOCKER_DEFAULT_CAPS | {"SYS_ADMIN"})
    assert len(list(cache.iterdir())) == 2 and with_admin != default_program(cache)
    seccomp.program(Profile.from_json(FLAGGED), security.DOCKER_DEFAULT_CAPS, cache)
    assert len(list(cache.iterdir())) == 3
    current = default_program(cache)
    monkeypatch.setattr(seccomp, "kernel_version", lambda: (4, 7))  # before process_vm_readv's minKernel 4.8
    older = default_program(cache)
    assert len(list(cache.iterdir())) == 4 and older != current
    monkeypatch.undo()
    arch, version, file = seccomp._LIBRARY_IDENTITY or ("", (), None)
    assert file is not None, "the library's file was not found: a patched library of the same version would hit"
    monkeypatch.setattr(seccomp, "_LIBRARY_IDENTITY", (arch, version, (0, 0, 0, 0)))  # an updated library
    default_program(cache)
    assert len(list(cache.iterdir())) == 5


@pytest.mark.parametrize("damage", ["last instruction cut", "half an instruction cut", "bit flipped", "garbage",
                                    "empty", "checksum only", "huge", "another key's entry"])
def test_damaged_cache_entry_is_recompiled_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        damage: str) -> None:
    cache = tmp_path / "cache"
    good = default_program(cache)
    (entry,) = cache.iterdir()
    data = entry.read_bytes()
    damaged = {
        "last instruction cut": data[:-8],  # still whole instructions, still ends in a RET: the kernel would take it
        "half an instruction cut": data[:-4],
        "bit flipped": data[:-3] + bytes([data[-3] ^ 1]) + data[-2:],
        "garbage": os.urandom(len(data)),
        "empty": b"",
        "checksum only": data[:32],
        "huge": data + bytes(1 << 20),
        "another key's entry": data,
    }[damage]
    if damage == "another key's entry":
        default_program(cache, frozenset())
        other = next(p for p in cache.iterdir() if p != entry)
        damaged = other.read_bytes()
    entry.write_bytes(damaged)

    with monkeypatch.context() as m:  # never loaded: without the library, a damaged entry is a miss, not a program
        no_library(m)
        with pytest.raises(StrataError, match=MISSING):
            default_program(cache)
    assert default_program(cache) == good
    assert entry.read_bytes() == data  # replaced
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # atomic_write's temp file is gone
    with monkeypatch.context() as m:
        no_library(m)
        replaced = default_program(cache)
    refuses_unshare(replaced)


def test_cache_shared_with_others_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever can write the cache chooses the filter: a directory others can write is neither read nor written."""
    cache = tmp_path / "cache"
    good = default_program(cache)
    cache.chmod(0o777)
    (entry,) = cache.iterdir()
    entry.unlink()
    assert default_program(cache) == good
    assert not list(cache.iterdir())
    cache.chmod(0o700)
    default_program(cache)
    cache.chmod(0o770)
    no_library(monkeypatch)
    with pytest.raises(StrataError, match=MISSING):
        default_program(cache)


def test_cache_that_cannot_be_used_does_not_stop_a_start(tmp_path: Path) -> None:
    compiled = seccomp.program(seccomp_default.PROFILE, security.DOCKER_DEFAULT_CAPS)
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert default_program(a_file) == compiled
    assert default_program(a_file / "below") == compiled
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o700)
    entry = "0" * 64 + ".bpf"
    (read_only / entry).mkdir()  # the entry's name taken by a directory: neither read nor replaced
    assert default_program(read_only) == compiled


def test_install_errors_are_one_line(tmp_path: Path) -> None:
    def attempt(prog: seccomp.Program, enter: Callable[[], None] | None = None) -> str:
        def probe() -> dict[str, int]:
            try:
                seccomp.install(prog)
            except StrataError as e:
                assert e.kind is Kind.SYSTEM and "\n" not in e.message
                return {e.message: seccomp_filters()}
            return {"installed": seccomp_filters()}

        (message, filters), = in_child(None, probe, enter=enter).items()
        assert filters == 0
        return message

    no_ret = (0x20).to_bytes(2, "little") + bytes(6)  # ld [0], then nothing: the kernel wants a RET last
    assert attempt(seccomp.Program(no_ret, 0)) == "seccomp: cannot install the filter: Invalid argument"
    prog = default_program(tmp_path)
    # nothing; not whole instructions; more than sock_fprog's 16-bit count holds (it would wrap to a prefix)
    for bad in (b"", prog.filter[:-1], prog.filter * (65536 // (len(prog.filter) // 8) + 1)):
        assert attempt(seccomp.Program(bad, 0)) == (
            f"seccomp: cannot install the filter: {len(bad)} bytes are not 1 to 4096 instructions")
    assert attempt(seccomp.Program(prog.filter, 1 << 30)) == "seccomp: cannot install the filter: Invalid argument"
    # without CAP_SYS_ADMIN and without no_new_privs, as seccomp_load: refused
    assert attempt(prog, lambda: os.setuid(65534)) == "seccomp: cannot install the filter: Permission denied"


def test_without_the_seccomp_syscall_install_uses_prctl_as_libseccomp_does(tmp_path: Path) -> None:
    """A kernel, or an outer sandbox, without seccomp(2): libseccomp falls back to prctl(PR_SET_SECCOMP), which
    takes no flags; so do we, and a program that needs flags fails instead."""
    seccomp_enosys = allow(syscalls=[{"names": ["seccomp"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}])
    outer = seccomp.program(Profile.from_json(seccomp_enosys), security.DOCKER_DEFAULT_CAPS)
    assert outer is not None
    prog = default_program(tmp_path)

    def probe() -> dict[str, int]:
        return {"unshare": call("unshare", CLONE_NEWUSER), "filters": seccomp_filters()}

    assert in_child(seccomp_default.PROFILE, probe, enter=lambda: seccomp.install(outer),
                    loader=lambda _p, _c: lambda: seccomp.install(prog)) == {"unshare": errno.EPERM, "filters": 2}
    flagged = seccomp.Program(prog.filter, 2)

    def with_flags() -> dict[str, int]:
        with pytest.raises(StrataError, match=r"^seccomp: cannot install the filter: Function not implemented$"):
            seccomp.install(flagged)
        return {"filters": seccomp_filters()}

    assert in_child(None, with_flags, enter=lambda: seccomp.install(outer)) == {"filters": 1}


UNAME_TO_LIBSECCOMP = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64", "ppc64le": "ppc64le",
                       "s390x": "s390x", "armv7l": "arm"}


def test_seccomp_syscall_numbers_match_libseccomp() -> None:
    lib = seccomp.library()
    resolve = lib.seccomp_syscall_resolve_name_arch
    resolve.restype, resolve.argtypes = ctypes.c_int, [ctypes.c_uint32, ctypes.c_char_p]
    assert set(seccomp._SYS_SECCOMP) == set(UNAME_TO_LIBSECCOMP)
    for machine, number in seccomp._SYS_SECCOMP.items():
        token = lib.seccomp_arch_resolve_name(UNAME_TO_LIBSECCOMP[machine].encode())
        assert token and resolve(token, b"seccomp") == number, machine
    assert os.uname().machine in seccomp._SYS_SECCOMP


def usage_error(text: str) -> str:
    with pytest.raises(StrataError) as e:
        Profile.from_json(text, "profile p.json")
    assert e.value.kind is Kind.USAGE
    assert "\n" not in e.value.message and e.value.message.startswith("seccomp profile p.json: "), e.value.message
    return e.value.message


def allow(**top: object) -> str:
    return json.dumps({"defaultAction": "SCMP_ACT_ALLOW", **top})


def with_rule(**rule: object) -> str:
    return allow(syscalls=[{"names": ["x"], "action": "SCMP_ACT_ERRNO", **rule}])


def with_arg(**arg: object) -> str:
    return with_rule(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_EQ", **arg}])


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    ("", "not valid JSON"),
    ("[1, 2]", "the profile: expected an object, got a list"),
    ('{"defaultAction": "SCMP_ACT_NOPE"}', "defaultAction: unknown action 'SCMP_ACT_NOPE'"),
    ('{"defaultAction": 1}', "defaultAction: expected a string, got a number"),
    ('{"syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}', "defaultAction: missing"),
    (with_rule(action="SCMP_ACT_KILL_ALL"), "syscalls[0].action: unknown action 'SCMP_ACT_KILL_ALL'"),
    (with_rule(action="SCMP_ACT_NOTIFY"), "SCMP_ACT_NOTIFY is not supported"),
    (with_arg(op="SCMP_CMP_APPROX"), "syscalls[0].args[0].op: unknown operator 'SCMP_CMP_APPROX'"),
    (with_rule(names="getpid"), "syscalls[0].names: expected a list, got a string"),
    (allow(syscalls={"names": ["getpid"]}), "syscalls: expected a list, got an object"),
    (with_rule(names=[1]), "syscalls[0].names[0]: expected a string, got a number"),
    (with_arg(index="0"), "syscalls[0].args[0].index: expected an unsigned integer, got a string"),
    (with_arg(index=6), "syscalls[0].args[0].index: 6 is out of range (0 to 5)"),
    (with_arg(value=1.5), "syscalls[0].args[0].value: expected an unsigned integer, got a number (1.5)"),
    (with_arg(value=-1), "syscalls[0].args[0].value: -1 is out of range"),
    (with_arg(valueTwo=1 << 64), "syscalls[0].args[0].valueTwo: 18446744073709551616 is out of range"),
    (with_rule(errnoRet=True), "syscalls[0].errnoRet: expected an unsigned integer, got a boolean"),
    (with_rule(action="SCMP_ACT_ALLOW", errnoRet=1),
     "syscalls[0].errnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE return it, not SCMP_ACT_ALLOW"),
    (with_rule(name="a"), "syscalls[0]: both 'name' and 'names' are given"),
    (with_rule(includes={"caps": ["SYS_ADMIN"]}),
     "syscalls[0].includes.caps[0]: 'SYS_ADMIN' is not a capability name like CAP_SYS_ADMIN"),
    (with_rule(excludes={"minKernel": "4"}), "syscalls[0].excludes.minKernel: invalid kernel version '4'"),
    (with_rule(excludes={"minKernel": "0.0"}), "syscalls[0].excludes.minKernel: invalid kernel version '0.0'"),
    (with_rule(includes=[]), "syscalls[0].includes: expected an object, got a list"),
    (allow(architectures=["SCMP_ARCH_Z80"]), "architectures[0]: unknown architecture 'SCMP_ARCH_Z80'"),
    (allow(architectures=["SCMP_ARCH_X86"], archMap=[{"architecture": "SCMP_ARCH_X86_64"}]),
     "both 'architectures' and 'archMap' are given"),
    (allow(archMap=[{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["x86"]}]),
     "archMap[0].subArchitectures[0]: unknown architecture 'x86'"),
    (allow(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]), "flags[0]: unknown flag"),
])
def test_malformed_profiles_are_one_line_usage_errors(text: str, expected: str) -> None:
    assert expected in usage_error(text)


def test_malformed_numbers_stay_one_line() -> None:
    assert "not valid JSON" in usage_error('{"defaultErrnoRet": ' + "9" * 5000 + "}")
    assert "not valid JSON" in usage_error("[" * 100_000)
    assert "out of range" in usage_error('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}')


# ---- --security-opt -------------------------------------------------------------------------------------------


def test_security_opt_seccomp(tmp_path: Path) -> None:
    good = tmp_path / "good:name=odd.json"  # split at the first '=' or ':' only
    good.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    opts = security.Privileges.from_options
    assert opts().seccomp is None
    assert opts(security_opts=["seccomp=unconfined"]).seccomp == "unconfined"
    assert opts(security_opts=["seccomp:unconfined"]).seccomp == "unconfined"
    assert opts(security_opts=["seccomp=unconfined", "seccomp=builtin"]).seccomp is None
    assert opts(security_opts=[f"seccomp={good}"]).seccomp == good.read_text()
    assert opts(security_opts=[f"seccomp:{good}", "no-new-privileges"]) == security.Privileges(
        no_new_privileges=True, seccomp=good.read_text())
    assert opts(privileged=True, security_opts=[f"seccomp={good}"]).seccomp == "unconfined"  # Docker's rule
    assert opts(security_opts=["no-new-privileges:true"]).no_new_privileges
    assert not opts(security_opts=["no-new-privileges=true", "no-new-privileges=false"]).no_new_privileges


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read seccomp profile {path}: No such file or directory"),
    ("", "seccomp profile {path}: not valid JSON"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "NOPE"}]}',
     "seccomp profile {path}: syscalls[0].action: unknown action 'NOPE'"),
    (b"\xff\xfe", "cannot read seccomp profile {path}: not UTF-8 text"),
])
def test_security_opt_bad_profile(tmp_path: Path, content: str | bytes | None, expected: str) -> None:
    path = tmp_path / "profile.json"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(StrataError) as e:
        security.Privileges.from_options(security_opts=[f"seccomp={path}"])
    assert e.value.kind is Kind.USAGE and "\n" not in e.value.message
    assert expected.format(path=path) in e.value.message


@pytest.mark.parametrize("opt", ["seccomp", "seccomp=", "apparmor=unconfined", "label:disable", "no-new-privileges=1"])
def test_security_opt_unsupported(opt: str) -> None:
    with pytest.raises(StrataError) as e:
        security.Privileges.from_options(security_opts=[opt])
    assert e.value.kind is Kind.USAGE
    assert e.value.message == (f"unsupported --security-opt {opt!r} (supported: no-new-privileges[=true|false], "
                               "seccomp=unconfined, seccomp=PROFILE.json)")


def test_security_opt_directory_and_huge_file(tmp_path: Path) -> None:
    with pytest.raises(StrataError, match="Is a directory"):
        security.Privileges.from_options(security_opts=[f"seccomp={tmp_path}"])
    with pytest.raises(StrataError, match="larger than 1 MiB"):
        security.Privileges.from_options(security_opts=["seccomp=/dev/zero"])


def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_args: object) -> Profile:
        raise AssertionError("the profile was parsed")

    monkeypatch.setattr(Profile, "from_json", refused)


@pytest.mark.parametrize("text", [json.dumps(seccomp.to_oci(seccomp_default.PROFILE, security.DOCKER_DEFAULT_CAPS),
                                             sort_keys=True), FLAGGED], ids=["default", "flags"])
def test_a_text_keyed_entry_parses_and_compiles_nothing_and_gives_the_same_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """program_for_text (the runner's start and exec): what the profile's text compiles to, flags included, taken
    on a hit without parsing the text or calling the library."""
    cache = tmp_path / "cache"
    expected = seccomp.program(Profile.from_json(text), security.DOCKER_DEFAULT_CAPS)  # no cache
    first = seccomp.program_for_text(text, security.DOCKER_DEFAULT_CAPS, cache)
    assert first == expected and len(list(cache.iterdir())) == 2  # the profile's entry and the text's
    with monkeypatch.context() as m:
        no_library(m)
        no_parse(m)
        again = seccomp.program_for_text(text, security.DOCKER_DEFAULT_CAPS, cache)
        with pytest.raises(AssertionError, match="parsed"):  # other capabilities: another key, a miss
            seccomp.program_for_text(text, frozenset(), cache)
    assert first is not None and again is not None
    assert again == expected and again.filter is not first.filter
    if text == FLAGGED:
        assert again.flags == 2 | 4


@pytest.mark.parametrize("damage", ["flags changed", "flags cut", "bit flipped", "the profile's entry"])
def test_a_damaged_text_keyed_entry_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    """The entry's checksum covers its flags too: a changed flag (LOG, SPEC_ALLOW) is a miss, as is anything cut or
    flipped, and another entry renamed to its name. A miss parses and takes program()'s way; the entry is rewritten."""
    cache = tmp_path / "cache"
    good = seccomp.program_for_text(FLAGGED, security.DOCKER_DEFAULT_CAPS, cache)
    key = seccomp._text_key(FLAGGED, security.DOCKER_DEFAULT_CAPS)
    entry = cache / f"{key}.bpf"
    data = entry.read_bytes()
    other = next(p for p in cache.iterdir() if p != entry)
    entry.write_bytes({"flags changed": data[:32] + bytes([data[32] ^ 2]) + data[33:], "flags cut": data[:34],
                       "bit flipped": data[:-1] + bytes([data[-1] ^ 1]),
                       "the profile's entry": other.read_bytes()}[damage])
    with monkeypatch.context() as m:
        no_parse(m)
        with pytest.raises(AssertionError, match="parsed"):
            seccomp.program_for_text(FLAGGED, security.DOCKER_DEFAULT_CAPS, cache)
    assert seccomp.program_for_text(FLAGGED, security.DOCKER_DEFAULT_CAPS, cache) == good
    assert entry.read_bytes() == data
    cache.chmod(0o770)  # a directory others could write is not read (program()'s rule)
    with monkeypatch.context() as m:
        no_parse(m)
        with pytest.raises(AssertionError, match="parsed"):
            seccomp.program_for_text(FLAGGED, security.DOCKER_DEFAULT_CAPS, cache)
