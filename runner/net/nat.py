"""nftables: masquerade out of the bridges, DNAT of published ports, what may be forwarded, loopback's guard,
and anti-spoofing on the bridge ports.

A store's rules live in two tables named after it, ``ip strata-HASH`` and ``bridge strata-HASH`` (HASH: the
whole SHA-256 of the store's real path, which no other store has; each table's comment is its owner mark,
runner/net/records.py), rewritten whole from the records in one ``nft -f`` transaction each time they change:
the kernel applies a transaction entirely or not at all, so there is never half a ruleset, ``nft delete table``
undoes all of it, and another store's tables are never in the script. (Named by the 5-hex tag of the link
names, a second store whose tag is the first's deleted the first's tables: its loopback guard, anti-spoofing
and DNAT.) We call the ``nft`` tool rather than pyroute2's nftables module, which builds rules expression by
expression (its own docs call it a prototype); the tool costs one exec (~5 ms) per change, both tables in it
(spawned without ``subprocess``: :func:`nft`).

The rules (Docker's, in nft words, and two of our own):

* ``prerouting``/``output`` (nat): traffic to a local address and a published port is DNATed to its container;
  ``output`` makes it work from the host itself, 127.0.0.1 included (route_localnet is set on our bridges).
* ``raw`` (filter, before conntrack and DNAT): route_localnet also makes the host accept packets for
  127.0.0.0/8 arriving on our bridges, so a container with CAP_NET_RAW could reach services bound to the host's
  loopback (CVE-2020-8558): whatever arrives on our bridges for 127.0.0.0/8 is dropped, as kubelet does.
  Replies of the host's own 127.0.0.1 connections to a published port come back to the bridge's address
  (masqueraded) and are de-NATed only after this hook, so they pass. A port published on a loopback address is
  reachable only from ``lo``: a LAN neighbour sending to 127.0.0.1:P would otherwise be DNATed to the container
  (Docker's raw-table rule for such ports).
* ``postrouting`` (nat): a non-internal network's traffic leaving by another interface is masqueraded; loopback
  sources DNATed onto a bridge, and a container reaching its own published port through the host (its bridge
  port is in hairpin mode), are masqueraded too, so replies come back the way they went.
* ``forward`` (filter): traffic within one bridge passes; an internal network's traffic goes nowhere else; a
  non-internal one may go out, and in only as replies or to a published port (so one network cannot open
  connections into another, as Docker's isolation chains have it). When *we* turned ip_forward on,
  the chain's policy is drop, as Docker sets the FORWARD policy to DROP then: the host must not become a router for
  anything but our containers (another store's bridges are left to that store's table). If ip_forward was
  already on, the host's forwarding is left as it was. An empty chain ``ip_forward_was_0`` tells the other stores
  on the host that the sysctl is to be put back by the last one of us out (runner/net/core.py); it is in the
  table before the sysctl is turned on (the whole table is applied first), so no crash leaves the sysctl on
  unmarked.
* ``bridge`` table, ``prerouting`` (before the bridge learns a source MAC or the host sees an ARP): a frame
  from a container's port (its host veth) passes only with that endpoint's MAC as source, and only as IPv4 from
  its address or ARP with its MAC and address as sender; anything else, and any frame from a veth of ours that
  is no endpoint's yet (``stvTAG*``), is dropped. So no container can take another's MAC in the bridge's table,
  another's address in the host's or a peer's neighbour table, or send as another (Docker allows all three).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from runner.net.model import Endpoint, Network
from shared.errors import Kind, StrataError

FORWARD_MARK = "ip_forward_was_0"  # an empty chain: this store needs ip_forward, which was off before any store


@dataclass(frozen=True)
class Ruleset:
    """What the store's two tables say, rendered whole from the records (the module doc): the networks in use, the
    live endpoints, and whether the forward chain drops by default."""

    networks: tuple[Network, ...]  # those with an endpoint, hence a bridge
    endpoints: tuple[Endpoint, ...]  # live and being attached
    forward_policy_drop: bool
    owner: str = ""  # the store's mark, as the tables' comment
    tag: str = ""  # the store's tag: in its veths' names
    table: str = "strata"  # the tables' name (Records.table)

    def render(self) -> str:
        return self._ip() + self._bridge()

    def _ip(self) -> str:
        out = [f"table ip {self.table} {{", f"  comment {_q(self.owner)}", *self._raw(),
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
        if self.forward_policy_drop:  # other stores' bridges: their own tables judge them, ours lets them be
            out += [f'    {d}ifname "{p}*" accept' for d in ("i", "o") for p in ("strata-", "st-")]
        out += ["  }", *([f"  chain {FORWARD_MARK} {{", "  }"] if self.forward_policy_drop else []), "}"]
        return "\n".join(out) + "\n"

    def _raw(self) -> list[str]:
        out = ["  chain raw { type filter hook prerouting priority raw; policy accept;"]
        out += [f"    iifname {_q(n.bridge)} ip daddr 127.0.0.0/8 drop" for n in self.networks]
        for e in self.endpoints:
            out += [f'    iifname != "lo" ip daddr {p.host_ip} {p.proto} dport {p.host_port} drop'
                    for p in e.ports if p.host_ip.startswith("127.")]
        return [*out, "  }"]

    def _bridge(self) -> str:
        ports = ", ".join(f"{_q(e.veth)} : goto port_{e.veth}" for e in self.endpoints)
        out = [f"table bridge {self.table} {{", f"  comment {_q(self.owner)}",
               "  chain prerouting { type filter hook prerouting priority -300; policy accept;",
               *([f"    iifname vmap {{ {ports} }}"] if ports else []),
               f'    iifname "stv{self.tag}*" drop',  # a veth of ours whose rules are not in yet
               "  }"]
        for e in self.endpoints:
            out += [f"  chain port_{e.veth} {{",
                    f"    ether saddr != {e.mac} drop",
                    "    ether type != { ip, arp } drop",
                    f"    ether type arp arp saddr ether != {e.mac} drop",
                    f"    ether type arp arp saddr ip != {e.ip} drop",
                    f"    ether type ip ip saddr != {e.ip} drop",
                    "  }"]
        out.append("}")
        return "\n".join(out) + "\n"


def _q(name: str) -> str:
    return f'"{name}"'


def apply(table: str, ruleset: Ruleset | None) -> None:
    """Replace this store's two tables TABLE (RULESET's own) with RULESET, or remove them (None), in one
    transaction."""
    script = "".join(f"table {family} {table} {{}}\ndelete table {family} {table}\n"  # so the delete is valid
                     for family in ("ip", "bridge"))
    if ruleset is not None:
        script += ruleset.render()
    nft(["-f", "-"], script)


def nft(args: Sequence[str], stdin: str = "") -> str:
    """Run the ``nft`` tool with ARGS and STDIN; its output, or its first line of complaint as an error."""
    tool = which("nft")
    if tool is None:
        raise StrataError("nft not found: networking needs the nftables package (scripts/setup installs it)",
                          Kind.SYSTEM)
    code, out, err = spawn([tool, *args], stdin)
    if code != 0:
        detail = (err.strip().splitlines() or ["failed"])[0]
        raise StrataError(f"nft: {detail}", Kind.SYSTEM)
    return out


def spawn(argv: Sequence[str], stdin: str = "") -> tuple[int, str, str]:
    """Run ARGV (a path first) to its end with STDIN: its exit code, output and errors. With posix_spawn, its three
    streams memfds: ``subprocess`` and ``shutil`` (with ``locale``, ``bz2``, ``lzma``) were ~5 ms of the bridge's
    imports, paid by every run on it for one or two ``nft`` execs. Memfds rather than pipes: nothing to pump, so
    no script or listing is large enough to deadlock."""
    streams = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("in", "out", "err")]
    try:
        os.write(streams[0], stdin.encode())
        os.lseek(streams[0], 0, os.SEEK_SET)
        pid = os.posix_spawn(argv[0], list(argv), os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(streams)])
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        out, err = (_read_all(fd) for fd in streams[1:])
    finally:
        for fd in streams:
            os.close(fd)
    return code, out, err


def which(name: str) -> str | None:
    """NAME's path as ``shutil.which`` finds it (the first executable file of that name on PATH)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
