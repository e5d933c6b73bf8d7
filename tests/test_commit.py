"""``runner commit`` (issue 9): the rw layer, never the -init layer, becomes a layer; the new image runs at once,
keeps deletions (whiteouts) and replaced directories (opaque), takes --change and -m, is the same image when the
same stopped container is committed twice, and reads back with skopeo and umoci. A running container is frozen
while its layer is packed and runs on after. Crash safety and a full disk as for pull (issue 13)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import images
from tests.marks import needs_root, needs_tools
from tests.test_full_disk import small_disk, used_bytes
from tests.tools import ROOT, Tools, detached, one_line_error, puller_inspect, runner_command, wait_until

pytestmark = [needs_root, needs_tools]
__all__ = ["small_disk"]  # the fixture, shared with the pull's full-disk test

FREEZER = Path("/sys/fs/cgroup/freezer")
EDIT = ("echo changed > /etc/layer1.txt; rm /etc/layer2.txt; rm -rf /data && mkdir /data && echo fresh > "
        "/data/only.txt; echo hi > /new.txt; echo 10.9.9.9 intruder >> /etc/hosts; echo evil > /etc/hostname; "
        "echo nameserver 10.9.9.9 >> /etc/resolv.conf")


@pytest.fixture
def pulled(stored_test_image: str, executor: str) -> str:
    """The session test image, pulled; the test runs once per executor (ours, runc, crun)."""
    return stored_test_image


@pytest.fixture
def pulled_once(stored_test_image: str) -> str:
    """The session test image, pulled, for a test that runs once: what it checks is the store's, not the
    executor's (the rw layer is packed from the host whichever executor ran the container)."""
    return stored_test_image



def top_layer(tools: Tools, ref: str) -> dict[str, tarfile.TarInfo]:
    """The committed layer's tar, read from the store's blob: name -> entry."""
    layers = puller_inspect(tools, ref)["Layers"]
    assert isinstance(layers, list)
    blob = tools.root / "blobs" / "sha256" / layers[-1]["Digest"].removeprefix("sha256:")
    with tarfile.open(blob, "r:gz") as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def config_of(tools: Tools, ref: str) -> dict[str, object]:
    image_id = str(puller_inspect(tools, ref)["Id"])
    doc: dict[str, object] = json.loads((tools.root / "blobs/sha256" / image_id.removeprefix("sha256:")).read_text())
    return doc


def commit(tools: Tools, *args: str) -> str:
    result = tools.runner("commit", *args)
    assert result.code == 0, result.err
    image_id = result.out.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71, result.out
    return image_id


def test_commit_runs_with_the_changes_whiteouts_and_opaque_dirs(tools: Tools, pulled_once: str) -> None:
    made = tools.runner("run", "--name", "edit", pulled_once, "sh", "-c", EDIT)
    assert made.code == 0, made.err
    image_id = commit(tools, "-m", "edited by a test", "edit", "localhost/committed:1")
    assert puller_inspect(tools, "localhost/committed:1")["Id"] == image_id
    ran = tools.runner("run", "--rm", "localhost/committed:1", "sh", "-c",
                       "cat /etc/layer1.txt /new.txt; ls /data; test -e /etc/layer2.txt && echo STILL-THERE; "
                       "cat /etc/passwd | head -1")
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == ["changed", "hi", "only.txt", "root:x:0:0:root:/root:/bin/sh"]

    entries = top_layer(tools, "localhost/committed:1")
    assert "etc/.wh.layer2.txt" in entries  # rm'd: a whiteout
    assert "data/.wh..wh..opq" in entries and "data/only.txt" in entries  # rm -rf && mkdir: opaque
    assert "data/new.txt" not in entries
    # nothing of the -init layer nor of the container's own hosts/hostname/resolv.conf
    for name in ("etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", "dev/console", "proc", "sys", "dev"):
        assert name not in entries and f"{name.rpartition('/')[0]}/.wh.{name.rpartition('/')[2]}" not in entries
    history = config_of(tools, "localhost/committed:1")["history"]
    assert isinstance(history, list)
    assert history[-1]["comment"] == "edited by a test" and history[-1]["created_by"].startswith("sh -c echo")
    checked = tools.puller("fsck")
    assert checked.code == 0, checked.out + checked.err


def test_commit_twice_gives_the_same_image(tools: Tools, pulled_once: str) -> None:
    assert tools.runner("run", "--name", "twice", pulled_once, "sh", "-c", EDIT).code == 0
    first = commit(tools, "twice", "localhost/twice:a")
    second = commit(tools, "twice", "localhost/twice:b")
    again = commit(tools, "twice", "localhost/twice:a")
    assert first == second == again
    assert puller_inspect(tools, "localhost/twice:a")["ManifestDigest"] == puller_inspect(tools, "localhost/twice:b")[
        "ManifestDigest"]
    assert not list((tools.root / "tmp").iterdir())


