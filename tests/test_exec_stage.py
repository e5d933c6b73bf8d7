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

from tests.marks import as_root_and_user
from tests.test_isolation import img, with_probe  # noqa: F401 (fixtures)
from tests.tools import Tools, detached, popen_runner, wait_until

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
