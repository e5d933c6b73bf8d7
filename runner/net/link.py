"""Netlink for the bridge, the veth pair, addresses and routes, in pyroute2's messages (:mod:`runner.net.rtnl`).

Imported only when a network is set up. A socket for the container's namespace is opened by entering that
namespace with setns(2) on this thread just long enough to create it, then coming back: a netlink socket keeps
the namespace it was made in, so one process talks to the host's and the container's kernels at once, with no
fork (pyroute2's own ``netns=`` forks a helper per socket).

The veth pair is made in one message with its peer created directly *inside* the container's namespace under its
final name (eth0): there is no moment when the container end sits in the host's namespace, so a crash leaves at
most the host end, which :func:`runner.net.core.reconcile` removes by its name.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runner.linux import CLONE_NEWNET, setns
from runner.net.rtnl import (
    CREATE,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    NetlinkError,
    Rtnl,
    ifaddrmsg,
    ifinfmsg,
    rtmsg,
)
from shared.errors import Kind, StrataError

IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1  # as IPRoute's route("add") made them


def fail(what: str, e: NetlinkError | OSError) -> StrataError:
    code = e.code if isinstance(e, NetlinkError) else (e.errno or 0)
    return StrataError(f"{what}: {os.strerror(code)}", Kind.SYSTEM)


@contextmanager
def host() -> Iterator[Rtnl]:
    ipr = Rtnl()
    try:
        yield ipr
    finally:
        ipr.close()


@contextmanager
def inside(netns_fd: int) -> Iterator[Rtnl]:
    """A netlink socket that lives in the namespace NETNS_FD names."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            setns(netns_fd, CLONE_NEWNET)
        except OSError as e:
            raise fail("cannot enter the container's network namespace", e) from None
        try:
            ipr = Rtnl()
        finally:
            setns(own, CLONE_NEWNET)  # back before anything else: a failure here must not go unnoticed
    finally:
        os.close(own)
    try:
        yield ipr
    finally:
        ipr.close()


def _link(index: int = 0, attrs: list[tuple[str, Any]] | None = None, up: bool = False) -> Any:
    """An ifinfmsg for link INDEX with ATTRS (and IFF_UP set, with UP)."""
    msg = ifinfmsg()
    msg["index"] = index
    if up:
        msg["flags"], msg["change"] = IFF_UP, IFF_UP
    msg["attrs"] = attrs or []
    return msg


def _set(ipr: Rtnl, index: int, *attrs: tuple[str, Any], up: bool = False) -> None:
    ipr.request(_link(index, list(attrs), up), RTM_NEWLINK)


def link_of(ipr: Rtnl, name: str) -> Any | None:
    """The link named NAME (an ifinfmsg), or None."""
    try:
        found = ipr.request(_link(attrs=[("IFLA_IFNAME", name)]), RTM_GETLINK)
    except NetlinkError as e:
        if e.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return found[0] if found else None


def index_of(ipr: Rtnl, name: str) -> int | None:
    link = link_of(ipr, name)
    return None if link is None else int(link["index"])


def link_names(ipr: Rtnl) -> dict[str, str]:
    """name -> kind (bridge, veth, ...) of every link."""
    return {name: kind for name, (kind, _) in links(ipr).items()}


def links(ipr: Rtnl) -> dict[str, tuple[str, str]]:
    """name -> (kind, ifalias) of every link: the alias says which store made it (Records.owner)."""
    return {str(link.get_attr("IFLA_IFNAME")): (_kind(link), str(link.get_attr("IFLA_IFALIAS") or ""))
            for link in ipr.dump(_link(), RTM_GETLINK)}


def _kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND")) if info else ""


def ensure_bridge(ipr: Rtnl, name: str, gateway: str, prefixlen: int, owner: str) -> tuple[int, int]:
    """The bridge NAME up with GATEWAY/PREFIXLEN on it, its ifalias OWNER; (index, MTU). Loopback traffic may
    be routed to it (route_localnet), so a port published on 127.0.0.1 can be DNATed to a container, as Docker
    does without its userland proxy; the ruleset drops what arrives on it for 127.0.0.0/8 (runner/net/nat.py).
    A bridge of that name without an alias is ours from a crash between its creation and its alias (the
    kernel takes no ifalias in the creating message); one with another alias is another store's."""
    try:
        link = link_of(ipr, name)
        if link is None:
            ipr.request(_link(attrs=[("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND",
                                                                                           "bridge")]})]),
                        RTM_NEWLINK, CREATE)
            link = link_of(ipr, name)
            assert link is not None
        idx = int(link["index"])
        if _kind(link) != "bridge":  # someone else's link: nothing of ours on it
            raise StrataError(f"cannot set up bridge {name}: it exists and is not a bridge", Kind.STATE)
        alias = str(link.get_attr("IFLA_IFALIAS") or "")
        if alias not in ("", owner):
            raise StrataError(f"cannot set up bridge {name}: it belongs to {alias}, not this store", Kind.STATE)
        if not alias:
            _set(ipr, idx, ("IFLA_IFALIAS", owner))
        if not _has_address(ipr, idx, gateway):
            _add_address(ipr, idx, gateway, prefixlen)
        _set(ipr, idx, up=True)
        mtu = int(link.get_attr("IFLA_MTU"))
    except NetlinkError as e:
        raise fail(f"cannot set up bridge {name}", e) from None
    sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return idx, mtu


