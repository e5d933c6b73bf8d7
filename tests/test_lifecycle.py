"""A container's life as a Docker user drives it: exit codes, signals, detached runs, ps, logs, exec, stop, kill,
rm, inspect, prune, lookup by name or ID prefix, a runner killed under its container, an image of 130 layers.

Real containers from the session test image in the test's own store; ``no_leaks`` checks that no cgroup and no
process is left, ``tools`` that no mount is.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import runner_images
from tests.cgroups import container_cgroup
from tests.marks import executor_independent, needs_root, needs_tools
from tests.scripts import Registry
from tests.terminal import Terminal
from tests.tools import Tools, detached, one_line_error, popen_runner, runner_command, wait_until

pytestmark = [needs_root, needs_tools]

LOOP = "while :; do sleep 0.1; done"


@pytest.fixture
def img(stored_test_image: str, no_leaks: None, executor: str) -> str:
    """The session test image, pulled; the test runs once per executor (ours, runc, crun)."""
    return stored_test_image


def inspect(tools: Tools, key: str) -> dict[str, Any]:
    result = tools.runner("inspect", key)
    assert result.code == 0, result.err
    found = json.loads(result.out)
    assert len(found) == 1
    return dict(found[0])


def ps_row(tools: Tools, name: str) -> str:
    """The ``ps -a`` line of the container named NAME ("" if none)."""
    return next((line for line in tools.runner("ps", "-a").out.splitlines() if line.endswith(f" {name}")), "")


def is_up(tools: Tools, name: str) -> bool:
    return bool(re.search(r"\sUp\s", ps_row(tools, name)))


def logs(tools: Tools, key: str) -> str:
    return tools.runner("logs", key).out


@pytest.fixture
def background(tools: Tools) -> Iterator[list[subprocess.Popen[str]]]:
    """Runner processes a test starts (popen_runner): killed (by pid) if still there, and the containers they ran
    removed by name (``--name`` in their arguments), whatever happened."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        args = list(proc.args)  # type: ignore[arg-type]
        if "--name" in args:
            tools.runner("rm", "-f", str(args[args.index("--name") + 1]))


# -- exit codes ------------------------------------------------------------------------------------------------------


def test_exit_codes(tools: Tools, img: str, background: list[subprocess.Popen[str]]) -> None:
    for code in (0, 1, 7, 255):
        assert tools.runner("run", "--rm", img, "sh", "-c", f"exit {code}").code == code
    one_line_error(tools.runner("run", "--rm", "--pull", "never", "nosuch/image:1", "true"), 125, "No such image")
    one_line_error(tools.runner("run", "--rm", "--cpus", "-1", img, "true"), 125, "--cpus")
    one_line_error(tools.runner("run", "--rm", img, "/etc/passwd"), 126, "Permission denied")
    one_line_error(tools.runner("run", "--rm", img, "/etc"), 126, "Permission denied")
    one_line_error(tools.runner("run", "--rm", img, "no-such-command"), 127, "executable file not found")
    one_line_error(tools.runner("run", "--rm", img, "/no/such/path"), 127, "executable file not found")
    # killed by a signal: 128 + N. PID 1 ignores signals it has no handler for, but not SIGKILL from outside
    proc = popen_runner(tools, "run", "--rm", "--name", "victim", img, "sleep", "60")
    background.append(proc)
    wait_until(lambda: is_up(tools, "victim"), "victim Up")
    assert tools.runner("kill", "-s", "KILL", "victim").code == 0
    assert proc.wait(timeout=30) == 137
    with detached(tools, img, "sleep", "60") as cid:  # any other process: its own signal, through exec
        assert tools.runner("exec", cid, "sh", "-c", "kill -TERM $$").code == 143


def test_detached_start_failures_keep_dockers_codes(tools: Tools, img: str) -> None:
    """``docker run -d`` maps a command that cannot start to 127 / 126 as the foreground run does."""
    try:
        one_line_error(tools.runner("run", "-d", img, "no-such-command"), 127, "executable file not found")
        one_line_error(tools.runner("run", "-d", img, "/etc/passwd"), 126, "Permission denied")
        one_line_error(tools.runner("run", "-d", "-u", "nosuch", img, "true"), 125, "unable to find user")
    finally:
        tools.runner("prune", "-f")


