"""puller's words where a Docker user has habits (issue 22): an image the store does not hold is "No such image",
a registry that cannot be reached is said in words with its host (never a Python class name), and a resumed pull
says it resumes and counts only new bytes in its rate.

Connection failures are made in throwaway network namespaces (``unshare -n``, gone with their last process):
lo down, no route, an ``unreachable`` route, a closed port and a server that answers a TLS hello in plain HTTP,
all on addresses inside the namespace; nothing is sent anywhere else."""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from shared.digest import Digest
from shared.format import human_size
from shared.layer import parallel
from shared.layer.unpack import unpack_blob
from shared.layer.whiteout import OVERLAY
from tests.faults import FaultProxy, stall
from tests.images import Variant
from tests.marks import needs_root
from tests.terminal import Terminal
from tests.test_crash import kill_midway
from tests.test_pull_faults import image_through
from tests.tools import ROOT, Result, Tools, one_line_error

pytestmark = [needs_root]

CLASS_NAMES = ("ConnectionError", "NewConnectionError", "MaxRetryError", "SSLError", "Timeout", "Exception")


@pytest.mark.parametrize("verb", [("rmi",), ("inspect",), ("save", "-o", "{tmp}/x.tar"), ("push",)])
def test_no_such_image_in_dockers_words(tools: Tools, verb: tuple[str, ...], tmp_path: Path) -> None:
    """Docker: ``Error: No such image: nosuch``; ours is ``puller: error: No such image: nosuch``, exit 1, for an
    empty store and for one that holds other images alike."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in verb]
    for _ in range(2):
        result = tools.puller(*args, "nosuch")
        one_line_error(result, 1, "", tool="puller")
        assert result.err == "puller: error: No such image: nosuch\n"
        tools.root.mkdir(parents=True, exist_ok=True)
        (tools.root / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')  # a store, empty


# A server that answers whatever it is sent (a TLS hello) with plain HTTP, on 10.9.9.9:443 in the namespace
# (it ends by itself after a minute without a connection, should the shell that kills it be killed first)
PLAIN_SERVER = ("import socket\ns = socket.create_server(('10.9.9.9', 443))\ns.settimeout(60)\n"
                "print('up', flush=True)\nwhile True:\n"
                "    c, _ = s.accept()\n    c.recv(4096)\n    c.sendall(b'HTTP/1.1 400 Bad Request\\r\\n"
                "Content-Length: 0\\r\\n\\r\\n')\n    c.close()\n")


def pull_in_netns(tools: Tools, setup: str, ref: str) -> tuple[Result, float]:
    """``puller pull REF`` in a new network namespace after SETUP (shell), which may start a server in the
    background: it is killed by pid before the namespace's shell exits."""
    puller = shlex.join(tools.command("puller", "pull", ref))
    script = f"set -e\n{setup}\nset +e\n{puller}\nrc=$?\n[ -z \"${{server:-}}\" ] || kill \"$server\"\nexit $rc\n"
    started = time.monotonic()
    proc = subprocess.run(["timeout", "-s", "KILL", "120", "unshare", "--net", "--", "sh", "-c", script],
                          capture_output=True, text=True, cwd=ROOT, env=tools.environ(), timeout=150)
    return Result(proc.returncode, proc.stdout, proc.stderr), time.monotonic() - started


UP = "ip link set lo up"
ON_10_9 = f"{UP}\nip addr add 10.9.9.9/32 dev lo"
SERVE = (f"{ON_10_9}\npython3 -c {shlex.quote(PLAIN_SERVER)} > \"$tmp/up\" &\nserver=$!\n"
         "i=0; until [ -s \"$tmp/up\" ] || [ $i -gt 100 ]; do sleep 0.1; i=$((i+1)); done")


@pytest.mark.parametrize(("setup", "host", "words"), [
    ("", "127.0.0.1:5000", "network is unreachable"),  # lo down: not even loopback has a route
    (UP, "10.255.255.1", "network is unreachable"),  # no default route
    (f"{UP}\nip route add unreachable 10.8.0.0/16", "10.8.0.1", "no route to host"),
    (ON_10_9, "10.9.9.9", "connection refused"),
    (SERVE, "10.9.9.9", "TLS handshake failed"),
], ids=["lo-down", "no-route", "unreachable-route", "refused", "tls"])
def test_a_registry_out_of_reach_is_said_in_words(tools: Tools, tmp_path: Path, setup: str, host: str,
                                                   words: str) -> None:
    """``cannot reach registry HOST for manifest of REF: WORDS``, at once (nothing a retry would change)."""
    result, elapsed = pull_in_netns(tools, f"tmp={shlex.quote(str(tmp_path))}\n{setup}", f"{host}/strata/x:1")
    one_line_error(result, 1, f"cannot reach registry {host} for manifest of {host}/strata/x:1: {words}",
                   tool="puller")
    assert not any(name in result.err for name in CLASS_NAMES), result.err
    assert "attempts" not in result.err and elapsed < 15, (elapsed, result.err)


# -- a resumed pull ----------------------------------------------------------------------------------------------


UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def size_of(text: str) -> float:
    """``4.257MB`` (human_size's words) as bytes."""
    number = text.rstrip("BkMG")
    return float(number) * UNITS[text[len(number):]]


def test_a_resumed_pull_says_so_and_its_rate_counts_new_bytes(tools: Tools, fault_proxy: FaultProxy,
                                                              gzip_variant: Variant) -> None:  # fmt: skip
    """The next pull after a kill mid-blob says ``LAYER: resuming from KEPT of SIZE``, and when the blob is in,
    how many bytes were new and at what rate. The new half is held 3 s by the proxy: its rate is then at most
    NEW/3 s, where counting the kept bytes too would make it about twice that."""
    layer = gzip_variant.image().layers[-1]
    fault_proxy.add(stall(f"/blobs/{layer}", at=0.5, seconds=60, method="GET"))
    ref = image_through(fault_proxy, gzip_variant)
    partial = tools.root / "partial" / "sha256" / layer.split(":")[1]
    kept = kill_midway(tools, fault_proxy, ref, layer, partial)
    fault_proxy.clear()
    fault_proxy.add(stall(f"/blobs/{layer}", at=0.5, seconds=3, method="GET"))
    again = tools.puller("pull", ref)
    assert again.code == 0, again.err
    size = (tools.root / "blobs" / "sha256" / layer.split(":")[1]).stat().st_size
    short = layer.split(":")[1][:12]
    assert f"{short}: resuming from {human_size(kept)} of {human_size(size)}\n" in again.out, again.out
    done = re.search(rf"{short}: download complete \(resumed: (\S+) new at (\S+)/s, (\S+) from before\)\n",
                     again.out)
    assert done is not None, again.out
    assert done[1] == human_size(size - kept) and done[3] == human_size(kept), again.out
    assert size_of(done[2]) <= (size - kept) / 3 * 1.01, (done[2], size - kept)
    assert tools.puller("fsck").code == 0


# -- unpacking a large layer -------------------------------------------------------------------------------------


def gzip_tar(size: int) -> bytes:
    """A gzip tar of one file of SIZE random bytes (which do not compress: the blob is about as large)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return raw.getvalue()


@pytest.mark.parametrize("every", [parallel.PROGRESS_EVERY, 0.0])
def test_a_layer_worker_says_how_far_it_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 every: float) -> None:
    """The worker's counts of the blob's bytes it consumed come up its result pipe before its outcome, rising to
    the blob's size; with a count after every read (interval 0) they do not garble the outcome."""
    monkeypatch.setattr(parallel, "PROGRESS_EVERY", every)  # (before the fork: the workers inherit it)
    blob = gzip_tar(24 << 20)
    unpackers = parallel.Unpackers()
    try:
        job = unpackers.start(tmp_path / "diff", "layer 1", OVERLAY, None)
        for at in range(0, len(blob), 1 << 16):
            job.feed(at, blob[at:at + (1 << 16)])
        counts: list[int] = []
        doc = job.result(counts.append)
    finally:
        unpackers.close()
    assert doc is not None and doc.get("ok"), doc
    assert counts and counts == sorted(counts) and counts[-1] == len(blob), counts[-5:]
    assert (tmp_path / "diff" / "big").stat().st_size == 24 << 20


def test_a_layer_unpacked_in_process_says_how_far_it_got(tmp_path: Path) -> None:
    """The other way a pull unpacks a layer (no worker to spare, or its worker met a hard link into a lower):
    from the stored blob, its progress heard the same way, rising to the blob's size."""
    blob = gzip_tar(24 << 20)
    (tmp_path / "blob").write_bytes(blob)
    diff_id = Digest.of_bytes(gzip.decompress(blob))
    counts: list[int] = []
    unpack_blob(tmp_path / "blob", tmp_path / "diff", diff_id, progress=counts.append)
    assert counts and counts == sorted(counts) and counts[-1] == len(blob), counts[-5:]


def test_a_resumed_pull_on_a_terminal_says_so_in_its_row(tools: Tools, fault_proxy: FaultProxy,
                                                          gzip_variant: Variant) -> None:  # fmt: skip
    """On a terminal the layer's row says ``resuming from KEPT of SIZE`` before its bar moves on, and ends as
    the others do (the rows stay, then Digest and Status)."""
    layer = gzip_variant.image().layers[-1]
    fault_proxy.add(stall(f"/blobs/{layer}", at=0.5, seconds=60, method="GET"))
    ref = image_through(fault_proxy, gzip_variant)
    kept = kill_midway(tools, fault_proxy, ref, layer, tools.root / "partial" / "sha256" / layer.split(":")[1])
    fault_proxy.clear()
    terminal = Terminal(tools.command("puller", "pull", ref), env=tools.environ())
    try:
        seen = terminal.read_until(b"Status: Downloaded newer image", timeout=60).decode()
    finally:
        assert terminal.close() == 0
    short = layer.split(":")[1][:12]
    assert f"{short}: resuming from {human_size(kept)} of " in seen, seen
    assert f"{short}: done\r\n" in seen.rsplit("\x1b[J", 1)[-1], seen
