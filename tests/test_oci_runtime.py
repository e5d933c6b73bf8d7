"""runner-oci as the runtime-spec (runtime.md: the lifecycle and its statuses, config.md: what the process gets)
and runc's command line define it, on bundles made from the test image's rootfs (tests/ocibundle.py): the verbs'
semantics and exit codes as runc's, the hooks, --log as containerd's shim reads it, pid identity, the fds a
container gets, and every process setting config.json may ask for, read back from inside the container.

Each test has its own ``--root`` and cgroup parent under its tmp dir, and this process is the containers' subreaper
(as containerd's shim and conmon are); the cleanup deletes every container, kills by pid what a bug left and
fails the test if anything had to be."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.marks import needs_root, needs_tools
from tests.ocibundle import Oci, wait_child, wait_for

pytestmark = [needs_root, needs_tools]


def _gone(oci: Oci, cid: str) -> None:
    done = oci("state", cid, check=False)
    assert done.returncode == 1 and "container does not exist" in done.stderr
    assert not (oci.root / cid).exists() and oci.cgroup_dirs(cid) == []


# -- the lifecycle -----------------------------------------------------------------------------------------------


def test_create_start_kill_delete_go_through_the_statuses(oci: Oci) -> None:
    oci.config(["sh", "-c", "echo started > /tmp/mark; exec sleep 60"])
    pid_file = oci.tmp / "init.pid"
    oci("create", "--bundle", str(oci.bundle), "--pid-file", str(pid_file), "c1")
    state = oci.state("c1")
    assert state["status"] == "created" and state["id"] == "c1" and state["bundle"] == str(oci.bundle)
    assert int(pid_file.read_text()) == state["pid"] > 0
    assert not (oci.bundle / "rootfs/tmp/mark").exists()  # created: the command has not run
    assert oci("start", "c1").stdout == ""
    wait_for(lambda: (oci.bundle / "rootfs/tmp/mark").exists(), "the command to run")
    assert oci.status("c1") == "running"
    assert "cannot start" in oci("start", "c1", check=False).stderr
    refused = oci("delete", "c1", check=False)
    assert refused.returncode == 1 and "not stopped" in refused.stderr
    oci("kill", "c1", "KILL")
    assert wait_child(state["pid"]) == -signal.SIGKILL
    assert oci.status("c1") == "stopped" and oci.state("c1")["pid"] == 0
    assert oci("kill", "c1", "TERM", check=False).returncode == 1
    oci("delete", "c1")
    _gone(oci, "c1")


def test_delete_of_a_created_container_needs_no_force(oci: Oci) -> None:
    oci.config(["true"])
    oci("create", "--bundle", str(oci.bundle), "c1")
    pid = oci.state("c1")["pid"]
    oci("delete", "c1")
    wait_child(pid)
    _gone(oci, "c1")


def test_delete_force_kills_a_running_container(oci: Oci) -> None:
    oci.config(["sleep", "60"])
    oci("run", "--detach", "--bundle", str(oci.bundle), "c1")
    pid = oci.state("c1")["pid"]
    oci("delete", "--force", "c1")
    assert wait_child(pid) == -signal.SIGKILL
    _gone(oci, "c1")


def test_unknown_ids_as_runc(oci: Oci) -> None:
    assert oci("delete", "--force", "nosuch").returncode == 0
    for verb in (["state"], ["delete"], ["start"], ["kill"], ["pause"], ["exec"]):
        done = oci(*verb, "nosuch", *(["true"] if verb == ["exec"] else []), check=False)
        assert done.returncode == 1 and "container does not exist" in done.stderr, (verb, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1


def test_an_id_is_taken_once(oci: Oci) -> None:
    oci.config(["true"])
    oci("create", "--bundle", str(oci.bundle), "c1")
    again = oci("create", "--bundle", str(oci.bundle), "c1", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    assert oci.status("c1") == "created"


def test_run_gives_the_exit_code_and_deletes(oci: Oci) -> None:
    oci.config(["sh", "-c", "echo out; echo err >&2; exit 3"])
    done = oci("run", "--bundle", str(oci.bundle), "c1", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    _gone(oci, "c1")


def test_run_keep_leaves_a_stopped_container(oci: Oci) -> None:
    oci.config(["sh", "-c", "exit 4"])
    assert oci("run", "--keep", "--bundle", str(oci.bundle), "c1", check=False).returncode == 4
    assert oci.status("c1") == "stopped"
    oci("delete", "c1")
    _gone(oci, "c1")


def test_run_detach_returns_with_the_container_running(oci: Oci) -> None:
    oci.config(["sleep", "60"])
    started = time.monotonic()
    oci("run", "-d", "--bundle", str(oci.bundle), "c1")
    assert time.monotonic() - started < 20 and oci.status("c1") == "running"


def test_list_shows_the_containers(oci: Oci) -> None:
    oci.config(["sleep", "60"])
    oci("create", "--bundle", str(oci.bundle), "c1")
    oci("run", "-d", "--bundle", str(oci.bundle), "c2")
    assert oci("list", "-q").stdout.split() == ["c1", "c2"]
    docs = json.loads(oci("list", "--format", "json").stdout)
    assert [(d["id"], d["status"]) for d in docs] == [("c1", "created"), ("c2", "running")]
    table = oci("list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"] and table[1].split()[2] == "created"
    assert table[2].split()[:3] == ["c2", str(docs[1]["pid"]), "running"]


def test_ps_json_lists_the_containers_pids(oci: Oci) -> None:
    oci.config(["sh", "-c", "sleep 60 & exec sleep 61"])
    oci("run", "-d", "--bundle", str(oci.bundle), "c1")
    init = oci.state("c1")["pid"]
    wait_for(lambda: len(json.loads(oci("ps", "--format", "json", "c1").stdout)) == 2, "two processes")
    pids = json.loads(oci("ps", "--format", "json", "c1").stdout)
    assert init in pids and all(Path(f"/proc/{p}").exists() for p in pids)


def _counter(oci: Oci) -> int:
    return int((oci.bundle / "rootfs/tmp/n").read_text() or 0)


def test_pause_freezes_and_resume_thaws(oci: Oci) -> None:
    oci.config(["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; done"])
    oci("run", "-d", "--bundle", str(oci.bundle), "c1")
    wait_for(lambda: (oci.bundle / "rootfs/tmp/n").exists(), "the counter")
    oci("pause", "c1")
    assert oci.status("c1") == "paused"
    frozen = _counter(oci)
    time.sleep(0.3)
    assert _counter(oci) == frozen
    assert "paused" in oci("exec", "c1", "true", check=False).stderr
    oci("resume", "c1")
    assert oci.status("c1") == "running"
    wait_for(lambda: _counter(oci) > frozen, "the counter to go on")
    assert oci("resume", "c1", check=False).returncode == 1


def test_update_sets_the_memory_limit(oci: Oci) -> None:
    oci.config(["sleep", "60"])
    oci("run", "-d", "--bundle", str(oci.bundle), "c1")
    oci("update", "--resources", "-", "c1", input=json.dumps({"memory": {"limit": 64 << 20, "swap": 128 << 20}}))
    files = [d / "memory.limit_in_bytes" for d in oci.cgroup_dirs("c1")] + \
        [d / "memory.max" for d in oci.cgroup_dirs("c1")]
    assert [int(f.read_text()) for f in files if f.exists()] == [64 << 20]
    oci("update", "--memory", "32m", "c1")
    assert [int(f.read_text()) for f in files if f.exists()] == [32 << 20]
    # raised above the present memory+swap limit (Docker's update after -m 64m --memory-swap 128m): the kernel takes
    # the limit only after the larger memory+swap (v1)
    oci("update", "--resources", "-", "c1", input=json.dumps({"memory": {"limit": 256 << 20, "swap": 512 << 20}}))
    assert [int(f.read_text()) for f in files if f.exists()] == [256 << 20]


# -- exec --------------------------------------------------------------------------------------------------------


def _running(oci: Oci, cid: str = "c1", args: tuple[str, ...] = ("sleep", "60")) -> int:
    oci.config(list(args))
    oci("run", "-d", "--bundle", str(oci.bundle), cid)
    return int(oci.state(cid)["pid"])


def test_exec_gives_the_exit_code_and_takes_env_cwd_user(oci: Oci) -> None:
    _running(oci)
    assert oci("exec", "c1", "sh", "-c", "exit 7", check=False).returncode == 7
    done = oci("exec", "-e", "FOO=bar", "--cwd", "/etc", "-u", "1000:1001", "c1", "sh", "-c",
               'echo "$FOO $(pwd) $(id -u) $(id -g)"')
    assert done.stdout == "bar /etc 1000 1001\n"
    missing = oci("exec", "c1", "nosuch", check=False)
    assert missing.returncode == 127 and "executable file not found" in missing.stderr


def test_exec_process_file(oci: Oci) -> None:
    _running(oci)
    process = {"args": ["sh", "-c", "echo $A; id -u; exit 5"], "env": ["A=from-file", "PATH=/bin:/usr/bin"],
               "cwd": "/", "user": {"uid": 7, "gid": 7}, "terminal": False}
    (oci.tmp / "process.json").write_text(json.dumps(process))
    done = oci("exec", "--process", str(oci.tmp / "process.json"), "c1", check=False)
    assert (done.returncode, done.stdout) == (5, "from-file\n7\n")


def test_exec_detach_pid_file_names_the_command_a_child_of_the_subreaper(oci: Oci) -> None:
    _running(oci)
    pid_file = oci.tmp / "exec.pid"
    oci("exec", "--detach", "--pid-file", str(pid_file), "c1", "sh", "-c", "sleep 3; exit 6")
    pid = int(pid_file.read_text())
    ppid = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("PPid:"))
    assert int(ppid) == os.getpid()  # the stage exited: we (the shim's role) adopted the command
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sh"
    assert pid in json.loads(oci("ps", "--format", "json", "c1").stdout)
    assert wait_child(pid, timeout=30) == 6


class ConsoleSocket:
    """A --console-socket as a shim serves it: accepts one connection and takes the pty master it carries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.master = -1
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            self.master = fds[0]

    def take(self) -> int:
        self.thread.join(20)
        assert self.master >= 0, "no pty master came over the console socket"
        return self.master

    def close(self) -> None:
        self.server.close()
        if self.master >= 0:
            os.close(self.master)


