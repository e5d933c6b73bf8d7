"""``runner run`` as a Docker user relies on it: each option, and what a container sees from inside by default.

Every test runs real containers from the session test image (busybox, scripts/build-test-image) pulled into the
test's own store; ``no_leaks`` then checks that no cgroup and no process is left, ``tools`` that no mount is.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import runner_images
from tests.cgroups import container_cgroup
from tests.marks import needs_root, needs_tools
from tests.scripts import Registry
from tests.tools import Result, Tools, detached, one_line_error, wait_until

pytestmark = [needs_root, needs_tools]

DOCKER_DEFAULT_CAPS = "00000000a80425fb"  # moby's 14 default capabilities as /proc/PID/status shows them
# Docker's masked and read-only paths (moby daemon/pkg/oci/defaults.go)
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEV_ENTRIES = {"core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
               "tty", "urandom", "zero"}
DEVICES = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9", "tty": "5:0"}


@pytest.fixture
def img(tools: Tools, test_image: str, no_leaks: None, executor: str) -> str:
    """The session test image, pulled; the test runs once per executor (ours, runc, crun)."""
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    return test_image


def run(tools: Tools, *args: str, stdin: str | None = None) -> Result:
    """``runner run --rm ARGS``."""
    return tools.runner("run", "--rm", *args, stdin=stdin)


def sh(tools: Tools, image: str, script: str, *opts: str) -> Result:
    """``runner run --rm OPTS IMAGE sh -c SCRIPT``."""
    return run(tools, *opts, image, "sh", "-c", script)


def status_fields(text: str) -> dict[str, str]:
    """``Key:\tvalue`` lines of /proc/PID/status."""
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def host_bounding_set() -> str:
    return status_fields(Path("/proc/self/status").read_text())["CapBnd"]


def containers(tools: Tools) -> list[str]:
    d = tools.root / "containers"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# -- environment, working directory, user, entrypoint, names ----------------------------------------------------


def test_env_flags_and_env_file(tools: Tools, img: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATA_T_PASSED", "from the runner")
    monkeypatch.setenv("STRATA_T_FILE_BARE", "bare, from the runner")
    monkeypatch.delenv("STRATA_T_UNSET", raising=False)
    env_file = tmp_path / "env.list"
    env_file.write_text("# a comment\n\nFROM_FILE=1\n   # an indented comment\n   \n  SPACED=a b = c\n"
                        'QUOTED="kept"\nSTRATA_T_FILE_BARE\nOVERRIDDEN=by the file\n')
    result = run(tools, "--env-file", str(env_file), "-e", "OVERRIDDEN=by the flag", "-e", "SET=v=1",
                 "--env", "STRATA_T_PASSED", "-e", "STRATA_T_UNSET", "-e", "STRATA_TEST=changed", "-e", "EMPTY=",
                 img, "env")
    assert result.code == 0, result.err
    env = dict(line.split("=", 1) for line in result.out.splitlines())
    assert env["SET"] == "v=1"
    assert env["STRATA_T_PASSED"] == "from the runner"  # a bare KEY passes the runner's own value
    assert "STRATA_T_UNSET" not in env  # ... and drops it when the runner has none
    assert env["STRATA_TEST"] == "changed" and env["PATH"] == "/usr/bin:/bin"  # over the image's Env; rest kept
    assert env["EMPTY"] == ""
    assert env["FROM_FILE"] == "1" and env["SPACED"] == "a b = c" and env["QUOTED"] == '"kept"'  # values as is
    assert env["STRATA_T_FILE_BARE"] == "bare, from the runner"
    assert env["OVERRIDDEN"] == "by the flag"  # -e wins over --env-file
    assert not any(k.startswith("#") or not k for k in env)  # comments and blank lines are no variables
    assert env["HOME"] == "/root" and env["HOSTNAME"]
    one_line_error(run(tools, "--env-file", str(tmp_path / "missing"), img, "true"), 125, "env file")


def test_workdir(tools: Tools, img: str) -> None:
    assert sh(tools, img, "pwd").out == "/data\n"  # the image's WorkingDir
    created = sh(tools, img, "pwd; ls -ld . | cut -c1", "-w", "/new/deeper/dir")
    assert created.code == 0, created.err
    assert created.out == "/new/deeper/dir\nd\n"  # created when missing, as Docker does
    as_user = sh(tools, img, "pwd; id -u", "--workdir", "/home/strata/work", "-u", "strata")
    assert as_user.out == "/home/strata/work\n1000\n", as_user.err
    one_line_error(run(tools, "-w", "relative", img, "true"), 125, "absolute path")


def test_read_only_root_still_gets_its_missing_workdir(tools: Tools, img: str) -> None:
    """Docker creates the working directory in the rw layer before the root is made read-only."""
    result = run(tools, "--read-only", "-w", "/newdir", img, "pwd")
    assert (result.code, result.out) == (0, "/newdir\n"), result.err


def test_user(tools: Tools, img: str) -> None:
    expected = {  # uid, gid, groups, HOME: looked up in the image's /etc/passwd and /etc/group
        "root": "0 0 0 /root",
        "strata": "1000 1000 1000 /home/strata",
        "1000": "1000 1000 1000 /home/strata",
        "strata:nobody": "1000 65534 65534 /home/strata",
        "1000:65534": "1000 65534 65534 /home/strata",
        "nobody": "65534 65534 65534 /nonexistent",
        "4242": "4242 0 0 /",  # a uid the image does not know: gid 0, HOME /
        "4242:4242": "4242 4242 4242 /",
    }
    script = 'echo "$(id -u) $(id -g) $(id -G) $HOME"'
    seen = {spec: sh(tools, img, script, "-u", spec).out.strip() for spec in expected}
    assert seen == expected
    assert sh(tools, img, "id -un", "--user", "strata").out == "strata\n"
    one_line_error(run(tools, "-u", "nosuch", img, "true"), 125, "unable to find user nosuch")
    one_line_error(run(tools, "-u", "strata:nosuch", img, "true"), 125, "unable to find group nosuch")
    assert containers(tools) == []


def test_entrypoint_replaces_the_image_entrypoint_and_drops_its_cmd(tools: Tools, img: str) -> None:
    alone = run(tools, "--entrypoint", "/bin/echo", img)
    assert (alone.code, alone.out) == (0, "\n")  # not "/bin/sh": the image's Cmd is dropped
    assert run(tools, "--entrypoint", "/bin/echo", img, "a", "b").out == "a b\n"
    assert run(tools, "--entrypoint", "", img, "echo", "x").out == "x\n"
    kept = tools.runner("run", "--name", "ep", "--entrypoint", "/bin/echo", img, "hi")
    assert kept.out == "hi\n"
    assert json.loads(tools.runner("inspect", "ep").out)[0]["Config"]["Entrypoint"] == ["/bin/echo"]
    assert tools.runner("rm", "ep").code == 0


def test_hostname_and_name(tools: Tools, img: str) -> None:
    script = "hostname; cat /etc/hostname; grep -c box7 /etc/hosts; echo $HOSTNAME"
    assert sh(tools, img, script, "--hostname", "box7").out == "box7\nbox7\n1\nbox7\n"
    assert sh(tools, img, "hostname", "-h", "box8").out == "box8\n"
    default = tools.runner("run", "--name", "named", img, "hostname")
    assert default.code == 0, default.err
    short_id = default.out.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", short_id)  # the short ID, as Docker's
    ps = tools.runner("ps", "-a").out
    assert re.search(rf"^{short_id} .* named$", ps, re.M), ps
    one_line_error(tools.runner("run", "--name", "named", img, "true"), 125, "already in use")
    one_line_error(tools.runner("run", "--name", "bad/name", img, "true"), 125, "invalid container name")
    assert tools.runner("rm", "named").code == 0
    assert containers(tools) == []


def test_rm_removes_the_container_whatever_the_exit(tools: Tools, img: str) -> None:
    assert sh(tools, img, "exit 3").code == 3
    assert run(tools, img, "no-such-command").code == 127
    assert run(tools, "-u", "nosuch", img, "true").code == 125
    assert containers(tools) == []
    kept = tools.runner("run", img, "sh", "-c", "exit 3")
    assert kept.code == 3 and len(containers(tools)) == 1
    assert "Exited (3)" in tools.runner("ps", "-a").out
    assert tools.runner("prune").code == 0


# -- mounts: volumes, tmpfs, read-only root ------------------------------------------------------------------------


def test_volumes(tools: Tools, img: str, tmp_path: Path) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    (src / "host.txt").write_text("from the host\n")
    both = tools.runner("run", "--name", "vols", "-v", f"{src}:/data/new/dir", img, "sh", "-c",
                        "cat /data/new/dir/host.txt; echo from the container > /data/new/dir/c.txt")
    assert both.code == 0, both.err
    assert both.out == "from the host\n"
    assert (src / "c.txt").read_text() == "from the container\n"
    upper = tools.root / "containers" / containers(tools)[0] / "upper"
    assert (upper / "data/new/dir").is_dir()  # the missing target was made in the container's own tree
    assert tools.runner("rm", "vols").code == 0

    ro = sh(tools, img, "cat /ro/host.txt; touch /ro/x", "-v", f"{src}:/ro:ro")
    assert ro.code == 1 and ro.out == "from the host\n" and "Read-only file system" in ro.err
    assert not (src / "x").exists()
    explicit_rw = sh(tools, img, "touch /rw/y", "-v", f"{src}:/rw:rw")
    assert explicit_rw.code == 0 and (src / "y").exists()
    a_file = sh(tools, img, "cat /etc/from-host", "-v", f"{src}/host.txt:/etc/from-host:ro")
    assert a_file.out == "from the host\n", a_file.err
    made = tmp_path / "made" / "by" / "runner"
    assert sh(tools, img, "touch /m/z", "-v", f"{made}:/m").code == 0
    assert (made / "z").exists()  # a missing source directory is created, as Docker's -v does
    one_line_error(run(tools, "-v", "relative:/x", img, "true"), 125, "absolute host path")
    one_line_error(run(tools, "-v", f"{src}:/x:bogus", img, "true"), 125, "invalid volume")


@pytest.fixture(scope="session")
def links_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry, test_layout: Path) -> str:
    """The test image plus a layer of symlinks out of the root (runner_images.LINKS), pushed as strata/links:1."""
    return runner_images.build_and_push(runner_images.build_links, test_layout, tmp_path_factory.mktemp("links-image"),
                                        runner_images.LINKS_TAG, f"{registry.address}/strata/links:1")


@pytest.fixture
def host_probes() -> Iterator[list[Path]]:
    """Host paths a mount through an image symlink would create if it escaped the root; none may appear (removed
    afterwards if one did, so a failure does not leak onto the machine)."""
    probes = [Path("/strata-escape-probe"), Path("/strata-escape-probe2"), Path("/strata-escape-probe3"),
              Path("/etc/strata-escape-probe4"), Path("/etc/layer1.txt")]
    existing = [p for p in probes if os.path.lexists(p)]
    if existing:
        pytest.skip(f"the host already has {existing}")
    try:
        yield probes
    finally:
        for p in probes:
            if p.is_dir() and not p.is_symlink():
                os.rmdir(p)  # empty: a mount target
            elif os.path.lexists(p):
                p.unlink()


def test_mount_targets_through_image_symlinks_stay_in_the_root(tools: Tools, img: str, links_image: str,
                                                                tmp_path: Path, host_probes: list[Path]) -> None:
    assert tools.puller("pull", links_image).code == 0
    src = tmp_path / "vol"
    src.mkdir()
    (src / "f").write_text("volume\n")
    # the test image's /etc/abs-link -> /etc/layer1.txt: a file volume on it replaces the container's file
    through_file_link = sh(tools, img, "cat /etc/layer1.txt", "-v", f"{src}/f:/etc/abs-link")
    assert through_file_link.out == "volume\n", through_file_link.err
    refused = run(tools, "-v", f"{src}:/etc/abs-link/sub", img, "true")
    one_line_error(refused, 125, "")
    assert "not a directory" in refused.err.lower()  # runc says it in lower case
    # /escape -> /, /dotdot -> ../../../../.., /hostetc -> /etc: resolved inside the container's root
    result = sh(tools, links_image,
                "cat /strata-escape-probe/dir/f /strata-escape-probe2/f /etc/strata-escape-probe4/f; "
                "grep -c strata-escape-probe3 /proc/mounts",
                "-v", f"{src}:/escape/strata-escape-probe/dir", "-v", f"{src}:/dotdot/strata-escape-probe2:ro",
                "-v", f"{src}:/hostetc/strata-escape-probe4", "--tmpfs", "/escape/strata-escape-probe3")
    assert result.code == 0, result.err
    assert result.out == "volume\nvolume\nvolume\n1\n"
    assert [p for p in host_probes if os.path.lexists(p)] == []


def test_tmpfs(tools: Tools, img: str) -> None:
    script = ("grep -E ' /scratch | /x ' /proc/mounts; dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1 | "
              "grep -o 'No space left on device'; cp /bin/busybox /x/true; /x/true; echo exec=$?")
    result = sh(tools, img, script, "--tmpfs", "/scratch:size=1m", "--tmpfs", "/x")
    lines = result.out.splitlines()
    assert result.code == 0, result.err
    scratch = lines[0].split()
    assert scratch[:3] == ["tmpfs", "/scratch", "tmpfs"]
    assert {"rw", "nosuid", "nodev", "noexec", "size=1024k"} <= set(scratch[3].split(","))  # Docker's defaults
    assert {"nosuid", "nodev", "noexec"} <= set(lines[1].split()[3].split(","))
    assert lines[2:] == ["No space left on device", "exec=126"]  # size honoured; noexec by default
    executable = sh(tools, img, "cp /bin/busybox /x/true && /x/true", "--tmpfs", "/x:exec,mode=1777")
    assert executable.code == 0, executable.err
    hides = sh(tools, img, "ls -A /data", "--tmpfs", "/data")
    assert (hides.code, hides.out) == (0, "")  # over the image's /data (which has new.txt)
    one_line_error(run(tools, "--tmpfs", "/x:bogus", img, "true"), 125, "invalid --tmpfs option")


def test_read_only_root(tools: Tools, img: str, tmp_path: Path) -> None:
    script = ("touch /a; echo root=$?; touch /tmp/a; echo tmp=$?; touch /t/a; echo tmpfs=$?; touch /v/a; echo vol=$?; "
              "touch /dev/shm/a; echo shm=$?; grep ' / ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1")
    result = sh(tools, img, script, "--read-only", "--tmpfs", "/t", "-v", f"{tmp_path}:/v")
    assert result.out.splitlines() == ["root=1", "tmp=1", "tmpfs=0", "vol=0", "shm=0", "ro"], result.err
    assert "Read-only file system" in result.err
    assert (tmp_path / "a").exists()


def test_interactive_passes_stdin(tools: Tools, img: str) -> None:
    assert run(tools, "-i", img, "cat", stdin="hello\nworld\n").out == "hello\nworld\n"
    assert run(tools, "--interactive", img, "wc", "-l", stdin="1\n2\n3\n").out.strip() == "3"
    without = run(tools, img, "cat", stdin="not passed\n")
    assert (without.code, without.out) == (0, "")  # stdin is /dev/null without -i


# -- --init --------------------------------------------------------------------------------------------------------

ORPHAN = "(sleep 0.3 &); exec sleep 60"  # the subshell exits at once: its sleep is an orphan PID 1 inherits


def _processes(tools: Tools, cid: str) -> list[tuple[str, str]]:
    """(state, command line) of each process in the container."""
    result = tools.runner("exec", cid, "ps", "-o", "stat,args")
    assert result.code == 0, result.err
    return [(line.split(None, 1)[0], line.split(None, 1)[1]) for line in result.out.splitlines()[1:]]


def test_init_runs_as_pid_1_and_reaps_orphans(tools: Tools, img: str) -> None:
    first = sh(tools, img, "tr '\\0' ' ' < /proc/1/cmdline; echo; touch /dev/init", "--init")
    assert first.out.startswith("/dev/init -- sh -c "), first.out
    assert "Read-only file system" in first.err  # tini is bound read-only
    assert sh(tools, img, "exit 9", "--init").code == 9
    assert run(tools, "--init", img, "no-such-command").code == 127
    with detached(tools, img, "sh", "-c", ORPHAN) as plain:  # PID 1 is sleep: nobody reaps the orphan
        wait_until(lambda: any(st.startswith("Z") for st, _ in _processes(tools, plain)), "a zombie without init")
    with detached(tools, "--init", img, "sh", "-c", ORPHAN) as reaped:
        wait_until(lambda: not any(args == "sleep 0.3" or st.startswith("Z") for st, args in _processes(tools, reaped)),
                   "the orphan gone (reaped by tini)")
        assert [args for _, args in _processes(tools, reaped)][:2] == [f"/dev/init -- sh -c {ORPHAN}", "sleep 60"]


# -- cgroup limits -----------------------------------------------------------------------------------------------


def pid1_cgroup(tools: Tools, cid: str, controller: str) -> Path:
    """Where the container's PID 1 is in CONTROLLER: our executor's group, or where an OCI runtime put it (crun
    nests its group under one base path for every controller, not each controller's own)."""
    pid = json.loads(tools.runner("inspect", cid).out)[0]["State"]["Pid"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup", controller, path.lstrip("/"))
    raise AssertionError(f"no {controller} group for {pid}")


def test_memory_limit(tools: Tools, img: str, executor: str) -> None:
    assert run(tools, "--memory", "16m", img, "tail", "/dev/zero").code == 137  # the OOM killer's SIGKILL
    with detached(tools, "-m", "32m", img, "sleep", "60") as cid:
        limit = pid1_cgroup(tools, cid, "memory") / "memory.limit_in_bytes"
        if executor != "crun":
            assert limit.parent == container_cgroup("memory", cid)
        assert limit.read_text().strip() == str(32 << 20)
    one_line_error(run(tools, "-m", "1k", img, "true"), 125, "minimum memory limit")
    one_line_error(run(tools, "-m", "lots", img, "true"), 125, "invalid --memory 'lots': invalid size")


def test_cpus_sets_the_cfs_quota(tools: Tools, img: str) -> None:
    for cpus, quota in (("0.5", "50000"), ("1.5", "150000")):
        with detached(tools, "--cpus", cpus, img, "sleep", "60") as cid:
            group = container_cgroup("cpu", cid)
            assert (group / "cpu.cfs_quota_us").read_text().strip() == quota
            assert (group / "cpu.cfs_period_us").read_text().strip() == "100000"
    one_line_error(run(tools, "--cpus", "0.001", img, "true"), 125, "invalid --cpus 0.001: range of CPUs is from 0.01")


def test_pids_limit(tools: Tools, img: str) -> None:
    forks = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & echo $i; done; echo all"
    limited = sh(tools, img, forks, "--pids-limit", "5")
    assert limited.code != 0
    assert limited.out.split() == ["1", "2", "3", "4"]  # sh and four sleeps are the five
    assert "can't fork" in limited.err
    assert sh(tools, img, forks).out.split()[-1] == "all"
    with detached(tools, "--pids-limit", "7", img, "sleep", "60") as cid:
        assert (container_cgroup("pids", cid) / "pids.max").read_text().strip() == "7"


# -- capabilities, privileges ----------------------------------------------------------------------------------------


def caps(tools: Tools, image: str, *opts: str) -> dict[str, str]:
    result = sh(tools, image, "cat /proc/self/status", *opts)
    assert result.code == 0, result.err
    return {k: v for k, v in status_fields(result.out).items() if k.startswith("Cap")}


def test_capabilities_add_and_drop(tools: Tools, img: str) -> None:
    assert caps(tools, img) == {"CapInh": "0" * 16, "CapPrm": DOCKER_DEFAULT_CAPS, "CapEff": DOCKER_DEFAULT_CAPS,
                                "CapBnd": DOCKER_DEFAULT_CAPS, "CapAmb": "0" * 16}
    user = caps(tools, img, "-u", "strata")
    assert (user["CapEff"], user["CapPrm"], user["CapBnd"]) == ("0" * 16, "0" * 16, DOCKER_DEFAULT_CAPS)
    assert caps(tools, img, "--cap-add", "NET_ADMIN")["CapEff"] == "00000000a80435fb"  # + bit 12
    dropped = caps(tools, img, "--cap-drop", "chown")
    assert dropped["CapEff"] == dropped["CapBnd"] == "00000000a80425fa"  # - bit 0
    only = caps(tools, img, "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN")
    assert only["CapEff"] == only["CapBnd"] == "0000000000200000"  # bit 21 alone
    assert caps(tools, img, "--cap-drop", "all")["CapBnd"] == "0" * 16
    # what they mean: chown needs CAP_CHOWN, mount needs CAP_SYS_ADMIN
    assert sh(tools, img, "chown 1000 /tmp").code == 0
    refused = sh(tools, img, "chown 1000 /tmp", "--cap-drop", "CHOWN")
    assert refused.code == 1 and "Operation not permitted" in refused.err
    mounted = sh(tools, img, "mount -t tmpfs x /tmp && grep -c ' /tmp tmpfs' /proc/mounts", "--cap-add", "SYS_ADMIN")
    assert mounted.out == "1\n", mounted.err
    one_line_error(run(tools, "--cap-add", "BOGUS", img, "true"), 125, "unknown capability")


def test_cap_add_all_gives_every_capability_the_runner_has(tools: Tools, img: str) -> None:
    result = caps(tools, img, "--cap-add", "ALL")
    assert result["CapEff"] == result["CapBnd"] == host_bounding_set()


def test_privileged(tools: Tools, img: str) -> None:
    result = sh(tools, img, "grep -E '^Cap(Eff|Bnd)' /proc/self/status; grep ' /sys ' /proc/mounts | cut -d' ' -f4 | "
                "cut -d, -f1; ls -A /sys/firmware | wc -l; mount -t tmpfs x /tmp && echo mounted", "--privileged")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert status_fields("\n".join(lines[:2])) == {"CapEff": host_bounding_set(), "CapBnd": host_bounding_set()}
    assert lines[2] == "rw"  # /sys writable
    assert int(lines[3]) == len(os.listdir("/sys/firmware"))  # not masked
    assert lines[4] == "mounted"


def test_no_new_privileges_and_setuid(tools: Tools, img: str) -> None:
    def nnp(*opts: str) -> str:
        return status_fields(sh(tools, img, "cat /proc/self/status", *opts).out)["NoNewPrivs"]

    assert nnp() == "0"  # off by default, as Docker's
    for opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
        assert nnp("--security-opt", opt) == "1", opt
    assert nnp("--security-opt", "no-new-privileges:false") == "0"
    one_line_error(run(tools, "--security-opt", "apparmor=unconfined", img, "true"), 125, "unsupported --security-opt")
    # /bin/suid-test is a setuid-root busybox; busybox drops privileges for most applets, not for ping, which
    # needs a raw socket: as user strata it works only through the setuid bit, and then runs with euid 0.
    ping = "ln -s /bin/suid-test /tmp/ping; /tmp/ping -c 1 127.0.0.1 >/dev/null 2>&1; echo ping=$?"
    euid = ("/tmp/ping -c 100 -i 0.2 127.0.0.1 >/dev/null 2>&1 & p=$!; for i in $(seq 100); do "
            "u=$(grep -E '^(Uid|CapEff)' /proc/$p/status | tr -s '\\t' ' '); case $u in *'1000 0 0 0'*) break;; "
            "esac; sleep 0.05; done; echo $u; kill $p")
    gains = sh(tools, img, f"{ping}; {euid}", "-u", "strata")
    assert gains.out == f"ping=0\nUid: 1000 0 0 0 CapEff: {DOCKER_DEFAULT_CAPS}\n", gains.err
    plain = sh(tools, img, "ping -c 1 127.0.0.1", "-u", "strata")
    assert plain.code == 1 and "permission denied" in plain.err  # without the setuid bit: no raw socket
    kept_out = sh(tools, img, ping, "-u", "strata", "--security-opt", "no-new-privileges")
    assert kept_out.out == "ping=1\n", kept_out.err


# -- what a container sees by default ---------------------------------------------------------------------------


def test_default_isolation_from_inside(tools: Tools, img: str) -> None:
    result = sh(tools, img, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; cat /proc/self/cgroup; "
                f"ps -o pid,args; [ -e /proc/{os.getpid()} ] && echo HOST-PID-VISIBLE; cat /proc/net/dev")
    assert result.code == 0, result.err
    fields = status_fields(result.out)
    assert (fields["CapEff"], fields["CapBnd"], fields["NoNewPrivs"]) == (DOCKER_DEFAULT_CAPS, DOCKER_DEFAULT_CAPS,
                                                                           "0")
    cgroup_lines = [line for line in result.out.splitlines() if re.fullmatch(r"\d+:[^:]*:.*", line)]
    assert cgroup_lines and all(line.endswith(":/") for line in cgroup_lines)  # its own cgroup namespace
    ps_lines = result.out.split("PID   COMMAND\n")[1].splitlines()
    pids = [line.split()[0] for line in ps_lines if re.match(r"\s*\d+ ", line)]
    assert pids[0] == "1" and len(pids) == 2, ps_lines  # sh and ps: no host process
    assert "HOST-PID-VISIBLE" not in result.out.splitlines()
    net_dev = result.out.split(" face |")[1].splitlines()[1:]
    interfaces = [line.split(":")[0].strip() for line in net_dev]
    assert interfaces == ["lo"]


def test_masked_and_read_only_paths(tools: Tools, img: str) -> None:
    present = [p for p in MASKED_PATHS if os.path.exists(p)]  # the same kernel inside: what the host has
    assert present, "no masked path exists on this kernel"
    checks = "; ".join(f"echo {p}; stat -c %F {p}; ls -A {p}" if os.path.isdir(p) else
                       f"echo {p}; stat -c '%F %t:%T' {p}; wc -c < {p}" for p in present)
    masked = sh(tools, img, checks)
    assert masked.code == 0, masked.err
    out = iter(masked.out.splitlines())
    for path in present:
        assert next(out) == path
        if os.path.isdir(path):
            assert next(out) == "directory"  # an empty tmpfs over it: ls prints nothing
        else:
            assert (next(out), next(out)) == ("character special file 1:3", "0")  # /dev/null over it
    assert next(out, None) is None, masked.out
    ro = sh(tools, img, "echo strata > /proc/sys/kernel/domainname; echo sys=$?; "
            "[ -e /proc/sysrq-trigger ] && { echo h > /proc/sysrq-trigger; echo sysrq=$?; }; "
            "touch /sys/kernel/strata; echo sysfs=$?; cat /proc/mounts")
    assert ro.out.startswith("sys=1\n" + ("sysrq=1\n" if os.path.exists("/proc/sysrq-trigger") else "") + "sysfs=1\n")
    assert "Read-only file system" in ro.err
    mounts = {line.split()[1]: line.split()[3].split(",") for line in ro.out.splitlines() if line.count(" ") >= 5}
    for path in (p for p in READONLY_PATHS if os.path.exists(p)):
        assert "ro" in mounts.get(path, []), (path, mounts.get(path))
    assert "ro" in mounts["/sys"]


def test_devices_and_mount_refused(tools: Tools, img: str, tmp_path: Path, executor: str) -> None:
    """The same /dev under every executor, and a block node made with CAP_MKNOD cannot be opened anywhere: ours
    mounts nodev (each node bound), and so does runner-oci; runc and crun rely on the devices cgroup (EPERM) where
    they leave dev set. runc and runner-oci make no /dev/core link (Docker's is its own addition), and the runtimes
    mount in the spec's order."""
    disk = os.stat("/").st_dev  # the host's root file system's block device
    major, minor = os.major(disk), os.minor(disk)
    script = ("ls -A /dev; " + "; ".join(f"stat -c '%n %F %t:%T' /dev/{d}" for d in DEVICES) +
              "; for l in ptmx fd stdin stdout stderr; do readlink /dev/$l; done; grep -E ' /dev/(pts|shm|mqueue) ' "
              "/proc/mounts | cut -d' ' -f2,3; echo x > /dev/null && head -c 3 /dev/zero | wc -c && "
              "head -c 5 /dev/urandom | wc -c; echo x > /dev/full || echo full-refused; "
              f"for n in /tmp/disk /dev/disk /v/disk; do mknod -m 600 $n b {major} {minor} && echo made $n; "
              "head -c 1 $n >/dev/null; done; mount -t tmpfs x /tmp; echo mount=$?")
    result = sh(tools, img, script, "-v", f"{tmp_path}:/v")
    try:
        lines = iter(result.out.splitlines())
        # runner-oci makes runc's /dev links (runner/oci/mounts.py DEV_LINKS): no /dev/core either
        entries = DEV_ENTRIES - {"core"} if executor in ("runc", "runner-oci") else DEV_ENTRIES
        listing = {next(lines) for _ in entries}
        assert listing == entries, result.out
        for name, numbers in DEVICES.items():
            major_hex, minor_hex = (format(int(n), "x") for n in numbers.split(":"))
            assert next(lines) == f"/dev/{name} character special file {major_hex}:{minor_hex}"
        rest = list(lines)
        assert rest[:5] == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1", "/proc/self/fd/2"]
        assert sorted(rest[5:8]) == ["/dev/mqueue mqueue", "/dev/pts devpts", "/dev/shm tmpfs"]
        assert rest[8:] == ["3", "5", "full-refused", "made /tmp/disk", "made /dev/disk", "made /v/disk", "mount=1"]
        # CAP_MKNOD is Docker's default, but a node made with it cannot be opened: nodev, or the devices cgroup
        refused = [line for line in result.err.splitlines() if line.startswith("head: ")]
        assert [line.split(":")[1].strip() for line in refused] == ["/tmp/disk", "/dev/disk", "/v/disk"], result.err
        assert all(line.endswith(("Permission denied", "Operation not permitted")) for line in refused), result.err
        if executor in ("strata", "runner-oci"):  # runner-oci's /dev is nodev as ours (runner/oci/mounts.py)
            assert result.err.count("Permission denied") == 3, result.err
        assert "mount: permission denied" in result.err
    finally:
        if os.path.lexists(tmp_path / "disk"):
            assert stat.S_ISBLK(os.lstat(tmp_path / "disk").st_mode)
            os.unlink(tmp_path / "disk")


def test_container_processes_start_with_default_signal_dispositions(tools: Tools, img: str) -> None:
    """Docker's containers start with no signal ignored; a Python runner ignores SIGPIPE and SIGXFSZ itself, and
    may inherit more (nohup: SIGHUP), which must not reach the command: ``yes | head`` must end yes by SIGPIPE."""
    result = sh(tools, img, "grep -E '^Sig(Ign|Blk)' /proc/self/status; (yes; echo \"yes: $?\" >&2) | head -n 1")
    assert status_fields(result.out) == {"SigBlk": "0" * 16, "SigIgn": "0" * 16}, result.out
    assert result.err == "yes: 141\n"  # 128 + SIGPIPE, and no "Broken pipe" message
    with detached(tools, img, "sleep", "60") as cid:
        inside = tools.runner("exec", cid, "grep", "SigIgn", "/proc/self/status")
        assert inside.out == "SigIgn:\t" + "0" * 16 + "\n"


def test_cgroup_v2_backend_on_the_v2_hierarchy_here() -> None:
    """These machines mount cgroup v2 beside v1 (/sys/fs/cgroup/unified) with no memory/cpu/pids controller in
    it: the v2 backend can still be shown to create, join, list and remove, and to refuse a limit it cannot set."""
    import os
    import subprocess
    from pathlib import Path

    from runner.isolation import cgroups
    from shared.errors import StrataError

    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.controllers").exists():
        pytest.skip("no cgroup v2 hierarchy mounted at /sys/fs/cgroup/unified")
    group = cgroups.CgroupV2(f"strata-test-{os.getpid()}", root=unified)
    available = (unified / "cgroup.controllers").read_text().split()
    if "memory" not in available:
        with pytest.raises(StrataError, match="memory controller is not available"):
            group.create(cgroups.Limits(memory=64 << 20))
    group.create(cgroups.Limits())
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        group.add(sleeper.pid)
        assert group.procs() == [sleeper.pid]
        assert f"0::/strata/strata-test-{os.getpid()}" in Path(f"/proc/{sleeper.pid}/cgroup").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
        group.remove()
        if not any(p.is_dir() for p in group.parent.iterdir()):
            group.parent.rmdir()  # the test made it; the runner keeps it as Docker keeps its slice
    assert not group.exists()
