"""``runner exec`` against a container that may ptrace (``--cap-add SYS_PTRACE``): the process of ours it can see
in its pid namespace must hold nothing the container does not already hold (issue 18, item 3).

The container's PID 1 is tests/probe.c's ``ptrace-exec``: it seizes every process that appears, reads its
capabilities and seccomp mode, and injects syscalls into it that would reach a directory of the test's on the host
(open_by_handle_at from the container's /etc/hosts bind, which lives on the host's file system) and create a file
there. The verdict is taken here: that file does not exist, and every process it caught held the container's own
capabilities under seccomp.

Its ``errpipe`` verb attacks what the runner reads back (the third review, issue 18): it steals every pipe our child
holds before its exec and writes, floods and holds them; ``runner exec`` must still return, bounded, with no text
of the container's as its own message.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from runner import linux
from runner.executor import stage
from runner.executor.channel import Channel, Message, SetupFailed
from tests.marks import as_root_and_user
from tests.test_isolation import img, with_probe  # noqa: F401 (fixtures)
from tests.tools import ROOT, Tools, detached, one_line_error, popen_runner, runner_command, wait_until

EXECS = 40  # bounded: the probe stops after three processes of ours, the loop after this many execs
MAX_HANDLE_SZ = 128
RSS_BOUND_KB = 256 << 10  # the runner's exec client never needs this much; the errpipe probe writes more


def host_handle(path: Path) -> str:
    """name_to_handle_at(2) of ``path``, as the hex bytes of a ``struct file_handle``."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(struct.pack("=Ii", MAX_HANDLE_SZ, 0) + bytes(MAX_HANDLE_SZ))
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(-100, os.fsencode(path), buf, ctypes.byref(mount_id), 0) != 0:  # AT_FDCWD
        raise OSError(ctypes.get_errno(), f"name_to_handle_at {path}")
    size = struct.unpack_from("=I", buf.raw)[0]
    return buf.raw[:8 + size].hex()


def attack(tools: Tools, cid: str, *exec_opts: str) -> str:
    """Exec into the container (bounded) until its probe has caught three processes of ours; its report."""
    wait_until(lambda: "own " in tools.runner("logs", cid).out, "the probe to start")
    for _ in range(EXECS):
        tools._run("runner", ("exec", *exec_opts, cid, "/bin/true"), timeout=60)  # its outcome is not the verdict
        if "victims " in tools.runner("logs", cid).out:
            break
    else:
        tools._run("runner", ("exec", cid, "touch", "/tmp/probe-stop"), timeout=60)
    try:
        wait_until(lambda: "victims " in tools.runner("logs", cid).out, "the probe to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{tools.runner('logs', cid).out}") from None
    return tools.runner("logs", cid).out


def victims(report: str) -> list[dict[str, str]]:
    """The probe's "victim PID comm=.. CapEff=.. ..." lines, as dicts."""
    return [dict(kv.split("=", 1) for kv in line.split()[2:]) for line in report.splitlines()
            if line.startswith("victim ")]


