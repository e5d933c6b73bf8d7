"""The README stays true: its quick start runs as written, its apt list is scripts/setup's, its links into docs/
resolve, it stays a short page, and its command table names exactly the commands the tools have.

The quick start is run inside a network namespace of the test's own (``ip netns add``, only ``lo`` up, deleted
after), with a docker-registry started inside it on its 127.0.0.1: Docker Hub is out of reach here, and a
command that sets up networking must never touch the machine's own namespace. Docker Hub's names are served by
that registry as the store's ``registry-mirrors`` entry for docker.io, holding the same image names (the test
image, busybox-static, pushed under each Docker Hub name the quick start uses), so the commands run exactly as
the README prints them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from typer._click.core import Command  # typer >= 0.26 vendors click; pinned < 0.29
from typer.core import TyperGroup

from puller.cli import app as puller_app
from runner.cli.app import app as runner_app
from shared.reference import parse
from tests.scripts import SCRIPTS, registry_script
from tests.tools import ROOT, mounts_under

README = ROOT / "README.md"
MAX_README_BYTES = 12 * 1024
# The docs the README must link (issue 12): store layout, layer rules, threat model, isolation, performance,
# design, and how images travel.
REQUIRED_DOCS = {"store", "layers", "threat-model", "isolation", "performance", "design", "images"}
DOCKER_HUB = "docker.io"


def readme_section(title: str) -> str:
    """The text of the README's ``## TITLE`` section, up to the next ``## `` heading."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def quick_start_commands() -> list[str]:
    """The command lines of the quick start's fenced ``sh`` blocks, in order (comment-only lines dropped)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", readme_section("Quick start"), re.M | re.S)
    assert blocks, "the README's quick start has no ```sh block"
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def docker_hub_images(commands: list[str]) -> set[str]:
    """The Docker Hub repositories and tags the quick start pulls: ``puller pull REF`` and ``docker://REF``."""
    refs: list[str] = []
    for command in commands:
        words = shlex.split(command, comments=True)
        if words[:2] == ["puller", "pull"]:
            refs += [w for w in words[2:] if not w.startswith("-")]
        refs += [w.removeprefix("docker://") for w in words if w.startswith("docker://")]
    images = set()
    for text in refs:
        if "$" in text:  # a shell variable: the quick start's own local registry
            continue
        ref = parse(text)
        if ref.domain == DOCKER_HUB:
            images.add(f"{ref.path}:{ref.tag or 'latest'}")
    return images


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr.strip()}"
    return proc


@contextmanager
def throwaway_netns() -> Iterator[str]:
    """A network namespace with only ``lo`` up; deleted on the way out, whatever happened inside."""
    name = f"strata-docs-{os.getpid()}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "delete", name)


@contextmanager
def registry_in(netns: str, state: Path) -> Iterator[str]:
    """Debian's docker-registry on the namespace's 127.0.0.1 (scripts/registry); yields its address."""
    try:
        proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, str(SCRIPTS / "registry"), "start",
                               str(state)], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"scripts/registry start failed: {proc.stderr.strip()}"
        yield proc.stdout.strip()
    finally:
        registry_script.stop(state)


def write_tool_wrappers(bindir: Path) -> None:
    """``puller`` and ``runner`` on PATH as this source tree's CLIs (what ``.venv/bin`` holds after setup)."""
    bindir.mkdir()
    for tool in ("puller", "runner"):
        wrapper = bindir / tool
        wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.quote(sys.executable)} '
                           f'-m {tool} "$@"\n')
        wrapper.chmod(0o755)


def test_quick_start_runs_as_written(tmp_path: Path, test_layout: Path) -> None:
    commands = quick_start_commands()
    images = docker_hub_images(commands)
    assert images, "the quick start pulls nothing from Docker Hub"
    home, work, bindir, root = tmp_path / "home", tmp_path / "work", tmp_path / "bin", tmp_path / "root"
    home.mkdir()
    work.mkdir()
    (work / "scripts").symlink_to(SCRIPTS)  # the README's commands run from a clone of the repository
    write_tool_wrappers(bindir)
    settings = tmp_path / "strata-config.json"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(home), "STRATA_ROOT": str(root),
           "STRATA_CONFIG": str(settings), "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    with throwaway_netns() as netns, registry_in(netns, tmp_path / "hub-registry") as hub:
        for image in sorted(images):
            push = subprocess.run(["ip", "netns", "exec", netns, "skopeo", "copy", "-q", "--dest-tls-verify=false",
                                   f"oci:{test_layout}:test", f"docker://{hub}/{image}"],
                                  capture_output=True, text=True, timeout=120, check=False)
            assert push.returncode == 0, push.stderr
        settings.write_text(json.dumps({"registry-mirrors": [f"http://{hub}"]}))
        script = "\n".join(["set -euo pipefail",
                            """trap 'echo "quick start failed at: $BASH_COMMAND" >&2' ERR""", *commands])
        try:
            result = subprocess.run(["ip", "netns", "exec", netns, "bash", "-c", script], cwd=work, env=env,
                                    capture_output=True, text=True, timeout=600, check=False)
        finally:
            _clean_up(netns, env, home)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for command in commands:  # what each `echo` the quick start runs in a container says reaches the user
        words = shlex.split(command, comments=True)
        if words[:2] == ["runner", "run"] and "echo" in words:
            said = " ".join(words[words.index("echo") + 1:])
            assert said in result.stdout, (command, result.stdout)
    assert mounts_under(root) == []