def test_changes_take_effect_on_run(tools: Tools, pulled_once: str) -> None:
    assert tools.runner("run", "--name", "cfg", pulled_once, "sh", "-c", "mkdir -p /srv/app && echo app > /srv/app/f")\
        .code == 0
    commit(tools, "-c", "ENV GREETING=hello OTHER=\"two words\"", "-c", "WORKDIR /srv", "-c", "WORKDIR app",
           "-c", 'CMD ["sh", "-c", "echo $GREETING/$OTHER; pwd; cat f"]', "-c", "LABEL purpose=test",
           "-c", "EXPOSE 8080 53/udp", "-c", "USER 1000", "--change=STOPSIGNAL SIGINT", "cfg", "localhost/cfg:1")
    ran = tools.runner("run", "--rm", "localhost/cfg:1")
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == ["hello/two words", "/srv/app", "app"]
    assert tools.runner("run", "--rm", "localhost/cfg:1", "id", "-u").out.strip() == "1000"
    config = config_of(tools, "localhost/cfg:1")["config"]
    assert isinstance(config, dict)
    assert config["Labels"] == {"purpose": "test"} and config["StopSignal"] == "SIGINT"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    shell_form = commit(tools, "-c", "CMD echo shell form", "cfg", "localhost/cfg:2")
    assert shell_form != ""
    ran = tools.runner("run", "--rm", "localhost/cfg:2")
    assert ran.out == "shell form\n", ran.err


def test_bad_input_is_one_line(tools: Tools, pulled_once: str) -> None:
    assert tools.runner("run", "--name", "bad", pulled_once, "true").code == 0
    one_line_error(tools.runner("commit", "-c", "RUN rm -rf /", "bad", "localhost/x:1"), 125,
                   "RUN is not a valid change command")
    one_line_error(tools.runner("commit", "nosuch", "localhost/x:1"), 125, "no such container: nosuch")
    one_line_error(tools.runner("commit", "bad", "Not/Valid"), 125, "invalid reference format")
    one_line_error(tools.runner("commit", "bad", "localhost/x@sha256:" + "a" * 64), 125, "digest reference")
    one_line_error(tools.runner("commit", "--pause=maybe", "bad", "localhost/x:1"), 125, "true or false")
    assert tools.puller("rmi", "--force", pulled_once).code == 0
    one_line_error(tools.runner("commit", "bad", "localhost/x:1"), 125, "is no longer in the store")
    assert "localhost/x" not in (tools.root / "index.json").read_text()


def test_store_reads_back_with_skopeo_and_umoci(tools: Tools, pulled_once: str, tmp_path: Path) -> None:
    assert tools.runner("run", "--name", "peer", pulled_once, "sh", "-c", EDIT).code == 0
    commit(tools, "peer", "localhost/peer:1")
    manifest_digest = puller_inspect(tools, "localhost/peer:1")["ManifestDigest"]
    out = subprocess.run(["skopeo", "inspect", f"oci:{tools.root}:localhost/peer:1"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["Digest"] == manifest_digest and len(json.loads(out)["Layers"]) == 3
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{tools.root}:localhost/peer:1", str(bundle)], check=True,
                   capture_output=True)
    rootfs = bundle / "rootfs"
    assert (rootfs / "etc/layer1.txt").read_text() == "changed\n"
    assert not (rootfs / "etc/layer2.txt").exists()
    assert sorted(p.name for p in (rootfs / "data").iterdir()) == ["only.txt"]


def test_commit_of_a_docker_schema2_image_is_oci(tools: Tools, v2s2_variant: images.Variant) -> None:
    """The new manifest is OCI: the parent's Docker layer types take their OCI names (same bytes)."""
    assert tools.puller("pull", "--quiet", v2s2_variant.ref).code == 0
    assert tools.runner("run", "--name", "v2", v2s2_variant.ref, "sh", "-c", "echo v2 > /v2").code == 0
    commit(tools, "v2", "localhost/v2:1")
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{tools.root}:localhost/v2:1"], capture_output=True,
                         text=True, check=True).stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == images.OCI_MANIFEST and manifest["config"]["mediaType"] == images.OCI_CONFIG
    assert {layer["mediaType"] for layer in manifest["layers"]} == {images.OCI_LAYER_GZIP}
    assert tools.runner("run", "--rm", "localhost/v2:1", "cat", "/v2").out == "v2\n"

