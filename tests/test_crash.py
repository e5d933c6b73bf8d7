"""kill -9 at any moment leaves a store that fsck finds clean, and the same command run again succeeds (issue 13).

The puller is killed by step: after its Nth progress line (off a terminal it prints one line per change of state:
waiting, downloading, downloaded, unpacking, done, ...), for every N it prints, so every step of the pipeline is a
crash point. Work in progress the killed process left in tmp/ is litter, which fsck lists but does not count.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.format import human_size
from tests.faults import FaultProxy, stall
from tests.images import Variant
from tests.marks import needs_root, needs_tools
from tests.test_pull_faults import image_through
from tests.tools import ROOT, Tools, wait_until

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


def test_rm_killed_midway(tools: Tools, test_image: str, no_leaks: None) -> None:
    """A container is there whole or gone: rm killed at any moment leaves no half container (one rename out of
    containers/, then removal in tmp/), and rm again (or nothing left to do) ends with fsck clean."""
    assert tools.puller("pull", "--quiet", test_image).code == 0
    delays = (0.02, 0.1, 0.25, 0.5)
    fill = "i=0; while [ $i -lt 3000 ]; do mkdir d$i && echo x > d$i/f; i=$((i+1)); done"
    for n, _ in enumerate(delays):
        made = tools.runner("run", "--name", f"big{n}", "-w", "/data", test_image, "sh", "-c", fill)
        assert made.code == 0, made.err
    for n, delay in enumerate(delays):
        proc = subprocess.Popen([sys.executable, "-m", "runner", "--root", str(tools.root), "rm", f"big{n}"],
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)  # a crash point, not a measurement
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        for d in (tools.root / "containers").iterdir():
            assert (d / "config.json").is_file(), f"half a container left after a kill at {delay} s: {d}"
        if f"big{n}" in tools.runner("ps", "-a").out:
            again = tools.runner("rm", f"big{n}")
            assert again.code == 0, again.err
        checked = tools.puller("fsck")
        assert checked.code == 0, checked.out + checked.err
    assert not list((tools.root / "containers").iterdir())


def kill_midway(tools: Tools, fault_proxy: FaultProxy, ref: str, layer: str, partial: Path) -> int:
    """Start a pull, SIGKILL it once the first part of LAYER (stalled there by a rule of the test's) is in its
    partial file; return the bytes kept there."""
    proc = subprocess.Popen(pull_argv(tools, ref), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_until(lambda: any(e.bytes_sent > 0 and e.fault == "stall"
                               for e in fault_proxy.requests(f"/blobs/{layer}", method="GET"))
                   and partial.exists() and partial.stat().st_size > 0, "the first half of the blob")
        time.sleep(0.5)  # (what the proxy sent is in the file once the client has written it)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return partial.stat().st_size


def test_download_killed_midway_resumes_in_the_next_pull(tools: Tools, fault_proxy: FaultProxy,
                                                          gzip_variant: Variant) -> None:  # fmt: skip
    """A pull killed in the middle of a blob leaves its bytes in partial/ (fsck names them, not as a problem);
    the next pull asks the registry only for the rest (Range from where the first stopped) and verifies the whole."""
    layer = gzip_variant.image().layers[-1]
    fault_proxy.add(stall(f"/blobs/{layer}", at=0.5, seconds=60, method="GET"))
    ref = image_through(fault_proxy, gzip_variant)
    partial = tools.root / "partial" / "sha256" / layer.split(":")[1]
    kept = kill_midway(tools, fault_proxy, ref, layer, partial)
    assert kept > 0
    checked = tools.puller("fsck")
    assert checked.code == 0, checked.out
    assert f"partial: partial/sha256/{layer.split(':')[1]} ({kept} bytes" in checked.out

    fault_proxy.clear()
    again = tools.puller("pull", ref)
    assert again.code == 0, again.err
    assert f"{layer.split(':')[1][:12]}: resuming from {human_size(kept)} of " in again.out, again.out
    second = fault_proxy.requests(f"/blobs/{layer}", method="GET")[-1]
    assert second.range == f"bytes={kept}-" and second.status == 206
    assert not partial.exists()
    assert tools.puller("fsck").code == 0
    assert tools.runner("run", "--rm", ref, "true").code == 0


def test_a_second_pull_of_a_blob_in_download_says_it_waits_then_resumes_it(tools: Tools, fault_proxy: FaultProxy,
                                                                           gzip_variant: Variant) -> None:  # fmt: skip
    """Two pulls never write one blob at once: the second says it waits for the other's download (it sat there
    silently), and when the first is killed it takes the partial file over and finishes."""
    layer = gzip_variant.image().layers[-1]
    fault_proxy.add(stall(f"/blobs/{layer}", at=0.5, seconds=60, method="GET"))
    ref = image_through(fault_proxy, gzip_variant)
    partial = tools.root / "partial" / "sha256" / layer.split(":")[1]
    first = subprocess.Popen(pull_argv(tools, ref), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, cwd=ROOT)
    second: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: partial.exists() and partial.stat().st_size > 0, "the first pull's download")
        second = subprocess.Popen(pull_argv(tools, ref), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=ROOT, text=True)
        assert second.stdout is not None
        for line in second.stdout:
            if "waiting for another download" in line:
                break
        else:
            raise AssertionError("the second pull never said it waits")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        rest = second.stdout.read()
        assert second.wait(timeout=120) == 0, rest
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not partial.exists()
    assert tools.puller("fsck").code == 0