def _has_address(ipr: Rtnl, index: int, address: str) -> bool:
    query = ifaddrmsg()
    query["family"] = socket.AF_INET
    return any(int(a["index"]) == index and address in (a.get_attr("IFA_ADDRESS"), a.get_attr("IFA_LOCAL"))
               for a in ipr.dump(query, RTM_GETADDR))


def _add_address(ipr: Rtnl, index: int, address: str, prefixlen: int) -> None:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, prefixlen, index
    msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    ipr.request(msg, RTM_NEWADDR, CREATE)


def add_veth(ipr: Rtnl, veth: str, netns_fd: int, ifname: str, mac: str, mtu: int, bridge: int, owner: str) -> None:
    """The pair VETH (host) / IFNAME (container, made in NETNS_FD), the host end on BRIDGE, its ifalias OWNER,
    and up."""
    peer = {"attrs": [("IFLA_IFNAME", ifname), ("IFLA_NET_NS_FD", netns_fd), ("IFLA_ADDRESS", mac), ("IFLA_MTU", mtu)]}
    info = {"attrs": [("IFLA_INFO_KIND", "veth"), ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}
    try:
        ipr.request(_link(attrs=[("IFLA_IFNAME", veth), ("IFLA_MTU", mtu), ("IFLA_LINKINFO", info)]), RTM_NEWLINK,
                    CREATE)
        idx = index_of(ipr, veth)
        assert idx is not None
        _set(ipr, idx, ("IFLA_MASTER", bridge), ("IFLA_IFALIAS", owner))
        # hairpin: a container reaches its own published port via the host (`ip link set VETH type bridge_slave
        # hairpin on`)
        hairpin = {"attrs": [("IFLA_BRPORT_MODE", 1)]}
        _set(ipr, idx, ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"),
                                                    ("IFLA_INFO_SLAVE_DATA", hairpin)]}))
        _set(ipr, idx, up=True)
    except NetlinkError as e:
        raise fail(f"cannot create the veth pair {veth}/{ifname}", e) from None


def configure_inside(ipr: Rtnl, ifname: str, ip: str, prefixlen: int, gateway: str | None) -> None:
    """In the container: lo and IFNAME up, the address, and the default route via GATEWAY when given."""
    try:
        lo = index_of(ipr, "lo")
        if lo is not None:
            _set(ipr, lo, up=True)
        idx = index_of(ipr, ifname)
        if idx is None:
            raise StrataError(f"{ifname} did not appear in the container's namespace", Kind.SYSTEM)
        _add_address(ipr, idx, ip, prefixlen)
        _set(ipr, idx, up=True)
        if gateway is not None:
            route = rtmsg()
            route["family"], route["dst_len"], route["table"] = socket.AF_INET, 0, RT_TABLE_MAIN
            route["proto"], route["scope"], route["type"] = RTPROT_STATIC, 0, RTN_UNICAST
            route["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", idx)]
            ipr.request(route, RTM_NEWROUTE, CREATE)
    except NetlinkError as e:
        raise fail(f"cannot configure {ifname} in the container", e) from None


def free_ifname(ipr: Rtnl) -> str:
    """eth0, or the next ethN free in the container (a second network, by connect)."""
    names = set(link_names(ipr))
    n = 0
    while f"eth{n}" in names:
        n += 1
    return f"eth{n}"


def delete(ipr: Rtnl, name: str, owner: str) -> None:
    """Remove link NAME if OWNER made it (its ifalias, or none yet: see :func:`ensure_bridge`); gone already is
    fine (a veth goes with its container's namespace). Another store's link of the same name stays."""
    try:
        link = link_of(ipr, name)
        if link is None or str(link.get_attr("IFLA_IFALIAS") or "") not in ("", owner):
            return
        ipr.request(_link(int(link["index"])), RTM_DELLINK)
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT):
            raise fail(f"cannot remove {name}", e) from None


def host_routes(ipr: Rtnl, ours: set[str]) -> list[str]:
    """Destinations the host routes (main table, IPv4, not the default route), but those via our bridges."""
    out = []
    names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.dump(_link(), RTM_GETLINK)}
    query = rtmsg()
    query["family"] = socket.AF_INET
    for route in ipr.dump(query, RTM_GETROUTE):
        table = route.get_attr("RTA_TABLE") or route["table"]
        dst, plen = route.get_attr("RTA_DST"), int(route["dst_len"])
        if table != RT_TABLE_MAIN or dst is None or plen == 0 or \
                names.get(int(route.get_attr("RTA_OIF") or 0)) in ours:
            continue
        out.append(f"{dst}/{plen}")
    return out


def sysctl(key: str, value: str) -> str:
    """Set /proc/sys/KEY (this namespace's) to VALUE; returns the old value."""
    path = f"/proc/sys/{key}"
    try:
        with open(path) as f:
            old = f.read().strip()
        if old != value:
            with open(path, "w") as f:
                f.write(value)
    except OSError as e:
        raise StrataError(f"cannot set {key.replace('/', '.')}: {e.strerror}", Kind.SYSTEM) from None
    return old