def _clean_up(netns: str, env: dict[str, str], home: Path) -> None:
    """Whatever the quick start left when it failed midway: its containers, the registries it started."""
    listed = subprocess.run(["ip", "netns", "exec", netns, "runner", "ps", "-aq"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    ids = listed.stdout.split()
    if ids:
        subprocess.run(["ip", "netns", "exec", netns, "runner", "rm", "-f", *ids], env=env, capture_output=True,
                       timeout=120, check=False)
    for pid_file in home.rglob("pid"):
        registry_script.stop(pid_file.parent)


# -- the page itself ---------------------------------------------------------------------------------------------


def test_readme_is_a_short_page() -> None:
    size = len(README.read_bytes())
    assert size < MAX_README_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_apt_list_is_setups() -> None:
    setup = (SCRIPTS / "setup").read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)\)", setup, re.M | re.S)
    assert match, "scripts/setup has no APT_PACKAGES=(...)"
    in_setup = match.group(1).split()
    listed = re.search(r"installs these Debian packages: `([^`]*)`", README.read_text())
    assert listed, "README.md does not list the Debian packages scripts/setup installs"
    assert listed.group(1).split() == in_setup


def test_readme_links_into_docs_resolve() -> None:
    links = re.findall(r"\]\((docs/[^)#\s]+)", README.read_text())
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"
    linked = {Path(link).stem for link in links}
    assert linked >= REQUIRED_DOCS, f"README does not link {sorted(REQUIRED_DOCS - linked)}"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_between_docs_resolve() -> None:
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s:]*\.md)?(?:#([^)\s]+))?\)", page.read_text()):
            if not target and not anchor:
                continue
            linked = (page.parent / target) if target else page
            if not linked.is_file() or (anchor and anchor not in anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, f"links that lead nowhere: {broken}"


def table_commands() -> list[tuple[str, ...]]:
    """The command table's first column as (tool, verb[, subverb]): the words before the first option or
    placeholder (``puller artifact push REF FILE...`` is ("puller", "artifact", "push"))."""
    commands = []
    for cell in re.findall(r"^\| `([^`]+)` \|", readme_section("Commands"), re.M):
        words = cell.split()
        path = [words[0]]
        for word in words[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        commands.append(tuple(path))
    assert commands, "the README has no command table"
    return commands


def tool_commands() -> set[tuple[str, ...]]:
    """Every command both tools have, from their typer apps (groups such as ``artifact`` by their leaves)."""
    found: set[tuple[str, ...]] = set()

    def walk(command: Command, path: tuple[str, ...]) -> None:
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                if not sub.hidden:
                    walk(sub, (*path, name))
        else:
            found.add(path)

    for tool, app in (("puller", puller_app), ("runner", runner_app)):
        walk(typer.main.get_command(app), (tool,))
    return found


def test_command_table_names_every_command_and_only_those() -> None:
    listed = table_commands()
    for path in listed:
        proc = subprocess.run([sys.executable, "-m", *path, "--help"], capture_output=True, text=True, timeout=60,
                              cwd=ROOT, check=False)
        assert proc.returncode == 0, f"README lists `{' '.join(path)}`, whose --help fails: {proc.stderr}"
    missing = tool_commands() - set(listed)
    assert not missing, f"the README's command table lacks {sorted(' '.join(p) for p in missing)}"


def test_docs_name_tests_and_files_that_exist() -> None:
    """A claim that names the test attacking it, or the file doing the work, names one that is there."""
    tests = {name for path in (ROOT / "tests").rglob("*.py")
             for name in re.findall(r"def (test_\w+)", path.read_text())}
    wrong = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        wrong += [f"{page.name}: {name}" for name in re.findall(r"`(test_\w+)", text) if name not in tests]
        wrong += [f"{page.name}: {path}" for path in re.findall(r"`((?:tests|shared|puller|runner|scripts)/[\w./-]+)`",
                                                                text)
                  if not (ROOT / path.rstrip("/")).exists()]
    assert not wrong, f"docs name tests or files that do not exist: {wrong}"