def _read_all(fd: int, until: bytes = b"", timeout: float = 20) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not until or until not in out):
        import select

        if not select.select([fd], [], [], 0.2)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the last slave fd closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_exec_tty_through_the_console_socket(oci: Oci) -> None:
    _running(oci)
    console = ConsoleSocket(oci.tmp / "pty.sock")
    try:
        proc = subprocess.Popen(oci.argv("exec", "-t", "--console-socket", str(console.path), "c1", "sh"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        master = console.take()
        os.write(master, b"tty; echo sum-$((6*7)); exit 9\n")
        seen = _read_all(master, b"sum-42")
        assert b"/dev/pts/" in seen and b"sum-42" in seen
        assert proc.wait(20) == 9
    finally:
        console.close()


def test_create_with_a_terminal_sends_the_master_to_the_console_socket(oci: Oci) -> None:
    oci.config(["sh", "-c", "tty; read line; echo got-$line"], lambda d: d["process"].update(terminal=True))
    console = ConsoleSocket(oci.tmp / "pty.sock")
    try:
        oci("create", "--bundle", str(oci.bundle), "--console-socket", str(console.path), "c1")
        master = console.take()
        pid = oci.state("c1")["pid"]
        oci("start", "c1")
        os.write(master, b"typed\n")
        seen = _read_all(master, b"got-typed")
        assert b"/dev/console" in seen or b"/dev/pts/" in seen, seen
        assert b"got-typed" in seen
        assert wait_child(pid) == 0
    finally:
        console.close()


def test_a_terminal_without_a_console_socket_is_refused(oci: Oci) -> None:
    oci.config(["sh"], lambda d: d["process"].update(terminal=True))
    done = oci("create", "--bundle", str(oci.bundle), "c1", check=False)
    assert done.returncode == 1 and "console socket" in done.stderr
    assert not (oci.root / "c1").exists()


# -- hooks, --log, the pid file ----------------------------------------------------------------------------------


def _hook(out: str) -> dict[str, Any]:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"]}


def test_all_six_hooks_run_with_the_state_on_stdin(oci: Oci) -> None:
    host = oci.tmp / "hooks"
    host.mkdir()
    hooks = {kind: [_hook(f"{host}/{kind}.json")] for kind in ("prestart", "createRuntime", "poststart", "poststop")}
    hooks["createContainer"] = [_hook(f"{host}/createContainer.json")]  # before pivot_root: the host's paths
    hooks["startContainer"] = [_hook("/tmp/startContainer.json")]  # in the container: its own sh and /tmp
    oci.config(["sleep", "60"], lambda d: d.update(hooks=hooks))
    oci("create", "--bundle", str(oci.bundle), "c1")
    pid = oci.state("c1")["pid"]
    seen = {kind: json.loads((host / f"{kind}.json").read_text()) for kind in
            ("prestart", "createRuntime", "createContainer")}
    assert not (host / "poststart.json").exists()
    oci("start", "c1")
    wait_for(lambda: (oci.bundle / "rootfs/tmp/startContainer.json").exists(), "startContainer")
    wait_for(lambda: (host / "poststart.json").exists(), "poststart")
    seen["startContainer"] = json.loads((oci.bundle / "rootfs/tmp/startContainer.json").read_text())
    seen["poststart"] = json.loads((host / "poststart.json").read_text())
    oci("delete", "--force", "c1")
    seen["poststop"] = json.loads((host / "poststop.json").read_text())
    for kind, state in seen.items():
        assert state["id"] == "c1" and state["bundle"] == str(oci.bundle), kind
        assert state["ociVersion"].startswith("1.")
        if kind != "poststop":
            assert state["pid"] == pid, kind
    assert {k: seen[k]["status"] for k in seen} == {
        "prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
        "startContainer": seen["startContainer"]["status"], "poststart": "running", "poststop": "stopped"}
    assert seen["startContainer"]["status"] in ("created", "running")


def _leaves_nothing(oci: Oci, cid: str) -> None:
    assert not (oci.root / cid).exists() and oci.cgroup_dirs(cid) == []
    assert oci("list", "-q").stdout == ""
    from tests.cgroups import processes_mentioning

    assert processes_mentioning(oci.bundle) == []


def test_a_failing_prestart_hook_fails_create_and_leaves_nothing(oci: Oci) -> None:
    marker = oci.tmp / "ran"
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}; echo hook-says-no; exit 3"]}]}
    oci.config(["sleep", "60"], lambda d: d.update(hooks=hooks))
    log = oci.tmp / "log.json"
    done = oci("--log", str(log), "--log-format", "json", "create", "--bundle", str(oci.bundle), "c1", check=False)
    assert marker.exists() and done.returncode == 1
    assert "prestart" in done.stderr and "hook-says-no" in done.stderr
    _leaves_nothing(oci, "c1")


def test_log_json_has_the_error_as_containerds_shim_reads_it(oci: Oci) -> None:
    oci.config(["/nonexistent"])
    log = oci.tmp / "log.json"
    done = oci("--log", str(log), "--log-format", "json", "create", "--bundle", str(oci.bundle), "c1", check=False)
    assert done.returncode == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert errors and "no such file or directory" in errors[-1]["msg"] and "/nonexistent" in errors[-1]["msg"]
    assert all(set(line) >= {"level", "msg", "time"} for line in lines)
    _leaves_nothing(oci, "c1")


# -- pid identity ------------------------------------------------------------------------------------------------


def test_a_reused_pid_is_a_stopped_container_and_never_signalled(oci: Oci) -> None:
    pid = _running(oci)
    oci("kill", "c1", "9")
    wait_child(pid)
    sentinel = subprocess.Popen(["sleep", "60"])
    try:
        path = oci.root / "c1" / "state.json"
        doc = json.loads(path.read_text())
        doc["pid"] = sentinel.pid  # the init's pid taken by another process: its start time is not the recorded one
        path.write_text(json.dumps(doc))
        assert oci.status("c1") == "stopped"
        for args in (["kill", "c1", "9"], ["kill", "c1", "KILL"], ["exec", "c1", "true"], ["pause", "c1"],
                     ["start", "c1"]):
            assert oci(*args, check=False).returncode != 0, args
        oci("kill", "--all", "c1", "9", check=False)
        oci("delete", "c1")
        assert sentinel.poll() is None, "runner-oci signalled a process that took the init's pid"
    finally:
        sentinel.kill()
        sentinel.wait()


# -- fds ---------------------------------------------------------------------------------------------------------

FDS = "for f in 0 1 2 3 4 5 6 7 8 9 10 11 12; do [ -e /proc/$$/fd/$f ] && echo -n \"$f \"; done; echo"


def _run_with_fds(oci: Oci, *options: str) -> str:
    """runner-oci run with fds 3, 4 and 5 of its caller open (as the shim's socket is)."""
    oci.config(["sh", "-c", FDS])
    argv = " ".join(f"'{a}'" for a in oci.argv("run", *options, "--bundle", str(oci.bundle), "c1"))
    out = oci.tmp / "fds.out"
    subprocess.run(["/bin/sh", "-c", f"exec 3</etc/hostname 4</etc/hostname 5</etc/hostname; exec {argv} > {out}"],
                   check=True, timeout=30)
    return out.read_text().strip()


def test_a_callers_stray_fds_never_reach_the_container(oci: Oci) -> None:
    assert _run_with_fds(oci) == "0 1 2"


def test_preserve_fds_passes_exactly_those(oci: Oci) -> None:
    assert _run_with_fds(oci, "--preserve-fds", "2") == "0 1 2 3 4"


def test_a_created_containers_init_cannot_be_reached_from_the_container(oci: Oci) -> None:
    oci.config(["sleep", "60"])
    oci("create", "--bundle", str(oci.bundle), "c1")
    probe = "cat /proc/1/exe > /dev/null 2>&1 && echo exe-open; readlink /proc/1/exe && echo exe-read; " \
            "for f in /proc/1/fd/*; do cat $f > /dev/null 2>&1 && echo $f-open; readlink $f && echo $f-read; done; " \
            "grep -q . /proc/1/environ 2>/dev/null && echo environ-open; echo done"
    done = oci("exec", "c1", "sh", "-c", probe)
    assert done.stdout == "done\n"


# -- what the process gets, read back from inside --------------------------------------------------------------


def _status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _caps_mask(*names: str) -> str:
    from runner.isolation.security import CAPABILITIES

    return f"{sum(1 << CAPABILITIES.index(n) for n in names):016x}"


PROBE = ("grep -E '^(Cap...|NoNewPrivs|Groups):' /proc/self/status; echo umask: $(umask); "
         "echo nofile: $(ulimit -n) $(ulimit -Hn); echo oom: $(cat /proc/self/oom_score_adj); "
         "echo host: $(hostname) $(cat /proc/sys/kernel/domainname); "
         "echo port: $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); "
         "echo timer_list: $(wc -c < /proc/timer_list); "
         "touch /rootfile 2>/dev/null && echo rootfs: rw || echo rootfs: ro; "
         "(echo 1 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null && echo procsys: rw || echo procsys: ro")


def test_the_process_gets_every_setting_of_config_json(oci: Oci) -> None:
    def edit(d: dict[str, Any]) -> None:
        p = d["process"]
        p["user"] = {"uid": 0, "gid": 0, "additionalGids": [10, 20], "umask": 0o027}
        p["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
        p["noNewPrivileges"] = True
        p["oomScoreAdj"] = 123
        p["capabilities"] = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                             "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                             "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"], "inheritable": ["CAP_KILL"]}
        d["hostname"], d["domainname"] = "oci-host", "oci-dom"
        d["root"]["readonly"] = True
        d["linux"]["sysctl"] = {"net.ipv4.ip_unprivileged_port_start": "42"}

    oci.config(["sh", "-c", PROBE], edit)
    out = oci("run", "--bundle", str(oci.bundle), "c1").stdout
    got = _status_fields(out)
    assert got["CapBnd"] == _caps_mask("CHOWN", "KILL", "NET_BIND_SERVICE")
    assert got["CapEff"] == got["CapPrm"] == _caps_mask("KILL", "NET_BIND_SERVICE")
    assert got["CapInh"] == _caps_mask("KILL") and got["CapAmb"] == _caps_mask()
    assert got["NoNewPrivs"] == "1" and got["Groups"].split() == ["10", "20"]
    assert (got["umask"], got["nofile"], got["oom"]) == ("0027", "100 200", "123")
    assert (got["host"], got["port"], got["timer_list"]) == ("oci-host oci-dom", "42", "0")
    assert (got["rootfs"], got["procsys"]) == ("ro", "ro")


def test_a_non_root_user_gets_its_effective_and_ambient_caps(oci: Oci) -> None:
    caps = ["CAP_NET_BIND_SERVICE"]
    oci.config(["sh", "-c", "grep -E '^(Cap...|Uid):' /proc/self/status"], lambda d: d["process"].update(
        user={"uid": 1000, "gid": 1000},
        capabilities={s: caps for s in ("bounding", "effective", "permitted", "inheritable", "ambient")}))
    got = _status_fields(oci("run", "--bundle", str(oci.bundle), "c1").stdout)
    assert got["Uid"].split() == ["1000"] * 4
    assert got["CapEff"] == got["CapPrm"] == got["CapAmb"] == got["CapBnd"] == _caps_mask("NET_BIND_SERVICE")


def test_a_non_root_user_without_ambient_caps_has_none_after_exec(oci: Oci) -> None:
    caps = ["CAP_NET_BIND_SERVICE"]
    oci.config(["sh", "-c", "grep -E '^Cap' /proc/self/status"], lambda d: d["process"].update(
        user={"uid": 1000, "gid": 1000}, capabilities={s: caps for s in ("bounding", "effective", "permitted")}))
    got = _status_fields(oci("run", "--bundle", str(oci.bundle), "c1").stdout)
    assert got["CapEff"] == got["CapPrm"] == _caps_mask() and got["CapBnd"] == _caps_mask("NET_BIND_SERVICE")


def test_a_capability_runner_oci_does_not_hold_is_refused_by_name(oci: Oci) -> None:
    """runner-oci run with CAP_SYS_TIME out of its own bounding set (capsh drops it first, so this holds on any
    machine): a config asking for it fails create naming it, as runc's "unable to apply caps", and leaves nothing;
    never a container that quietly has fewer capabilities than config.json says."""
    caps = ["CAP_SYS_TIME", "CAP_KILL"]
    oci.config(["true"], lambda d: d["process"].update(capabilities={s: caps for s in ("bounding", "effective")}))
    oci.ids.append("c1")
    argv = ["capsh", "--drop=cap_sys_time", "--", "-c", 'exec "$@"', "sh", *oci.argv("run", "--bundle",
                                                                                     str(oci.bundle), "c1")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0 and "CAP_SYS_TIME" in done.stderr and "unable to apply caps" in done.stderr, done
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (oci.root / "c1").exists()


SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_seccomp_of_config_json_applies(oci: Oci, no_new_privileges: bool) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["linux"]["seccomp"] = SECCOMP
        d["process"]["noNewPrivileges"] = no_new_privileges

    oci.config(["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?; grep Seccomp: /proc/self/status"], edit)
    out = oci("run", "--bundle", str(oci.bundle), "c1").stdout
    assert "Operation not permitted" in out and "rc=1" in out and "Seccomp:\t2" in out
    assert not (oci.bundle / "rootfs/tmp/d").exists()
    _running(oci, "c2")  # exec gets the filter too
    done = oci("exec", "c2", "sh", "-c", "mkdir /tmp/e 2>&1; echo rc=$?")
    assert "rc=1" in done.stdout and not (oci.bundle / "rootfs/tmp/e").exists()


def test_an_exec_gets_no_stray_fd_of_its_caller(oci: Oci) -> None:
    _running(oci)
    argv = " ".join(f"'{a}'" for a in oci.argv("exec", "c1", "sh", "-c", FDS))
    out = oci.tmp / "fds.out"
    subprocess.run(["/bin/sh", "-c", f"exec 3</etc/hostname 5</etc/hostname; exec {argv} > {out}"], check=True,
                   timeout=30)
    assert out.read_text().strip() == "0 1 2"
    detached = oci.tmp / "fds-detached.out"
    argv = " ".join(f"'{a}'" for a in oci.argv("exec", "-d", "--pid-file", str(oci.tmp / "exec.pid"), "c1", "sh",
                                                 "-c", FDS))
    subprocess.run(["/bin/sh", "-c", f"exec 3</etc/hostname 5</etc/hostname; exec {argv} > {detached}"],
                   check=True, timeout=30)
    # reaped, as a shim reaps it: until then the container's PID 1 cannot finish dying (delete would wait)
    assert wait_child(int((oci.tmp / "exec.pid").read_text())) == 0
    assert detached.read_text().strip() == "0 1 2"


def test_start_of_a_created_container_whose_init_died_fails_in_one_line(oci: Oci) -> None:
    oci.config(["true"])
    oci("create", "--bundle", str(oci.bundle), "c1")
    pid = oci.state("c1")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_child(pid)
    assert oci.status("c1") == "stopped"
    done = oci("start", "c1", check=False)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    oci("delete", "c1")
    _gone(oci, "c1")


def test_kill_takes_runcs_signal_spellings(oci: Oci) -> None:
    pid = _running(oci, args=("sh", "-c", "trap 'exit 42' USR1; while true; do sleep 0.1; done"))
    time.sleep(0.3)
    oci("kill", "c1", "SIGUSR1")
    assert wait_child(pid) == 42
    assert oci("kill", "c1", "NOSUCH", check=False).returncode == 1


def test_a_hook_that_outlasts_its_timeout_fails_create_and_leaves_nothing(oci: Oci) -> None:
    hooks = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}
    oci.config(["true"], lambda d: d.update(hooks=hooks))
    started = time.monotonic()
    done = oci("create", "--bundle", str(oci.bundle), "c1", check=False)
    assert done.returncode == 1 and "timeout" in done.stderr and time.monotonic() - started < 15
    _leaves_nothing(oci, "c1")


def test_an_exited_init_not_yet_reaped_is_stopped(oci: Oci) -> None:
    oci.config(["sh", "-c", "exit 0"])
    oci("create", "--bundle", str(oci.bundle), "c1")
    pid = oci.state("c1")["pid"]
    oci("start", "c1")
    wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z", "a zombie")
    assert oci.status("c1") == "stopped" and oci.state("c1")["pid"] == 0
    oci("delete", "c1")
    assert wait_child(pid) == 0
    _gone(oci, "c1")


def test_config_limits_land_in_the_cgroup(oci: Oci) -> None:
    oci.config(["sleep", "60"], lambda d: d["linux"].update(resources={
        "memory": {"limit": 48 << 20}, "pids": {"limit": 33}, "cpu": {"quota": 50000, "period": 100000},
        "devices": [{"allow": False, "access": "rwm"}]}))
    oci("run", "-d", "--bundle", str(oci.bundle), "c1")
    values = {f.name: f.read_text().strip() for d in oci.cgroup_dirs("c1") for f in d.iterdir()
              if f.name in ("memory.limit_in_bytes", "pids.max", "cpu.cfs_quota_us", "memory.max", "cpu.max")}
    assert values.get("memory.limit_in_bytes", values.get("memory.max")) == str(48 << 20)
    assert values["pids.max"] == "33"
    assert values.get("cpu.cfs_quota_us", values.get("cpu.max", "").split(" ")[0]) == "50000"
    pids = json.loads(oci("ps", "--format", "json", "c1").stdout)
    assert all(oci.cgroup_path("c1") in Path(f"/proc/{p}/cgroup").read_text() for p in pids)


def test_run_in_the_foreground_forwards_sigterm(oci: Oci) -> None:
    oci.config(["sh", "-c", "trap 'exit 43' TERM; echo ready; while true; do sleep 0.1; done"])
    out = oci.tmp / "fg.out"
    with open(out, "w") as f:
        proc = subprocess.Popen(oci.argv("run", "--bundle", str(oci.bundle), "c1"), stdout=f)
    oci.ids.append("c1")
    try:
        wait_for(lambda: out.read_text() == "ready\n", "the container", 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 43
    finally:
        proc.kill()
        proc.wait()
    _gone(oci, "c1")


def test_run_passes_on_a_signal_that_comes_while_it_creates(oci: Oci) -> None:
    """SIGTERM half-way through create (a prestart hook of a second holds it there) is passed on once the command
    runs, not taken by runner-oci (which died of it and left the container running). No pid namespace: the
    command is no namespace's init, so SIGTERM's default ends it, 143."""
    def edit(d: dict[str, Any]) -> None:
        d["linux"]["namespaces"] = [n for n in d["linux"]["namespaces"] if n["type"] != "pid"]
        d["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {hooked}; sleep 1"]}]}

    hooked = oci.tmp / "in-prestart"
    oci.config(["sleep", "30"], edit)
    proc = subprocess.Popen(oci.argv("run", "--bundle", str(oci.bundle), "c1"), stdout=subprocess.DEVNULL)
    oci.ids.append("c1")
    try:
        wait_for(hooked.exists, "the prestart hook", 20)  # create is under way: past runner-oci's start-up
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    _gone(oci, "c1")


