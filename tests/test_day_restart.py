"""Restart policies, ``runner restart``, ``runner wait`` and what a reboot leaves, as a Docker user types them
(issue 22, item 2 and ``wait``): ``--restart on-failure:N|always|unless-stopped`` restarts a container when it
exits, with Docker's back-off, until a user stops it; ``restart`` is stop + start; ``wait`` prints exit codes;
after a reboot a record of a run reads as exited and ``start --all-restart`` brings the policy's containers back.

Real containers from the session test image in the test's own store, each removed (``rm -f``) however the test
ends; ``no_leaks`` checks that no monitor and no cgroup is left.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from datetime import datetime
from typing import Any

import pytest

from tests.marks import as_root_and_user, needs_root, needs_tools
from tests.terminal import Terminal
from tests.tools import Tools, one_line_error, popen_runner, runner_command, wait_until

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def img(stored_test_image: str, no_leaks: None) -> str:
    return stored_test_image


@pytest.fixture
def any_img(stored_test_image: str, no_leaks: None, executor: str) -> str:
    """The image, for a test that runs under each executor (ours, runc, crun) and as a user."""
    return stored_test_image


def inspect(tools: Tools, key: str) -> dict[str, Any]:
    result = tools.runner("inspect", key)
    assert result.code == 0, result.err
    return dict(json.loads(result.out)[0])


def status(tools: Tools, key: str) -> str:
    return str(inspect(tools, key)["State"]["Status"])


def ps_status(tools: Tools, name: str) -> str:
    """The STATUS column of NAME's ``ps -a`` row."""
    result = tools.runner("ps", "-a", "--format", "{{.Names}}|{{.Status}}")
    return next((line.split("|", 1)[1] for line in result.out.splitlines() if line.startswith(f"{name}|")), "")


def run_d(tools: Tools, names: list[str], name: str, *args: str) -> None:
    names.append(name)
    result = tools.runner("run", "-d", "--name", name, *args)
    assert result.code == 0, result.err


@as_root_and_user
def test_on_failure_2_restarts_exactly_twice_and_wait_gives_its_code(tools: Tools, any_img: str,
                                                                     names: list[str]) -> None:
    run_d(tools, names, "flaky", "--restart", "on-failure:2", any_img, "sh", "-c", "echo run; exit 3")
    wait_until(lambda: status(tools, "flaky") == "exited" and inspect(tools, "flaky")["RestartCount"] == 2,
               "three runs, two restarts")
    time.sleep(0.5)  # no third restart comes
    doc = inspect(tools, "flaky")
    assert (doc["RestartCount"], doc["State"]["ExitCode"], doc["State"]["Restarting"]) == (2, 3, False)
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert tools.runner("logs", "flaky").out == "run\nrun\nrun\n"
    waited = tools.runner("wait", "flaky")
    assert (waited.code, waited.out) == (0, "3\n")
    assert ps_status(tools, "flaky").startswith("Exited (3) ")


def test_on_failure_does_not_restart_a_success(tools: Tools, img: str, names: list[str]) -> None:
    run_d(tools, names, "fine", "--restart", "on-failure", img, "true")
    assert tools.runner("wait", "fine").out == "0\n"
    time.sleep(0.5)
    assert (status(tools, "fine"), inspect(tools, "fine")["RestartCount"]) == ("exited", 0)


