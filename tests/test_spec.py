"""The runner's shape (issue 10): a container is one typed OCI runtime-spec ``config.json`` made by ``create``,
run by ``start``, and released by one idempotent ``release``; the store's GC knows containers only by the holds
they take on layers.

Real containers from the session test image in the test's own store; ``no_leaks`` checks that no cgroup and no
process is left, ``tools`` that no mount is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema

from tests.cgroups import container_cgroup
from tests.marks import needs_root, needs_tools
from tests.tools import Tools, detached, one_line_error, wait_until

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def img(tools: Tools, test_image: str, no_leaks: None) -> str:
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    return test_image


def layer_dirs(tools: Tools) -> set[str]:
    return set(os.listdir(tools.root / "layers"))


# -- the GC knows containers only by their holds ------------------------------------------------------------------


def test_a_containers_layers_survive_a_forced_rmi_of_its_image(tools: Tools, img: str) -> None:
    assert tools.runner("run", "--name", "keeper", img, "true").code == 0
    held = json.loads((tools.root / "holds").joinpath(os.listdir(tools.root / "holds")[0]).read_text())
    assert (held["kind"], held["name"]) == ("container", "keeper")
    layers = layer_dirs(tools)
    assert {c.removeprefix("sha256:") for c in held["layers"]} == layers
    refused = tools.puller("rmi", img)
    assert refused.code != 0 and "in use by container keeper" in refused.err
    assert tools.puller("rmi", "--force", img).code == 0
    assert layer_dirs(tools) == layers  # the container still rests on them
    assert tools.runner("run", "--rm", "--pull", "never", img, "true").code != 0  # gone: only the container has them
    assert tools.puller("fsck").code == 0
    assert tools.runner("rm", "keeper").code == 0
    assert os.listdir(tools.root / "holds") == []


def test_an_unreadable_hold_keeps_every_layer_and_says_so(tools: Tools, img: str) -> None:
    holds = tools.root / "holds"
    holds.mkdir(exist_ok=True)
    (holds / "broken.json").write_text("{not json")
    layers = layer_dirs(tools)
    removed = tools.puller("rmi", img)
    assert removed.code == 0, removed.err
    assert "WARNING: unreadable hold holds/broken.json" in removed.err
    assert "keeping every layer" in removed.err
    assert layer_dirs(tools) == layers
    found = tools.puller("fsck")
    assert found.code == 1 and "hold holds/broken.json" in found.out
    (holds / "broken.json").unlink()
    assert tools.puller("pull", img).code == 0 and tools.puller("rmi", img).code == 0
    assert layer_dirs(tools) == set()  # a later GC with every hold readable takes them


# -- the spec is an OCI runtime-spec document ---------------------------------------------------------------------

SCHEMA_DIR = Path(__file__).resolve().parent / "runtime_spec_schema"


def runtime_spec_validator() -> jsonschema.protocols.Validator:
    """config-schema.json with its references resolved to the vendored files by name, whatever base URI the
    draft-04 ``id``s in config-linux.json give them."""

    def retrieve(uri: str) -> referencing.Resource[Any]:
        path = SCHEMA_DIR / uri.rsplit("/", 1)[-1]
        return referencing.Resource.from_contents(json.loads(path.read_text()), referencing.jsonschema.DRAFT4)

    schema = json.loads((SCHEMA_DIR / "config-schema.json").read_text())
    registry: referencing.Registry[Any] = referencing.Registry(retrieve=retrieve)  # type: ignore[call-arg]
    return jsonschema.Draft4Validator(schema, registry=registry)


def test_the_vendored_schema_refuses_what_it_should() -> None:
    validator = runtime_spec_validator()
    assert list(validator.iter_errors({"ociVersion": "1.0.2", "process": {"cwd": "/", "args": ["x"]}})) == []
    assert list(validator.iter_errors({"process": {"cwd": "/"}}))  # no ociVersion
    assert list(validator.iter_errors({"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "nosuch"}]}}))
    assert list(validator.iter_errors({"ociVersion": "1.0.2", "mounts": [{"source": "/x"}]}))  # no destination


def spec_of(tools: Tools, name: str) -> dict[str, Any]:
    return json.loads(tools.runner("inspect", name).out)[0]["Spec"]


@pytest.mark.parametrize("options", [
    (),
    ("-t", "-i", "--init", "-u", "1000:1000", "-e", "A=1", "-w", "/tmp", "-m", "64m", "--cpus", "0.5",
     "--pids-limit", "50", "--cap-add", "SYS_ADMIN", "--cap-drop", "CHOWN", "--read-only",
     "--security-opt", "no-new-privileges", "-v", "/tmp:/host-tmp:ro", "--tmpfs", "/scratch:size=1m"),
    ("--privileged",),
    ("--security-opt", "seccomp=unconfined", "-u", "nobody"),
], ids=["defaults", "every-option", "privileged", "unconfined"])
def test_the_saved_spec_validates_against_the_runtime_spec_schema(tools: Tools, img: str,
                                                                   options: tuple[str, ...]) -> None:
    created = tools.runner("create", "--name", "cc", *options, img, "sh", "-c", "exit 3")
    assert created.code == 0, created.err
    cid = created.out.strip()
    saved = json.loads((tools.root / "containers" / cid / "config.json").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in runtime_spec_validator().iter_errors(saved)]
    assert errors == []
    assert spec_of(tools, "cc") == saved  # inspect shows the spec as saved
    assert saved["annotations"]["io.strata.container.id"] == cid
    assert json.loads(saved["annotations"]["io.strata.rootfs.layers"]) == \
        json.loads((tools.root / "holds" / f"{cid}.json").read_text())["layers"]
    assert tools.runner("rm", "cc").code == 0


def test_the_spec_holds_the_resolved_container(tools: Tools, img: str) -> None:
    created = tools.runner("create", "--name", "cc", "-t", "--init", "-u", "1000:1000", "-e", "A=1", "-m", "64m",
                           "--cpus", "0.5", "--pids-limit", "50", "--cap-drop", "ALL", "--cap-add", "KILL",
                           "--read-only", "-v", "/tmp:/host-tmp:ro", "--tmpfs", "/scratch:size=1m", img, "id")
    assert created.code == 0, created.err
    spec = spec_of(tools, "cc")
    process = spec["process"]
    assert process["args"] == ["/dev/init", "--", "id"] and process["terminal"] is True
    assert process["user"] == {"uid": 1000, "gid": 1000} and process["cwd"] == "/data"  # the image's WorkingDir
    assert "A=1" in process["env"] and "TERM=xterm" in process["env"]
    assert any(e.startswith("PATH=") for e in process["env"]) and "HOSTNAME=" + spec["hostname"] in process["env"]
    assert process["capabilities"]["bounding"] == ["CAP_KILL"] and process["capabilities"]["ambient"] == []
    assert [r["type"] for r in process["rlimits"]] == ["RLIMIT_NOFILE"]
    assert spec["root"] == {"path": "merged", "readonly": True}
    linux = spec["linux"]
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    devices = linux["resources"].pop("devices")
    assert devices[0] == {"allow": False, "access": "rwm"}  # runc's devices cgroup: only what the spec lists
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in devices
    assert linux["resources"] == {"memory": {"limit": 64 << 20}, "cpu": {"quota": 50000, "period": 100000},
                                  "pids": {"limit": 50}}
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert [d["path"] for d in linux["devices"]] == ["/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                                    "/dev/urandom", "/dev/tty"]
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/host-tmp"] == {"destination": "/host-tmp", "type": "bind", "source": "/tmp",
                                   "options": ["rbind", "ro", "rro", "nodev", "rnodev", "nosuid", "rnosuid"]}
    assert mounts["/scratch"]["type"] == "tmpfs" and "size=1m" in mounts["/scratch"]["options"]
    assert mounts["/dev/init"]["source"] == "/usr/bin/tini-static"
    assert {"/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/etc/hosts"} <= set(mounts)
    privileged = tools.runner("create", "--privileged", img, "true")
    spec = json.loads(tools.runner("inspect", privileged.out.strip()).out)[0]["Spec"]
    assert "seccomp" not in spec["linux"] and spec["linux"]["maskedPaths"] == []
    assert len(spec["process"]["capabilities"]["bounding"]) > 30
    assert tools.runner("rm", "cc", privileged.out.strip()).code == 0


# -- create, start, release -------------------------------------------------------------------------------------


def state_of(tools: Tools, name: str) -> dict[str, Any]:
    return json.loads(tools.runner("inspect", name).out)[0]["State"]


def test_create_then_start_attached_is_docker_run(tools: Tools, img: str) -> None:
    created = tools.runner("create", "--name", "job", img, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert created.code == 0, created.err
    cid = created.out.strip()
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid)
    assert state_of(tools, "job")["Status"] == "created"
    assert "Created" in tools.runner("ps", "-a").out
    assert tools.runner("ps", "-q").out == ""  # not running
    first = tools.runner("start", "-a", "job")
    assert (first.code, first.out, first.err) == (3, "out\n", "err\n")  # as docker start -a: its output, its code
    assert (state_of(tools, "job")["Status"], state_of(tools, "job")["ExitCode"]) == ("exited", 3)
    again = tools.runner("start", "-a", "job")  # Docker starts an exited container again, on the same rw layer
    assert (again.code, again.out, again.err) == (3, "out\n", "err\n")
    assert tools.runner("logs", "job").out == "out\nout\n"
    interactive = tools.runner("create", "-i", "--name", "cat", img, "cat")
    assert interactive.code == 0, interactive.err
    fed = tools.runner("start", "-a", "-i", "cat", stdin="through stdin\n")
    assert (fed.code, fed.out) == (0, "through stdin\n")
    assert tools.runner("rm", "job", "cat").code == 0
    removed = tools.runner("create", "--rm", "--name", "gone", img, "true")
    assert tools.runner("start", "-a", "gone").code == 0
    assert removed.out.strip()[:12] not in tools.runner("ps", "-a", "-q").out and os.listdir(tools.root / "holds") == []


def test_start_of_a_running_or_missing_container_as_docker(tools: Tools, img: str) -> None:
    assert tools.runner("create", "--name", "svc", img, "sleep", "60").code == 0
    started = tools.runner("start", "svc")
    assert (started.code, started.out) == (0, "svc\n")  # detached: the name, as given, once it runs
    state = state_of(tools, "svc")
    assert state["Status"] == "running"
    twice = tools.runner("start", "svc")  # Docker: already running is "not modified", no error
    assert (twice.code, twice.out) == (0, "svc\n")
    assert state_of(tools, "svc")["Pid"] == state["Pid"]  # the same PID 1: nothing was started again
    one_line_error(tools.runner("start", "-a", "svc"), 125, "container svc is already running")
    one_line_error(tools.runner("start", "-a", "svc", "other"), 125,
                   "you cannot start and attach multiple containers at once")
    one_line_error(tools.runner("start", "nosuch"), 125, "no such container: nosuch")
    assert tools.runner("stop", "-t", "1", "svc").code == 0
    assert state_of(tools, "svc")["Status"] == "exited"
    assert tools.runner("rm", "svc").code == 0


def test_create_then_rm_leaves_nothing(tools: Tools, img: str) -> None:
    created = tools.runner("create", "--name", "never", "-v", f"{tools.root.parent}/vol:/vol", img, "true")
    assert created.code == 0, created.err
    assert (tools.root / "containers" / created.out.strip()).is_dir()
    assert tools.runner("rm", "never").code == 0
    assert os.listdir(tools.root / "containers") == [] and os.listdir(tools.root / "holds") == []
    bad = tools.runner("create", "--memory", "1k", img, "true")  # refused at create: nothing is made
    one_line_error(bad, 125, "minimum memory limit allowed is 6MB")
    assert os.listdir(tools.root / "containers") == [] and os.listdir(tools.root / "holds") == []


def test_release_is_idempotent(tools: Tools, img: str) -> None:
    from runner.container.record import find
    from runner.container.release import release, remove
    from shared.store.layout import Store

    with detached(tools, "--name", "rel", img, "sleep", "60") as cid:
        group = container_cgroup("pids", cid)
        assert group.is_dir()
        assert tools.runner("kill", "rel").code == 0
        wait_until(lambda: state_of(tools, "rel")["Status"] == "exited", "the exit")
        container = find(Store(tools.root), "rel")
        release(container)  # the monitor released it already: again is a no-op
        release(container)
        assert not group.exists()
        remove(container)
        remove(container)  # and so is removing twice
        assert not (tools.root / "containers" / cid).exists() and os.listdir(tools.root / "holds") == []


def test_runc_runs_the_saved_spec(tools: Tools, img: str, tmp_path: Path) -> None:
    """runc is another executor of the same config.json: with the overlay the layer stack annotation plans mounted
    at root.path (here in a private mount namespace of the test's own), it runs the container as ours does."""
    runc = shutil.which("runc")
    assert runc is not None, "scripts/setup installs runc"
    created = tools.runner("create", "--hostname", "viarunc", "--tmpfs", "/scratch", img, "sh", "-c",
                           "hostname; grep -E '^(CapBnd|Seccomp):' /proc/self/status; cat /proc/self/cgroup; "
                           "touch /scratch/x; exit 7")
    assert created.code == 0, created.err
    cid = created.out.strip()
    bundle = tools.root / "containers" / cid
    layers = json.loads(json.loads((bundle / "config.json").read_text())["annotations"]["io.strata.rootfs.layers"])
    lower = ":".join(["init", *(f"l/{i}" for i in range(len(layers)))])
    script = (f"mount --make-rprivate / && mount -t overlay overlay -o lowerdir={lower},upperdir=upper,"
              f"workdir=work,redirect_dir=nofollow,metacopy=off merged && "
              f"exec {runc} --root {tmp_path / 'runc'} run --bundle {bundle} strata-{cid[:12]}")
    ran = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=bundle, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert ran.returncode == 7, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:3] == ["viarunc", "CapBnd:\t00000000a80425fb", "Seccomp:\t2"], ran.stdout  # Docker's defaults
    assert lines[3:] and all(line.endswith(":/") for line in lines[3:]), ran.stdout  # its own cgroup namespace
    assert tools.runner("rm", cid).code == 0
