"""Walking skeleton, end to end: an image built by umoci, pushed by skopeo to a real registry, pulled by
``puller`` into a temp store, run by ``runner`` in new namespaces."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.marks import needs_root, needs_tools
from tests.tools import Tools, mounts_under

pytestmark = [needs_root, needs_tools]


@pytest.fixture
def pulled(stored_test_image: str) -> str:
    return stored_test_image


def run(tools: Tools, image: str, *cmd: str, opts: tuple[str, ...] = ()) -> tuple[int, str, str]:
    r = tools.runner("run", "--rm", *opts, image, *cmd)
    return r.code, r.out, r.err


def test_pull_records_reference_and_one_dir_per_layer(tools: Tools, pulled: str) -> None:
    index = json.loads((tools.root / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == [pulled]
    layers = list((tools.root / "layers").iterdir())
    assert len(layers) == 2
    for layer in layers:
        record = json.loads((layer / "layer.json").read_text())
        assert record["chain_id"].endswith(layer.name)
        assert (layer / "diff").is_dir()
    assert list((tools.root / "tmp").iterdir()) == []
    listing = tools.puller("images")
    assert listing.code == 0 and "strata/test" in listing.out


def test_store_is_an_oci_layout_skopeo_and_umoci_read(tools: Tools, pulled: str, tmp_path: Path) -> None:
    out = subprocess.run(["skopeo", "inspect", f"oci:{tools.root}:{pulled}"], capture_output=True, text=True,
                         check=True).stdout
    assert len(json.loads(out)["Layers"]) == 2
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{tools.root}:{pulled}", str(bundle)], check=True,
                   capture_output=True)
    assert (bundle / "rootfs/etc/layer1.txt").read_text() == "from layer 1\n"
    assert not (bundle / "rootfs/etc/todelete.txt").exists()


def test_second_pull_fetches_nothing(tools: Tools, pulled: str) -> None:
    again = tools.puller("pull", pulled)
    assert again.code == 0
    assert "Image is up to date" in again.out
    assert "download complete" not in again.out


def test_layer_contents_whiteout_and_replaced_dir(tools: Tools, pulled: str) -> None:
    code, out, err = run(tools, pulled, "sh", "-c",
                         "cat /etc/layer1.txt /etc/layer2.txt; ls /data; "
                         "test -e /etc/todelete.txt && echo STILL-THERE; stat -c %A /bin/suid-test")
    assert code == 0, err
    assert out.splitlines() == ["from layer 1", "from layer 2", "new.txt", "-rwsr-xr-x"]


def test_image_config_applied(tools: Tools, pulled: str) -> None:
    code, out, _ = run(tools, pulled, "sh", "-c", 'pwd; echo "$STRATA_TEST $PATH"')
    assert code == 0
    assert out.splitlines() == ["/data", "1 /usr/bin:/bin"]
    code, out, _ = run(tools, pulled)  # the image's Cmd is /bin/sh, stdin is /dev/null without -i
    assert code == 0 and out == ""
    interactive = tools.runner("run", "--rm", "-i", pulled, stdin="echo from-stdin\n")
    assert interactive.out == "from-stdin\n"


def test_hostname_pid_one_and_exit_code(tools: Tools, pulled: str) -> None:
    assert run(tools, pulled, "hostname", opts=("--hostname", "box1"))[1] == "box1\n"
    assert run(tools, pulled, "sh", "-c", "echo $$")[1] == "1\n"
    assert run(tools, pulled, "sh", "-c", "exit 7")[0] == 7


def test_exec_failures_use_dockers_codes(tools: Tools, pulled: str) -> None:
    code, _, err = run(tools, pulled, "no-such-command")
    assert code == 127 and "executable file not found" in err
    code, _, err = run(tools, pulled, "/etc/passwd")
    assert code == 126 and "Permission denied" in err
    code, _, err = run(tools, "nosuch/image:1", "true", opts=("--pull", "never"))
    assert code == 125 and err.count("\n") == 1 and "No such image: nosuch/image:1" in err


def test_rm_leaves_no_mount_and_no_container(tools: Tools, pulled: str) -> None:
    assert run(tools, pulled, "true")[0] == 0
    assert mounts_under(tools.root) == []
    assert list((tools.root / "containers").iterdir()) == []


def test_container_without_rm_is_listed_then_removed(tools: Tools, pulled: str) -> None:
    assert tools.runner("run", "--name", "keep", pulled, "sh", "-c", "echo hi > /data/x").code == 0
    ps = tools.runner("ps", "-a")
    assert "keep" in ps.out and "Exited (0)" in ps.out
    upper = next((tools.root / "containers").iterdir()) / "upper"
    assert (upper / "data" / "x").read_text() == "hi\n"  # the change is in the rw layer
    assert not (upper / "etc").exists()  # the -init placeholders never are
    clash = tools.runner("run", "--name", "keep", pulled, "true")
    assert clash.code == 125 and "already in use" in clash.err
    assert tools.runner("rm", "keep").code == 0
    assert list((tools.root / "containers").iterdir()) == []
