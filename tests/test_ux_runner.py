"""Issue 12, the runner's side: what a Docker user relies on at the terminal and in scripts. ``run -it`` keeps
what was typed before the shell was up; limit options are refused as Docker refuses them; ``ps`` shows Docker's
columns, filters and formats; ``inspect`` has ``docker inspect``'s shape."""

from __future__ import annotations

import sys

from tests.conftest import Tools, needs_root, needs_tools
from tests.test_tty import Terminal

pytestmark = [needs_root, needs_tools]


def test_typeahead_before_the_shell_starts_reaches_it(tools: Tools, test_image: str) -> None:
    """A line typed right after pressing Enter on ``run -it`` (before the container's shell is up, while the
    runner's own terminal is still in cooked mode) is executed by the shell, not dropped by the switch to raw."""
    assert tools.puller("pull", test_image).code == 0
    term = Terminal([sys.executable, "-m", "runner", "--root", str(tools.root), "run", "--rm", "-it", test_image,
                     "sh"])
    try:
        term.type("echo TYPED$((40+2)); exit 7\r")  # the shell is not up yet: the runner has just been spawned
        out = term.read_until(b"TYPED42")
    finally:
        code = term.close()
    assert b"TYPED42" in out and code == 7