def test_a_paused_container_is_deleted_with_force_and_killed_with_all(oci: Oci) -> None:
    pid = _running(oci, args=("sh", "-c", "sleep 60 & exec sleep 61"))
    oci("pause", "c1")
    assert oci("delete", "c1", check=False).returncode == 1
    oci("kill", "--all", "c1", "KILL")
    assert wait_child(pid) == -signal.SIGKILL
    oci("delete", "c1")
    _gone(oci, "c1")
    pid = _running(oci, "c2")
    oci("pause", "c2")
    oci("delete", "--force", "c2")
    assert wait_child(pid) == -signal.SIGKILL
    _gone(oci, "c2")


def test_ps_table_lists_the_containers_processes(oci: Oci) -> None:
    pid = _running(oci)
    lines = oci("ps", "c1").stdout.splitlines()
    assert "PID" in lines[0].split() and [line for line in lines[1:] if str(pid) in line.split()]


def test_run_on_a_terminal_without_a_console_socket_is_runcs_own_console(oci: Oci) -> None:
    """``runner-oci spec`` then ``runner-oci run ID`` from a terminal (runc's first example): the container's pty
    relayed to ours, typed into, its exit code returned."""
    from tests.terminal import Terminal

    oci.config(["sh"], lambda d: d["process"].update(terminal=True))
    oci.ids.append("c1")
    oci.doc["linux"]["cgroupsPath"] = oci.cgroup_path("c1")
    oci.write()
    term = Terminal(oci.argv("run", "--bundle", str(oci.bundle), "c1"))
    try:
        term.read_until(b"# ")
        term.type("tty; echo sum-$((6*7)); exit 5\n")
        seen = term.read_until(b"sum-42")
        assert b"/dev/console" in seen or b"/dev/pts/" in seen
    finally:
        code = term.close()
    assert code == 5
    _gone(oci, "c1")