def test_always_restarts_until_stopped_and_the_stop_is_final(tools: Tools, img: str, names: list[str]) -> None:
    run_d(tools, names, "forever", "--restart", "always", img, "sh", "-c", "echo up; exit 0")
    # a clean exit is restarted too; between runs it is restarting, as Docker's ps says it
    wait_until(lambda: re.fullmatch(r"Restarting \(0\) .* ago", ps_status(tools, "forever")) is not None,
               "ps shows it restarting")
    assert "forever" in tools.runner("ps", "--format", "{{.Names}}").out.split()  # listed without -a, as Docker's
    doc = inspect(tools, "forever")
    assert doc["State"]["Running"] and doc["State"]["Restarting"] and doc["State"]["Pid"] == 0
    wait_until(lambda: inspect(tools, "forever")["RestartCount"] >= 3, "three restarts")
    stopped = tools.runner("stop", "-t", "1", "forever")
    assert (stopped.code, stopped.out) == (0, "forever\n"), stopped.err
    assert status(tools, "forever") == "exited"
    count = inspect(tools, "forever")["RestartCount"]
    time.sleep(1.5)  # longer than the back-off it had reached
    assert (status(tools, "forever"), inspect(tools, "forever")["RestartCount"]) == ("exited", count)
    # a start by the user applies the policy again, counted from 0 (Docker's)
    assert tools.runner("start", "forever").out == "forever\n"
    wait_until(lambda: inspect(tools, "forever")["RestartCount"] >= 1, "restarted after start")
    assert tools.runner("kill", "forever").code == 0  # running or restarting: either way it stays down
    wait_until(lambda: status(tools, "forever") == "exited", "kill ends it")
    count = inspect(tools, "forever")["RestartCount"]
    time.sleep(1.0)
    assert (status(tools, "forever"), inspect(tools, "forever")["RestartCount"]) == ("exited", count)


def test_a_long_running_always_container_is_restarted_when_its_command_dies(tools: Tools, img: str,
                                                                            names: list[str]) -> None:
    run_d(tools, names, "served", "--restart", "always", img, "sleep", "100")
    pid = inspect(tools, "served")["State"]["Pid"]
    with open(f"/proc/{pid}/stat") as f:  # our own sleep, by its pid: the command dies, no user stopped it
        assert "(sleep)" in f.read()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: inspect(tools, "served")["State"]["Pid"] not in (0, pid) and status(tools, "served") ==
               "running", "it runs again")
    assert inspect(tools, "served")["RestartCount"] == 1


def test_the_back_off_doubles(tools: Tools, img: str, names: list[str]) -> None:
    run_d(tools, names, "backoff", "--restart", "always", img, "echo", "run")
    wait_until(lambda: len(tools.runner("logs", "backoff").out.split()) >= 6, "six runs", timeout=30)
    tools.runner("stop", "backoff")
    stamps = [datetime.fromisoformat(line.split()[0][:26]).timestamp()
              for line in tools.runner("logs", "-t", "backoff").out.splitlines()]
    gaps = [b - a for a, b in itertools.pairwise(stamps)][:5]
    # 0.1, 0.2, 0.4, 0.8, 1.6 s of back-off (plus each start's own time): each wait longer than the last
    assert len(gaps) == 5 and all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[0] >= 0.1 and 1.6 <= gaps[4] < 10, gaps


def test_unless_stopped_is_restarted_until_a_user_stops_it(tools: Tools, img: str, names: list[str]) -> None:
    run_d(tools, names, "steady", "--restart", "unless-stopped", img, "sh", "-c", "sleep 0.2; exit 1")
    wait_until(lambda: inspect(tools, "steady")["RestartCount"] >= 2, "two restarts")
    assert tools.runner("stop", "steady").code == 0
    count = inspect(tools, "steady")["RestartCount"]
    time.sleep(1.0)
    assert (status(tools, "steady"), inspect(tools, "steady")["RestartCount"]) == ("exited", count)


def test_restart_with_rm_is_refused_as_docker_refuses_it(tools: Tools, img: str) -> None:
    one_line_error(tools.runner("run", "--rm", "--restart", "always", img, "true"), 125,
                   "Conflicting options: --restart and --rm")
    one_line_error(tools.runner("create", "--restart", "sometimes", img, "true"), 125,
                   "invalid restart policy: unknown policy 'sometimes'")
    one_line_error(tools.runner("create", "--restart", "always:3", img, "true"), 125,
                   "maximum retry count can only be used with 'on-failure'")
    one_line_error(tools.runner("create", "--restart", "on-failure:x", img, "true"), 125,
                   "maximum retry count must be an integer")
    assert tools.runner("ps", "-a", "-q").out == ""  # nothing was made


