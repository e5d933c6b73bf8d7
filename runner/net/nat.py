"""nftables: masquerade out of the bridges, DNAT of published ports, what may be forwarded; and ip_forward.

Everything lives in one table, ``ip strata``, rewritten whole from the records in one ``nft -f`` transaction each
time they change: the kernel applies a transaction entirely or not at all, so there is never half a ruleset, and
``nft delete table ip strata`` undoes all of it. We call the ``nft`` tool rather than pyroute2's nftables module,
which builds rules expression by expression (its own docs call it a prototype); the tool costs one exec (~5 ms).

The rules (Docker's, in nft words):

* ``prerouting``/``output`` (nat): traffic to a local address and a published port is DNATed to its container;
  ``output`` makes it work from the host itself, 127.0.0.1 included (route_localnet is set on our bridges).
* ``postrouting`` (nat): a non-internal network's traffic leaving by another interface is masqueraded; loopback
  sources DNATed onto a bridge, and a container reaching its own published port through the host (its bridge
  port is in hairpin mode), are masqueraded too, so replies come back the way they went.
* ``forward`` (filter): traffic within one bridge passes; an internal network's traffic goes nowhere else; a
  non-internal one may go out, and in only as replies or to a published port (so one network cannot open
  connections into another, as Docker's isolation chains have it). When *we* turned ip_forward on,
  the chain's policy is drop, as Docker sets the FORWARD policy to DROP then: the host must not become a router for
  anything but our containers. If ip_forward was already on, the host's forwarding is left as it was.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from runner.net.model import Endpoint, Network
from shared.errors import Kind, StrataError

TABLE = "strata"


@dataclass(frozen=True)
class Ruleset:
    networks: tuple[Network, ...]  # those with an endpoint, hence a bridge
    endpoints: tuple[Endpoint, ...]  # live and being attached
    forward_policy_drop: bool

    def render(self) -> str:
        out = [f"table ip {TABLE} {{",
               "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;",
               "    fib daddr type local jump ports",
               "  }",
               "  chain output { type nat hook output priority -100; policy accept;",
               "    fib daddr type local jump ports",
               "  }",
               "  chain ports {"]
        for e in self.endpoints:
            for p in e.ports:
                dst = f"ip daddr {p.host_ip} " if p.host_ip else ""
                out.append(f"    {dst}{p.proto} dport {p.host_port} dnat to {e.ip}:{p.container_port}")
        out += ["  }",
                "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;"]
        for e in self.endpoints:  # a container reaching its own published port (hairpin): as Docker, by address
            out += [f"    ip saddr {e.ip} ip daddr {e.ip} {p.proto} dport {p.container_port} masquerade"
                    for p in e.ports]
        for n in self.networks:
            br = _q(n.bridge)
            out.append(f"    oifname {br} ip saddr 127.0.0.0/8 masquerade")
            if not n.internal:
                out.append(f"    ip saddr {n.subnet} oifname != {br} masquerade")
        policy = "drop" if self.forward_policy_drop else "accept"
        out += ["  }",
                f"  chain forward {{ type filter hook forward priority filter; policy {policy};"]
        # within a bridge first; then what may enter each bridge (so one network cannot open connections into
        # another, as Docker's isolation chains have it); then what may leave it
        out += [f"    iifname {_q(n.bridge)} oifname {_q(n.bridge)} accept" for n in self.networks]
        for n in self.networks:
            br = _q(n.bridge)
            out.append(f"    oifname {br} ct state established,related accept")
            if not n.internal:
                out.append(f"    oifname {br} ct status dnat accept")
            out.append(f"    oifname {br} drop")
        out += [f"    iifname {_q(n.bridge)} {'drop' if n.internal else 'accept'}" for n in self.networks]
        out += ["  }", "}"]
        return "\n".join(out) + "\n"


def _q(name: str) -> str:
    return f'"{name}"'


def apply(ruleset: Ruleset | None) -> None:
    """Replace the table with RULESET, or remove it (None), in one transaction."""
    script = f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"  # creating first makes the delete always valid
    if ruleset is not None:
        script += ruleset.render()
    nft(["-f", "-"], script)


def nft(args: Sequence[str], stdin: str = "") -> str:
    tool = shutil.which("nft")
    if tool is None:
        raise StrataError("nft not found: networking needs the nftables package (scripts/setup installs it)",
                          Kind.SYSTEM)
    result = subprocess.run([tool, *args], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["failed"])[0]
        raise StrataError(f"nft: {detail}", Kind.SYSTEM)
    return result.stdout
