"""Container logs (issue 18, item 6): the json-file writer rotates (``--log-opt max-size``/``max-file``, bounded
by default), and ``runner logs`` streams in bounded memory with Docker's ``--tail``, ``--since``, ``--until``,
``-t`` and ``-f`` (across rotation).

The system: a container's flood of newlines stays within the bound, ``runner logs`` of a 200 MB log stays within a
memory bound (a bound on memory, never on time), and a follower across a real container's rotations loses nothing.
The pure logic (parsing, the writer and the reader over generated files) is tests/unit/test_log_files.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.logs.writer import LOG_NAME
from tests.logfiles import files_of, record
from tests.marks import needs_root, needs_tools
from tests.tools import ROOT, Tools, one_line_error, popen_runner, wait_until

NOW = 1_700_000_000 * 10**9
SEC = 10**9


# -- the CLI ----------------------------------------------------------------------------------------------------


def test_bad_time_options_are_one_line_errors_of_the_cli(tools: Tools) -> None:
    """The command line end to end: non-zero, one line naming the option (parsed before the container is looked
    up, so no container is needed)."""
    for option, value in (("--since", "9" * 400 + "h"), ("--until", "1" * 5000), ("--since", "٣")):
        one_line_error(tools.runner("logs", option, value, "nosuch"), 125, f'"{option[2:]}"')

# -- the system: real containers and the CLI --------------------------------------------------------------------


@pytest.fixture
def img(stored_test_image: str) -> str:
    return stored_test_image


def log_dir(tools: Tools, name: str) -> Path:
    cid = tools.runner("inspect", "-f", "{{.Id}}", name).out.strip()
    return tools.root / "containers" / cid


@needs_root
@needs_tools
def test_a_flood_of_newlines_stays_within_the_default_bound(tools: Tools, img: str) -> None:
    """2 MB of newlines became a 304 MB log: one record a line is the format, so the bound is rotation's."""
    ran = tools.runner("run", "--name", "flood", img, "sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' '\\n'; "
                       "echo end")
    assert ran.code == 0, ran.err
    sizes = files_of(log_dir(tools, "flood"))
    logs = {k: v for k, v in sizes.items() if k.startswith(LOG_NAME)}
    assert set(logs) == {LOG_NAME, *(f"{LOG_NAME}.{n}" for n in range(1, 5))}, sizes  # it rotated, 5 files kept
    assert sum(logs.values()) <= 5 * 20_000_000, logs
    assert tools.runner("logs", "--tail", "2", "flood").out == "\nend\n"


