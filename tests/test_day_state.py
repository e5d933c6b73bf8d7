"""inspect's state (OOMKilled, Paused), ``pause``/``unpause``, ``rename`` and ``top``, as a Docker user types them
(issue 22). Real containers from the session test image in the test's own store; ``no_leaks`` checks that no
cgroup and no process is left, ``tools`` that no mount is. The network fields of inspect are tested in a
throwaway network namespace: tests/test_day_network.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.cgroups import container_cgroup
from tests.marks import needs_root, needs_tools
from tests.tools import Tools, detached, one_line_error, wait_until

pytestmark = [needs_root, needs_tools]

COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"


@pytest.fixture
def img(stored_test_image: str, no_leaks: None, executor: str) -> str:
    return stored_test_image


def fmt(tools: Tools, key: str, template: str) -> str:
    result = tools.runner("inspect", "-f", template, key)
    assert result.code == 0, result.err
    return result.out.strip()


def count(tools: Tools, key: str) -> int:
    return len(tools.runner("logs", key).out.split())


def test_oom_killed_is_true_after_the_oom_killer_and_false_after_a_normal_exit(tools: Tools, img: str) -> None:
    # a shell that holds 50 MB in a variable, in an 8 MB group: the OOM killer ends it, as Docker's -m does
    oom = tools.runner("run", "--name", "hog", "-m", "8m", img, "sh", "-c",
                       "x=$(head -c 50000000 /dev/zero | tr '\\0' a); echo survived")
    try:
        assert oom.code == 137 and "survived" not in oom.out, (oom.code, oom.out, oom.err)
        assert fmt(tools, "hog", "{{.State.OOMKilled}} {{.State.ExitCode}} {{.State.Status}}") == "true 137 exited"
        ok = tools.runner("run", "--name", "fine", "-m", "8m", img, "sh", "-c", "exit 3")
        assert ok.code == 3
        assert fmt(tools, "fine", "{{.State.OOMKilled}} {{.State.ExitCode}}") == "false 3"
        # started again, the record is of the new run: no OOM this time
        assert tools.runner("start", "-a", "hog").code == 137  # the same command: killed again
        assert fmt(tools, "hog", "{{.State.OOMKilled}}") == "true"
    finally:
        tools.runner("rm", "-f", "hog", "fine")


def test_pause_stops_the_counter_until_unpause_and_exec_is_refused_meanwhile(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "ticker", img, "sh", "-c", COUNTER) as cid:
        wait_until(lambda: count(tools, "ticker") > 3, "the counter counts")
        assert tools.runner("pause", "ticker").out == "ticker\n"
        frozen = count(tools, "ticker")
        time.sleep(1)
        assert count(tools, "ticker") == frozen  # not one tick while paused
        assert fmt(tools, "ticker", "{{.State.Status}} {{.State.Paused}} {{.State.Running}}") == "paused true true"
        line = next(x for x in tools.runner("ps").out.splitlines() if x.endswith(" ticker"))
        assert re.search(r"Up .* \(Paused\)", line), line
        assert tools.runner("ps", "-q", "--filter", "status=paused").out.split() == [cid[:12]]
        assert tools.runner("ps", "-q", "--filter", "status=running").out.split() == []
        one_line_error(tools.runner("pause", "ticker"), 125, f"Container {cid} is already paused")
        one_line_error(tools.runner("exec", "ticker", "true"), 125,
                       f"Container {cid} is paused, unpause the container before exec")
        assert tools.runner("unpause", "ticker").out == "ticker\n"
        wait_until(lambda: count(tools, "ticker") > frozen + 3, "the counter counts again")
        assert fmt(tools, "ticker", "{{.State.Status}} {{.State.Paused}}") == "running false"
        one_line_error(tools.runner("unpause", "ticker"), 125, f"Container {cid} is not paused")
        assert tools.runner("exec", "ticker", "true").code == 0


def test_a_paused_container_stops_is_killed_and_removed_as_dockers(tools: Tools, stored_test_image: str,
                                                                     no_leaks: None) -> None:
    img = stored_test_image
    with detached(tools, "--name", "p1", img, "sleep", "1000"), detached(tools, "--name", "p2", img, "sleep", "1000"):
        assert tools.runner("pause", "p1", "p2").code == 0
        stopped = tools.runner("stop", "-t", "1", "p1")  # SIGTERM reaches it once thawed; SIGKILL after 1 s
        assert stopped.code == 0, stopped.err
        assert fmt(tools, "p1", "{{.State.Status}} {{.State.Paused}}") == "exited false"
        one_line_error(tools.runner("pause", "p1"), 125, "is not running")
        assert tools.runner("rm", "-f", "p2").code == 0
        assert tools.runner("ps", "-aq").out.split() == [tools.runner("inspect", "-f", "{{.Id}}", "p1").out[:12]]


def test_rename_renames_and_refuses_a_name_in_use(tools: Tools, stored_test_image: str, no_leaks: None) -> None:
    img = stored_test_image
    with detached(tools, "--name", "old", img, "sleep", "1000") as cid, \
            detached(tools, "--name", "other", img, "sleep", "1000"):
        assert tools.runner("rename", "old", "new").code == 0
        names = tools.runner("ps", "--format", "{{.Names}}").out.split()
        assert sorted(names) == ["new", "other"]
        gone = tools.runner("inspect", "old")
        assert gone.code != 0 and "no such container: old" in gone.err.lower(), gone.err
        assert fmt(tools, "new", "{{.Name}} {{.Id}}") == f"/new {cid}"
        one_line_error(tools.runner("rename", "new", "other"), 125,
                       'Conflict. The container name "/other" is already in use by container')
        one_line_error(tools.runner("rename", "new", "bad/name"), 125, "Invalid container name (bad/name)")
        one_line_error(tools.runner("rename", "new", "new"), 125, "with the same name as its current name")
        assert tools.runner("exec", "new", "true").code == 0  # still itself, by its new name
        assert tools.runner("stop", "-t", "0", "new").code == 0


def test_top_lists_the_containers_processes_and_only_them(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "tops", img, "sh", "-c", "sleep 1001 & sleep 1002 & wait") as cid, \
            detached(tools, "--name", "bystander", img, "sleep", "1003"):
        wait_until(lambda: "sleep 1002" in tools.runner("top", "tops").out, "both sleeps run")
        out = tools.runner("top", "tops").out.splitlines()
        assert out[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], out
        assert out[0].startswith("UID" + " " * 17)  # Docker's CLI: tabwriter, minimum width 20
        pids = sorted(int(line.split()[1]) for line in out[1:])
        pid1 = int(fmt(tools, "tops", "{{.State.Pid}}"))
        assert pids == in_pid_namespace_of(pid1) and pid1 in pids
        if executor_of(tools) == "strata":  # where our executor puts the group
            group = container_cgroup("pids", cid)
            assert pids == sorted(int(p) for p in (group / "cgroup.procs").read_text().split())
        commands = sorted(line.split(None, 7)[7] for line in out[1:])
        assert commands == ["sh -c sleep 1001 & sleep 1002 & wait", "sleep 1001", "sleep 1002"], out
        custom = tools.runner("top", "tops", "-o", "pid,comm").out.splitlines()
        assert custom[0].split() == ["PID", "COMMAND"] and sorted(x.split()[1] for x in custom[1:]) == \
            ["sh", "sleep", "sleep"], custom
        aux = tools.runner("top", "tops", "aux").out.splitlines()  # BSD options, as Docker passes them on
        assert aux[0].split()[:2] == ["USER", "PID"] and len(aux) == 4, aux
        one_line_error(tools.runner("top", "tops", "-o", "x=PID"), 125, 'specifying "x=PID" is not allowed')
    stopped = tools.runner("create", "--name", "idle", img, "true")
    try:
        one_line_error(tools.runner("top", "idle"), 125, "is not running")
    finally:
        tools.runner("rm", "idle")
    assert stopped.code == 0


def in_pid_namespace_of(pid: int) -> list[int]:
    ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and os.stat(p / "ns/pid").st_ino == ns:
                found.append(int(p.name))
        except (FileNotFoundError, PermissionError):  # gone, or a process of the machine's we may not see
            continue
    return sorted(found)


def executor_of(tools: Tools) -> str:
    return str(json.loads(tools.settings.read_text()).get("runtime", "strata"))


def test_inspect_of_a_container_without_network_says_none_and_empty(tools: Tools, stored_test_image: str,
                                                                     no_leaks: None) -> None:
    with detached(tools, "--network", "none", stored_test_image, "sleep", "1000") as cid:
        doc = json.loads(tools.runner("inspect", cid).out)[0]
        assert doc["HostConfig"]["NetworkMode"] == "none" and doc["HostConfig"]["PortBindings"] == {}
        settings = doc["NetworkSettings"]
        assert list(settings["Networks"]) == ["none"] and settings["IPAddress"] == "" and settings["Ports"] == {}
        assert settings["SandboxKey"] == f"/proc/{doc['State']['Pid']}/ns/net"
        assert Path(settings["SandboxKey"]).exists()


@pytest.mark.parametrize("who", ["user"], indirect=True)
def test_pause_without_root_is_refused_in_one_line(tools: Tools, stored_test_image: str) -> None:
    """As a user (no cgroup here): refused, as Docker's rootless mode without cgroup v2 refuses it."""
    from tests.rootless import UserTools

    assert isinstance(tools, UserTools)
    with detached(tools, stored_test_image, "sleep", "1000") as cid:
        one_line_error(tools.runner("pause", cid), 125, "without root it has no cgroup to freeze")
        top = tools.runner("top", cid)  # top finds its processes by its pid namespace
        assert top.code == 0 and len(top.out.splitlines()) == 2 and "sleep 1000" in top.out, (top.out, top.err)