def test_inspect_shows_the_policy_and_the_count(tools: Tools, img: str, names: list[str]) -> None:
    names.append("policy")
    assert tools.runner("create", "--name", "policy", "--restart", "on-failure:3", img, "true").code == 0
    doc = inspect(tools, "policy")
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert (doc["RestartCount"], doc["State"]["Restarting"]) == (0, False)
    shown = tools.runner("inspect", "-f", "{{.HostConfig.RestartPolicy.Name}} {{.RestartCount}}", "policy")
    assert shown.out == "on-failure 0\n"
    names.append("plain")
    assert tools.runner("create", "--name", "plain", img, "true").code == 0
    assert inspect(tools, "plain")["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}


def test_a_foreground_run_returns_at_the_first_exit_and_restarts_in_the_background(tools: Tools, img: str,
                                                                                  names: list[str]) -> None:
    names.append("fg")
    result = tools.runner("run", "--name", "fg", "--restart", "on-failure:1", img, "sh", "-c", "echo run; exit 4")
    assert (result.code, result.out) == (4, "run\n")  # the first run's, as Docker's client
    wait_until(lambda: inspect(tools, "fg")["RestartCount"] == 1 and status(tools, "fg") == "exited",
               "the background restart")
    assert tools.runner("logs", "fg").out == "run\nrun\n"


def test_rm_force_removes_a_restarting_container(tools: Tools, img: str, names: list[str]) -> None:
    run_d(tools, names, "doomed", "--restart", "always", img, "sh", "-c", "exit 1")
    wait_until(lambda: status(tools, "doomed") == "restarting", "restarting")
    one_line_error(tools.runner("rm", "doomed"), 125, "is restarting; stop it or use --force")
    assert tools.runner("rm", "-f", "doomed").code == 0
    assert tools.runner("ps", "-a", "-q").out == ""


def test_restart_stops_and_starts_each_container(tools: Tools, img: str, names: list[str]) -> None:
    run_d(tools, names, "svc", img, "sh", "-c", "echo started; sleep 100")
    run_d(tools, names, "done", img, "sh", "-c", "echo started")
    wait_until(lambda: status(tools, "done") == "exited", "done exits")
    before = inspect(tools, "svc")["State"]["StartedAt"]
    result = tools.runner("restart", "-t", "1", "svc", "done")
    assert (result.code, result.out) == (0, "svc\ndone\n"), result.err
    assert status(tools, "svc") == "running" and inspect(tools, "svc")["State"]["StartedAt"] != before
    wait_until(lambda: tools.runner("logs", "done").out == "started\nstarted\n", "done ran again")
    assert tools.runner("logs", "svc").out == "started\nstarted\n"
    missing = tools.runner("restart", "nosuch", "done")
    assert missing.code == 1 and missing.out == "done\n" and "nosuch" in missing.err


def test_wait_prints_each_exit_code(tools: Tools, img: str, names: list[str]) -> None:
    names.append("gone")
    assert tools.runner("run", "--name", "gone", img, "sh", "-c", "exit 5").code == 5
    began = time.monotonic()
    assert tools.runner("wait", "gone").out == "5\n"  # exited: at once
    assert time.monotonic() - began < 5
    run_d(tools, names, "slow", img, "sh", "-c", "sleep 1; exit 7")
    run_d(tools, names, "quick", img, "sh", "-c", "exit 0")
    waiting = popen_runner(tools, "wait", "slow", "quick", "gone")
    try:
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert (waiting.returncode, out) == (0, "7\n0\n5\n"), err
    missing = tools.runner("wait", "nosuch", "gone")
    assert missing.code == 1 and missing.out == "5\n" and "nosuch" in missing.err


@as_root_and_user
def test_wait_returns_at_the_next_exit_of_a_restarting_container(tools: Tools, any_img: str, names: list[str]) \
        -> None:
    run_d(tools, names, "again", "--restart", "always", any_img, "sh", "-c", "sleep 0.5; exit 9")
    for _ in range(2):
        result = tools.runner("wait", "again")
        assert (result.code, result.out) == (0, "9\n"), result.err
    assert status(tools, "again") in ("running", "restarting")


def test_a_record_from_an_earlier_boot_reads_exited_and_start_all_restart_brings_back_the_policy(
        tools: Tools, img: str, names: list[str]) -> None:
    made = {}
    for name, policy in (("always", "always"), ("unless", "unless-stopped"), ("stopped", "unless-stopped"),
                         ("onfail", "on-failure"), ("never", "no"), ("fresh", "always"), ("between", "always")):
        names.append(name)
        result = tools.runner("create", "--name", name, "--restart", policy, img, "sleep", "100")
        assert result.code == 0, result.err
        made[name] = result.out.strip()
    for name, cid in made.items():  # each as a reboot leaves it: "running" in a boot that is over
        if name == "fresh":  # never started: Docker's daemon starts only what ran before
            continue
        state = tools.root / "containers" / cid / "state.json"
        recorded = json.loads(state.read_text())
        recorded.update(status="running", pid=1, pid_start_time=1, boot_id="0" * 32, started=time.time() - 60)
        if name == "between":  # its monitor was waiting out a back-off
            recorded.update(status="restarting", pid=0, exit_code=2, finished=time.time() - 30, restart_count=4,
                            monitor_pid=1, monitor_start_time=1)
        state.write_text(json.dumps(recorded))
    (tools.root / "containers" / made["stopped"] / "stopped-by-user").touch()  # a user stopped it before
    assert ps_status(tools, "always") == "Exited (137)" or ps_status(tools, "always").startswith("Exited (137) ")
    assert ps_status(tools, "between").startswith("Exited (2) ")
    assert tools.runner("ps", "-q").out == ""  # nothing runs after a reboot
    result = tools.runner("start", "--all-restart")
    assert result.code == 0, result.err
    assert sorted(result.out.split()) == ["always", "between", "onfail", "unless"]
    assert inspect(tools, "between")["RestartCount"] == 0  # started anew, as Docker's daemon does
    for name in ("always", "between", "onfail", "unless"):
        assert status(tools, name) == "running"
    for name in ("stopped", "never", "fresh"):
        assert status(tools, name) in ("exited", "created")


def test_a_monitor_told_to_end_restarts_nothing_and_the_boot_brings_it_back(tools: Tools, img: str,
                                                                            names: list[str]) -> None:
    """The system shutting down: systemd's SIGTERM to the monitor goes on to the container, which is not restarted
    and not marked stopped by a user, so that ``start --all-restart`` at the next boot starts it."""
    run_d(tools, names, "daemonish", "--restart", "unless-stopped", img, "sh", "-c",
          "trap 'exit 143' TERM; while :; do sleep 0.1; done")  # PID 1 ignores a signal it has no handler for
    cid = inspect(tools, "daemonish")["Id"]
    monitor = json.loads((tools.root / "containers" / cid / "state.json").read_text())["monitor_pid"]
    with open(f"/proc/{monitor}/cmdline", "rb") as f:  # the runner that forked it: the monitor, ours
        assert b"runner" in f.read()
    os.kill(monitor, signal.SIGTERM)
    wait_until(lambda: status(tools, "daemonish") == "exited", "the container ends with its monitor")
    doc = inspect(tools, "daemonish")
    assert (doc["State"]["ExitCode"], doc["RestartCount"]) == (143, 0)  # the SIGTERM passed on; no restart
    wait_until(lambda: not os.path.exists(f"/proc/{monitor}"), "the monitor ends")
    assert not (tools.root / "containers" / cid / "stopped-by-user").exists()
    result = tools.runner("start", "--all-restart")
    assert (result.code, result.out) == (0, "daemonish\n"), result.err
    assert status(tools, "daemonish") == "running"


def test_a_foreground_run_on_a_terminal_hands_over_to_a_monitor(tools: Tools, img: str, names: list[str]) -> None:
    """``run -it --restart``: the terminal's session ends with the first run; the restart runs with a terminal of
    its own, logged, and holds nothing of the user's terminal."""
    names.append("tty")
    term = Terminal(runner_command(tools, "run", "-it", "--name", "tty", "--restart", "on-failure:1", img, "sh",
                                   "-c", "echo hi from $(tty); exit 3"), env=tools.environ())
    try:
        term.read_until(b"hi from /dev/", timeout=20)
        code = term.close()
    except AssertionError:
        term.proc.kill()
        raise
    assert code == 3
    wait_until(lambda: inspect(tools, "tty")["RestartCount"] == 1 and status(tools, "tty") == "exited",
               "the background restart")
    assert tools.runner("logs", "tty").out.count("hi from /dev/") == 2
