"""kill -9 at any moment leaves a store that fsck finds clean, and the same command run again succeeds (issue 13).

The puller is killed by step: after its Nth progress line (off a terminal it prints one line per change of state:
waiting, downloading, downloaded, unpacking, done, ...), for every N it prints, so every step of the pipeline is a
crash point. Work in progress the killed process left in tmp/ is litter, which fsck lists but does not count.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import ROOT, Tools, needs_root, needs_tools

pytestmark = [needs_root, needs_tools]


def pull_argv(tools: Tools, ref: str) -> list[str]:
    return [sys.executable, "-m", "puller", "--root", str(tools.root), "pull", ref]


def killed_after(tools: Tools, ref: str, lines: int) -> list[str]:
    """Start a pull, SIGKILL it once it has printed LINES lines (or let it finish); return what it printed."""
    proc = subprocess.Popen(pull_argv(tools, ref), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if len(seen) >= lines:
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.close()
    proc.wait(timeout=120)
    return seen


def test_pull_killed_at_every_step(tools: Tools, rich_image: str) -> None:
    steps = len(killed_after(Tools(tools.root.parent / "count", tools.docker_config, tools.settings), rich_image,
                             1 << 30))
    assert steps >= 6, "too few progress lines to crash between"
    for n in range(1, steps):
        store = Tools(tools.root.parent / f"kill-{n}", tools.docker_config, tools.settings)
        killed_after(store, rich_image, n)
        if (store.root / "index.json").exists():  # (killed before it made the store: nothing to check)
            checked = store.puller("fsck")
            assert checked.code == 0, f"after a kill at step {n}:\n{checked.out}{checked.err}"
        again = store.puller("pull", "--quiet", rich_image)
        assert again.code == 0, f"pull after a kill at step {n}: {again.err}"
        checked = store.puller("fsck")
        assert checked.code == 0 and "litter" not in checked.out.lower(), checked.out
        ran = store.runner("run", "--rm", rich_image, "true")
        assert ran.code == 0, ran.err
