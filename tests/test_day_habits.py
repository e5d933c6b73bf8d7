"""Issue 22, item 5, the habits: generated container names (Docker's adjective_surname), IMAGE as typed, ``run -it``
with stdin not a terminal, and ``runner bundle`` taking the run options a bundle can honour."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.marks import needs_root, needs_tools
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]

GENERATED = re.compile(r"[a-z]+_[a-z]+\d*")


def test_containers_without_a_name_get_adjective_surname(tools: Tools, stored_test_image: str) -> None:
    ids = []
    for _ in range(6):
        made = tools.runner("create", stored_test_image, "hostname")
        assert made.code == 0, made.err
        ids.append(made.out.strip())
    listed = tools.runner("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").out.split("\n")[:-1]
    names = {line.split()[0]: line.split()[1] for line in listed}
    assert sorted(names) == sorted(ids) and len(set(names.values())) == 6, listed
    assert all(GENERATED.fullmatch(name) for name in names.values()), names
    assert tools.runner("container", "ls", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").out.split("\n")[:-1] \
        == listed  # Docker's other name for ps
    table = tools.runner("ps", "-a").out.splitlines()
    assert all(any(line.endswith(" " + name) for line in table) for name in names.values()), table
    first = ids[0]
    assert tools.runner("inspect", "-f", "{{.Name}}", first).out == f"/{names[first]}\n"
    started = tools.runner("start", "-a", names[first])  # found by its name; its hostname is the short ID
    assert (started.code, started.out) == (0, f"{first[:12]}\n"), started.err
    for cid in ids:
        assert tools.runner("rm", cid).code == 0


def test_ps_shows_the_image_as_typed(tools: Tools, stored_test_image: str) -> None:
    assert tools.puller("copy", stored_test_image, "busybox").code == 0  # docker.io/library/busybox:latest
    image_id = tools.puller("inspect", "-f", "{{.Id}}", "busybox").out.strip()
    typed = ["busybox", "busybox:latest", "docker.io/library/busybox", image_id.removeprefix("sha256:")[:12],
             stored_test_image]
    for n, text in enumerate(typed):
        assert tools.runner("create", "--pull", "never", "--name", f"c{n}", text, "true").code == 0
    shown = tools.runner("ps", "-a", "--format", "{{.Names}} {{.Image}}").out.splitlines()
    assert sorted(shown) == sorted(f"c{n} {text}" for n, text in enumerate(typed))
    assert tools.runner("inspect", "-f", "{{.Config.Image}} {{.Image}}", "c0").out == f"busybox {image_id}\n"
    ancestors = tools.runner("ps", "-a", "-f", "ancestor=busybox", "--format", "{{.Names}}").out.split()
    assert sorted(ancestors) == [f"c{n}" for n in range(len(typed))]  # one image, however it was typed
    for n in range(len(typed)):
        assert tools.runner("rm", f"c{n}").code == 0


def test_run_it_needs_a_terminal_on_stdin_as_dockers(tools: Tools, stored_test_image: str) -> None:
    for flags in (("-it",), ("-i", "-t"), ("--interactive", "--tty")):
        refused = tools.runner("run", "--rm", *flags, stored_test_image, "cat", stdin="x\n")
        one_line_error(refused, 1, "the input device is not a TTY")
    assert not (tools.root / "containers").exists() or not any((tools.root / "containers").iterdir())
    tty_only = tools.runner("run", "--rm", "-t", stored_test_image, "echo", "ok", stdin="x\n")  # Docker allows it
    assert tty_only.code == 0 and tty_only.out.replace("\r", "") == "ok\n", tty_only
    stdin_only = tools.runner("run", "--rm", "-i", stored_test_image, "cat", stdin="x\n")
    assert (stdin_only.code, stdin_only.out) == (0, "x\n"), stdin_only.err


def _namespaces(bundle: Path) -> list[str]:
    return [n["type"] for n in json.loads((bundle / "config.json").read_text())["linux"]["namespaces"]]


def test_bundle_honours_network_none_and_host_and_refuses_the_rest_by_name(tools: Tools, stored_test_image: str,
                                                                           tmp_path: Path) -> None:
    tools.configure(network="bridge")  # the settings' default is not a bundle's: none is
    plain = tools.runner("bundle", stored_test_image, str(tmp_path / "plain"))
    assert plain.code == 0, plain.err
    assert "network" in _namespaces(tmp_path / "plain")
    none = tools.runner("bundle", "--network", "none", "--dns", "192.0.2.53", "--add-host", "db:192.0.2.7",
                        stored_test_image, str(tmp_path / "none"))
    assert none.code == 0, none.err
    assert "network" in _namespaces(tmp_path / "none")
    assert "nameserver 192.0.2.53" in (tmp_path / "none" / "resolv.conf").read_text()
    assert re.search(r"^192\.0\.2\.7\s+db$", (tmp_path / "none" / "hosts").read_text(), re.M)
    host = tools.runner("bundle", "--net=host", stored_test_image, str(tmp_path / "host"))
    assert host.code == 0, host.err
    assert "network" not in _namespaces(tmp_path / "host")
    for flags, named in ((("--network", "bridge"), "--network bridge"), (("-p", "8080:80"), "--publish"),
                         (("--ip", "10.0.0.5"), "--ip"), (("-P",), "--publish-all"),
                         (("--network-alias", "web"), "--network-alias")):
        refused = tools.runner("bundle", *flags, stored_test_image, str(tmp_path / "refused"))
        one_line_error(refused, 125, f"runner bundle cannot honour {named}")
        assert not (tmp_path / "refused").exists()