@executor_independent
def test_unknown_option_is_a_runner_error(tools: Tools, img: str) -> None:
    """README: the runner exits 125 for its own failures, usage included (Docker: "unknown flag", 125)."""
    result = tools.runner("run", "--no-such-option", img, "true")
    assert result.code == 125 and "--no-such-option" in result.err, result


# -- signals ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2"])
def test_signals_to_the_runner_reach_pid_1(tools: Tools, img: str, background: list[subprocess.Popen[str]],
                                           sig: str) -> None:
    number = int(signal.Signals[f"SIG{sig}"])
    script = f"trap 'exit {100 + number}' {sig}; echo ready; {LOOP}"
    proc = popen_runner(tools, "run", "--rm", "--name", "trapper", img, "sh", "-c", script)
    background.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(number)
    assert proc.wait(timeout=30) == 100 + number
    assert ps_row(tools, "trapper") == ""  # --rm still done


def test_signals_pass_through_init(tools: Tools, img: str, background: list[subprocess.Popen[str]]) -> None:
    proc = popen_runner(tools, "run", "--rm", "--init", "--name", "trapper", img, "sh", "-c",
                        f"trap 'exit 77' TERM; echo ready; {LOOP}")
    background.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 77


# -- detached containers, ps, logs --------------------------------------------------------------------------------


def test_detach_ps_and_logs(tools: Tools, img: str) -> None:
    script = "echo err1 >&2; printf 'out1\\nout2\\n'; exec sleep 60"  # two lines in one write
    with detached(tools, "--name", "web", img, "sh", "-c", script) as cid:
        assert re.fullmatch(r"[0-9a-f]{64}", cid)
        wait_until(lambda: logs(tools, "web") == "out1\nout2\n", "the output in the log")
        row = next(line for line in tools.runner("ps").out.splitlines() if line.startswith(cid[:12]))
        assert re.search(r"\sUp\s", row) and row.endswith(" web")
        assert tools.runner("ps", "-q").out == f"{cid[:12]}\n"
        shown = tools.runner("logs", "web")
        assert (shown.out, shown.err) == ("out1\nout2\n", "err1\n")  # each stream to its own
        stamped = tools.runner("logs", "-t", "web").out.splitlines()  # a time on each line, as Docker's
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z out\d$", line) for line in stamped), stamped
        assert tools.runner("stop", "-t", "1", "web").code == 0
        assert tools.runner("ps").out.splitlines()[1:] == []  # ps: running ones only
        assert tools.runner("ps", "-q").out == ""
        assert "Exited (137)" in ps_row(tools, "web")
        assert tools.runner("ps", "-a", "-q").out == f"{cid[:12]}\n"
        assert logs(tools, "web") == "out1\nout2\n"  # kept after the exit


def test_logs_follow_returns_when_the_container_exits(tools: Tools, img: str, tmp_path: Path,
                                                      background: list[subprocess.Popen[str]]) -> None:
    script = "echo line1; while [ ! -e /sig/go ]; do sleep 0.05; done; echo line2; exit 4"
    with detached(tools, "--name", "talker", "-v", f"{tmp_path}:/sig", img, "sh", "-c", script):
        follow = popen_runner(tools, "logs", "-f", "talker")
        background.append(follow)
        assert follow.stdout is not None and follow.stdout.readline() == "line1\n"  # following, not finished
        (tmp_path / "go").touch()
        rest, _ = follow.communicate(timeout=30)
        assert (follow.returncode, rest) == (0, "line2\n")
        assert inspect(tools, "talker")["State"]["ExitCode"] == 4


def test_foreground_run_is_logged_too(tools: Tools, img: str) -> None:
    assert tools.runner("run", "--name", "fg", img, "sh", "-c", "echo shown; echo also >&2").out == "shown\n"
    shown = tools.runner("logs", "fg")
    assert (shown.out, shown.err) == ("shown\n", "also\n")
    assert tools.runner("rm", "fg").code == 0


