"""A hostile rootfs cannot wedge or crash the runner through the files it reads to resolve ``--user``.

The runner reads the container's /etc/passwd and /etc/group itself (runner/isolation/user.py), still holding its
privileges, fds and environment. Here they are a fifo (a plain read waits for a writer forever), a device or a link to
/dev/zero (reads without end), a sparse 10 GB file (eats memory), a file over the reader's cap, and links into
/proc (the runner's own environment and fds). Each is refused as absent: numeric users still work, a name fails at
once with one line saying why.

The reader's unit tests use tmp dirs as roots and run every read that could hang in a forked child with a generous
bound (a bound against hanging, never a timing assertion); the system tests run real containers from the session
test image: one image whose /etc/passwd and /etc/group are fifos, and running containers whose /etc/passwd is
replaced at run time.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner import linux
from runner.isolation import user
from runner.isolation.user import ETC_CAP, EtcFile, ExecUser
from shared.errors import StrataError
from tests import runner_images
from tests.marks import as_root_and_user, as_root_and_user_over, needs_root, needs_tools
from tests.scripts import Registry
from tests.tools import Tools, detached, one_line_error

PASSWD = "root:x:0:0:root:/root:/bin/sh\nstrata:x:1000:1000:strata:/home/strata:/bin/sh\n"
GROUP = "root:x:0:\nstrata:x:1000:\nstaff:x:50:strata\n"
HANG_BOUND = 30.0  # seconds a read that should return at once may take before we call it hung
TEN_GB = 10 << 30
MEMORY_HEADROOM = 256 << 20  # what a bounded read may add to a child's peak RSS; the bytes it reads are <= 4 MiB


# -- running the reader where a hang or a memory blow-up cannot take the test process along --------------------


def in_child(func: Callable[[], object], scratch: Path, address_space: int | None = None) -> tuple[object, int]:
    """FUNC's result and the peak RSS (bytes) of the forked child that ran it. Fails the test if the child is not
    done within HANG_BOUND (it is killed), or if FUNC raised. ADDRESS_SPACE caps the child's address space above
    what it had at fork, so a read of the whole of a huge file fails there rather than eat the machine's memory."""
    result_file = scratch / f"child-result-{time.monotonic_ns()}.pickle"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; never returns into pytest
        code = 1
        try:
            if address_space is not None:
                size = os.sysconf("SC_PAGE_SIZE") * int(Path("/proc/self/statm").read_text().split()[0])
                resource.setrlimit(resource.RLIMIT_AS, (size + address_space, size + address_space))
            try:
                outcome: tuple[str, object] = ("returned", func())
            except BaseException as e:  # reported to the parent, which fails the test with it
                outcome = ("raised", f"{type(e).__name__}: {e}")
            result_file.write_bytes(pickle.dumps(outcome))
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + HANG_BOUND
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            pytest.fail(f"the reader never returned ({HANG_BOUND:.0f} s): it blocked or read without end")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0, f"the child died: status {status}"
    kind, value = pickle.loads(result_file.read_bytes())
    assert kind == "returned", value
    return value, usage.ru_maxrss * 1024


def message_of(func: Callable[[], object]) -> str:
    """The StrataError FUNC raises, as the user sees it (picklable, unlike the error, across in_child)."""
    try:
        func()
    except StrataError as e:
        return str(e)
    raise AssertionError(f"no error: {func}")


