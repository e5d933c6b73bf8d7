"""puller's words where a Docker user has habits (issue 22): an image the store does not hold is "No such image",
a registry that cannot be reached is said in words with its host (never a Python class name), and a resumed pull
says it resumes and counts only new bytes in its rate.

Connection failures are made in throwaway network namespaces (``unshare -n``, gone with their last process):
lo down, no route, an ``unreachable`` route, a closed port and a server that answers a TLS hello in plain HTTP,
all on addresses inside the namespace; nothing is sent anywhere else."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.marks import needs_root
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