def test_detach_with_rm_removes_after_exit(tools: Tools, img: str, tmp_path: Path) -> None:
    with detached(tools, "--rm", "--name", "brief", "-v", f"{tmp_path}:/sig", img, "sh", "-c",
                  "while [ ! -e /sig/go ]; do sleep 0.05; done"):
        assert is_up(tools, "brief")
        (tmp_path / "go").touch()
        wait_until(lambda: ps_row(tools, "brief") == "", "the container removed")
        assert list((tools.root / "containers").iterdir()) == []


# -- exec ------------------------------------------------------------------------------------------------------------


def test_exec(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "box", "-h", "boxhost", "-e", "FROM_RUN=1", img, "sh", "-c",
                  "echo made-by-pid-1 > /tmp/mark; exec sleep 60") as cid:
        wait_until(lambda: tools.runner("exec", "box", "cat", "/tmp/mark").out == "made-by-pid-1\n", "PID 1's file")
        seen = tools.runner("exec", "box", "sh", "-c", "hostname; echo $FROM_RUN $STRATA_TEST; pwd; id -u; "
                            "ps -o pid,args | grep -c '^ *1 sleep 60$'; grep CapEff /proc/self/status; "
                            "grep -v ':/$' /proc/self/cgroup | wc -l")
        assert seen.out.splitlines() == ["boxhost", "1 1", "/data", "0", "1", "CapEff:\t00000000a80425fb", "0"], \
            seen.err  # its hostname, env, workdir, user, pid namespace, capabilities, cgroups
        options = tools.runner("exec", "-u", "strata", "-e", "FOO=bar", "-w", "/tmp", "box", "sh", "-c",
                               'echo "$(id -u) $FOO $(pwd)"')
        assert options.out == "1000 bar /tmp\n", options.err
        assert tools.runner("exec", "--user", "1000:65534", "box", "id", "-G").out == "65534\n"
        assert tools.runner("exec", "box", "sh", "-c", "exit 5").code == 5
        one_line_error(tools.runner("exec", "box", "no-such-command"), 127, "executable file not found")
        one_line_error(tools.runner("exec", "box", "/etc/passwd"), 126, "Permission denied")
        one_line_error(tools.runner("exec", "-u", "nosuch", "box", "true"), 125, "unable to find user")
        assert tools.runner("exec", "-i", "box", "cat", stdin="to exec\n").out == "to exec\n"
        assert tools.runner("exec", "box", "cat", stdin="not passed\n").out == ""
        assert tools.runner("exec", cid, "true").code == 0
        assert tools.runner("stop", "-t", "1", "box").code == 0
        one_line_error(tools.runner("exec", "box", "true"), 125, "is not running")
    one_line_error(tools.runner("exec", "nosuch", "true"), 125, "no such container")


def test_exec_with_a_terminal(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "tty", img, "sleep", "60"):
        term = Terminal(runner_command(tools, "exec", "-it", "tty", "sh"))
        try:
            term.read_until(b"# ", timeout=10)
            term.type("tty; stty size; echo $((6*7)); exit 3\r")
            out = term.read_until(b"42", timeout=10).decode(errors="replace")
        except AssertionError:
            term.proc.kill()  # its pid only; close() then returns at once
            raise
        finally:
            code = term.close()
        assert code == 3
        assert re.search(r"/dev/pts/\d+", out) and "33 101" in out


# -- stop, kill, rm, inspect, prune ----------------------------------------------------------------------------