def test_a_pid_file_that_cannot_be_written_fails_create_and_leaves_nothing(oci: Oci) -> None:
    oci.config(["sleep", "60"])
    done = oci("create", "--bundle", str(oci.bundle), "--pid-file", str(oci.tmp / "no" / "such" / "dir" / "pid"),
               "c1", check=False)
    assert done.returncode == 1 and "--pid-file" in done.stderr
    wait_for(lambda: not oci.cgroup_dirs("c1"), "the container's cgroup to go", 5)
    _leaves_nothing(oci, "c1")


@pytest.mark.parametrize("bad", ["mount", "cwd-file", "missing-command", "bind-source"])
def test_a_create_that_fails_in_the_init_leaves_nothing(oci: Oci, bad: str) -> None:
    def edit(d: dict[str, Any]) -> None:
        if bad == "mount":
            d["mounts"].append({"destination": "/x", "type": "nosuchfs", "source": "none"})
        elif bad == "cwd-file":
            d["process"]["cwd"] = "/bin/busybox"
        elif bad == "missing-command":
            d["process"]["args"] = ["nosuch-command"]
        else:
            d["mounts"].append({"destination": "/x", "type": "bind", "source": "/nonexistent/src",
                                "options": ["rbind"]})

    oci.config(["true"], edit)
    done = oci("create", "--bundle", str(oci.bundle), "c1", check=False)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    _leaves_nothing(oci, "c1")


