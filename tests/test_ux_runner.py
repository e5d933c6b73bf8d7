"""Issue 12, the runner's side: what a Docker user relies on at the terminal and in scripts. ``run -it`` keeps
what was typed before the shell was up; limit options are refused as Docker refuses them; ``ps`` shows Docker's
columns, filters and formats; ``inspect`` has ``docker inspect``'s shape."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from runner.cli import ps
from runner.isolation import cgroups
from tests.marks import needs_root, needs_tools
from tests.terminal import Terminal
from tests.tools import Tools, detached, one_line_error, wait_until

pytestmark = [needs_root, needs_tools]


def test_typeahead_before_the_shell_starts_reaches_it(tools: Tools, test_image: str) -> None:
    """A line typed right after pressing Enter on ``run -it`` (before the container's shell is up, while the
    runner's own terminal is still in cooked mode) is executed by the shell, not dropped by the switch to raw."""
    assert tools.puller("pull", test_image).code == 0
    term = Terminal([sys.executable, "-m", "runner", "--root", str(tools.root), "run", "--rm", "-it", test_image,
                     "sh"])
    try:
        term.type("echo TYPED$((40+2)); exit 7\r")  # the shell is not up yet: the runner has just been spawned
        out = term.read_until(b"TYPED42")
    finally:
        code = term.close()
    assert b"TYPED42" in out and code == 7


# -- limits, as Docker's daemon checks them ---------------------------------------------------------------------


def test_swap_and_reservation_reach_the_cgroup(tools: Tools, test_image: str, executor: str) -> None:
    """Under each executor: memory.memsw.limit_in_bytes (v1) is memory and swap together, the reservation is
    the soft limit; the container reads its own values at /sys/fs/cgroup."""
    assert tools.puller("pull", test_image).code == 0
    files = "memory.limit_in_bytes memory.memsw.limit_in_bytes memory.soft_limit_in_bytes"
    if cgroups.is_v2():
        files = "memory.max memory.swap.max memory.low"
    result = tools.runner("run", "--rm", "-m", "64m", "--memory-swap", "96m", "--memory-reservation", "32m",
                          test_image, "sh", "-c", f"cd /sys/fs/cgroup/memory* 2>/dev/null; cat {files}")
    assert result.code == 0, result.err
    swap = 96 << 20 if not cgroups.is_v2() else 32 << 20
    assert [int(v) for v in result.out.split()] == [64 << 20, swap, 32 << 20]


def test_cpu_shares_and_ulimits_reach_the_container(tools: Tools, test_image: str, executor: str) -> None:
    assert tools.puller("pull", test_image).code == 0
    shares = "cat /sys/fs/cgroup/cpu.weight" if cgroups.is_v2() else "cat /sys/fs/cgroup/cpu/cpu.shares"
    result = tools.runner("run", "--rm", "--cpu-shares", "512", "--ulimit", "nofile=1000:2000", "--ulimit",
                          "core=-1", test_image, "sh", "-c", f"{shares}; ulimit -n; ulimit -Hn; ulimit -c")
    assert result.code == 0, result.err
    assert result.out.split() == ["20" if cgroups.is_v2() else "512", "1000", "2000", "unlimited"]
    one_line_error(tools.runner("run", "--rm", "--ulimit", "nofile=3000:2000", test_image, "true"), 125,
                   "ulimit soft limit must be less than or equal to hard limit: 3000 > 2000")


def test_limits_docker_refuses_fail_create_with_one_line(tools: Tools, test_image: str) -> None:
    """At the command line: exit 125 (Docker's for a run it refused), one line, nothing created."""
    assert tools.puller("pull", test_image).code == 0
    available = cgroups.host_cpus()
    one_line_error(tools.runner("run", "--rm", "--cpus", "99", test_image, "true"), 125,
                   f"range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available")
    one_line_error(tools.runner("create", "-m", "4m", test_image, "true"), 125,
                   "minimum memory limit allowed is 6MB")
    assert not (tools.root / "containers").exists() or list((tools.root / "containers").iterdir()) == []
    assert tools.runner("run", "--rm", "--cpus", str(available), "-m", "0", "--pids-limit", "-1", test_image,
                        "true").code == 0


# -- ps -----------------------------------------------------------------------------------------------------------


def test_command_is_quoted_and_cut_as_dockers() -> None:
    command = ps.command_text(["sh", "-c", "while true; do sleep 1; done"])
    assert command == "sh -c 'while true; do sleep 1; done'"
    assert ps.ellipsis(command, 20) == "sh -c 'while true; …" and len(ps.ellipsis(command, 20)) == 20
    assert ps.ellipsis("echo hi", 20) == "echo hi"


def _ps(tools: Tools, *args: str) -> list[str]:
    result = tools.runner("ps", *args)
    assert result.code == 0, result.err
    return result.out.splitlines()


def test_ps_columns_filters_and_formats(tools: Tools, test_image: str) -> None:
    assert tools.puller("pull", test_image).code == 0
    image_id = json.loads(tools.puller("inspect", test_image).out)[0]["Id"]
    assert tools.runner("run", "--name", "done", test_image, "sh", "-c", "exit 3").code == 3
    assert tools.runner("create", "--name", "fresh", test_image, "echo", "hi").code == 0
    with detached(tools, "--name", "web", test_image, "sh", "-c", "while true; do sleep 1; done") as web:
        running = _ps(tools)
        everything = _ps(tools, "-a")
        print("\n$ runner ps", *running, "$ runner ps -a", *everything, sep="\n")
        assert running[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
        assert len(running) == 2 and running[1].startswith(web[:12] + " ") and running[1].endswith(" web")
        assert "\"sh -c 'while true; …\"" in running[1]
        assert re.search(r"  (Less than a second|\d+ seconds?|About a minute) ago  ", running[1])
        assert re.search(r"  Up (Less than a second|\d+ seconds?|About a minute)  ", running[1])
        names = [line.rsplit(" ", 1)[1] for line in everything[1:]]
        assert names == ["web", "fresh", "done"]  # newest first
        assert re.search(r"  Exited \(3\) (Less than a second|\d+ seconds?|About a minute) ago  ", everything[3])
        assert "  Created  " in everything[2] and '"echo hi"' in everything[2]
        # --no-trunc, -q
        full = _ps(tools, "--no-trunc")
        assert web in full[1] and "\"sh -c 'while true; do sleep 1; done'\"" in full[1]
        assert _ps(tools, "-q") == [web[:12]] and _ps(tools, "-q", "--no-trunc") == [web]
        assert len(_ps(tools, "-aq")) == 3
        # filters: a status filter lists stopped ones without -a; one key's values are alternatives
        assert _ps(tools, "-f", "status=exited", "--format", "{{.Names}}") == ["done"]
        assert _ps(tools, "-f", "status=exited", "-f", "status=created", "--format", "{{.Names}}") == \
            ["fresh", "done"]
        assert _ps(tools, "-a", "-f", "name=^fre", "--format", "{{.Names}}") == ["fresh"]
        assert _ps(tools, "-a", "-f", "name=e", "-f", "status=running", "--format", "{{.Names}}") == ["web"]
        assert _ps(tools, "-a", "-f", f"id={web[:8]}", "-q") == [web[:12]]
        assert _ps(tools, "-f", "exited=3", "--format", "{{.Names}}") == ["done"]
        for ancestor in (test_image, image_id, image_id.removeprefix("sha256:")[:12]):
            assert _ps(tools, "-a", "-f", f"ancestor={ancestor}", "--format", "{{.Names}}") == names, ancestor
        assert _ps(tools, "-a", "-f", "ancestor=no/such:image", "-q") == []  # Docker's: no such image, no match
        # formats: json lines (Docker 24+), {{json .}}, Go templates, table
        docs = [json.loads(line) for line in _ps(tools, "-a", "--format", "json")]
        same = [json.loads(line) for line in _ps(tools, "-a", "--format", "{{json .}}")]
        ageless = [{k: v for k, v in d.items() if k not in ("RunningFor", "Status")} for d in (*docs, *same)]
        assert ageless[:3] == ageless[3:]
        assert [d["Names"] for d in docs] == names and docs[0]["ID"] == web[:12]
        assert (docs[0]["State"], docs[1]["State"], docs[2]["State"]) == ("running", "created", "exited")
        assert docs[0]["Status"].startswith("Up ") and docs[2]["Status"].startswith("Exited (3) ")
        assert docs[0]["Command"] == "\"sh -c 'while true; …\"" and docs[0]["Ports"] == ""
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \S+", docs[0]["CreatedAt"])
        assert _ps(tools, "--format", "{{.ID}} {{.Image}} {{.State}}") == [f"{web[:12]} {test_image} running"]
        table = _ps(tools, "-a", "--format", "table {{.ID}}\\t{{.Names}}")
        print("$ runner ps -a --format 'table {{.ID}}\\t{{.Names}}'", *table, sep="\n")
        assert table[0].split() == ["CONTAINER", "ID", "NAMES"] and table[1].split() == [web[:12], "web"]
        assert _ps(tools, "-n", "1", "--format", "{{.Names}}") == ["web"]
        # usage errors: one line, Docker's 125
        one_line_error(tools.runner("ps", "-f", "colour=red"), 125, "invalid filter 'colour=red'")
        one_line_error(tools.runner("ps", "-f", "status=sleeping"), 125, "invalid filter 'status=sleeping'")
        one_line_error(tools.runner("ps", "--format", "{{.Nope}}"), 125, "can't evaluate field Nope")
    for name in ("done", "fresh"):
        assert tools.runner("rm", name).code == 0


def test_ps_format_with_printf_and_lower_as_docker(tools: Tools, test_image: str) -> None:
    """Issue 19: ``ps --format '{{printf "%.3s" .Names}}|{{lower .Status}}'``, which the runner's own engine
    refused ("function printf not defined"), prints as Docker's; a bad template is Go's one-line error, 125."""
    assert tools.puller("pull", test_image).code == 0
    assert tools.runner("create", "--name", "webserver", test_image, "true").code == 0
    try:
        assert _ps(tools, "-a", "--format", '{{printf "%.3s" .Names}}|{{lower .Status}}') == ["web|created"]
        table = _ps(tools, "-a", "--format", r'table {{printf "%.3s" .Names}}\t{{lower .Status}}')
        assert table == ["NAM       STATUS", "web       created"]  # Docker's header functions: lower leaves STATUS
        one_line_error(tools.runner("ps", "--format", "{{printf"), 125, "template parsing error: template: :1: ")
        one_line_error(tools.runner("ps", "-a", "--format", '{{printf "%d" .Names 1 | nosuch}}'), 125,
                       'function "nosuch" not defined')
    finally:
        assert tools.runner("rm", "webserver").code == 0


# -- inspect ------------------------------------------------------------------------------------------------------

RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
ZERO_TIME = "0001-01-01T00:00:00Z"


def _inspect(tools: Tools, *args: str) -> Any:
    result = tools.runner("inspect", *args)
    assert result.code == 0, result.err
    return result.out if "-f" in args or "--format" in args else json.loads(result.out)


def test_inspect_has_dockers_shape_and_the_real_state(tools: Tools, test_image: str, tmp_path: Path) -> None:
    """The fields scripts written for ``docker inspect`` read, checked against what is true of the container:
    its PID 1 is alive while Running, the exit code and times are the ones it had, its files are in UpperDir."""
    assert tools.puller("pull", test_image).code == 0
    image_id = json.loads(tools.puller("inspect", test_image).out)[0]["Id"]
    created = tools.runner("create", "--name", "later", test_image, "true")
    assert created.code == 0
    fresh = _inspect(tools, "later")[0]
    assert fresh["State"]["Status"] == "created" and not fresh["State"]["Running"]
    assert (fresh["State"]["StartedAt"], fresh["State"]["FinishedAt"], fresh["State"]["Pid"]) == \
        (ZERO_TIME, ZERO_TIME, 0)
    args = ("--name", "probe", "-e", "X=1", "-v", f"{tmp_path}:/shared:ro", "-m", "64m", "--cpus", "0.5",
            "--pids-limit", "50", "--cap-drop", "NET_RAW", "--cap-add", "SYS_TIME", "--tmpfs", "/scratch:size=1m")
    with detached(tools, *args, test_image, "sh", "-c", "echo marker > /in-upper; exec sleep 60") as cid:
        [doc] = _inspect(tools, "probe")
        state = doc["State"]
        assert doc["Id"] == cid and doc["Name"] == "/probe" and doc["Image"] == image_id
        assert (doc["Path"], doc["Args"]) == ("sh", ["-c", "echo marker > /in-upper; exec sleep 60"])
        assert RFC3339_NANO.fullmatch(doc["Created"]) and RFC3339_NANO.fullmatch(state["StartedAt"])
        assert doc["Created"] <= state["StartedAt"] and state["FinishedAt"] == ZERO_TIME
        assert (state["Status"], state["Running"], state["Paused"], state["ExitCode"]) == ("running", True, False, 0)
        assert Path(f"/proc/{state['Pid']}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"60"]
        config, host = doc["Config"], doc["HostConfig"]
        assert config["Image"] == test_image and "X=1" in config["Env"] and config["Hostname"] == cid[:12]
        assert config["Cmd"] == ["sh", "-c", "echo marker > /in-upper; exec sleep 60"] and not config["Entrypoint"]
        assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 500_000_000, 50)
        assert (host["CapAdd"], host["CapDrop"]) == (["SYS_TIME"], ["NET_RAW"])
        assert host["Binds"] == [f"{tmp_path}:/shared:ro"] and list(host["Tmpfs"]) == ["/scratch"]
        assert "size=1m" in host["Tmpfs"]["/scratch"]
        assert (host["AutoRemove"], host["Privileged"], host["ReadonlyRootfs"]) == (False, False, False)
        assert doc["Mounts"] == [{"Type": "bind", "Source": str(tmp_path), "Destination": "/shared", "Mode": "ro",
                                  "RW": False, "Propagation": "rprivate"}]
        graph = doc["GraphDriver"]
        assert graph["Name"] == "overlay2" == doc["Driver"]
        wait_until(lambda: (Path(graph["Data"]["UpperDir"]) / "in-upper").exists(), "the file in the rw layer")
        assert (Path(graph["Data"]["UpperDir"]) / "in-upper").read_text() == "marker\n"
        assert all(Path(p).is_dir() for p in graph["Data"]["LowerDir"].split(":"))
        net = doc["NetworkSettings"]
        assert net["IPAddress"] == "" and net["Ports"] == {} and isinstance(net["Networks"], dict)
        assert "Spec" in doc and doc["Spec"]["linux"]["resources"]["pids"] == {"limit": 50}
        # Go templates, as docker inspect -f
        out = _inspect(tools, "-f", "{{.State.Pid}} {{.Config.Image}} {{.Name}} {{json .Mounts}}", "probe")
        assert out == f"{state['Pid']} {test_image} /probe {json.dumps(doc['Mounts'], separators=(',', ':'))}\n"
        assert _inspect(tools, "--format", "{{range .Mounts}}{{.Destination}}{{end}}", "probe", "later") == \
            "/shared\n\n"
        assert tools.runner("stop", "-t", "1", "probe").code == 0
        [done] = _inspect(tools, cid)
        state = done["State"]
        assert (state["Status"], state["Running"], state["Pid"], state["ExitCode"]) == ("exited", False, 0, 137)
        assert RFC3339_NANO.fullmatch(state["FinishedAt"]) and state["FinishedAt"] >= state["StartedAt"]
        one_line_error(tools.runner("inspect", "-f", "{{.State.Pid", cid), 125, "template parsing error")
    assert tools.runner("rm", "later").code == 0
    one_line_error(tools.runner("inspect", "later"), 125, "no such container: later")


def test_inspect_shows_entrypoint_and_cmd_apart(tools: Tools, test_image: str) -> None:
    assert tools.puller("pull", test_image).code == 0
    assert tools.runner("create", "--name", "ep", "--entrypoint", "/bin/echo", test_image, "a", "b").code == 0
    [doc] = _inspect(tools, "ep")
    assert (doc["Config"]["Entrypoint"], doc["Config"]["Cmd"]) == (["/bin/echo"], ["a", "b"])
    assert (doc["Path"], doc["Args"]) == ("/bin/echo", ["a", "b"])
    assert tools.runner("rm", "ep").code == 0


def test_run_and_exec_with_stdout_or_stdin_closed_end_without_a_traceback(tools: Tools,
                                                                          stored_test_image: str) -> None:
    """A runner started with fd 1 (or 0) closed: the container's output goes nowhere, nothing of it lands in a
    file the runner opened on that fd, and no traceback (regression: sys.stdout was None in the relay)."""
    import shlex
    import subprocess

    from tests.tools import ROOT, runner_command

    def closed(args: tuple[str, ...], redirect: str) -> subprocess.CompletedProcess[str]:
        line = " ".join(shlex.quote(a) for a in runner_command(tools, *args))
        return subprocess.run(["sh", "-c", f"exec {line} {redirect}"], capture_output=True, text=True, cwd=ROOT,
                              env=tools.environ(), timeout=60, check=False)

    ran = closed(("run", "--rm", stored_test_image, "echo", "hi"), ">&-")
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    with detached(tools, stored_test_image, "sleep", "60") as cid:
        for args, redirect in (((cid, "echo", "hi"), ">&-"), (("-t", cid, "true"), "<&-")):
            done = closed(("exec", *args), redirect)
            assert "Traceback" not in done.stderr, done.stderr
            assert done.returncode == 0 or len(done.stderr.splitlines()) == 1, done.stderr