def freezer_state(container_id: str) -> str | None:
    """The state of the v1 freezer group the pause uses, under this process's group (the runner's): the one our
    freezer makes next to the container's processes, or runc's and crun's own (crun's is at the root, the same
    place while this process is there), or None when there is none."""
    own = "/"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            own = path
    try:
        return (FREEZER / own.lstrip("/") / f"strata-{container_id}" / "freezer.state").read_text().strip()
    except OSError:
        return None


def assert_frozen_while_it_runs(commit: subprocess.Popen[str], state: Callable[[], str | None], count: Path) -> None:
    """While COMMIT runs: the container's freezer STATE is seen FROZEN, and whenever it is, the writer's COUNT stands
    still; then the commit succeeds. The pipes are drained by a thread (a full pipe would stall the commit)."""
    out: list[str] = []
    drain = threading.Thread(target=lambda: out.extend(commit.communicate(timeout=300)))
    drain.start()
    seen: list[tuple[str, str]] = []
    while drain.is_alive():
        if state() == "FROZEN":
            before = count.read_text()
            time.sleep(0.05)
            if state() == "FROZEN":
                seen.append((before, count.read_text()))
        time.sleep(0.001)
    drain.join()
    assert commit.returncode == 0, out
    assert seen, "never saw the container frozen during the commit"
    assert all(before == after for before, after in seen), seen


def assert_thawed(container_id: str, executor: str) -> None:
    """After a commit: our freezer group is gone (its processes back home); an OCI runtime's own group stays,
    thawed, until the runtime deletes the container."""
    assert freezer_state(container_id) == (None if executor == "strata" else "THAWED"), "left frozen or behind"