def test_an_rlimit_above_what_the_kernel_allows_fails_create_and_leaves_nothing(oci: Oci) -> None:
    """podman's default NOFILE 1048576 on a root without CAP_SYS_RESOURCE: runc fails create ("error setting
    rlimits"), so callers see it there, not as an exit status after start. Above fs.nr_open it fails even with it."""
    over = int(Path("/proc/sys/fs/nr_open").read_text()) + 1
    oci.config(["true"], lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": over,
                                                                  "hard": over}]))
    done = oci("create", "--bundle", str(oci.bundle), "c1", check=False)
    assert done.returncode == 1 and "RLIMIT_NOFILE" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    _leaves_nothing(oci, "c1")


def test_a_console_socket_nobody_serves_fails_create_and_leaves_nothing(oci: Oci) -> None:
    oci.config(["sh"], lambda d: d["process"].update(terminal=True))
    done = oci("create", "--bundle", str(oci.bundle), "--console-socket", str(oci.tmp / "nobody.sock"), "c1",
               check=False)
    assert done.returncode == 1 and "console-socket" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    _leaves_nothing(oci, "c1")


def test_exec_in_a_stopped_container_is_refused(oci: Oci) -> None:
    pid = _running(oci)
    oci("kill", "c1", "KILL")
    wait_child(pid)
    done = oci("exec", "c1", "true", check=False)
    assert done.returncode != 0 and "stopped" in done.stderr
