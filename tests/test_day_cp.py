"""``runner cp`` and ``runner diff`` (issue 22) as a user types them: Docker's archive rules both ways on running
and stopped containers, ``-`` tar streams, ``-a`` ownership, a user's (rootless) store, and what a hostile
container may try against the host through cp (symlinks to host paths, a component swapped during the copy,
fifos and devices); diff's A/C/D lines in Docker's order."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.rootless import User, UserTools
from tests.test_userns_auto import owner
from tests.tools import ROOT, Result, Tools, one_line_error, runner_command, wait_until

pytestmark = [needs_root, needs_tools]
__all__ = ["owner"]  # the fixture: the user whose subordinate ids --userns=auto takes a block of

SETUP = ("mkdir -p /d/sub && echo f > /d/f && echo g > /d/sub/g && echo file > /file && ln -s /d /dlink && "
         "ln -s file /flink && chown 1000:1001 /file && mkdir /empty")


def _start(tools: Tools, image: str, name: str, state: str, setup: str) -> None:
    """A container NAME that ran SETUP: left exited, or running on (sleeping) once SETUP is done."""
    if state == "stopped":
        made = tools.runner("run", "--name", name, image, "sh", "-c", setup)
        assert made.code == 0, made.err
        return
    made = tools.runner("run", "-d", "--name", name, image, "sh", "-c", f"{setup} && touch /ready && exec sleep 600")
    assert made.code == 0, made.err
    wait_until(lambda: tools.runner("exec", name, "test", "-e", "/ready").code == 0, "the setup ran")


@pytest.fixture(params=["stopped", "running"])
def box(request: pytest.FixtureRequest, tools: Tools, stored_test_image: str) -> Iterator[str]:
    _start(tools, stored_test_image, "box", request.param, SETUP)
    try:
        yield "box"
    finally:
        tools.runner("rm", "-f", "box")


def cp(tools: Tools, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(runner_command(tools, "cp", *args), input=stdin, capture_output=True, timeout=60,
                          env=tools.environ(), cwd=ROOT)


def ok(tools: Tools, *args: str) -> None:
    done = cp(tools, *args)
    assert done.returncode == 0, done.stderr.decode()


def fails(tools: Tools, *args: str, text: str, code: int = 125) -> None:
    done = cp(tools, *args)
    one_line_error(Result(done.returncode, done.stdout.decode(), done.stderr.decode()), code, text)


def tree(top: Path) -> dict[str, str]:
    """path -> content (files), '->target' (symlinks), '/' (directories) below TOP."""
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files:
            p = Path(dirpath, n)
            rel = str(p.relative_to(top))
            out[rel] = f"->{os.readlink(p)}" if p.is_symlink() else "/" if p.is_dir() else p.read_text()
    return out


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


# -- out of the container ---------------------------------------------------------------------------------------


def test_copy_out_follows_dockers_rules(tools: Tools, box: str, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "adir").mkdir()
    (host / "adir2").mkdir()
    (host / "afile").write_text("old\n")
    ok(tools, f"{box}:/file", str(host / "new"))  # file -> missing: created as DEST
    assert (host / "new").read_text() == "file\n"
    ok(tools, f"{box}:/file", str(host / "afile"))  # file -> file: overwritten
    assert (host / "afile").read_text() == "file\n"
    ok(tools, f"{box}:/file", str(host / "adir"))  # file -> dir: into it, SRC's name
    assert (host / "adir/file").read_text() == "file\n"
    fails(tools, f"{box}:/file", str(host / "nodir") + "/", text="no such directory", code=125)
    ok(tools, f"{box}:/d", str(host / "newdir"))  # dir -> missing: created with SRC's content
    assert tree(host / "newdir") == {"f": "f\n", "sub": "/", "sub/g": "g\n"}
    ok(tools, f"{box}:/d", str(host / "adir"))  # dir -> dir: into it
    assert tree(host / "adir/d") == {"f": "f\n", "sub": "/", "sub/g": "g\n"}
    ok(tools, f"{box}:/d/.", str(host / "adir2"))  # dir/. -> dir: its content
    assert tree(host / "adir2") == {"f": "f\n", "sub": "/", "sub/g": "g\n"}
    fails(tools, f"{box}:/d", str(host / "afile"), text="cannot copy directory")
    fails(tools, f"{box}:/nosuch", str(host / "x"), text=f"Could not find the file /nosuch in container {box}")
    fails(tools, f"{box}:/file", str(host / "no/such/x"), text=f'invalid output path: directory "{host}/no/such" '
          "does not exist")
    ok(tools, f"{box}:/flink", str(host / "link"))  # a symlink is copied as one
    assert os.readlink(host / "link") == "file"
    ok(tools, "-L", f"{box}:/flink", str(host / "followed"))  # -L: its target, under the link's name
    assert (host / "followed").read_text() == "file\n"
    ok(tools, f"{box}:/dlink/", str(host / "viadir"))  # DIR/ follows a link at its end
    assert tree(host / "viadir") == {"f": "f\n", "sub": "/", "sub/g": "g\n"}


def test_copy_out_to_a_tar_stream(tools: Tools, box: str, tmp_path: Path) -> None:
    done = cp(tools, f"{box}:/d", "-")
    assert done.returncode == 0, done.stderr.decode()
    entries = members(done.stdout)
    assert sorted(entries) == ["d", "d/f", "d/sub", "d/sub/g"]
    (tmp_path / "x").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp_path / "x")], input=done.stdout, check=True)  # GNU tar reads it
    listed = subprocess.run(["tar", "-tv"], input=done.stdout, capture_output=True, check=True).stdout.decode()
    assert "d/sub/g" in listed
    assert tree(tmp_path / "x/d") == {"f": "f\n", "sub": "/", "sub/g": "g\n"}
    owned = members(cp(tools, f"{box}:/file", "-").stdout)["file"]
    assert (owned.uid, owned.gid) == (1000, 1001)  # the ids as the container sees them


def test_ownership_out(tools: Tools, box: str, tmp_path: Path) -> None:
    ok(tools, f"{box}:/file", str(tmp_path / "mine"))
    assert (os.stat(tmp_path / "mine").st_uid, os.stat(tmp_path / "mine").st_gid) == (0, 0)  # the caller's
    ok(tools, "-a", f"{box}:/file", str(tmp_path / "kept"))
    assert (os.stat(tmp_path / "kept").st_uid, os.stat(tmp_path / "kept").st_gid) == (1000, 1001)


# -- into the container -----------------------------------------------------------------------------------------


def test_copy_in_follows_dockers_rules(tools: Tools, box: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("F\n")
    (src / "sub/g").write_text("G\n")
    one = tmp_path / "one.txt"
    one.write_text("one\n")
    os.chown(one, 1234, 5678)
    ok(tools, str(one), f"{box}:/newfile")  # file -> missing
    ok(tools, str(one), f"{box}:/file")  # file -> existing file: overwritten
    ok(tools, str(one), f"{box}:/d")  # file -> dir: into it
    ok(tools, str(one), f"{box}:/dlink")  # DEST a link to a dir: followed, inside the container
    fails(tools, str(one), f"{box}:/nodir/", text="no such directory")
    ok(tools, str(src), f"{box}:/newdir")  # dir -> missing: created
    ok(tools, str(src), f"{box}:/empty")  # dir -> dir: into it
    ok(tools, str(src) + "/.", f"{box}:/d")  # dir/. -> dir: content
    fails(tools, str(src), f"{box}:/file", text="cannot copy directory")
    fails(tools, str(one), f"{box}:/no/such/x", text=f"Could not find the file /no/such in container {box}")
    fails(tools, str(tmp_path / "nosuch"), f"{box}:/x", text=f"lstat {tmp_path}/nosuch: no such file or directory")
    fails(tools, str(one), f"{box}:/file/x", text="extraction point is not a directory")
    out = tmp_path / "back"
    ok(tools, f"{box}:/", str(out))
    assert (out / "newfile").read_text() == (out / "file").read_text() == (out / "d/one.txt").read_text() == "one\n"
    assert tree(out / "newdir") == tree(src) == tree(out / "empty/src")
    assert (out / "d/f").read_text() == "F\n" and (out / "d/sub/g").read_text() == "G\n"
    assert os.readlink(out / "dlink") == "/d"
    entries = members(cp(tools, f"{box}:/newfile", "-").stdout)
    assert (entries["newfile"].uid, entries["newfile"].gid) == (0, 0)  # Docker: root's in the container
    ok(tools, "-a", str(one), f"{box}:/kept")
    entries = members(cp(tools, f"{box}:/kept", "-").stdout)
    assert (entries["kept"].uid, entries["kept"].gid) == (1234, 5678)


def test_copy_in_from_a_tar_stream(tools: Tools, box: str, tmp_path: Path) -> None:
    (tmp_path / "t/dir").mkdir(parents=True)
    (tmp_path / "t/dir/x").write_text("x\n")
    stream = subprocess.run(["tar", "-c", "-C", str(tmp_path / "t"), "dir"], capture_output=True, check=True).stdout
    done = cp(tools, "-", f"{box}:/d", stdin=stream)
    assert done.returncode == 0, done.stderr.decode()
    assert members(cp(tools, f"{box}:/d/dir/x", "-").stdout)["x"].size == 2
    done = cp(tools, "-", f"{box}:/file", stdin=stream)
    one_line_error(Result(done.returncode, "", done.stderr.decode()), 125, f'destination "{box}:/file" must be a '
                   "directory")


def test_a_created_container_starts_with_what_was_copied_in(tools: Tools, stored_test_image: str,
                                                            tmp_path: Path) -> None:
    """Docker's common use: a config copied into a container made with ``create``, before its first start."""
    made = tools.runner("create", "--name", "fresh", stored_test_image, "cat", "/etc/app.conf")
    assert made.code == 0, made.err
    try:
        (tmp_path / "app.conf").write_text("setting=1\n")
        ok(tools, str(tmp_path / "app.conf"), "fresh:/etc/")
        started = tools.runner("start", "-a", "fresh")
        assert (started.code, started.out) == (0, "setting=1\n"), started.err
        assert tools.runner("diff", "fresh").out.splitlines() == ["C /etc", "A /etc/app.conf"]
    finally:
        tools.runner("rm", "-f", "fresh")


