"""``runner attach``, detach keys (Ctrl-P Ctrl-Q, ``--detach-keys``) in ``attach`` and ``run -it``, and the order
of a container's output: as a user types them, through a real pseudo-terminal (tests/terminal.py)."""

from __future__ import annotations

import contextlib
import json
import stat
import subprocess

from tests.marks import also_as_user, as_root_and_user, needs_root, needs_tools
from tests.terminal import Terminal
from tests.tools import Tools, popen_runner, runner_command, runtime_option, wait_until

pytestmark = [needs_root, needs_tools]

CTRL_P_CTRL_Q = "\x10\x11"


def attach(tools: Tools, *args: str) -> Terminal:
    return Terminal(runner_command(tools, "attach", *args), env=tools.environ(), hand_over=tools.hand_over)


def status(tools: Tools, name: str) -> str:
    return tools.runner("inspect", "-f", "{{.State.Status}}", name).out.strip()


def gone(tools: Tools, name: str) -> bool:
    return tools.runner("inspect", name).code != 0


@as_root_and_user
def test_attach_types_detaches_and_attaches_again(tools: Tools, stored_test_image: str, executor: str,
                                                  names: list[str]) -> None:
    names.append("shell")
    made = tools.runner("run", "-d", "-it", "--name", "shell", "--runtime", runtime_option(executor),
                        stored_test_image, "sh")
    assert made.code == 0, made.err
    sock = tools.root / "containers" / made.out.strip() / "attach.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # the owner's alone
    term = attach(tools, "shell")
    try:
        term.type("echo $((6*7))\r")
        term.read_until(b"42")
        term.type(CTRL_P_CTRL_Q)
        seen = term.read_until(b"read escape sequence")
    finally:
        code = term.close()
    assert code == 1  # Docker's attach: "read escape sequence", exit 1
    assert b"\x10" not in seen  # the keys went nowhere
    assert status(tools, "shell") == "running"
    term = attach(tools, "shell")
    try:
        term.type("echo again $((2*3))\r")
        term.read_until(b"again 6")
        term.type("exit 3\r")
    finally:
        code = term.close()
    assert code == 3  # the container's exit code is attach's
    assert status(tools, "shell") == "exited"  # recorded before attach was told


def test_attach_without_tty_sees_output_and_exit_code(tools: Tools, stored_test_image: str,
                                                      names: list[str]) -> None:
    names.append("ticker")
    script = "while :; do echo tick; [ -e /tmp/stop ] && { echo bye >&2; exit 5; }; sleep 0.1; done"
    assert tools.runner("run", "-d", "--name", "ticker", stored_test_image, "sh", "-c", script).code == 0
    proc = popen_runner(tools, "attach", "ticker")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "tick\n"  # attached: it sees what comes now
        assert tools.runner("exec", "ticker", "touch", "/tmp/stop").code == 0
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 5
    assert err == "bye\n"  # stderr to stderr