def test_stop(tools: Tools, img: str, background: list[subprocess.Popen[str]]) -> None:
    with detached(tools, "--name", "polite", img, "sh", "-c", f"trap 'exit 42' TERM; echo ready; {LOOP}"):
        wait_until(lambda: logs(tools, "polite") == "ready\n", "the trap set")
        stopped = tools.runner("stop", "polite")
        assert (stopped.code, stopped.out) == (0, "polite\n")
        state = inspect(tools, "polite")["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 42)
        assert "Exited (42)" in ps_row(tools, "polite")
        assert tools.runner("stop", "polite").code == 0  # stopping a stopped container is no error, as Docker's
    with detached(tools, "--name", "deaf", img, "sleep", "60"):  # PID 1 without a handler ignores SIGTERM
        assert tools.runner("stop", "-t", "1", "deaf").code == 0
        assert inspect(tools, "deaf")["State"]["ExitCode"] == 137
    proc = popen_runner(tools, "run", "--name", "fg", img, "sleep", "60")  # a foreground run's runner returns
    background.append(proc)
    wait_until(lambda: is_up(tools, "fg"), "fg Up")
    assert tools.runner("stop", "--time", "1", "fg").code == 0
    assert proc.wait(timeout=30) == 137
    assert inspect(tools, "fg")["State"]["ExitCode"] == 137


def test_kill(tools: Tools, img: str) -> None:
    traps = "trap 'exit 71' USR1; trap 'exit 72' USR2; trap 'exit 73' HUP; echo ready; " + LOOP
    for name, sig, code in (("by-name", "USR1", 71), ("by-number", "12", 72), ("by-sig-name", "SIGHUP", 73)):
        with detached(tools, "--name", name, img, "sh", "-c", traps):
            wait_until(lambda name=name: logs(tools, name) == "ready\n", "the traps set")
            assert tools.runner("kill", "-s", sig, name).out == f"{name}\n"
            wait_until(lambda name=name: not is_up(tools, name), "the exit")
            assert inspect(tools, name)["State"]["ExitCode"] == code
    with detached(tools, "--name", "sleeper", img, "sleep", "60"):
        assert tools.runner("kill", "--signal", "TERM", "sleeper").code == 0
        assert is_up(tools, "sleeper")  # PID 1 without a handler ignores it, as in Docker
        one_line_error(tools.runner("kill", "-s", "BOGUS", "sleeper"), 125, "unknown signal")
        assert tools.runner("kill", "sleeper").code == 0  # SIGKILL by default
        wait_until(lambda: not is_up(tools, "sleeper"), "the exit")
        assert inspect(tools, "sleeper")["State"]["ExitCode"] == 137
        one_line_error(tools.runner("kill", "sleeper"), 125, "is not running")


def test_rm(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "busy", img, "sleep", "60") as cid:
        one_line_error(tools.runner("rm", "busy"), 125, "is running")
        assert is_up(tools, "busy")
        group = container_cgroup("pids", cid)
        assert group.is_dir()
        assert tools.runner("rm", "-f", "busy").out == "busy\n"
        assert ps_row(tools, "busy") == "" and not (tools.root / "containers" / cid).exists()
        assert not group.exists()
    for name in ("one", "two"):
        assert tools.runner("run", "--name", name, img, "true").code == 0
    assert tools.runner("rm", "one", "two").out == "one\ntwo\n"
    assert list((tools.root / "containers").iterdir()) == []
    one_line_error(tools.runner("rm", "nosuch"), 125, "no such container: nosuch")


def test_inspect(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "insp", "-e", "X=1", img, "sleep", "60") as cid:
        info = inspect(tools, "insp")
        assert (info["Id"], info["Name"]) == (cid, "/insp")  # Docker's: the name with a slash
        assert [info["Path"], *info["Args"]] == ["sleep", "60"] and "X=1" in info["Config"]["Env"]
        assert info["State"]["Status"] == "running" and info["State"]["Pid"] > 0
        assert info["State"]["ExitCode"] == 0  # Docker's while it runs
        assert tools.runner("stop", "-t", "1", "insp").code == 0
        assert (inspect(tools, "insp")["State"]["Status"], inspect(tools, "insp")["State"]["ExitCode"]) == \
            ("exited", 137)
        assert tools.runner("run", "--name", "other", img, "true").code == 0
        both = json.loads(tools.runner("inspect", "insp", "other").out)
        assert [c["Name"] for c in both] == ["/insp", "/other"]
        assert tools.runner("rm", "other").code == 0
    one_line_error(tools.runner("inspect", "nosuch"), 125, "no such container")


def test_prune_removes_exited_and_keeps_running(tools: Tools, img: str) -> None:
    exited = []
    for name, script in (("ok", "true"), ("failed", "exit 3")):
        assert tools.runner("run", "--name", name, img, "sh", "-c", script).code in (0, 3)
        exited.append(inspect(tools, name)["Id"])
    with detached(tools, "--name", "running", img, "sleep", "60") as cid:
        pruned = tools.runner("prune", "-f")
        assert pruned.code == 0 and pruned.out.splitlines()[0] == "Deleted Containers:"
        assert sorted(pruned.out.splitlines()[1:3]) == sorted(exited)
        assert [p.name for p in (tools.root / "containers").iterdir()] == [cid]
        assert is_up(tools, "running")


@executor_independent
def test_lookup_by_name_id_and_prefix(tools: Tools, img: str) -> None:
    with detached(tools, "--name", "findme", img, "sh", "-c", "echo hi; exec sleep 60") as cid:
        wait_until(lambda: logs(tools, cid) == "hi\n", "the output")
        for key in ("findme", cid, cid[:12], cid[:4]):
            assert inspect(tools, key)["Id"] == cid
        assert logs(tools, cid[:12]) == "hi\n"
        assert tools.runner("exec", cid[:4], "true").code == 0
        assert tools.runner("stop", "-t", "1", cid[:8]).code == 0
        assert tools.runner("rm", cid[:10]).out == f"{cid[:10]}\n"
    # two IDs with a common first digit (at most 17 containers for one): that digit is an ambiguous prefix
    ids: list[str] = []
    try:
        while not ids or ids[-1][0] not in {other[0] for other in ids[:-1]}:
            made = tools.runner("run", "-d", img, "true")
            assert made.code == 0, made.err
            ids.append(made.out.strip())
        prefix = ids[-1][0]
        for command in (("inspect", prefix), ("logs", prefix), ("rm", prefix), ("exec", prefix, "true")):
            one_line_error(tools.runner(*command), 125, "ambiguous")
    finally:
        tools.runner("rm", "-f", *ids)
    one_line_error(tools.runner("logs", "0123456789ab"), 125, "no such container")


# -- a killed runner ----------------------------------------------------------------------------------------------


def test_killed_runner_leaves_a_removable_exited_container(tools: Tools, img: str, executor: str,
                                                           background: list[subprocess.Popen[str]]) -> None:
    proc = popen_runner(tools, "run", "--name", "orphan", img, "sleep", "100")
    background.append(proc)
    wait_until(lambda: is_up(tools, "orphan"), "orphan Up")
    proc.send_signal(signal.SIGKILL)  # the runner's pid only
    assert proc.wait(timeout=30) == -signal.SIGKILL
    if executor != "strata":  # a runtime's container outlives its runner, as under a shim: rm -f removes it
        assert is_up(tools, "orphan")
        removed = tools.runner("rm", "-f", "orphan")
        assert (removed.code, removed.out) == (0, "orphan\n"), removed.err
        assert list((tools.root / "containers").iterdir()) == []
        return
    wait_until(lambda: "Exited" in ps_row(tools, "orphan"), "orphan shown as exited")
    row = ps_row(tools, "orphan")
    assert not is_up(tools, "orphan")
    assert re.search(r"Exited \(\d+\)", row), row  # a number, as Docker shows
    removed = tools.runner("rm", "orphan")
    assert (removed.code, removed.out) == (0, "orphan\n"), removed.err
    assert list((tools.root / "containers").iterdir()) == []  # no_leaks and tools check cgroups, processes, mounts


# -- many layers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def many_layers_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry, test_layout: Path) -> str:
    """The test image plus 128 one-file layers (130 in all), pushed as strata/many:1."""
    return runner_images.build_and_push(runner_images.build_many_layers, test_layout,
                                        tmp_path_factory.mktemp("many-layers"), runner_images.MANY_TAG,
                                        f"{registry.address}/strata/many:1")


def test_an_image_of_130_layers_runs(tools: Tools, many_layers_image: str, no_leaks: None) -> None:
    assert tools.puller("pull", "--quiet", many_layers_image).code == 0
    assert len(list((tools.root / "layers").iterdir())) == runner_images.MANY_LAYERS
    result = tools.runner("run", "--rm", many_layers_image, "sh", "-c",
                          "cat /layer-129 /layer-2; ls / | grep -c '^layer-'; cat /etc/layer2.txt")
    assert result.code == 0, result.err
    assert result.out == f"layer 129\nlayer 2\n{runner_images.MANY_LAYERS - 2}\nfrom layer 2\n"