@as_root_and_user
def test_exec_child_gives_a_ptracing_container_nothing(tools: Tools, img: str, probe: Path,  # noqa: F811
                                                       tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    assert os.stat(sentinel).st_dev == os.stat(tools.root).st_dev, "the sentinel must share the store's file system"
    handle = host_handle(sentinel)
    with detached(tools, "--cap-add", "SYS_PTRACE", *with_probe(probe), img, "/probe", "ptrace-exec", "120",
                  handle) as cid:
        report = attack(tools, cid)
    assert not (sentinel / "ptrace-created").exists(), f"the container created a file on the host\n{report}"
    own = dict(kv.split("=", 1) for kv in report.split("own ", 1)[1].split("\n", 1)[0].split())
    caught = victims(report)
    assert any(v["comm"] == "strata-exec" for v in caught), f"no process of ours caught before its exec\n{report}"
    for v in caught:
        assert v.get("handle") != "ok", f"open_by_handle_at reached the host\n{report}"
        assert v["CapEff"] == own["CapEff"], f"a process of ours held more than the container\n{report}"
        assert v["Seccomp"] == "2", f"a process of ours ran without the container's filter\n{report}"


@as_root_and_user
@pytest.mark.parametrize("opts", [("--security-opt", "no-new-privileges"), ("-u", "strata")], ids=["nnp", "user"])
def test_exec_child_is_the_containers_from_its_first_moment(tools: Tools, img: str, probe: Path,  # noqa: F811
                                                            tmp_path: Path, opts: tuple[str, ...]) -> None:
    """The same, with no_new_privs asked for and with another user: the process it catches has NoNewPrivs set
    (or the user's empty capability sets), as the command itself will."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    run_opts = opts if opts[0] != "-u" else ()
    exec_opts = opts if opts[0] == "-u" else ()
    with detached(tools, "--cap-add", "SYS_PTRACE", *run_opts, *with_probe(probe), img, "/probe", "ptrace-exec",
                  "120", host_handle(sentinel)) as cid:
        report = attack(tools, cid, *exec_opts)
    assert not (sentinel / "ptrace-created").exists(), report
    ours = [v for v in victims(report) if v["comm"] == "strata-exec"]
    assert ours, f"no process of ours caught before its exec\n{report}"
    for v in ours:
        assert v["Seccomp"] == "2", report
        if exec_opts:
            assert v["CapEff"] == "0000000000000000", report
        else:
            assert v["NoNewPrivs"] == "1", report


@as_root_and_user
@pytest.mark.parametrize(("opts", "want"), [
    (("--privileged",), {"Seccomp": "0", "NoNewPrivs": "0"}),
    (("--security-opt", "no-new-privileges"), {"Seccomp": "2", "NoNewPrivs": "1"}),
    (("--security-opt", "seccomp=unconfined"), {"Seccomp": "0", "NoNewPrivs": "0"}),
], ids=["privileged", "nnp", "unconfined"])
def test_exec_keeps_the_containers_security_options(tools: Tools, img: str, opts: tuple[str, ...],  # noqa: F811
                                                    want: dict[str, str]) -> None:
    """What the stage now sets before its fork is what the container's PID 1 has: same capabilities, filter mode
    and no_new_privs, under every executor."""
    with detached(tools, *opts, img, "sleep", "1000") as cid:
        pid1 = tools.runner("exec", cid, "cat", "/proc/1/status")
        mine = tools.runner("exec", cid, "cat", "/proc/self/status")
    assert pid1.code == mine.code == 0, pid1.err + mine.err

    def status(out: str) -> dict[str, str]:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}

    assert {k: status(mine.out)[k] for k in want} == want, mine.out
    for key in ("CapEff", "CapPrm", "CapBnd", "Seccomp", "NoNewPrivs"):
        assert status(mine.out)[key] == status(pid1.out)[key], (key, pid1.out, mine.out)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@as_root_and_user
@pytest.mark.parametrize(("mib", "hold"), [("512", "300"), ("0", "300"), ("0", "10")], ids=["flood", "hold", "forge"])
def test_exec_error_pipe_cannot_be_held_or_flooded_by_a_ptracing_container(
        tools: Tools, img: str, probe: Path, mib: str, hold: str) -> None:  # noqa: F811
    """The probe (PID 1, CAP_SYS_PTRACE) steals every pipe our child holds before its exec, writes a forged
    two-line message and MIB MiB to them, and holds them (HOLD seconds: "forge" lets go soon, so that a runner that
    waits for end of file prints it). Verdict on the host: the exec client returns (bounded by 90 s of polling, not
    a timing check), its memory stays bounded, and it prints at most one line, none of it the container's."""
    with detached(tools, "--cap-add", "SYS_PTRACE", *with_probe(probe), img, "/probe", "errpipe", hold,
                  mib) as cid:
        client = popen_runner(tools, "exec", cid, "/bin/true")
        peak, deadline = 0, time.monotonic() + (30 if hold == "300" and mib == "0" else 90)
        try:
            while client.poll() is None and time.monotonic() < deadline and peak < RSS_BOUND_KB:
                peak = max(peak, _rss_kb(client.pid))
                time.sleep(0.2)
            hung = client.poll() is None
        finally:
            if client.poll() is None:
                client.kill()  # ours, by pid
            _, err = client.communicate()
        report = tools.runner("logs", cid).out
    assert "stole 0" not in report, f"the probe caught nothing of ours: the attack did not run\n{report}"
    assert peak < RSS_BOUND_KB, f"runner exec grew to {peak} KiB reading the container's writes\n{report}"
    assert not hung, f"runner exec never returned: the container holds its error pipe\n{report}"
    assert "FORGED" not in err and err.count("\n") <= 1, f"the container wrote runner exec's message\n{err}"


def test_exec_with_a_large_environment_does_not_hang(tools: Tools, img: str) -> None:  # noqa: F811
    """The stage's job (JSON: command, env, ...) must reach it whatever its size: a job over a pipe's 64 KiB
    buffer, written before the stage starts, blocked for ever. 100 KB of -e is well under the kernel's ARG_MAX:
    exec runs it, or fails on one line; it must not hang."""
    with detached(tools, img, "sleep", "1000") as cid:
        try:
            result = tools._run("runner", ("exec", "-e", "BIG=" + "x" * 100_000, cid, "sh", "-c",
                                           'echo ${#BIG}'), timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("runner exec hung writing its job to the stage") from None
    assert result.out.strip() == "100000" or result.err.count("\n") == 1, (result.out, result.err[-500:])


def test_exec_finds_the_command_as_execvpe_does(tools: Tools, stored_test_image: str) -> None:
    """The stage searches PATH itself (stage.c), in the command's environment, with os.execvpe's rules: each
    entry in turn, an empty one the working directory, a file that is there but not executable passed over, and
    the first error that is not "not found" the one reported."""
    with detached(tools, stored_test_image, "sleep", "1000") as cid:
        made = tools.runner("exec", cid, "sh", "-c", "mkdir -p /tmp/a /tmp/b && printf '#!/bin/sh\\necho a\\n' >"
                            " /tmp/a/x && printf '#!/bin/sh\\necho b\\n' > /tmp/b/x && chmod +x /tmp/b/x")
        assert made.code == 0, made.err
        for path in ("/tmp/a:/tmp/b", "/nowhere:/tmp/b/"):
            ran = tools.runner("exec", "-e", f"PATH={path}", cid, "x")
            assert (ran.code, ran.out) == (0, "b\n"), (path, ran.err)
        empty = tools.runner("exec", "-w", "/tmp/b", "-e", "PATH=", cid, "x")
        assert (empty.code, empty.out) == (0, "b\n"), empty.err
        for path, code, said in (("/tmp/a:/nowhere", 126, "exec: 'x': Permission denied"),
                                 ("/nowhere", 127, "exec: 'x': executable file not found")):
            one_line_error(tools.runner("exec", "-e", f"PATH={path}", cid, "x"), code, said)
        one_line_error(tools.runner("exec", cid, ""), 125, "the command failed before its exec")


def test_a_step_of_the_stage_that_fails_is_said_as_before(tools: Tools, stored_test_image: str) -> None:
    """The stage reports a failed step as numbers; the runner says it in the words the interpreter stage's
    exceptions had, one line, 125: a working directory that is a file, or lies under one; a user that does not
    exist (resolved by the runner now, from the container's /etc/passwd)."""
    with detached(tools, stored_test_image, "sleep", "1000") as cid:
        for args, said in ((("-w", "/etc/passwd"), "cannot exec in the container: File exists: /etc/passwd"),
                           (("-w", "/etc/passwd/x/y"), "cannot exec in the container: Not a directory: /etc/passwd/x"),
                           (("-u", "nosuch"), "cannot exec in the container: unable to find user nosuch: no matching "
                                              "entries in passwd file")):
            one_line_error(tools.runner("exec", *args, cid, "true"), 125, said)
        assert tools.runner("exec", "-w", "/made/on/the/way", cid, "pwd").out == "/made/on/the/way\n"


def _stage(job: bytes, runner_pidfd: int, listen: bool = True) -> tuple[int, Message | None]:
    """stage.c run as the runner runs it (a sealed copy, its fds, an empty environment) on JOB, which never gets
    as far as setns here; its exit code and what it said on the channel (with ``listen``; else the channel is
    closed at once, as a runner that gives up before its Go closes it)."""
    ours, theirs = Channel.pair()
    record_r, record_w = os.pipe2(os.O_CLOEXEC)
    exe = linux.sealed_copy(str(stage.HELPER), stage.NAME)
    job_fd = os.memfd_create("strata-exec-job")
    fds = {"runner": runner_pidfd, "pidfd": runner_pidfd, "channel": theirs.fileno(), "exe": exe, "record": record_w}
    try:
        os.write(job_fd, stage.fds(fds) + job)
        proc = subprocess.Popen([stage.NAME, str(job_fd)], executable=f"/proc/self/fd/{exe}", env={},
                                pass_fds=[*fds.values(), job_fd])
    finally:
        for fd in (exe, job_fd, record_w, record_r):
            os.close(fd)
        theirs.close()
    try:
        said = ours.recv() if listen else None
        ours.close()
        return proc.wait(timeout=30), said
    finally:
        ours.close()
        if proc.poll() is None:
            proc.kill()  # ours, by pid
            proc.wait()


VALID_JOB = stage.job(0, "/", [], 0, 40, False, None, (0, 0, ()), {}, ["/bin/true"], False)


def test_the_stage_refuses_a_job_it_cannot_read() -> None:
    """A field it does not know, one cut short, a job without a command: it says so, as numbers, and exits 125
    before anything else."""
    me = os.pidfd_open(os.getpid())
    try:
        for job in (VALID_JOB + struct.pack("=II", 99, 0), VALID_JOB + struct.pack("=II", 7, 100) + b"/",
                    stage.job(0, "/", [], 0, 40, False, None, (0, 0, ()), {}, [], False)):
            assert _stage(job, me) == (125, SetupFailed(3, 0, 0))
    finally:
        os.close(me)


def test_the_stage_goes_nowhere_without_its_runner() -> None:
    """Its runner already gone (a pidfd of an exited process): it dies at once, as the parent-death signal would
    have it; its runner alive but closing the channel before Go (the cgroup could not be joined): it exits,
    saying nothing."""
    runner = subprocess.Popen(["sleep", "1000"])
    gone = os.pidfd_open(runner.pid)
    runner.kill()  # ours, by pid
    runner.wait()
    me = os.pidfd_open(os.getpid())
    try:
        assert _stage(VALID_JOB, gone) == (137, None)
        assert _stage(VALID_JOB, me, listen=False) == (125, None)
    finally:
        os.close(gone)
        os.close(me)


def _stage_of(runner_pid: int) -> int | None:
    """The exec stage the runner RUNNER_PID started (its child named strata-exec), if it runs yet."""
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "comm").read_text() == "strata-exec\n" and \
                    int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == runner_pid:
                return int(p.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


def test_the_stage_holds_only_its_own_fds(tools: Tools, stored_test_image: str, tmp_path: Path) -> None:
    """A runner started with stdin closed, and holding an fd of its caller's that is not close-on-exec (a host
    file): the command still gets its own stdio, and the stage, while the command runs, holds none of the
    caller's fds (it closes every fd its job does not name, first thing)."""
    sentinel = tmp_path / "host-file"
    sentinel.write_text("the caller's\n")
    with detached(tools, stored_test_image, "sleep", "1000") as cid:
        closed = subprocess.run(["sh", "-c", 'exec 0<&-; exec "$@"', "sh",
                                 *runner_command(tools, "exec", cid, "sh", "-c", "echo in; ls /proc/self/fd")],
                                capture_output=True, text=True, cwd=ROOT, env=tools.environ(), timeout=60)
        assert (closed.returncode, closed.stdout.split()) == (0, ["in", "0", "1", "2", "3"]), closed.stderr
        fd = os.open(sentinel, os.O_RDONLY)  # inheritable: passed on to the runner
        try:
            runner = subprocess.Popen(runner_command(tools, "exec", cid, "sleep", "30"), pass_fds=[fd],
                                      stdin=subprocess.DEVNULL, cwd=ROOT, env=tools.environ())
        finally:
            os.close(fd)
        try:
            wait_until(lambda: _stage_of(runner.pid) is not None and "sleep" in tools.runner(
                "exec", cid, "ps", "-o", "args").out.split(), "the exec'd sleep to run")
            stage_pid = _stage_of(runner.pid)
            held = [os.readlink(f"/proc/{stage_pid}/fd/{n}") for n in os.listdir(f"/proc/{stage_pid}/fd")]
            assert str(sentinel) not in held and len(held) == 3, held  # stdio: no channel, no pidfd, no file
        finally:
            runner.kill()  # ours, by pid: the stage and the command die with it
            runner.wait()