def test_attach_gives_stdin_to_a_container_made_with_i(tools: Tools, stored_test_image: str,
                                                       names: list[str]) -> None:
    """-d -i keeps its stdin open (Docker's): what an attach client types reaches it, through a pipe."""
    names.append("reader")
    script = "echo ready; read line; echo got $line; exit 2"
    assert tools.runner("run", "-d", "-i", "--name", "reader", stored_test_image, "sh", "-c", script).code == 0
    proc = popen_runner(tools, "attach", "reader", stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2 and "got hello" in out


def test_custom_detach_keys_and_bad_ones(tools: Tools, stored_test_image: str, names: list[str]) -> None:
    names.append("keys")
    assert tools.runner("run", "-d", "-it", "--name", "keys", stored_test_image, "sh").code == 0
    term = attach(tools, "--detach-keys", "ctrl-a,x", "keys")
    try:
        term.type("\x01echo y$((3*5))\r")  # a partial match goes on as typed (ctrl-a: to the line's start)
        term.read_until(b"y15")
        term.type(CTRL_P_CTRL_Q + "echo still $((4*4))\r")  # not the keys now: typed into the shell
        term.read_until(b"still 16")
        term.type("\x01x")
        term.read_until(b"read escape sequence")
    finally:
        assert term.close() == 1
    assert status(tools, "keys") == "running"
    bad = tools.runner("attach", "--detach-keys", "ctrl-1", "keys")
    assert bad.code != 0 and "Invalid detach keys (ctrl-1) provided" in bad.err
    before = tools.runner("ps", "-aq").out
    bad = tools.runner("run", "--rm", "-d", "--detach-keys", "ctrl-a,ab", stored_test_image, "true")
    assert bad.code == 125 and "Invalid detach keys (ctrl-a,ab) provided" in bad.err
    assert tools.runner("ps", "-aq").out == before  # refused before anything was made
    stopped = tools.runner("create", "--name", "idle", stored_test_image, "true")
    names.append("idle")
    assert stopped.code == 0
    refused = tools.runner("attach", "idle")
    assert refused.code != 0 and "You cannot attach to a stopped container, start it first" in refused.err


@also_as_user
def test_run_it_detaches_and_rm_still_removes(tools: Tools, stored_test_image: str, names: list[str]) -> None:
    names.append("fore")
    term = Terminal(runner_command(tools, "run", "--rm", "-it", "--name", "fore", stored_test_image, "sh"),
                    env=tools.environ(), hand_over=tools.hand_over)
    try:
        term.read_until(b"# ")
        term.type("echo up $((5*5))\r")
        term.read_until(b"up 25")
        term.type(CTRL_P_CTRL_Q)
    finally:
        code = term.close()
    assert code == 0  # Docker's run -it detach: exit 0, nothing said
    assert b"escape" not in term.seen
    assert status(tools, "fore") == "running"
    again = attach(tools, "fore")
    try:
        again.type("echo back $((9*9))\r")
        again.read_until(b"back 81")
        again.type("exit 4\r")
    finally:
        assert again.close() == 4
    wait_until(lambda: gone(tools, "fore"), "--rm removed it once it exited")


def test_two_clients_see_the_same_terminal(tools: Tools, stored_test_image: str, names: list[str]) -> None:
    names.append("shared")
    assert tools.runner("run", "-d", "-it", "--name", "shared", stored_test_image, "sh").code == 0
    first, second = attach(tools, "shared"), attach(tools, "shared")
    try:
        for _ in range(30):  # attach replays nothing (Docker's): the second sees output once it has connected
            first.type("echo ready $((20+1))\r")
            with contextlib.suppress(AssertionError):
                second.read_until(b"ready 21", timeout=1)
                break
        first.type("echo from first $((8*7))\r")
        first.read_until(b"first 56")
        second.read_until(b"first 56")  # every client sees the output
        second.type("exit 6\r")  # any client may type
    finally:
        codes = first.close(), second.close()
    assert codes == (6, 6)


# writes far enough apart that the runner wakes between them even on a machine loaded 8 runnable tasks to a core
# (measured: 5 ms apart holds on a quiet machine, not under that load; docs/commands.md)
ORDERED = "for i in 1 2 3; do echo out$i; sleep 0.2; echo err$i >&2; sleep 0.2; done"


def test_output_order_of_a_writer_that_takes_turns(tools: Tools, stored_test_image: str, names: list[str]) -> None:
    """Writes that take turns come out in the order written, from ``run`` (both streams into one pipe) and in the
    log, its times monotonic and its stream tags right."""
    names.append("order")
    proc = subprocess.run(runner_command(tools, "run", "--name", "order", stored_test_image, "sh", "-c", ORDERED),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tools.environ(),
                          timeout=120)
    assert proc.returncode == 0
    expected = [f"{stream}{i}" for i in range(1, 4) for stream in ("out", "err")]
    assert proc.stdout.split() == expected
    names.append("behind")  # and from a detached container's monitor, into its log
    assert tools.runner("run", "-d", "--name", "behind", stored_test_image, "sh", "-c", ORDERED).code == 0
    wait_until(lambda: status(tools, "behind") == "exited", "the detached writer exited")
    for name in ("order", "behind"):
        container = tools.runner("inspect", "-f", "{{.Id}}", name).out.strip()
        records = [json.loads(line) for line in (tools.root / "containers" / container / "container.log").open()]
        assert [r["log"].strip() for r in records] == expected
        assert [r["stream"] for r in records] == ["stdout", "stderr"] * 3
        assert [r["time"] for r in records] == sorted(r["time"] for r in records)
        logs = tools.runner("logs", name)
        assert logs.out.split() == [e for e in expected if e.startswith("out")]
        assert logs.err.split() == [e for e in expected if e.startswith("err")]