def make_root(tmp_path: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    """A container root with regular /etc/passwd and /etc/group (None: absent)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc/passwd").write_text(passwd)
    if group is not None:
        (root / "etc/group").write_text(group)
    return root


def own_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the reader ----------------------------------------------------------------------------------------------------


def test_reader_reads_a_regular_file_and_finds_a_missing_one_absent(tmp_path: Path) -> None:
    root = make_root(tmp_path, group=None)
    assert user.read_etc("passwd", root) == EtcFile("/etc/passwd", PASSWD)
    assert user.read_etc("group", root) == EtcFile("/etc/group", "", None)  # missing is no problem, as in Docker
    (root / "etc/passwd").unlink()
    (root / "etc").rmdir()
    (root / "etc").write_text("not a directory\n")
    assert user.read_etc("passwd", root) == EtcFile("/etc/passwd", "", None)


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    """Absolute links and ``..`` past the top stay in the container's root, where the image put the file; read on
    the host, both would miss it (the host has no /etc/passwd-image)."""
    root = make_root(tmp_path, passwd=None, group=None)
    assert not os.path.lexists("/etc/passwd-image")
    (root / "etc/passwd-image").write_text(PASSWD)
    (root / "etc/group-image").write_text(GROUP)
    os.symlink("/etc/passwd-image", root / "etc/passwd")
    os.symlink("../../../../../../../../../../etc/group-image", root / "etc/group")
    assert user.read_etc("passwd", root).text == PASSWD
    assert user.read_etc("group", root).text == GROUP
    assert user.resolve("strata", root) == ExecUser(1000, 1000, (1000, 50), "/home/strata")


@needs_root
def test_fifo_is_refused_at_once(tmp_path: Path) -> None:
    root = make_root(tmp_path, passwd=None, group=None)
    os.mkfifo(root / "etc/passwd")
    os.mkfifo(root / "etc/group")
    found, _ = in_child(lambda: (user.read_etc("passwd", root), user.read_etc("group", root)), tmp_path)
    assert found == (EtcFile("/etc/passwd", "", "/etc/passwd is not a regular file"),
                     EtcFile("/etc/group", "", "/etc/group is not a regular file"))


@needs_root
def test_character_device_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, passwd=None)
    os.mknod(root / "etc/passwd", stat.S_IFCHR | 0o644, os.makedev(1, 5))  # /dev/zero's numbers
    found, _ = in_child(lambda: user.read_etc("passwd", root), tmp_path)
    assert found == EtcFile("/etc/passwd", "", "/etc/passwd is not a regular file")


@needs_root
def test_symlink_to_dev_zero_is_refused_inside_the_root(tmp_path: Path) -> None:
    """/etc/passwd -> /dev/zero resolves to the root's own dev/zero (a real zero device here, made with mknod),
    which is refused for what it is, not for being missing."""
    root = make_root(tmp_path, passwd=None)
    (root / "dev").mkdir()
    os.mknod(root / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.symlink("/dev/zero", root / "etc/passwd")
    found, _ = in_child(lambda: user.read_etc("passwd", root), tmp_path)
    assert found == EtcFile("/etc/passwd", "", "/etc/passwd is not a regular file")


@needs_root
def test_links_into_proc_are_refused(tmp_path: Path) -> None:
    """With a procfs at the root's /proc (as every container has): /etc/passwd -> /proc/self/environ would be the
    runner's environment, a regular-looking file; /etc/group -> /proc/self/fd/N a magic link to the runner's open
    file (here a secret outside the root). The child mounts proc in a mount namespace of its own."""
    root = make_root(tmp_path, passwd=None, group=None)
    (root / "proc").mkdir()
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0:secret:/secret:/bin/sh\n")
    os.symlink("/proc/self/environ", root / "etc/passwd")

    def read_with_proc() -> tuple[EtcFile, EtcFile]:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount("proc", str(root / "proc"), "proc")
        fd = os.open(secret, os.O_RDONLY)
        os.symlink(f"/proc/self/fd/{fd}", root / "etc/group")
        # what a plain read of each would have given the image
        assert (root / "etc/passwd").read_bytes() == Path("/proc/self/environ").read_bytes() != b""
        assert (root / "etc/group").read_text() == secret.read_text()
        return user.read_etc("passwd", root), user.read_etc("group", root)

    (passwd, group), _ = in_child(read_with_proc, tmp_path)
    assert passwd == EtcFile("/etc/passwd", "", "/etc/passwd leads into procfs, not a file of the image")
    assert group == EtcFile("/etc/group", "", "cannot read /etc/group: Too many levels of symbolic links")


@needs_root
def test_sparse_10_gb_file_is_refused_without_being_read(tmp_path: Path) -> None:
    root = make_root(tmp_path, passwd=None)
    (root / "etc/passwd").write_text(PASSWD)
    os.truncate(root / "etc/passwd", TEN_GB)  # sparse: takes no disk
    found, peak = in_child(lambda: user.read_etc("passwd", root), tmp_path, address_space=1 << 30)
    assert found == EtcFile("/etc/passwd", "", "/etc/passwd is larger than 4 MiB, the most the runner reads")
    assert peak < own_peak_rss() + MEMORY_HEADROOM, f"peak RSS {peak >> 20} MiB for a {TEN_GB >> 30} GB file"


def test_file_over_the_cap_is_refused_whole(tmp_path: Path) -> None:
    """Up to ETC_CAP bytes is read; one byte more and none is, so no user is found in part of a file."""
    filler = "u{0}:x:{0}:{0}::/home/u{0}:/bin/sh\n"
    lines, size = [PASSWD], len(PASSWD)
    n = 2000
    while size < ETC_CAP:
        line = filler.format(n)
        lines.append(line)
        size += len(line)
        n += 1
    text = "".join(lines)[:ETC_CAP - 1] + "\n"  # exactly the cap, ending in a whole (cut) line
    root = make_root(tmp_path, passwd=text)
    assert len(text) == ETC_CAP and user.read_etc("passwd", root).text == text
    assert user.resolve("strata", root).uid == 1000
    (root / "etc/passwd").write_text(text + "\n")
    assert user.read_etc("passwd", root) == EtcFile("/etc/passwd", "", "/etc/passwd is larger than 4 MiB, the "
                                                                       "most the runner reads")
    assert message_of(lambda: user.resolve("strata", root)) == (
        "unable to find user strata: /etc/passwd is larger than 4 MiB, the most the runner reads")
    assert user.resolve("1000:1000", root) == ExecUser(1000, 1000, (1000,), "/")


# -- resolve() over hostile files ---------------------------------------------------------------------------------


def hostile(kind: str, path: Path) -> None:
    """Make PATH (in a root) one of the hostile kinds."""
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))
    elif kind == "sparse":
        path.write_text(PASSWD)
        os.truncate(path, TEN_GB)
    elif kind == "dev-zero-link":
        os.symlink("/dev/zero", path)  # the root has a dev/zero device (make_hostile_root)
    else:
        assert kind == "missing"


def make_hostile_root(tmp_path: Path, kind: str) -> Path:
    root = make_root(tmp_path)
    (root / "dev").mkdir()
    os.mknod(root / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    hostile(kind, root / "etc/passwd")
    hostile(kind, root / "etc/group")
    return root


HOSTILE_KINDS = ["fifo", "device", "sparse", "dev-zero-link", "missing"]
WHY = {"fifo": "/etc/passwd is not a regular file", "device": "/etc/passwd is not a regular file",
       "sparse": "/etc/passwd is larger than 4 MiB, the most the runner reads",
       "dev-zero-link": "/etc/passwd is not a regular file", "missing": "no matching entries in passwd file"}


@needs_root
@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_numeric_user_needs_neither_file(tmp_path: Path, kind: str) -> None:
    root = make_hostile_root(tmp_path, kind)
    specs = ["0:0", "0", "", "1000:1000", "1000", "4242:50"]
    found, _ = in_child(lambda: [user.resolve(s, root) for s in specs], tmp_path, address_space=1 << 30)
    assert found == [ExecUser(0, 0, (0,), "/"), ExecUser(0, 0, (0,), "/"), ExecUser(0, 0, (0,), "/"),
                     ExecUser(1000, 1000, (1000,), "/"), ExecUser(1000, 0, (0,), "/"), ExecUser(4242, 50, (50,), "/")]


@needs_root
@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_name_fails_at_once_saying_why(tmp_path: Path, kind: str) -> None:
    root = make_hostile_root(tmp_path, kind)
    found, _ = in_child(lambda: [message_of(lambda: user.resolve("strata", root)),
                                 message_of(lambda: user.resolve("0:staff", root))], tmp_path, address_space=1 << 30)
    assert found == [f"unable to find user strata: {WHY[kind]}",
                     f"unable to find group staff: {WHY[kind].replace('passwd', 'group')}"]


def test_numeric_user_still_takes_home_from_a_regular_passwd(tmp_path: Path) -> None:
    """As Docker gives HOME=/root to ``-u 0:0`` with a normal /etc/passwd; a hostile group file does not matter."""
    root = make_root(tmp_path, group=None)
    os.mkfifo(root / "etc/group")
    found, _ = in_child(lambda: [user.resolve(s, root) for s in ("0:0", "1000:50", "0")], tmp_path)
    assert found == [ExecUser(0, 0, (0,), "/root"), ExecUser(1000, 50, (50,), "/home/strata"),
                     ExecUser(0, 0, (0,), "/root")]


def test_malformed_entries_never_crash(tmp_path: Path) -> None:
    """An image's garbage is no entry (never a traceback); a --user number out of range is the user's error."""
    passwd = ("app:x:abc:1:app:/app:/bin/sh\nshort:x:5\n\n  \n# comment:x:0:0::/:/bin/sh\n"
              "huge:x:99999999999:0::/huge:/bin/sh\nwide:x:²:0::/wide:/bin/sh\n" + PASSWD)
    root = make_root(tmp_path, passwd=passwd, group="staff:x:notanumber:strata\n" + GROUP)
    assert message_of(lambda: user.resolve("app", root)) == (
        "unable to find user app: no matching entries in passwd file")
    assert message_of(lambda: user.resolve("huge", root)).startswith("unable to find user huge")
    assert message_of(lambda: user.resolve("wide", root)).startswith("unable to find user wide")
    assert user.resolve("strata", root) == ExecUser(1000, 1000, (1000, 50), "/home/strata")
    assert message_of(lambda: user.resolve("4294967296", root)) == (
        "uids and gids must be in range 0-2147483647: 4294967296")
    assert message_of(lambda: user.resolve("0:99999999999", root)).startswith("uids and gids must be in range")
    assert message_of(lambda: user.resolve("²", root)).startswith("unable to find user ²")


# -- real containers -----------------------------------------------------------------------------------------------


# The container's uid (and gid) without busybox's ``id``, which looks the names up in /etc/passwd itself: on a fifo
# it would wait for a writer, in the container, as PID 1 (deaf to SIGTERM), as it would under Docker.
IDS = "grep -E '^(Uid|Gid):' /proc/self/status | cut -f2"
ID_U = ("sh", "-c", "grep ^Uid: /proc/self/status | cut -f2")


@pytest.fixture
def img(stored_test_image: str, no_leaks: None, executor: str) -> str:
    """The session test image, pulled; the test runs once per executor (ours, runc, crun)."""
    return stored_test_image


@pytest.fixture(scope="session")
def fifo_etc_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry, test_layout: Path) -> str:
    """The test image plus a layer whose /etc/passwd and /etc/group are fifos, pushed as strata/fifo-etc:1."""
    return runner_images.build_and_push(runner_images.build_fifo_etc, test_layout,
                                        tmp_path_factory.mktemp("fifo-etc-image"), runner_images.FIFO_ETC_TAG,
                                        f"{registry.address}/strata/fifo-etc:1")


@as_root_and_user
@needs_root
@needs_tools
def test_run_image_with_fifo_passwd(tools: Tools, img: str, fifo_etc_image: str, executor: str) -> None:
    """Ours reads /etc/passwd and /etc/group only for a name, and safely; runner-oci reads neither (the runner
    resolves the user). runc and crun open both at every start (a fifo would block them for ever): under them such
    an image is refused at once, saying why."""
    assert tools.puller("pull", fifo_etc_image).code == 0
    if executor not in ("strata", "runner-oci"):
        for args in (("-u", "0:0"), ()):
            one_line_error(tools.runner("run", "--rm", *args, fifo_etc_image, "true"), 125,
                           f"/etc/passwd is not a regular file: {executor} would read it at start")
        assert tools.runner("ps", "-a", "-q").out == ""
        return
    numeric = tools.runner("run", "--rm", "-u", "0:0", fifo_etc_image, *ID_U)
    assert (numeric.code, numeric.out) == (0, "0\n"), numeric.err
    default = tools.runner("run", "--rm", fifo_etc_image, "sh", "-c", f'{IDS}; echo "$HOME"')
    assert (default.code, default.out) == (0, "0\n0\n/\n"), default.err  # no entry: gid 0, HOME /, as Docker
    one_line_error(tools.runner("run", "--rm", "-u", "strata", fifo_etc_image, "true"), 125,
                   "unable to find user strata: /etc/passwd is not a regular file")
    one_line_error(tools.runner("run", "--rm", "-u", "0:strata", fifo_etc_image, "true"), 125,
                   "unable to find group strata: /etc/group is not a regular file")
    assert tools.runner("ps", "-a", "-q").out == ""


# Each replaces the running container's /etc/passwd (busybox in the container); the problem a name then meets.
RUNTIME_PASSWD = {
    "fifo": ("rm /etc/passwd && mkfifo /etc/passwd", "/etc/passwd is not a regular file"),
    "sparse-10g": ("rm /etc/passwd && truncate -s 10G /etc/passwd", "/etc/passwd is larger than 4 MiB"),
    "dev-zero-link": ("rm /etc/passwd && ln -s /dev/zero /etc/passwd", "/etc/passwd is not a regular file"),
    "proc-environ-link": ("rm /etc/passwd && ln -s /proc/1/environ /etc/passwd", "/etc/passwd leads into procfs"),
    # the exec stage reads it outside the container's pid namespace: its /proc/self names no process there
    "proc-self-link": ("rm /etc/passwd && ln -s /proc/self/environ /etc/passwd",
                       "no matching entries in passwd file"),
}


@needs_root
@needs_tools
@as_root_and_user_over("variant", sorted(RUNTIME_PASSWD), user=["fifo", "sparse-10g", "proc-environ-link"])
def test_exec_after_passwd_is_replaced(tools: Tools, img: str, variant: str) -> None:
    script, why = RUNTIME_PASSWD[variant]
    with detached(tools, img, "sleep", "1000") as cid:
        before = tools.runner("exec", "-u", "strata", cid, *ID_U)
        assert (before.code, before.out) == (0, "1000\n"), before.err  # the name resolves while passwd is sane
        replaced = tools.runner("exec", cid, "sh", "-c", script)
        assert replaced.code == 0, replaced.err
        numeric = tools.runner("exec", "-u", "0:0", cid, *ID_U)
        assert (numeric.code, numeric.out) == (0, "0\n"), numeric.err
        default = tools.runner("exec", cid, "sh", "-c", f'{IDS}; echo "$HOME"')
        assert (default.code, default.out) == (0, "0\n0\n/\n"), default.err
        one_line_error(tools.runner("exec", "-u", "strata", cid, "true"), 125, f"unable to find user strata: {why}")
