"""A pid is no identity: a container's state names its PID 1 by pid, start time and boot, and the runner signals or
joins only the process that matches all three, through a pidfd it verified.

Pid reuse is simulated safely: a sentinel process the test owns takes the place of a stopped container's PID 1 in
its state.json, and every command that could signal or join it must leave it alone. Only processes the test
started are signalled, by their pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.container.record import find
from runner.isolation import cgroups
from shared.errors import StrataError
from shared.proc import ProcStat, boot_id, parse_stat, read_stat
from shared.store.layout import Store
from tests.cgroups import container_cgroup
from tests.marks import as_root_and_user, needs_root, needs_tools
from tests.test_lifecycle import inspect, is_up, logs, ps_row
from tests.tools import Tools, detached, one_line_error, wait_until


def recorded_state(tools: Tools, name: str) -> dict[str, Any]:
    """state.json as the runner wrote it (with PID 1's identity: its start time and boot), which inspect's
    Docker-shaped State does not show."""
    cid = inspect(tools, name)["Id"]
    return dict(json.loads((tools.root / "containers" / cid / "state.json").read_text()))


CRAFTED_COMM = ") (Z 9) 9 ) ("  # what a naive parser takes for the end of comm, a state and numbers (13 of 15 bytes)


def ticks_since_boot() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")


# -- reading /proc/PID/stat ------------------------------------------------------------------------------------------


def test_start_time_is_read_past_a_comm_with_parentheses() -> None:
    before = ticks_since_boot()
    child = subprocess.Popen([sys.executable, "-c", f"open('/proc/self/comm', 'w').write({CRAFTED_COMM!r}); "
                              "print('ready', flush=True); import time; time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        after = ticks_since_boot()
        wait_until(lambda: getattr(read_stat(child.pid), "state", "") == "S", "the child asleep")  # S, from now on
        assert Path(f"/proc/{child.pid}/comm").read_text() == CRAFTED_COMM + "\n"
        raw = Path(f"/proc/{child.pid}/stat").read_bytes()
        prefix = f"{child.pid} ({CRAFTED_COMM}) ".encode()  # knowing comm, the rest parses without guessing
        assert raw.startswith(prefix)
        fields = raw[len(prefix):].split()
        assert raw.split()[2] != fields[0]  # counting fields from the start would be fooled
        stat = read_stat(child.pid)
        assert stat == ProcStat(fields[0].decode(), int(fields[19])) == parse_stat(raw)
        assert stat.state == "S"  # the state field, not a piece of comm
        assert before - 1 <= stat.start_time <= after + 1  # ticks after boot, taken when it was forked
    finally:
        child.kill()  # its pid only
        child.wait()


def test_a_zombie_keeps_its_start_time_and_reads_as_one() -> None:
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        alive = read_stat(child.pid)
        assert alive is not None and alive.state != "Z"
        wait_until(lambda: getattr(read_stat(child.pid), "state", "") == "Z", "the child a zombie")
        assert read_stat(child.pid) == ProcStat("Z", alive.start_time)  # the pid is still its own, until reaped
    finally:
        child.wait()
    assert read_stat(0) is None
    with pytest.raises(ValueError, match="malformed"):
        parse_stat(b"12 no-parentheses S 1")


# -- a reused pid is never signalled or joined -----------------------------------------------------------------------


@pytest.fixture
def img(stored_test_image: str, no_leaks: None, executor: str) -> str:
    """The session test image, pulled; the test runs once per executor (ours, runc, crun)."""
    return stored_test_image


@pytest.fixture
def sentinel(tools: Tools) -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process the test owns, in a session of its own, that a forged state.json will name: the
    store's owner's, so that a runner that trusted the forgery could signal it (a user's runner may signal only
    the user's own processes)."""
    proc = subprocess.Popen(tools.as_owner("sleep", "120"), start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()  # its pid only
        proc.wait()


def assert_untouched(proc: subprocess.Popen[bytes], start_time: int) -> None:
    """Still there, the same process (start time), not stopped and with no signal pending."""
    assert proc.poll() is None
    stat = read_stat(proc.pid)
    assert stat is not None and stat.start_time == start_time and stat.state in ("S", "R"), stat
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
    assert int(status["SigPnd"], 16) == 0 and int(status["ShdPnd"], 16) == 0, status


Forgery = Callable[[dict[str, Any], int, int], dict[str, Any]]  # (recorded state, sentinel pid, its start) -> state

FORGERIES: dict[str, Forgery] = {
    # the pid reused: the record's own start time, another process's pid
    "reused pid": lambda st, pid, start: {**st, "pid": pid},
    # a record written before start times were: nothing to verify the pid by
    "no start time": lambda st, pid, start: {k: v for k, v in {**st, "pid": pid}.items()
                                             if k not in ("pid_start_time", "boot_id")},
    # pid and start time right, but counted in another boot
    "other boot": lambda st, pid, start: {**st, "pid": pid, "pid_start_time": start, "boot_id": str(uuid.uuid4())},
}


@as_root_and_user
@pytest.mark.parametrize("forgery", FORGERIES)
@needs_root
@needs_tools
def test_a_reused_pid_is_left_alone(tools: Tools, img: str, sentinel: subprocess.Popen[bytes],
                                    forgery: str) -> None:
    sentinel_start = read_stat(sentinel.pid)
    assert sentinel_start is not None
    with detached(tools, "--name", "victim", img, "sleep", "60") as cid:
        state_file = tools.root / "containers" / cid / "state.json"
        assert tools.runner("stop", "-t", "1", "victim").code == 0
        exited = json.loads(state_file.read_text())
        assert exited["status"] == "exited" and exited["pid_start_time"] > 0 and exited["boot_id"] == boot_id()
        running = {**exited, "status": "running", "exit_code": None, "finished": None}

        def write(state: dict[str, Any]) -> None:
            state_file.write_text(json.dumps(state))

        try:
            # control: the sentinel's true identity would be trusted (read only: nothing is sent to it here)
            write({**running, "pid": sentinel.pid, "pid_start_time": sentinel_start.start_time})
            assert is_up(tools, "victim")
            write(FORGERIES[forgery](running, sentinel.pid, sentinel_start.start_time))
            assert "Exited (137)" in ps_row(tools, "victim")
            assert tools.runner("ps", "-q").out == ""
            assert (inspect(tools, "victim")["State"]["Status"], inspect(tools, "victim")["State"]["Error"]) == \
                ("exited", "runner gone")
            for args in (("kill", "victim"), ("kill", "-s", "STOP", "victim"), ("kill", "-s", "USR1", "victim"),
                         ("exec", "victim", "true")):
                one_line_error(tools.runner(*args), 125, "container victim is not running")
                assert_untouched(sentinel, sentinel_start.start_time)
            stopped = tools.runner("stop", "-t", "1", "victim")  # already exited: nothing to do, as Docker's
            assert (stopped.code, stopped.out, stopped.err) == (0, "victim\n", "")
            assert_untouched(sentinel, sentinel_start.start_time)
            if tools.rootless:  # no cgroup: what outlived PID 1 would have gone with its pid namespace
                removed = tools.runner("rm", "-f", "victim")
                assert (removed.code, removed.out) == (0, "victim\n"), removed.err
            else:
                rm_f_kills_what_is_left_in_its_cgroup(tools, cid)
            assert not (tools.root / "containers" / cid).exists()
            assert ps_row(tools, "victim") == ""
            assert_untouched(sentinel, sentinel_start.start_time)
        finally:
            if state_file.exists():  # detached's rm -f must not find the sentinel named either
                write(exited)


def rm_f_kills_what_is_left_in_its_cgroup(tools: Tools, cid: str) -> None:
    """What is left in the container's own cgroup is the container's, whatever its pid: rm -f kills that."""
    group = cgroups.for_container(cid)
    leftover: subprocess.Popen[bytes] | None = None
    try:
        group.create(cgroups.Limits())
        leftover = subprocess.Popen(["sleep", "120"], start_new_session=True)
        group.add(leftover.pid)
        removed = tools.runner("rm", "-f", "victim")
        assert (removed.code, removed.out) == (0, "victim\n"), removed.err
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert not group.exists() and not container_cgroup("pids", cid).exists()
    finally:
        if leftover is not None and leftover.poll() is None:
            leftover.kill()  # its pid only
            leftover.wait()
        if group.exists():
            group.remove()


@needs_root
@needs_tools
def test_open_process_pins_the_verified_pid_1(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "pinned", img, "sleep", "60"):
        state = recorded_state(tools, "pinned")
        assert state["pid_start_time"] == getattr(read_stat(state["pid"]), "start_time", None)
        assert state["boot_id"] == boot_id()
        container = find(Store(tools.root), "pinned")
        fd = container.open_process()
        try:
            assert not os.get_inheritable(fd)
            fdinfo = Path(f"/proc/self/fdinfo/{fd}").read_text()
            assert f"\nPid:\t{state['pid']}\n" in fdinfo  # a pidfd, for PID 1
        finally:
            os.close(fd)
        assert tools.runner("stop", "-t", "1", "pinned").code == 0
        with pytest.raises(StrataError, match=r"^container pinned is not running$"):
            container.open_process()


# -- the normal path -----------------------------------------------------------------------------------------------


@needs_root
@needs_tools
def test_signals_stop_and_rm_reach_a_verified_container(tools: Tools, img: str, tmp_path: Path) -> None:
    script = "trap 'echo usr1 >> /sig/marker' USR1; trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done"
    with detached(tools, "--name", "live", "-v", f"{tmp_path}:/sig", img, "sh", "-c", script):
        wait_until(lambda: logs(tools, "live") == "ready\n", "the traps set")
        assert tools.runner("kill", "-s", "USR1", "live").out == "live\n"
        wait_until(lambda: (tmp_path / "marker").exists(), "the USR1 trap run")
        assert (tmp_path / "marker").read_text() == "usr1\n"
        assert is_up(tools, "live")
        stopped = tools.runner("stop", "live")
        assert (stopped.code, stopped.out) == (0, "live\n"), stopped.err
        state = inspect(tools, "live")["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 42)
    with detached(tools, "--name", "doomed", img, "sleep", "60") as cid:
        state = recorded_state(tools, "doomed")
        assert state["status"] == "running"
        removed = tools.runner("rm", "-f", "doomed")
        assert (removed.code, removed.out) == (0, "doomed\n"), removed.err
        assert getattr(read_stat(state["pid"]), "start_time", None) != state["pid_start_time"]  # PID 1 gone
        assert not (tools.root / "containers" / cid).exists() and not container_cgroup("pids", cid).exists()