def test_a_start_waits_for_a_copy_into_the_stopped_container(tools: Tools, stored_test_image: str,
                                                              tmp_path: Path) -> None:
    """cp holds a stopped container's start lock: a start meanwhile waits, and then sees what was copied (no two
    overlay mounts share the rw layer)."""
    made = tools.runner("create", "--name", "waiter", stored_test_image, "cat", "/etc/x")
    assert made.code == 0, made.err
    (tmp_path / "t").mkdir()
    (tmp_path / "t/x").write_text("copied\n")
    stream = subprocess.run(["tar", "-c", "-C", str(tmp_path / "t"), "x"], capture_output=True, check=True).stdout
    copying = subprocess.Popen(runner_command(tools, "cp", "-", "waiter:/etc"), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tools.environ(), cwd=ROOT)
    starting = None
    try:
        assert copying.stdin is not None
        time.sleep(2)  # cp has mounted and waits for its stdin (a longer wait only makes the test weaker)
        starting = subprocess.Popen(runner_command(tools, "start", "-a", "waiter"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=tools.environ(), cwd=ROOT)
        time.sleep(2)
        assert starting.poll() is None, starting.communicate()  # waiting for the copy
        copying.stdin.write(stream)
        copying.stdin.close()
        assert copying.wait(timeout=60) == 0, copying.communicate()
        out, err = starting.communicate(timeout=60)
        assert (starting.returncode, out) == (0, b"copied\n"), err
    finally:
        for proc in (copying, starting):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        tools.runner("rm", "-f", "waiter")


def test_running_container_sees_the_copy_and_its_volumes(tools: Tools, stored_test_image: str,
                                                         tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    made = tools.runner("run", "-d", "--name", "live", "-v", f"{vol}:/vol", stored_test_image, "sleep", "600")
    assert made.code == 0, made.err
    try:
        (tmp_path / "a.txt").write_text("a\n")
        ok(tools, str(tmp_path / "a.txt"), "live:/vol/")
        assert (vol / "a.txt").read_text() == "a\n"  # under the volume, as Docker's cp
        ok(tools, str(tmp_path / "a.txt"), "live:/tmp/")
        seen = tools.runner("exec", "live", "cat", "/tmp/a.txt", "/vol/a.txt")
        assert seen.out == "a\na\n", seen.err
        fails(tools, str(tmp_path / "a.txt"), "live:/proc/sys/kernel/", text="not in its own file system")
    finally:
        tools.runner("rm", "-f", "live")


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_a_runtimes_container(tools: Tools, executor: str, stored_test_image: str, tmp_path: Path,
                              state: str) -> None:
    """Under runc and crun too (the rootfs is our overlay whichever executor runs the container)."""
    _start(tools, stored_test_image, "rt", state, SETUP)
    try:
        (tmp_path / "in.txt").write_text("in\n")
        ok(tools, str(tmp_path / "in.txt"), "rt:/d/")
        ok(tools, "rt:/d", str(tmp_path / "out"))
        assert tree(tmp_path / "out") == {"f": "f\n", "in.txt": "in\n", "sub": "/", "sub/g": "g\n"}
        assert "A /d/in.txt" in tools.runner("diff", "rt").out.splitlines()
    finally:
        tools.runner("rm", "-f", "rt")


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_a_read_only_rootfs_takes_copies_only_in_its_volumes(tools: Tools, stored_test_image: str, tmp_path: Path,
                                                              state: str) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    running = state == "running"
    made = tools.runner("run", *(["-d"] if running else []), "--name", "ro", "--read-only", "-v", f"{vol}:/vol",
                        stored_test_image, "sleep", "600" if running else "0")
    assert made.code == 0, made.err
    try:
        (tmp_path / "a.txt").write_text("a\n")
        fails(tools, str(tmp_path / "a.txt"), "ro:/tmp/", text="container rootfs is marked read-only")
        ok(tools, str(tmp_path / "a.txt"), "ro:/vol/")
        assert (vol / "a.txt").read_text() == "a\n"
        ok(tools, "ro:/etc/passwd", str(tmp_path / "passwd"))  # reading is fine
    finally:
        tools.runner("rm", "-f", "ro")


def test_usage_errors(tools: Tools, box: str) -> None:
    fails(tools, "/a", "/b", text="must specify at least one container source")
    fails(tools, f"{box}:/a", f"{box}:/b", text="copying between containers is not supported")
    fails(tools, "nosuch:/a", "/tmp/x", text="no such container: nosuch")


# -- a user's store; a container of its own ids ----------------------------------------------------------------


@pytest.mark.parametrize("who", ["user"], indirect=True)
@pytest.mark.parametrize("state", ["stopped", "running"])
def test_a_users_store(tools: Tools, stored_test_image: str, tmp_path: Path, state: str) -> None:
    """Without root: the container's files are reached in the user's namespace; what comes out is the user's own,
    what goes in the container's root's (the user), with -a the ids the container sees (its subordinate ids)."""
    assert isinstance(tools, UserTools)
    _start(tools, stored_test_image, "ubox", state, SETUP)
    try:
        host = tmp_path / "uhost"
        host.mkdir()
        tools.hand_over(host)
        (host / "in.txt").write_text("in\n")
        tools.hand_over(host / "in.txt")
        ok(tools, str(host / "in.txt"), "ubox:/d/")
        entries = members(cp(tools, "ubox:/d/in.txt", "-").stdout)
        assert (entries["in.txt"].uid, entries["in.txt"].gid) == (0, 0)
        ok(tools, "ubox:/d", str(host / "out"))
        assert (host / "out/in.txt").read_text() == "in\n" and (host / "out/sub/g").read_text() == "g\n"
        assert os.stat(host / "out/f").st_uid == tools.user.uid
        ok(tools, "-a", "ubox:/file", str(host / "kept"))
        assert tools.user.subuids is not None
        assert os.stat(host / "kept").st_uid == tools.user.subuids[0] + 999  # 1000 in the namespace
        listed = tools.runner("diff", "ubox")
        assert listed.code == 0 and "A /d/in.txt" in listed.out.splitlines(), listed
    finally:
        tools.runner("rm", "-f", "ubox")


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_a_container_of_its_own_ids(tools: Tools, owner: User, stored_test_image: str, tmp_path: Path,
                                    state: str) -> None:
    """--userns=auto: the container's ids are a block of the host's; cp maps them both ways."""
    running = state == "running"
    made = tools.runner("run", *(["-d"] if running else []), "--name=auto", "--userns=auto", stored_test_image, "sh",
                        "-c", "chown 1000:1001 /etc/layer1.txt" + (" && exec sleep 600" if running else ""))
    assert made.code == 0, made.err
    try:
        one = tmp_path / "one"
        one.write_text("one\n")
        os.chown(one, 1234, 5678)
        ok(tools, str(one), "auto:/plain")
        ok(tools, "-a", str(one), "auto:/kept")
        entries = members(cp(tools, "auto:/plain", "-").stdout)
        assert (entries["plain"].uid, entries["plain"].gid) == (0, 0)
        entries = members(cp(tools, "auto:/kept", "-").stdout)
        assert (entries["kept"].uid, entries["kept"].gid) == (1234, 5678)
        wait_until(lambda: members(cp(tools, "auto:/etc/layer1.txt", "-").stdout)["layer1.txt"].uid == 1000,
                   "the chown ran")
        upper = next((tools.root / "containers").iterdir()) / "upper"
        assert owner.subuids is not None
        base = os.stat(upper).st_uid
        assert owner.subuids[0] <= base < owner.subuids[0] + owner.subuids[1]
        assert os.stat(upper / "plain").st_uid == base and os.stat(upper / "kept").st_uid == base + 1234
        if running:
            seen = tools.runner("exec", "auto", "ls", "-ln", "/plain", "/kept")
            assert seen.out.split("\n")[0].split()[2:4] == ["1234", "5678"], seen
            assert seen.out.split("\n")[1].split()[2:4] == ["0", "0"], seen
    finally:
        tools.runner("rm", "-f", "auto")


# -- a hostile container ----------------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    """A host directory a hostile container aims at: a file whose content must never leave the host, and which
    nothing may change or join."""
    where = tmp_path / "sentinel"
    where.mkdir()
    (where / "secret").write_text("HOST SECRET\n")
    yield where
    assert sorted(os.listdir(where)) == ["secret"]
    assert (where / "secret").read_text() == "HOST SECRET\n"


def _hostile_setup(sentinel: Path) -> str:
    up = "../" * 12
    return (f"ln -s {sentinel} /abs && ln -s {up}{str(sentinel).lstrip('/')} /rel && ln -s / /rootlink && "
            f"ln -s {sentinel}/secret /secretlink && mkfifo /fifo && mknod /null c 1 3 && mkdir -p /abs2 && "
            "echo mine > /abs2/secret")


@pytest.fixture(params=["stopped", "running"])
def evil(request: pytest.FixtureRequest, tools: Tools, stored_test_image: str, sentinel: Path) -> Iterator[str]:
    """A container whose tree aims at the sentinel (and holds a fifo and a device node), stopped or running."""
    _start(tools, stored_test_image, "evil", request.param, _hostile_setup(sentinel))
    try:
        yield request.param
    finally:
        tools.runner("rm", "-f", "evil")


def test_symlinks_to_host_paths_stay_in_the_container(tools: Tools, evil: str, sentinel: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for src in ("evil:/abs/secret", "evil:/rel/secret", "evil:/abs/.", "evil:/rel/"):
        done = cp(tools, src, "-")  # resolved inside the container, where the path does not exist
        assert done.returncode != 0 and b"HOST SECRET" not in done.stdout, done.stderr
    for args in (("-L", "evil:/secretlink", "-"), ("evil:/secretlink/", "-")):
        done = cp(tools, *args)
        assert b"HOST SECRET" not in done.stdout
    done = cp(tools, "evil:/rootlink/etc/passwd", "-")  # a component that is a link to / : the container's /
    assert done.returncode == 0, done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        member = tar.extractfile("passwd")
        assert member is not None
        assert member.read().decode().startswith("root:x:0:0:root:/root:/bin/sh")  # busybox's, not the host's
    (tmp_path / "payload").write_text("PAYLOAD\n")
    for dest in ("evil:/abs/", "evil:/abs/secret", "evil:/rel/", "evil:/secretlink", "evil:/rootlink" +
                 str(sentinel)):
        cp(tools, str(tmp_path / "payload"), dest)  # lands inside the container or fails; never on the host
    ok(tools, "evil:/", str(out / "all"))  # symlinks come out as symlinks, never followed on the way
    assert os.readlink(out / "all/abs") == str(sentinel)


def _archive(*entries: tuple[str, str | None]) -> bytes:
    """A tar of (name, symlink target or None for a file holding EVIL)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, target in entries:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = 6
                tar.addfile(info, io.BytesIO(b"EVIL!\n"))
    return buf.getvalue()


@pytest.mark.parametrize("archive", ["dotdot", "absolute-link", "relative-link"])
def test_a_tar_stream_cannot_escape(tools: Tools, stored_test_image: str, sentinel: Path, archive: str) -> None:
    """``cp - C:/dir`` with a hostile archive: ``..`` names, or a symlink entry a later entry writes through."""
    up = "../" * 12
    data = {"dotdot": _archive((f"{up}{str(sentinel).lstrip('/')}/secret", None)),
            "absolute-link": _archive(("esc", str(sentinel)), ("esc/secret", None)),
            "relative-link": _archive(("esc", up + str(sentinel).lstrip("/")), ("esc/secret", None))}[archive]
    _start(tools, stored_test_image, "evil", "stopped", "mkdir /in")
    try:
        done = cp(tools, "-", "evil:/in", stdin=data)
        one_line_error(Result(done.returncode, "", done.stderr.decode()), 125, "refusing path")
    finally:
        tools.runner("rm", "-f", "evil")


def test_a_component_swapped_during_the_copy(tools: Tools, stored_test_image: str, sentinel: Path,
                                             tmp_path: Path) -> None:
    """CVE-2018-15664: a process in the container flips /race between a directory and a symlink to the host's
    sentinel as fast as it can while cp writes into it and reads from it; nothing reaches the sentinel."""
    flip = (f"mkdir -p /real && echo inside > /real/secret && while :; do ln -sfn {sentinel} /race.tmp && "
            "mv -T /race.tmp /race; ln -sfn /real /race.tmp && mv -T /race.tmp /race; done")
    made = tools.runner("run", "-d", "--name", "racer", stored_test_image, "sh", "-c", flip)
    assert made.code == 0, made.err
    try:
        (tmp_path / "payload").write_text("PAYLOAD\n")
        deadline = time.monotonic() + 6
        copies = 0
        while copies < 4 or time.monotonic() < deadline:  # each cp is a process start: at least 4 of each way
            cp(tools, str(tmp_path / "payload"), "racer:/race/")
            done = cp(tools, "racer:/race/secret", "-")
            assert b"HOST SECRET" not in done.stdout
            copies += 1
    finally:
        tools.runner("rm", "-f", "racer")


def test_fifos_and_devices_do_not_block_or_leak(tools: Tools, evil: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ok(tools, "evil:/fifo", str(out / "fifo"))  # made as a fifo; never opened
    assert os.path.exists(out / "fifo") and not (out / "fifo").is_file()
    done = cp(tools, "evil:/null", str(out / "null"))  # no device node reaches the host
    assert done.returncode == 0 and not os.path.lexists(out / "null"), done.stderr
    assert b"left out device node" in done.stderr
    done = cp(tools, "evil:/", "-")  # the whole tree; on a running one /proc, /sys, /dev stay empty
    assert done.returncode == 0, done.stderr
    names = {n.removeprefix("./"): m for n, m in members(done.stdout).items()}
    assert "fifo" in names and names["null"].ischr()
    if evil == "running":  # (a stopped one has the -init layer's placeholders there, as Docker's)
        assert not any(n.startswith(("proc/", "sys/", "dev/")) for n in names)
        fails(tools, "evil:/proc/self/environ", str(out / "env"), text="Could not find the file")
        fails(tools, "evil:/dev/null", str(out / "devnull"), text="Could not find the file")


# -- diff -------------------------------------------------------------------------------------------------------


def test_diff_lists_the_changes_as_docker(tools: Tools, stored_test_image: str) -> None:
    edit = ("echo changed > /etc/layer1.txt; rm /etc/layer2.txt; rm -rf /data && mkdir /data && echo fresh > "
            "/data/only.txt; echo hi > /new.txt; mkdir -p /a/b && touch /a/b/c")
    made = tools.runner("run", "--name", "edited", stored_test_image, "sh", "-c", edit)
    assert made.code == 0, made.err
    try:
        listed = tools.runner("diff", "edited")
        assert listed.code == 0, listed.err
        lines = listed.out.splitlines()
        assert lines == ["A /a", "A /a/b", "A /a/b/c", "D /data", "A /data/only.txt", "C /etc",
                         "C /etc/layer1.txt", "D /etc/layer2.txt", "A /new.txt"], lines
        one_line_error(tools.runner("diff", "nosuch"), 125, "no such container: nosuch")
    finally:
        tools.runner("rm", "-f", "edited")