def max_rss_kib(*command: str) -> tuple[int, int]:
    """Run COMMAND (its output thrown away) under a fresh Python whose only child it is; its exit code and
    maximum resident set in KiB (getrusage of the children)."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {**os.environ}
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)
    code, rss = done.stdout.split()
    return int(code), int(rss)


@needs_root
@needs_tools
def test_logs_of_a_200mb_log_stream_in_bounded_memory(tools: Tools, img: str) -> None:
    made = tools.runner("create", "--name", "big", img, "true")
    assert made.code == 0, made.err
    line = record("x" * 900 + "\n", NOW)
    with open(log_dir(tools, "big") / LOG_NAME, "wb") as f:
        block = line * 1000
        for _ in range(200_000_000 // len(block) + 1):
            f.write(block)
    env = ("env", f"DOCKER_CONFIG={tools.docker_config}", f"STRATA_CONFIG={tools.settings}")
    for extra in ((), ("--tail", "5"), ("-t", "--since", "2000-01-01")):
        code, rss = max_rss_kib(*env, sys.executable, "-m", "runner", "--root", str(tools.root), "logs", *extra,
                                "big")
        assert code == 0
        assert rss < 100 * 1024, f"runner logs {' '.join(extra)} used {rss} KiB"


@needs_root
@needs_tools
def test_logs_options_on_a_containers_log(tools: Tools, img: str) -> None:
    ran = tools.runner("run", "--name", "talk", img, "sh", "-c", "echo a; echo b; echo c")
    assert ran.code == 0, ran.err
    assert tools.runner("logs", "--tail", "1", "talk").out == "c\n"
    assert tools.runner("logs", "-n", "2", "talk").out == "b\nc\n"
    assert tools.runner("logs", "--tail", "0", "talk").out == ""
    stamped = tools.runner("logs", "-t", "talk").out.splitlines()
    assert len(stamped) == 3, stamped
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z [abc]", s) for s in stamped), stamped
    assert tools.runner("logs", "--since", "1h", "talk").out == "a\nb\nc\n"
    assert tools.runner("logs", "--since", "-1h", "talk").out == ""  # an hour from now
    assert tools.runner("logs", "--until", "1h", "talk").out == ""
    assert tools.runner("logs", "--until", str(time.time() + 60), "talk").out == "a\nb\nc\n"
    first = stamped[0].split()[0]
    assert tools.runner("logs", "--since", first, "talk").out.startswith("a\n")  # inclusive
    one_line_error(tools.runner("logs", "--since", "yesterday", "talk"), 125, "failed to parse value")
    one_line_error(tools.runner("logs", "--tail", "x", "talk"), 125, '"tail"')


@needs_root
@needs_tools
def test_log_options_are_checked_recorded_and_honoured(tools: Tools, img: str, executor: str) -> None:
    """Under each executor: the runner writes the log whichever starts the container (runner/executor/runtime.py
    too)."""
    one_line_error(tools.runner("run", "--log-opt", "max-sise=1m", img, "true"), 125,
                   "unknown log opt 'max-sise' for json-file log driver")
    one_line_error(tools.runner("create", "--log-driver", "syslog", img, "true"), 125, "'syslog' is not supported")
    assert tools.runner("ps", "-aq").out == ""  # nothing created
    ran = tools.runner("run", "--name", "small", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", img, "sh",
                       "-c", "seq 1 200")
    assert ran.code == 0, ran.err
    config = json.loads(tools.runner("inspect", "small").out)[0]["HostConfig"]["LogConfig"]
    assert config == {"Type": "json-file", "Config": {"max-size": "1k", "max-file": "2"}}
    sizes = files_of(log_dir(tools, "small"))
    assert sizes[LOG_NAME] <= 1000 and sizes[f"{LOG_NAME}.1"] <= 1000 and f"{LOG_NAME}.2" not in sizes
    assert tools.runner("logs", "small").out.splitlines()[-1] == "200"
    quiet = tools.runner("run", "--name", "quiet", "--log-driver", "none", img, "echo", "hi")
    assert quiet.code == 0 and quiet.out == "hi\n", quiet.err  # still shown in the foreground
    assert LOG_NAME not in files_of(log_dir(tools, "quiet"))
    one_line_error(tools.runner("logs", "quiet"), 125, "does not support reading")


class Follower:
    """``runner logs -f`` in the background, its output collected line by line."""

    def __init__(self, tools: Tools, *args: str) -> None:
        self.proc = popen_runner(tools, "logs", "-f", *args)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))


@pytest.fixture
def sync_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "sync"
    d.mkdir()
    yield d


@needs_root
@needs_tools
def test_follow_goes_across_a_containers_log_rotations(tools: Tools, img: str, sync_dir: Path) -> None:
    """The container writes a batch (a rotation's worth) each time the test lets it, once the follower has shown
    the last: every line arrives once, in order, across each rename, and -f returns when the container exits."""
    script = ("for k in 1 2 3 4 5 6 7 8; do while [ ! -e /sync/go$k ]; do sleep 0.05; done; "
              "i=0; while [ $i -lt 10 ]; do echo b$k-$i; i=$((i+1)); done; done")
    made = tools.runner("run", "-d", "--name", "rot", "-v", f"{sync_dir}:/sync", "--log-opt", "max-size=1k",
                        "--log-opt", "max-file=3", img, "sh", "-c", script)
    assert made.code == 0, made.err
    try:
        follower = Follower(tools, "rot")
        for k in range(1, 9):
            (sync_dir / f"go{k}").touch()
            wait_until(lambda k=k: f"b{k}-9" in follower.lines, f"batch {k} followed")
        assert follower.proc.wait(timeout=60) == 0  # a hang detector: -f returns once the container exited
        assert follower.lines == [f"b{k}-{i}" for k in range(1, 9) for i in range(10)]
        assert (log_dir(tools, "rot") / f"{LOG_NAME}.2").exists()  # it rotated past what max-file keeps
    finally:
        tools.runner("rm", "-f", "rot")