def test_running_container_is_frozen_during_the_pack_and_runs_on(tools: Tools, pulled: str, executor: str) -> None:
    """A writer inside counts as fast as it can; while the freezer says FROZEN its count stands still, and after
    the commit it goes on. A large file makes the pack long enough to look at it."""
    if not FREEZER.is_dir():
        pytest.skip("the test watches the v1 freezer hierarchy")
    counter = "head -c 200000000 /dev/urandom > /big; i=0; while :; do i=$((i+1)); echo $i > /count; done"
    with detached(tools, "--name", "busy", pulled, "sh", "-c", counter) as cid:
        count = tools.root / "containers" / cid / "upper" / "count"
        wait_until(lambda: count.exists() and count.read_text().strip() != "", "the writer to start")
        proc = subprocess.Popen(runner_command(tools, "commit", "busy", "localhost/busy:1"), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert_frozen_while_it_runs(proc, lambda: freezer_state(cid), count)
        assert_thawed(cid, executor)
        after = count.read_text()
        wait_until(lambda: count.read_text() != after, "the writer to go on after the commit")
        assert tools.runner("ps", "-q").out.split() == [cid[:12]]
    ran = tools.runner("run", "--rm", "localhost/busy:1", "sh", "-c", "test -e /count && wc -c < /big")
    assert ran.code == 0 and ran.out.strip() == "200000000", ran.err


@pytest.fixture
def nested_cgroups() -> Iterator[list[Path]]:
    """A throwaway group of the test's own under this process's group in every v1 hierarchy and the unified one,
    for a runner that is nowhere at a hierarchy's root (as a user's shell in a session scope is). Removed after,
    once whatever ran in it is gone."""
    name = f"strata-test-nest-{os.getpid()}-{time.monotonic_ns()}"
    groups = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mount = Path("/sys/fs/cgroup", controllers.split(",")[0].removeprefix("name=") or "unified")
        if mount.is_dir():
            groups.append(mount / path.lstrip("/") / name)
    for group in groups:
        group.mkdir()
        for knob in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset group takes no process until they are set
            if (group / knob).exists():
                (group / knob).write_text((group.parent / knob).read_text())
    try:
        yield groups
    finally:
        for group in groups:
            wait_until(emptied(group), f"{group} to empty")
            group.rmdir()


def emptied(group: Path) -> Callable[[], bool]:
    return lambda: not (group / "cgroup.procs").read_text().strip()


def in_groups(groups: list[Path]) -> Callable[[], None]:
    """A preexec_fn that puts the child in GROUPS before it execs the runner."""
    def join() -> None:
        for group in groups:
            (group / "cgroup.procs").write_text(str(os.getpid()))
    return join


def freezer_state_of(pid: int) -> str | None:
    """The freezer state of the group PID is in, wherever the executor put it."""
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "freezer" in controllers.split(","):
                return (FREEZER / path.lstrip("/") / "freezer.state").read_text().strip()
    except OSError:
        return None
    return None


def test_commit_pauses_the_container_when_the_runner_is_in_a_nested_cgroup(
        tools: Tools, pulled: str, executor: str, nested_cgroups: list[Path]) -> None:
    """A runner that is not in the root group of each hierarchy: crun puts the container's groups at the roots,
    runc under its own; ``commit`` pauses through the runtime (``pause``/``resume``), which finds them, where the
    runner's freezer looked under its own group, found no process and packed a running container unpaused."""
    if not FREEZER.is_dir():
        pytest.skip("the test watches the v1 freezer hierarchy")
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    counter = "head -c 100000000 /dev/urandom > /big; i=0; while :; do i=$((i+1)); echo $i > /count; done"
    started = subprocess.run(runner_command(tools, "run", "-d", "--name", "nested", pulled, "sh", "-c", counter),
                             cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=in_groups(nested_cgroups))
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        pid = int(tools.runner("inspect", "-f", "{{.State.Pid}}", cid).out)
        count = tools.root / "containers" / cid / "upper" / "count"
        wait_until(lambda: count.exists() and count.read_text().strip() != "", "the writer to start")
        proc = subprocess.Popen(runner_command(tools, "commit", "nested", "localhost/nested:1"), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=in_groups(nested_cgroups))
        assert_frozen_while_it_runs(proc, lambda: freezer_state_of(pid), count)
        after = count.read_text()
        wait_until(lambda: count.read_text() != after, "the writer to go on after the commit")
    finally:
        tools.runner("rm", "-f", cid)


def test_no_pause_packs_a_running_container_live(tools: Tools, pulled: str, executor: str) -> None:
    with detached(tools, "--name", "live", pulled, "sh", "-c", "echo ready > /ready; sleep 600") as cid:
        wait_until(lambda: (tools.root / "containers" / cid / "upper" / "ready").exists(), "the container")
        image_id = commit(tools, "--pause=false", "live", "localhost/live:1")
        # never frozen; runc and crun make the container a freezer group of their own, ours makes none
        assert freezer_state(cid) == (None if executor == "strata" else "THAWED")
        assert tools.runner("ps", "-q").out.split() == [cid[:12]]
    assert tools.runner("run", "--rm", "localhost/live:1", "cat", "/ready").out == "ready\n"
    assert image_id == puller_inspect(tools, "localhost/live:1")["Id"]


# -- crash safety and a full disk (issue 13) ---------------------------------------------------------------------

FILL = "i=0; while [ $i -lt 2000 ]; do mkdir d$i && echo x > d$i/f; i=$((i+1)); done; head -c 30000000 /dev/urandom > r"


def test_commit_killed_at_any_moment(tools: Tools, pulled_once: str) -> None:
    """As rm's crash test: kill -9 after a delay (a crash point, not a measurement) spread over a whole commit's
    time, while it packs, stores and unpacks a layer of many files; fsck is then clean and the commit run again
    succeeds with the same image. Each round starts from a store without that layer (rmi), so that every round
    goes through every step."""
    made = tools.runner("run", "--name", "big", "-w", "/fill", pulled_once, "sh", "-c", f"mkdir -p /fill; {FILL}")
    assert made.code == 0, made.err
    started = time.monotonic()
    reference_id = commit(tools, "big", "localhost/big:ref")
    whole = time.monotonic() - started
    assert tools.puller("rmi", "localhost/big:ref").code == 0
    for n, fraction in enumerate((0.05, 0.3, 0.55, 0.8, 0.95)):  # the pack's start and end, and three between
        proc = subprocess.Popen(runner_command(tools, "commit", "big", f"localhost/big:{n}"), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        checked = tools.puller("fsck")
        assert checked.code == 0, f"after a kill at {fraction:.0%}:\n{checked.out}{checked.err}"
        assert commit(tools, "big", f"localhost/big:{n}") == reference_id
        checked = tools.puller("fsck")
        assert checked.code == 0 and "litter" not in checked.out.lower(), checked.out
        ran = tools.runner("run", "--rm", f"localhost/big:{n}", "sh", "-c", "ls /fill | wc -l")
        assert ran.out.strip() == "2001", ran.err
        assert tools.puller("rmi", f"localhost/big:{n}").code == 0


def test_commit_killed_while_the_container_is_frozen(tools: Tools, pulled: str, executor: str) -> None:
    """kill -9 of a pausing commit leaves the container frozen (as a killed Docker leaves it paused); the same
    commit run again succeeds and thaws it, and the store is clean throughout."""
    if not FREEZER.is_dir():
        pytest.skip("the test watches the v1 freezer hierarchy")
    counter = "head -c 200000000 /dev/urandom > /big; i=0; while :; do i=$((i+1)); echo $i > /count; done"
    with detached(tools, "--name", "busy", pulled, "sh", "-c", counter) as cid:
        count = tools.root / "containers" / cid / "upper" / "count"
        wait_until(lambda: count.exists() and count.read_text().strip() != "", "the writer to start")
        proc = subprocess.Popen(runner_command(tools, "commit", "busy", "localhost/busy:1"), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: freezer_state(cid) == "FROZEN" or proc.poll() is not None, "the pause")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        checked = tools.puller("fsck")
        assert checked.code == 0, checked.out + checked.err
        again = tools.runner("commit", "busy", "localhost/busy:1")
        assert again.code == 0, again.err
        assert_thawed(cid, executor)
        after = count.read_text()
        wait_until(lambda: count.read_text() != after, "the writer to go on after the commit")
    checked = tools.puller("fsck")
    assert checked.code == 0 and "litter" not in checked.out.lower(), checked.out

def test_container_a_killed_commit_left_frozen_can_be_removed(tools: Tools, pulled: str) -> None:
    """A frozen process takes no signal, SIGKILL included: ``rm -f`` (and stop, kill) thaw what a killed commit
    left frozen first, so the container goes, with its processes and cgroups."""
    if not FREEZER.is_dir():
        pytest.skip("the test watches the v1 freezer hierarchy")
    counter = "head -c 200000000 /dev/urandom > /big; while :; do :; done"
    made = tools.runner("run", "-d", "--name", "stuck", pulled, "sh", "-c", counter)
    assert made.code == 0, made.err
    cid = made.out.strip()
    try:
        big = tools.root / "containers" / cid / "upper" / "big"
        wait_until(lambda: big.exists() and big.stat().st_size > 100_000_000, "the file to grow")
        proc = subprocess.Popen(runner_command(tools, "commit", "stuck", "localhost/stuck:1"), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: freezer_state(cid) == "FROZEN" or proc.poll() is not None, "the pause")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert freezer_state(cid) == "FROZEN"
    finally:
        removed = tools.runner("rm", "-f", "stuck")
    assert removed.code == 0, removed.err
    assert freezer_state(cid) is None
    assert not (tools.root / "containers" / cid).exists()


@pytest.mark.parametrize(("megabytes", "where"), [(24, "for the layer of container fat"),
                                                   (18, "while unpacking layer 3")])
def test_commit_into_a_full_disk(tools: Tools, small_disk: Path, test_image: str, megabytes: int, where: str) \
        -> None:
    """On a 48 MiB store, a rw layer of MEGABYTES that do not compress: at 24 its blob does not fit beside it
    (the pack fails), at 18 the blob fits but its unpacked copy does not (the store sink's unpack fails)."""
    subprocess.run(["mount", "-o", "remount,size=48m", str(small_disk)], check=True)
    full = Tools(small_disk / "root", tools.docker_config, tools.settings)
    assert full.puller("pull", "--quiet", test_image).code == 0
    made = full.runner("run", "--name", "fat", test_image, "sh", "-c",
                       f"head -c {megabytes * 1000000} /dev/urandom > /fat")
    assert made.code == 0, made.err
    used_before = used_bytes(small_disk)
    index_before = (full.root / "index.json").read_bytes()
    layers_before = sorted(p.name for p in (full.root / "layers").iterdir())
    blobs_before = sorted(p.name for p in (full.root / "blobs/sha256").iterdir())
    result = full.runner("commit", "fat", "localhost/fat:1")
    one_line_error(result, 125, f"no space left on device {where}")
    assert not list((full.root / "tmp").iterdir()), "work in progress kept"
    assert sorted(p.name for p in (full.root / "layers").iterdir()) == layers_before, "a partial layer kept"
    assert sorted(p.name for p in (full.root / "blobs/sha256").iterdir()) == blobs_before, "a blob kept"
    assert (full.root / "index.json").read_bytes() == index_before
    assert used_bytes(small_disk) - used_before < 256 * 1024, "the space was not given back"
    checked = full.puller("fsck")
    assert checked.code == 0, checked.out + checked.err
    subprocess.run(["mount", "-o", "remount,size=128m", str(small_disk)], check=True)
    commit(full, "fat", "localhost/fat:1")
    ran = full.runner("run", "--rm", "localhost/fat:1", "sh", "-c", "wc -c < /fat")
    assert ran.out.strip() == str(megabytes * 1000000), ran.err
    assert full.runner("rm", "fat").code == 0
