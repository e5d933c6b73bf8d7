"""The texts of a container's ``/etc/hosts`` and ``/etc/resolv.conf``.

Names on a user network resolve through hosts entries, not a DNS server: a responder would be a process per
network that outlives every ``run`` (a daemon by another name). So each endpoint's hosts file lists its peers on
its user networks, by container name and ``--network-alias``, and :mod:`runner.net.core` rewrites the files of
the running peers, in place, whenever a container joins or leaves. The default ``bridge`` names no peers, as
Docker's does not. Limit: a process inside that caches lookups sees a change only when it looks again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from runner.net.model import Endpoint, parse_add_host

LOCAL = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
         "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
# Docker's fallback when the host has no nameserver a container can reach (libnetwork resolvconf)
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def hosts(own: Sequence[Endpoint], peers: Iterable[Endpoint], hostname: str, add_hosts: Iterable[str]) -> str:
    """OWN: the container's endpoints, the one with the default route first (its address names the hostname).
    PEERS: the other live endpoints on its user networks."""
    lines = [LOCAL]
    if own:
        first = own[0]
        names = _unique([hostname, *(a for e in own for a in e.aliases)])
        lines.append(f"{first.ip}\t{' '.join(names)}\n")
        lines += [f"{e.ip}\t{hostname}\n" for e in own[1:]]
    else:
        lines.append(f"127.0.1.1\t{hostname}\n")  # none: only loopback to name it by
    seen: set[tuple[str, str]] = set()
    for peer in peers:
        names = _unique([peer.name, peer.hostname, *peer.aliases])
        key = (peer.ip, " ".join(names))
        if key not in seen:
            seen.add(key)
            lines.append(f"{peer.ip}\t{' '.join(names)}\n")
    gateway = own[0].gateway if own else ""
    for entry in add_hosts:
        host, ip = parse_add_host(entry)
        if ip == "host-gateway":
            if not gateway:
                continue  # no network to reach the host by
            ip = gateway
        lines.append(f"{ip}\t{host}\n")
    return "".join(lines)


def _unique(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        if n and n not in out:
            out.append(n)
    return out


def resolv_conf(host_resolv: Path, dns: Sequence[str]) -> str:
    """The host's resolv.conf as Docker rewrites it: loopback nameservers dropped (the container's loopback is
    its own), Google's public resolvers if none is left; ``--dns`` replaces the nameservers, keeping search and
    options lines."""
    try:
        lines = host_resolv.read_text().splitlines()
    except OSError:
        lines = []
    kept = [ln for ln in lines if ln.split()[:1] != ["nameserver"]]
    listed = [ln.split()[1] for ln in lines if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1]
    servers = list(dns) or [s for s in listed if not _loopback(s)]
    if not servers:
        servers = list(DEFAULT_NAMESERVERS)
    return "".join(f"{ln}\n" for ln in kept) + "".join(f"nameserver {s}\n" for s in servers)


def _loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False
