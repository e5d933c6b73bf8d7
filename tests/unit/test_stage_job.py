"""exec's stage is two halves in two languages: stage.c (the program that joins the container) and
runner/executor/stage.py (its job, and the words for its failures). These check that the halves agree (every tag
and step number stage.c knows is the one stage.py writes or reads), that every step the program can report has
words, that a job holds exactly the fields given, in order, and that the command's record is believed only when
its exit code agrees. Read as text and bytes: no compiler, root or container (tests/test_exec_stage.py runs it)."""

from __future__ import annotations

import errno
import os
import re
import struct
from pathlib import Path

import pytest

from runner.executor import stage
from runner.executor.channel import SetupFailed
from runner.isolation.seccomp import Program
from shared.errors import StrataError

SOURCE = (Path(stage.__file__).with_name("stage.c")).read_text()


def _enum(prefix: str) -> dict[str, int]:
    return {name.lower(): int(value) for name, value in re.findall(rf"^\s+{prefix}_(\w+) = (\d+),", SOURCE, re.M)}


def test_the_tags_are_stage_c_s() -> None:
    assert _enum("TAG") == stage.TAGS


def test_every_step_stage_c_reports_has_words() -> None:
    steps = _enum("STEP")
    assert (steps.pop("setup"), steps.pop("exec")) == (stage.STEP_SETUP, stage.STEP_EXEC)
    assert steps["rlimit"] == stage.STEP_RLIMIT and steps["mkdir"] == stage.STEP_MKDIR
    for step in steps.values():
        failed = stage.says(SetupFailed(step, errno.EPERM, 2), "/data/new")
        assert failed.code == 125
        assert failed.message.startswith("cannot exec in the container: "), failed
        assert "{" not in failed.message and "no name" not in failed.message, failed


@pytest.mark.parametrize(("failed", "message"), [
    (SetupFailed(7, errno.EPERM), "setns: Operation not permitted"),
    (SetupFailed(stage.STEP_MKDIR, errno.ENOTDIR, 9), "Not a directory: /etc/pass"),
    (SetupFailed(11, errno.ENOENT), "No such file or directory: /etc/passwd/x"),
    (SetupFailed(13, 0), "working directory /etc/passwd/x is outside the container"),
    (SetupFailed(stage.STEP_RLIMIT, errno.EPERM), "not allowed to raise maximum limit"),
    (SetupFailed(stage.STEP_RLIMIT, errno.EINVAL), "current limit exceeds maximum limit"),
    (SetupFailed(18, 0, 12), "seccomp: cannot install the filter: 12 bytes are not 1 to 4096 instructions"),
    (SetupFailed(99, 0), "the stage failed at a step it has no name for (99)"),
    (SetupFailed(7, 1 << 20), "setns: unknown error"),
])
def test_a_failure_says_what_python_said(failed: SetupFailed, message: str) -> None:
    """The words the interpreter stage's exceptions had (process.failure), now from the table."""
    assert stage.says(failed, "/etc/passwd/x").message == f"cannot exec in the container: {message}"


def _fields(data: bytes) -> list[tuple[str, bytes]]:
    """A job read as stage.c reads it: TAG, LENGTH, bytes."""
    names = {tag: name for name, tag in stage.TAGS.items()}
    out, at = [], 0
    while at < len(data):
        tag, size = struct.unpack_from("=II", data, at)
        out.append((names[tag], data[at + 8:at + 8 + size]))
        at += 8 + size
    assert at == len(data)
    return out


def _number(value: int) -> bytes:
    return struct.pack("=Q", value)


def test_a_job_holds_its_fields_in_order() -> None:
    job = stage.fds({"pidfd": 3, "channel": 4}) + stage.job(
        0x7E020000, "/wörk", [(7, 1024, (1 << 64) - 1), (1, 5, 1 << 70)], 0b101, 40, True,
        Program(b"\x06\0\0\0\0\0\xff\x7f", 2), (1000, 100, (100, 27)), {"PATH": "/bin", "É": "ü"},
        ["sh", "-c", "echo \udcff"], True)
    assert _fields(job) == [
        ("pidfd", _number(3)), ("channel", _number(4)), ("namespaces", _number(0x7E020000)),
        ("cwd", "/wörk".encode()), ("capabilities", _number(0b101)), ("last_cap", _number(40)),
        ("uid", _number(1000)), ("gid", _number(100)),
        ("rlimit", struct.pack("=QQQ", 7, 1024, (1 << 64) - 1)), ("rlimit", struct.pack("=QQQ", 1, 5, (1 << 64) - 1)),
        ("group", _number(100)), ("group", _number(27)),
        ("env", b"PATH=/bin"), ("env", "É=ü".encode()),
        ("argv", b"sh"), ("argv", b"-c"), ("argv", b"echo \xff"),  # the command line's bytes, as given
        ("seccomp_flags", _number(2)), ("seccomp_filter", b"\x06\0\0\0\0\0\xff\x7f"),
        ("no_new_privs", b""), ("tty", b"")]


def test_a_job_without_options_has_no_flags() -> None:
    fields = dict(_fields(stage.job(0, "/", [], 0, 40, False, None, (0, 0, ()), {}, ["true"], False)))
    assert not {"no_new_privs", "tty", "seccomp_flags", "seccomp_filter", "rlimit", "group", "env"} & set(fields)


@pytest.mark.parametrize(("cwd", "env", "argv", "message"), [
    ("/a\0b", {}, ["true"], "embedded null byte"),
    ("/", {"A": "x\0y"}, ["true"], "the command failed before its exec"),
    ("/", {}, ["tr\0ue"], "the command failed before its exec"),
])
def test_a_nul_byte_fails_as_python_failed_on_it(cwd: str, env: dict[str, str], argv: list[str], message: str) -> None:
    """No C string carries one: refused here, with the words and code the interpreter stage's mkdir or execve had."""
    with pytest.raises(StrataError) as caught:
        stage.job(0, cwd, [], 0, 40, False, None, (0, 0, ()), env, argv, False)
    assert str(caught.value) == f"cannot exec in the container: {message}" and caught.value.exit_code == 125


@pytest.mark.parametrize(("record", "code", "message"), [
    ((stage.STEP_EXEC, errno.ENOENT), 127, "exec: 'cmd': executable file not found"),
    ((stage.STEP_EXEC, errno.EACCES), 126, "exec: 'cmd': Permission denied"),
    ((stage.STEP_SETUP, errno.EPERM), 125, "cannot exec in the container: Operation not permitted"),
    ((stage.STEP_SETUP, 0), 125, "cannot exec in the container: the command failed before its exec"),
    ((stage.STEP_EXEC, errno.ENOENT), 0, None),  # forged: the command succeeded
    ((stage.STEP_EXEC, errno.ENOENT), 126, None),  # the code another record means
])
def test_a_record_is_believed_only_with_its_exit_code(record: tuple[int, int], code: int,
                                                       message: str | None) -> None:
    r, w = os.pipe()
    try:
        os.write(w, stage.RECORD.pack(*record))
        failed = stage.read_record(r, "cmd", code)
    finally:
        os.close(r)
        os.close(w)
    assert (failed.message if failed else None) == message
    assert failed is None or failed.code == code


def test_a_record_never_waits() -> None:
    """A pipe the container holds open with nothing (or half a record) in it: read at once, believed not."""
    r, w = os.pipe()
    try:
        assert stage.read_record(r, "cmd", 127) is None
        os.write(w, b"\x02\0\0")
        assert stage.read_record(r, "cmd", 127) is None
    finally:
        os.close(r)
        os.close(w)
