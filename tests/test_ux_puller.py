"""What a Docker user sees of the puller (issue 12): the final pull screen, ``images`` and ``inspect`` in Docker's
shapes, ``--format``, usage errors in two lines, ``--version`` and shell completion on both tools."""

from __future__ import annotations

import calendar
import gzip
import hashlib
import json
import os
import re
import select
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any

from shared.format import human_duration, human_size
from tests.images import inspect_raw, skopeo
from tests.marks import needs_root, needs_tools
from tests.terminal import Terminal
from tests.tools import ROOT, Result, Tools, one_line_error

# -- helpers ---------------------------------------------------------------------------------------------------------


def run_to_end(term: Terminal, timeout: float = 60) -> bytes:
    """Everything the program writes to its terminal until it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([term.master], [], [], 0.2)
        if not ready:
            if term.proc.poll() is not None:
                break
            continue
        try:
            data = os.read(term.master, 65536)
        except OSError:  # EIO: the program exited and closed its side
            break
        if not data:
            break
        term.seen += data
    return term.seen


def screen(raw: bytes) -> list[str]:
    """The lines a terminal shows at the end, for the control sequences the puller writes: CR, LF, ``ESC[nF``
    (cursor up n lines, to column 0) and ``ESC[J`` (erase from the cursor to the end of the screen)."""
    lines: list[str] = [""]
    row = 0
    text = raw.decode(errors="replace")
    for token in re.split(r"(\x1b\[\d*[A-Za-z]|\r|\n)", text):
        if not token or token == "\r":
            continue
        if token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif m := re.fullmatch(r"\x1b\[(\d*)F", token):
            row = max(row - int(m.group(1) or 1), 0)
        elif token == "\x1b[J":
            del lines[row + 1:]
            lines[row] = ""
        elif token.startswith("\x1b"):
            raise AssertionError(f"unexpected control sequence {token!r}")
        else:
            lines[row] += token
    return [line for line in lines if line] if lines[-1] == "" else lines


def registry_view(ref: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """What skopeo says of REF at the registry: the manifest, the config, and the config's bytes."""
    manifest = json.loads(inspect_raw(ref))
    config_raw = inspect_raw(ref, config=True)
    return manifest, json.loads(config_raw), config_raw


def docker_size(tools: Tools, manifest: dict[str, Any]) -> int:
    """Docker's image size, counted from the layer tars as its layer store counts while unpacking: the length of
    every regular file entry (a hard link is an entry of length 0)."""
    total = 0
    for layer in manifest["layers"]:
        blob = tools.root / "blobs" / "sha256" / layer["digest"].split(":")[1]
        opener = gzip.open if layer["mediaType"].endswith("gzip") else open
        with opener(blob, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            total += sum(m.size for m in tar if m.isreg())
    return total


def created_epoch(created: str) -> float:
    """An RFC 3339 UTC time (``...Z``, nanoseconds as Go writes them) in seconds since the epoch."""
    day, rest = created.split("T")
    clock, fraction = [*rest.rstrip("Z").split("."), "0"][:2]
    return calendar.timegm(time.strptime(f"{day}T{clock}", "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction}")


def two_line_usage(result: Result, tool: str, code: int, command: str, text: str) -> None:
    """Docker's usage error: ``TOOL: error: MESSAGE`` and ``See 'TOOL COMMAND --help'.``, nothing else."""
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 2 and result.out == "", result
    assert lines[0].startswith(f"{tool}: error: ") and text in lines[0], result.err
    assert lines[1] == f"See '{command} --help'.", result.err


# -- the CLIs ----------------------------------------------------------------------------------------------------------

@needs_root
@needs_tools
def test_final_pull_screen_on_a_terminal(tools: Tools, rich_image: str) -> None:
    """Docker's final screen: the layer rows stay where they were drawn, each in its last state, and Digest,
    Status and the reference follow them, the reference alone on the last line."""
    manifest, _, _ = registry_view(rich_image)
    shorts = [layer["digest"].split(":")[1][:12] for layer in manifest["layers"]]
    term = Terminal([sys.executable, "-m", "puller", "--root", str(tools.root), "pull", rich_image])
    try:
        raw = run_to_end(term)
    finally:
        code = term.close()
    assert code == 0, raw
    shown = screen(raw)
    digest = hashlib.sha256(inspect_raw(rich_image)).hexdigest()
    assert shown[-3:] == [f"Digest: sha256:{digest}", f"Status: Downloaded newer image for {rich_image}",
                          rich_image], shown
    layer_rows = [line for line in shown if line.split(":")[0] in shorts]
    assert sorted(line.split(":")[0] for line in layer_rows) == sorted(shorts), shown  # each once, in place
    assert all(line.endswith(": done") for line in layer_rows), shown
    assert max(shown.index(line) for line in layer_rows) < len(shown) - 3
    assert shown[0] == f"Pulling {rich_image}"

    again = Terminal([sys.executable, "-m", "puller", "--root", str(tools.root), "pull", rich_image])
    try:
        raw = run_to_end(again)
    finally:
        assert again.close() == 0
    assert screen(raw)[-2:] == [f"Status: Image is up to date for {rich_image}", rich_image]


@needs_root
@needs_tools
def test_final_pull_lines_off_a_terminal(tools: Tools, test_image: str) -> None:
    """A pipe gets plain lines in the same order: every layer's lines, then Digest, Status, the reference."""
    manifest, _, _ = registry_view(test_image)
    shorts = {layer["digest"].split(":")[1][:12] for layer in manifest["layers"]}
    result = tools.puller("pull", test_image)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "\x1b" not in result.out
    assert lines[-3].startswith("Digest: sha256:") and lines[-2] == f"Status: Downloaded newer image for " \
        f"{test_image}" and lines[-1] == test_image, lines
    layer_lines = [i for i, line in enumerate(lines) if line.split(":")[0] in shorts]
    assert max(layer_lines) < len(lines) - 3
    assert {lines[i] for i in layer_lines} >= {f"{s}: done" for s in shorts}  # each ends unpacked
    assert {lines[i] for i in layer_lines} >= {f"{s}: download complete" for s in shorts}


@needs_root
@needs_tools
def test_images_as_docker_lists_them(tools: Tools, test_image: str, rich_image: str) -> None:
    """CREATED is the config's age as go-units prints it, newest first; SIZE is the unpacked size Docker counts;
    the IMAGE ID is the config digest's first 12 hex digits (all of it with --no-trunc); --digests adds the
    digest the image was pulled by."""
    expected: list[tuple[float, str, str, str, int, str]] = []
    for ref in (test_image, rich_image):
        assert tools.puller("pull", "-q", ref).code == 0
        manifest, config, config_raw = registry_view(ref)
        expected.append((created_epoch(config["created"]), ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1],
                         hashlib.sha256(config_raw).hexdigest(), docker_size(tools, manifest),
                         "sha256:" + hashlib.sha256(inspect_raw(ref)).hexdigest()))
    expected.sort(key=lambda e: -e[0])
    before = time.time()
    table = tools.puller("images")
    after = time.time()
    assert table.code == 0, table.err
    lines = table.out.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +IMAGE ID +CREATED +SIZE", lines[0]), lines
    assert len(lines) == 3
    for line, (created, repo, tag, config_hex, size, _) in zip(lines[1:], expected, strict=True):
        cells = re.split(r" {3,}", line)
        assert cells[:3] == [repo, tag, config_hex[:12]], line
        ages = range(int(before - created), int(after - created) + 2)  # whatever second the listing ran in
        assert cells[3] in {f"{human_duration(age)} ago" for age in ages}, line
        assert cells[4] == human_size(size, 3), line
    columns = [lines[0].index(title) for title in ("TAG", "IMAGE ID", "CREATED", "SIZE")]
    assert all(line[c - 3:c] == "   " for line in lines[1:] for c in columns), lines  # aligned under the titles

    full = tools.puller("images", "--no-trunc", "-q").out.split()
    assert full == [f"sha256:{e[3]}" for e in expected]
    assert tools.puller("images", "-q").out.split() == [e[3][:12] for e in expected]
    digests = tools.puller("images", "--digests").out.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +DIGEST +IMAGE ID +CREATED +SIZE", digests[0])
    assert [re.split(r" {3,}", line)[2] for line in digests[1:]] == [e[5] for e in expected]

    formatted = tools.puller("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}} {{.Digest}}")
    assert formatted.out.splitlines() == [f"{e[1]}:{e[2]} {e[3][:12]} {human_size(e[4], 3)} {e[5]}" for e in expected]
    as_json = [json.loads(line) for line in tools.puller("images", "--format", "json").out.splitlines()]
    assert [(j["Repository"], j["Tag"], j["ID"], j["Size"], j["Digest"]) for j in as_json] == \
        [(e[1], e[2], e[3][:12], human_size(e[4], 3), e[5]) for e in expected]
    assert all(j["CreatedSince"].endswith(" ago") and j["CreatedAt"] for j in as_json)
    custom = tools.puller("images", "--format", r"table {{.Repository}}\t{{.Size}}").out.splitlines()
    assert re.fullmatch(r"REPOSITORY +SIZE", custom[0]) and len(custom) == 3

    only = tools.puller("images", "-q", rich_image.rsplit(":", 1)[0]).out.split()
    assert only == [e[3][:12] for e in expected if rich_image.startswith(e[1] + ":")]

    bad = tools.puller("images", "--format", "{{.Nope}}")
    assert bad.code == 2 and bad.err.startswith("puller: error: ") and "Nope" in bad.err
    assert bad.err.count("\n") == 1


@needs_root
@needs_tools
def test_images_format_with_printf_and_upper_as_docker(tools: Tools, test_image: str) -> None:
    """Issue 19: ``images --format '{{printf "%.3s" .Repository}}|{{upper .Tag}}'`` is Go's printf (which the
    puller's own engine printed as ``%.3s``) and Docker's upper; in a table, Docker's header functions leave the
    title TAG as it is while printf cuts REPOSITORY."""
    assert tools.puller("pull", "-q", test_image).code == 0
    repository, tag = test_image.rsplit(":", 1)
    result = tools.puller("images", "--format", '{{printf "%.3s" .Repository}}|{{upper .Tag}}')
    assert (result.code, result.err) == (0, ""), result.err
    assert result.out == f"{repository[:3]}|{tag.upper()}\n"
    table = tools.puller("images", "--format", r'table {{printf "%-12.3s|" .Repository}}\t{{upper .Tag}}')
    assert table.out.splitlines() == [f"{'REP':<12}|   TAG", f"{repository[:3]:<12}|   {tag.upper()}"], table.out
    bad = tools.puller("images", "--format", "{{nosuch .Tag}}")
    one_line_error(bad, 2, 'template parsing error: template: :1: function "nosuch" not defined', "puller")


@needs_root
@needs_tools
def test_inspect_has_the_fields_scripts_use(tools: Tools, rich_image: str) -> None:
    """``docker image inspect``'s fields, checked against the config and manifest skopeo reads at the registry."""
    assert tools.puller("pull", "-q", rich_image).code == 0
    manifest, config, config_raw = registry_view(rich_image)
    result = tools.puller("inspect", rich_image)
    assert result.code == 0, result.err
    (doc,) = json.loads(result.out)
    repo = rich_image.rsplit(":", 1)[0]
    digest = "sha256:" + hashlib.sha256(inspect_raw(rich_image)).hexdigest()
    assert doc["Id"] == "sha256:" + hashlib.sha256(config_raw).hexdigest()
    assert doc["RepoTags"] == [rich_image]
    assert doc["RepoDigests"] == [f"{repo}@{digest}"]
    assert doc["Config"]["Env"] == config["config"]["Env"]
    assert doc["Config"]["Cmd"] == config["config"].get("Cmd")
    assert doc["Config"]["WorkingDir"] == config["config"].get("WorkingDir", "")
    assert doc["RootFS"] == {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]}
    assert (doc["Architecture"], doc["Os"]) == (config["architecture"], config["os"])
    assert doc["Created"] == config["created"]
    assert doc["Size"] == docker_size(tools, manifest)
    assert doc["Metadata"] == {"LastTagTime": "0001-01-01T00:00:00Z"}
    for key in ("Parent", "Comment", "DockerVersion", "Author"):
        assert isinstance(doc[key], str)
    skopeo_view = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{rich_image}"))
    assert doc["Digest"] == skopeo_view["Digest"] and [x["Digest"] for x in doc["Layers"]] == skopeo_view["Layers"]

    fmt = tools.puller("inspect", "-f", "{{.Id}} {{.Os}}/{{.Architecture}} {{json .Config.Env}}", rich_image)
    env = json.dumps(config["config"]["Env"], separators=(",", ":"))
    assert fmt.out == f"{doc['Id']} linux/{config['architecture']} {env}\n"
    layers = tools.puller("inspect", "--format", r"{{range .RootFS.Layers}}{{.}}\n{{end}}", rich_image)
    assert layers.out.split() == config["rootfs"]["diff_ids"]

    missing = tools.puller("inspect", rich_image, "nosuch/image:1")
    assert missing.code == 1 and json.loads(missing.out)[0]["Id"] == doc["Id"]  # as Docker: the found, then the error
    assert missing.err.startswith("puller: error: ") and missing.err.count("\n") == 1


@needs_root
def test_usage_errors_are_two_lines(tools: Tools) -> None:
    two_line_usage(tools.puller("pull"), "puller", 2, "puller pull", "missing argument")
    two_line_usage(tools.puller("pull", "--no-such-option", "x"), "puller", 2, "puller pull", "--no-such-option")
    two_line_usage(tools.puller("pull", "--jobs", "99", "x"), "puller", 2, "puller pull", "99")
    two_line_usage(tools.puller("no-such-command"), "puller", 2, "puller", "no-such-command")
    two_line_usage(tools.puller("images", "--bogus"), "puller", 2, "puller images", "--bogus")
    two_line_usage(tools.runner("run", "--no-such-option", "img", "true"), "runner", 125, "runner run",
                   "--no-such-option")
    two_line_usage(tools.runner("no-such-command"), "runner", 125, "runner", "no-such-command")
    two_line_usage(tools.runner("ps", "--bogus"), "runner", 125, "runner ps", "--bogus")
    two_line_usage(tools.runner("logs"), "runner", 125, "runner logs", "missing argument")


def test_version_on_both_tools(tools: Tools) -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    for tool in ("puller", "runner"):
        for flag in ("--version", "-v"):
            result = getattr(tools, tool)(flag)
            assert (result.code, result.out, result.err) == (0, f"{tool} version {version}\n", "")


def test_shell_completion_installs_and_completes_in_bash(tmp_path: Path) -> None:
    """typer's --install-completion, run from bash as a user would: it writes the script and sources it from
    ~/.bashrc; bash's completion function then offers the tools' commands and options."""
    home = tmp_path / "home"
    home.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("puller", "runner"):  # the installed scripts' names, running this source tree
        script = bindir / tool
        script.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m {tool} \"$@\"\n")
        script.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bindir}:{os.environ['PATH']}", "SHELL": "/bin/bash"}
    for tool, words, cword, wanted in (("puller", "puller im", 1, {"images"}),
                                       ("puller", "puller pull --pl", 2, {"--platform"}),
                                       ("runner", "runner r", 1, {"run", "rm"})):
        installed = subprocess.run(["bash", "-c", f"{tool} --install-completion"], env=env, capture_output=True,
                                   text=True, timeout=60)
        assert installed.returncode == 0, installed
        assert (home / ".bash_completions" / f"{tool}.sh").is_file()
        assert f".bash_completions/{tool}.sh" in (home / ".bashrc").read_text()
        shown = subprocess.run(["bash", "-c", f"source ~/.bash_completions/{tool}.sh; COMP_WORDS=({words}); "
                                f"COMP_CWORD={cword}; _{tool}_completion {tool}; printf '%s\\n' \"${{COMPREPLY[@]}}\""],
                               env=env, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown
        assert wanted <= set(shown.stdout.split()), shown


def test_login_prompt_at_end_of_input_is_a_usage_error(tools: Tools) -> None:
    """Regression: end of input at the Username prompt was reported as 'interrupted'."""
    result = tools.puller("login", "127.0.0.1:9", stdin="")
    assert result.code == 2
    assert result.err == "puller: error: input ended before the command had what it asked for\n"
