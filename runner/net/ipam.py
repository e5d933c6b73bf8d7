"""Addresses: subnets for new networks and one address per endpoint, from the records alone.

There is no allocation file to get out of step: the addresses in use are those of the endpoint records, read under
the records' lock after stale ones were swept (:func:`runner.net.core.sweep`), so parallel ``run``s never collide
and an address comes back as soon as its container's namespace is gone, crash or not. The lowest free address is
taken; with MACs derived from addresses (as Docker did before 25.0) a reused address keeps peers' ARP entries right.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from runner.net.model import USER_POOL, Endpoint, Network
from shared.errors import Kind, StrataError, usage


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise usage(f"invalid subnet {text!r}: use CIDR, e.g. 10.90.0.0/24") from None
    if net.version != 4:
        raise usage(f"invalid subnet {text!r}: only IPv4 (README: not done)")
    if str(net) != text:
        raise usage(f"invalid subnet {text!r}: did you mean {net}?")
    if net.prefixlen > 29:
        raise usage(f"subnet {text} is too small: at most /29")
    return net


def gateway_of(net: ipaddress.IPv4Network) -> str:
    return str(net.network_address + 1)


def free_subnet(taken: Iterable[str], routes: Iterable[str], pool: Iterable[str] = ()) -> str:
    """The first subnet of POOL (default: the /24s of the user pool) that overlaps no network of ours and no
    route of the host's (a subnet the host already reaches some other way, another store's bridge included,
    would hide it or be hidden)."""
    busy = [ipaddress.ip_network(t) for t in [*taken, *routes]]
    candidates = [ipaddress.ip_network(p) for p in pool] or ipaddress.ip_network(USER_POOL).subnets(new_prefix=24)
    for candidate in candidates:
        if not any(candidate.overlaps(b) for b in busy):
            return str(candidate)
    where = "the default pool" if pool else USER_POOL
    raise StrataError(f"no free subnet left in {where}: every one is routed on this host already; set bip in the "
                      "settings file or give --subnet", Kind.STATE)


def check_free_subnet(net: ipaddress.IPv4Network, networks: Iterable[Network], routes: Iterable[str]) -> None:
    for other in networks:
        if net.overlaps(ipaddress.ip_network(other.subnet)):
            raise StrataError(f"subnet {net} overlaps network {other.name} ({other.subnet})", Kind.STATE)
    for route in routes:
        if net.overlaps(ipaddress.ip_network(route)):
            raise StrataError(f"subnet {net} overlaps the host's route to {route}", Kind.STATE)


def allocate(network: Network, live: Iterable[Endpoint], wanted: str | None) -> str:
    """An address of NETWORK for a new endpoint: WANTED (``--ip``) if free, else the lowest free one."""
    net = ipaddress.ip_network(network.subnet)
    used = {e.ip for e in live} | {network.gateway}
    if wanted is not None:
        try:
            addr = ipaddress.ip_address(wanted)
        except ValueError:
            raise usage(f"invalid --ip {wanted!r}") from None
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise usage(f"--ip {wanted} is not a host address of {network.name} ({network.subnet})")
        if str(addr) in used:
            raise StrataError(f"address {wanted} is already in use on network {network.name}", Kind.STATE)
        return str(addr)
    for host in net.hosts():
        if str(host) not in used:
            return str(host)
    raise StrataError(f"no free address left on network {network.name} ({network.subnet})", Kind.STATE)


def mac_for(ip: str) -> str:
    """02:42 and the address's four bytes: locally administered, unicast, stable for an address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(ip).packed)
