"""The two CLIs run as a user runs them (subprocesses, against a store root, a Docker config dir and a settings file
of the test's own), and what the tests check of their runs: exit codes and one-line errors, mounts, containers
started in the background."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent

# bridge is the runner's default, so every test's settings say none: the tools fixture's file, and for a runner
# started some other way (a Terminal, a Popen with os.environ) the session's, named by STRATA_CONFIG in our own
# environment. Only tests/test_network.py, which runs the runner inside a throwaway namespace, uses bridge.
BASE_SETTINGS = {"network": "none"}


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Tools:
    """The CLIs against one store root, run as subprocesses exactly as a user would, with a Docker config dir
    and a settings file of the test's own (never the machine's)."""

    root: Path
    docker_config: Path
    settings: Path

    rootless: ClassVar[bool] = False  # run by root; tests/rootless.py's UserTools run them as a user

    def command(self, tool: str, *args: str) -> list[str]:
        """``TOOL --root ROOT ARGS`` as this store's owner runs it: the argv of every run of the tools."""
        return [sys.executable, "-m", tool, "--root", str(self.root), *args]

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment the tools run in: the test's own settings file and Docker config."""
        return {**os.environ, "DOCKER_CONFIG": str(self.docker_config), "STRATA_CONFIG": str(self.settings), **extra}

    def as_owner(self, *argv: str) -> list[str]:
        """ARGV run as the store's owner (root here), for a process of the owner's own that a test needs."""
        return list(argv)

    def hand_over(self, target: Path | int) -> None:
        """Make TARGET (a path, or an open fd) the tools' user's own, as a user's terminal or files are: nothing
        to do for root."""

    def _run(self, tool: str, args: tuple[str, ...], stdin: str | None = None, timeout: float = 120,
             env_extra: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(self.command(tool, *args), input=stdin, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=self.environ(**(env_extra or {})))
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def puller(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        return self._run("puller", args, stdin, env_extra=env)

    def runner(self, *args: str, stdin: str | None = None) -> Result:
        return self._run("runner", args, stdin)

    def take(self, template: Path) -> None:
        """This store becomes a copy of the store at TEMPLATE (which must hold no container)."""
        assert not self.root.exists() or not any(self.root.iterdir()), f"{self.root} is not empty"
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", f"{template}/.", str(self.root)], check=True)

    def configure(self, **keys: object) -> None:
        """Write the test's settings file: these keys over the tests' base, ``"network": "none"``."""
        self.settings.write_text(json.dumps({**BASE_SETTINGS, **keys}))


def one_line_error(result: Result, code: int, text: str, tool: str = "runner") -> None:
    """The error convention: this exit code, one line on stderr naming the cause."""
    assert result.code == code, (result.out, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith(f"{tool}: error: "), result.err
    assert text in result.err, result.err


# What a warm pull must not import (puller/warm.py): the HTTP and command-line libraries and the unpacker
WARM_PULL_SPARES = ("requests", "urllib3", "typer", "tarfile", "isal", "zstandard", "concurrent")


def warm_pull(tools: Tools, ref: str, env: dict[str, str] | None = None) -> Result:
    """``puller pull REF`` of an image the store holds unchanged: "up to date", answered the lean way
    (puller/warm.py, one HEAD over http.client), as the modules the run imported (``-X importtime``) show."""
    result = tools.puller("pull", ref, env={**(env or {}), "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.code == 0 and "Status: Image is up to date for " in result.out, (result.out, result.err)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.err.splitlines()
                if line.startswith("import time:")}
    assert "puller" in imported and not imported & set(WARM_PULL_SPARES), sorted(imported)
    return result


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


EXECUTORS = ("strata", "runc", "crun", "runner-oci")
# runner-oci (runner/oci) is this checkout's own OCI runtime: a caller is given its absolute path, as Docker is
RUNNER_OCI = str(ROOT / "scripts" / "runner-oci")


def runtime_option(name: str) -> str:
    """What ``--runtime`` (or the settings file's ``runtime``) is given for the executor NAME: runc and crun by
    name (looked up on PATH), runner-oci by this checkout's path."""
    return RUNNER_OCI if name == "runner-oci" else name


def runtime_state_dirs(root: Path) -> list[Path]:
    """What a runtime keeps for each container it knows (the runner's --root STATE/ID under the store). Not
    runner-oci's ``.cache``: the seccomp programs it compiled, one per profile, shared by every container."""
    base = root / "runtime"
    return sorted(d for state in (base.iterdir() if base.is_dir() else ()) for d in state.iterdir()
                  if d.name != ".cache")


def runner_command(tools: Tools, *args: str) -> list[str]:
    """``runner --root ROOT ARGS`` as Tools.runner runs it, for a test that needs the process (Popen)."""
    return tools.command("runner", *args)


def popen_runner(tools: Tools, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Start ``runner ARGS`` in the background, its stdout and stderr piped (text)."""
    return subprocess.Popen(runner_command(tools, *args), stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=tools.environ())


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll CHECK until it holds; fail with WHAT if it never does (a bound against hanging, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@contextmanager
def detached(tools: Tools, *args: str) -> Iterator[str]:
    """``runner run -d ARGS``; yields the container's full ID; ``runner rm -f`` afterwards, whatever happened."""
    result = tools.runner("run", "-d", *args)
    assert result.code == 0, result.err
    cid = result.out.strip()
    try:
        yield cid
    finally:
        tools.runner("rm", "-f", cid)  # fails harmlessly if the test removed it already


def puller_inspect(tools: Tools, ref: str) -> dict[str, Any]:
    """``puller inspect REF``'s one image, which must succeed."""
    result = tools.puller("inspect", ref)
    assert result.code == 0, result.err
    described: dict[str, Any] = json.loads(result.out)[0]
    return described
