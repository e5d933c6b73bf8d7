"""A container's network without root (issue 20): pasta, of Debian's passt, between the container's network
namespace and the user's.

A user may make a network namespace (in its user namespace) but no veth into the host's, no bridge there and no
NAT rule. pasta runs as the user, in the user's namespaces, and carries the container's traffic through sockets
of its own: the container gets a tap interface with the host's address and routes (``--config-net``); its
outbound connections are the user's, and ``-p`` ports are sockets pasta listens on, on the user's side.

Why pasta and not slirp4netns, measured on this machine (docs/rootless.md): both are Debian's, both need a tap
device (/dev/net/tun, which scripts/setup makes usable by users as Debian's udev does); slirp4netns is ready
sooner (about 5 ms against pasta's 28), pasta carries about twice the throughput (915 against 490 MB/s on one
TCP stream from the host) and forwards ports without a second helper. It is podman's default too.

What the container may not reach, as under root's bridge: the user's loopback. ``-T none -U none`` forward no
port from the container to the host side, and ``--no-map-gw`` keeps the gateway address from standing for the
host. pasta is given the namespace by an fd it inherits (``/proc/self/fd/N``), so no path of the container's
is named, and it is ended by its pid (checked by its start time) when the container is released.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runner.net.model import Published
from shared.errors import Kind, StrataError
from shared.proc import read_stat


def start(netns: int, pid_file: Path, ports: Sequence[Published]) -> tuple[int, int]:
    """pasta for the namespace NETNS (an fd), publishing PORTS; returns its (pid, start time) once it has
    configured the namespace (it forks to the background only then)."""
    binary = shutil.which("pasta")
    if binary is None:
        raise StrataError("a container's network without root needs pasta (Debian's passt package); or give "
                          "--network none", Kind.SYSTEM)
    tcp = ",".join(_spec(p) for p in ports if p.proto == "tcp") or "none"
    udp = ",".join(_spec(p) for p in ports if p.proto == "udp") or "none"
    args = [binary, "--config-net", "--quiet", "--no-map-gw", "-T", "none", "-U", "none", "-t", tcp, "-u", udp,
            "--pid", str(pid_file), "--netns", f"/proc/self/fd/{netns}"]
    done = subprocess.run(args, pass_fds=(netns,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False)
    if done.returncode != 0:
        said = [ln for ln in done.stdout.splitlines() if ln and not ln.startswith("Failed to send")]
        raise StrataError(f"pasta could not give the container a network: {said[-1] if said else done.returncode}",
                          Kind.SYSTEM)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        raise StrataError("pasta started but wrote no pid", Kind.SYSTEM) from None
    finally:
        pid_file.unlink(missing_ok=True)  # the caller records pid and start time together
    stat = read_stat(pid)
    if stat is None:
        raise StrataError("pasta exited right after it started", Kind.SYSTEM)
    return pid, stat.start_time


def _spec(port: Published) -> str:
    """pasta's form of one published port: ``[ADDR/]HOSTPORT:CONTAINERPORT``."""
    return f"{port.host_ip + '/' if port.host_ip else ''}{port.host_port}:{port.container_port}"
