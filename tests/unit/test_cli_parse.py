"""``run`` and ``exec`` are parsed without typer on their start path (runner/cli/main.py, issue 21), from the same
declaration as the typer app's (runner/cli/options.py). The two parses must never disagree: whatever the fast one
takes, click takes to the same values, and whatever click refuses, the fast one leaves to it (so its errors and
help stay the only ones). Checked against click's own parse of the app's commands, on chosen forms and on random
command lines."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer._click.exceptions import ClickException

from runner.cli.app import app
from runner.cli.main import plain_command
from runner.cli.options import EXEC_FLAGS, RUN_FLAGS, Flag, exec_options, parse, run_options
from tests.unit import fresh_python

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def click_parse(verb: str, args: list[str]) -> dict[str, Any] | None:
    """What click makes of ``runner VERB ARGS`` (None: it refuses them), values as typer hands them on."""
    command = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    try:
        ctx = command.make_context(verb, list(args), resilient_parsing=False)
    except (ClickException, typer.Exit):  # a usage error, or --help (printed)
        return None
    return {key: list(value) if isinstance(value, tuple) else value for key, value in ctx.params.items()}


def normal(values: dict[str, Any], flags: dict[str, Flag]) -> dict[str, Any]:
    """COMMAND may be None or [] when there is none, as typer passes it: both are no command."""
    return {key: (value or None) if key == "command" and flags is RUN_FLAGS else value
            for key, value in values.items()}


def agree(verb: str, args: list[str]) -> dict[str, Any] | None:
    flags = RUN_FLAGS if verb == "run" else EXEC_FLAGS
    fast, clicked = parse(flags, args), click_parse(verb, args)
    if fast is not None:
        assert clicked is not None, f"{args}: the fast parse took what click refuses"
        assert normal(fast, flags) == normal(clicked, flags), args
    return fast


@pytest.mark.parametrize("args", [
    ["img"], ["img", "true"], ["--rm", "img", "/bin/true"], ["--rm", "--network", "none", "img", "/bin/true"],
    ["-it", "img", "sh"], ["-dit", "--name=web", "img"], ["-eA=1", "-e", "B=2", "--env=C=3", "img", "env"],
    ["-p8080:80", "-p", "81:81", "img"], ["--cpus", "0.5", "--pids-limit", "10", "-c", "512", "img"],
    ["--net", "host", "-h", "box", "-w", "/tmp", "-u", "1000:1000", "img", "id", "-u"],
    ["--rm", "img", "--", "sh", "-c", "echo"], ["img", "--rm", "--help"], ["-", "x"], ["--env=", "img"],
    ["-ite", "K=V", "img"], ["--memory", "-1", "img"], ["--cpus=1e3", "img"],
])
def test_the_plain_forms_are_parsed_as_click_parses_them(args: list[str]) -> None:
    assert agree("run", args) is not None


@pytest.mark.parametrize("args", [
    [], ["--rm"], ["--help", "img"], ["--rm=true", "img"], ["--no-rm", "img"], ["-x", "img"], ["--", "img"],
    ["--cpus", "abc", "img"], ["--pids-limit", "1.5", "img"], ["--name"], ["-e"], ["-i=1", "img"], ["-name", "x"],
])
def test_what_click_refuses_or_may_answer_otherwise_is_left_to_it(args: list[str]) -> None:
    assert agree("run", args) is None


@pytest.mark.parametrize(("args", "fast"), [
    (["c", "true"], True), (["-it", "-u", "0", "-e", "A=1", "-w", "/", "c", "sh", "-c", "x"], True),
    (["c"], False), ([], False), (["--help"], False), (["-d", "c", "true"], False),
])
def test_exec_is_parsed_as_click_parses_it(args: list[str], fast: bool) -> None:
    assert (agree("exec", args) is not None) == fast


WORDS = ["img", "true", "-", "--", "--rm", "--rm=1", "-i", "-t", "-it", "-d", "-itd", "-e", "-eX=1", "--env", "--env=A",
         "--name", "--name=n", "-p", "-p80", "--cpus", "--cpus=2", "2", "x", "--pids-limit", "-5", "--help", "-h",
         "--net", "none", "-c", "-v", "/a:/b", "--tmpfs", "--bogus", "-Z", "-u", "--read-only", "--memory=1g", "="]


@FUZZ
@given(st.lists(st.sampled_from(WORDS), max_size=8), st.sampled_from(["run", "exec"]))
def test_on_any_command_line_the_fast_parse_agrees_with_click_or_leaves_it(args: list[str], verb: str) -> None:
    agree(verb, args)


def test_the_fast_parse_makes_the_values_the_app_makes() -> None:
    values = parse(RUN_FLAGS, ["--rm", "-e", "A=1", "img", "sh", "-c", "x"])
    assert values is not None
    opts = run_options(values)
    assert opts.image == "img" and opts.command == ("sh", "-c", "x") and opts.remove and list(opts.env) == ["A=1"]
    assert run_options({**values, "command": None}).command == ()
    job = parse(EXEC_FLAGS, ["-t", "c", "ls"])
    assert job is not None and exec_options(job).tty and list(exec_options(job).command) == ["ls"]


@pytest.mark.parametrize(("argv", "fast"), [
    (["run", "img"], True), (["--root", "/s", "run", "img"], True), (["--root=/s", "exec", "c", "ls"], True),
    (["--root"], False), (["--root=", "run", "img"], False), (["-v"], False), (["--version"], False),
    (["ps"], False), (["run", "--help"], False), (["--help"], False), ([], False), (["--root", "/s"], False),
])
def test_only_root_and_run_or_exec_take_the_fast_path(argv: list[str], fast: bool) -> None:
    assert (plain_command(argv) is not None) == fast


# What no plain run or exec uses, with what importing it costs (issue 21): each was once on the path.
NOT_ON_THE_RUN_PATH = ("typer", "click", "inspect", "ast", "copy", "shutil", "subprocess", "tempfile", "threading",
                       "tty", "logging", "concurrent.futures", "asyncio", "pyroute2", "platform", "bz2", "lzma")


def test_the_run_path_imports_nothing_it_does_not_use() -> None:
    """The modules ``runner run`` and ``runner exec`` import as runner/cli/main.py does (the dataclass code cache
    first), in a fresh interpreter: none of the above may come back through a new import at a module's top (what the
    interpreter's site imported before, a distribution's .pth files, is not counted)."""
    probe = ("import sys\nbefore = set(sys.modules)  # what the interpreter's site brought: not ours\n"
             "from shared import codecache\ncodecache.install()\n"
             "import runner.cli.main, runner.container.run, runner.container.exec, runner.container.record\n"
             f"print(' '.join(sorted(set({NOT_ON_THE_RUN_PATH!r}) & (set(sys.modules) - before))))")
    done = subprocess.run([fresh_python(), "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == []
