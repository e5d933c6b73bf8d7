"""``run -it``: a session driven through a real pseudo-terminal, as a user's terminal would."""

from __future__ import annotations

import sys

from tests.marks import as_root_and_user, needs_root, needs_tools
from tests.terminal import Terminal
from tests.tools import Tools, runner_command, runtime_option

pytestmark = [needs_root, needs_tools]


@as_root_and_user
def test_interactive_tty_session(tools: Tools, stored_test_image: str, executor: str) -> None:
    term = Terminal(runner_command(tools, "run", "--rm", "-it", "--runtime", runtime_option(executor),
                                   stored_test_image, "sh"),
                    env=tools.environ(), hand_over=tools.hand_over)
    try:
        term.read_until(b"# ")
        term.type("tty; echo T=$TERM; stty size; test -c /dev/console && echo CONSOLE; echo $((6*7)); exit 3\r")
        out = term.read_until(b"42")
    finally:
        code = term.close()
    assert code == 3
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text  # the pty lives in the container's own devpts
    assert "T=xterm" in text
    assert "33 101" in text  # the window size was passed on
    assert "CONSOLE" in text  # /dev/console is the container's terminal
    assert list((tools.root / "containers").iterdir()) == []


def test_pull_shows_per_layer_bars_on_a_terminal(tools: Tools, test_image: str) -> None:
    term = Terminal([sys.executable, "-m", "puller", "--root", str(tools.root), "pull", test_image])
    try:
        out = term.read_until(b"Status:")
    finally:
        code = term.close()
    assert code == 0
    text = out.decode(errors="replace")
    assert "downloading [" in text and "/s" in text  # bytes, total and speed while it downloads
    assert "\x1b[" in text  # redrawn in place
    assert text.count(": done") >= 2  # every layer ends done
    plain = tools.puller("pull", test_image)  # not a terminal: plain lines, no control characters
    assert "\x1b" not in plain.out and "up to date" in plain.out
