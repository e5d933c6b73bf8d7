"""Netlink through pyroute2's IPRoute: the bridge, the veth pair, addresses and routes.

Imported only when a network is set up (pyroute2 costs ~0.2 s to import). A socket for the container's namespace
is opened by entering that namespace with setns(2) on this thread just long enough to create it, then coming
back: a netlink socket keeps the namespace it was made in, so one process talks to the host's and the container's
kernels at once, with no fork (pyroute2's own ``netns=`` forks a helper per socket).

The veth pair is made in one message with its peer created directly *inside* the container's namespace under its
final name (eth0): there is no moment when the container end sits in the host's namespace, so a crash leaves at
most the host end, which :func:`runner.net.core.reconcile` removes by its name.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runner.linux import CLONE_NEWNET, setns
from shared.errors import Kind, StrataError


def _without_the_package_init() -> None:
    """pyroute2's ``__init__`` imports every module it has (conntrack, ndb, ipdb, wireguard, nl80211...: +412
    million instructions on top of the runner's own imports, callgrind), and IPRoute needs a few of them (+244
    million). The package is registered as the module its spec makes, unexecuted: Python finds its submodules
    by its path as always, and runs nothing else (its ``__init__`` defines nothing they use)."""
    if "pyroute2" not in sys.modules:
        import importlib.util

        spec = importlib.util.find_spec("pyroute2")
        if spec is None:
            raise StrataError("pyroute2 is not installed: run scripts/setup", Kind.SYSTEM)
        sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)


_without_the_package_init()
from pyroute2.iproute.linux import IPRoute  # noqa: E402  (after the line above, which is why it is there)
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402


def fail(what: str, e: NetlinkError | OSError) -> StrataError:
    code = e.code if isinstance(e, NetlinkError) else (e.errno or 0)
    return StrataError(f"{what}: {os.strerror(code)}", Kind.SYSTEM)


@contextmanager
def host() -> Iterator[Any]:
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


@contextmanager
def inside(netns_fd: int) -> Iterator[Any]:
    """An IPRoute whose socket lives in the namespace NETNS_FD names."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            setns(netns_fd, CLONE_NEWNET)
        except OSError as e:
            raise fail("cannot enter the container's network namespace", e) from None
        try:
            ipr = IPRoute()
        finally:
            setns(own, CLONE_NEWNET)  # back before anything else: a failure here must not go unnoticed
    finally:
        os.close(own)
    try:
        yield ipr
    finally:
        ipr.close()


def index_of(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def link_names(ipr: Any) -> dict[str, str]:
    """name -> kind (bridge, veth, ...) of every link."""
    return {name: kind for name, (kind, _) in links(ipr).items()}


def links(ipr: Any) -> dict[str, tuple[str, str]]:
    """name -> (kind, ifalias) of every link: the alias says which store made it (Records.owner)."""
    out = {}
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        kind = str(info.get_attr("IFLA_INFO_KIND")) if info else ""
        out[str(link.get_attr("IFLA_IFNAME"))] = (kind, str(link.get_attr("IFLA_IFALIAS") or ""))
    return out


def ensure_bridge(ipr: Any, name: str, gateway: str, prefixlen: int, owner: str) -> tuple[int, int]:
    """The bridge NAME up with GATEWAY/PREFIXLEN on it, its ifalias OWNER; (index, MTU). Loopback traffic may
    be routed to it (route_localnet), so a port published on 127.0.0.1 can be DNATed to a container, as Docker
    does without its userland proxy; the ruleset drops what arrives on it for 127.0.0.0/8 (runner/net/nat.py).
    A bridge of that name without an alias is ours from a crash between its creation and its alias (the
    kernel takes no ifalias in the creating message); one with another alias is another store's."""
    try:
        idx = index_of(ipr, name)
        if idx is None:
            ipr.link("add", ifname=name, kind="bridge")
            idx = index_of(ipr, name)
            assert idx is not None
        link = ipr.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        if not info or info.get_attr("IFLA_INFO_KIND") != "bridge":  # someone else's link: nothing of ours on it
            raise StrataError(f"cannot set up bridge {name}: it exists and is not a bridge", Kind.STATE)
        alias = str(link.get_attr("IFLA_IFALIAS") or "")
        if alias not in ("", owner):
            raise StrataError(f"cannot set up bridge {name}: it belongs to {alias}, not this store", Kind.STATE)
        if not alias:
            ipr.link("set", index=idx, ifalias=owner)
        if not ipr.get_addr(index=idx, address=gateway):
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
        mtu = int(link.get_attr("IFLA_MTU"))
    except NetlinkError as e:
        raise fail(f"cannot set up bridge {name}", e) from None
    sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return idx, mtu


def add_veth(ipr: Any, veth: str, netns_fd: int, ifname: str, mac: str, mtu: int, bridge: int, owner: str) -> None:
    """The pair VETH (host) / IFNAME (container, made in NETNS_FD), the host end on BRIDGE, its ifalias OWNER,
    and up."""
    try:
        ipr.link("add", ifname=veth, kind="veth", mtu=mtu,
                 peer={"ifname": ifname, "net_ns_fd": netns_fd, "address": mac, "mtu": mtu})
        idx = index_of(ipr, veth)
        assert idx is not None
        ipr.link("set", index=idx, master=bridge, ifalias=owner)
        ipr.brport("set", index=idx, mode=1)  # hairpin: a container reaches its own published port via the host
        ipr.link("set", index=idx, state="up")
    except NetlinkError as e:
        raise fail(f"cannot create the veth pair {veth}/{ifname}", e) from None


def configure_inside(ipr: Any, ifname: str, ip: str, prefixlen: int, gateway: str | None) -> None:
    """In the container: lo and IFNAME up, the address, and the default route via GATEWAY when given."""
    try:
        lo = index_of(ipr, "lo")
        if lo is not None:
            ipr.link("set", index=lo, state="up")
        idx = index_of(ipr, ifname)
        if idx is None:
            raise StrataError(f"{ifname} did not appear in the container's namespace", Kind.SYSTEM)
        ipr.addr("add", index=idx, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")
        if gateway is not None:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=idx)
    except NetlinkError as e:
        raise fail(f"cannot configure {ifname} in the container", e) from None


def free_ifname(ipr: Any) -> str:
    """eth0, or the next ethN free in the container (a second network, by connect)."""
    names = set(link_names(ipr))
    n = 0
    while f"eth{n}" in names:
        n += 1
    return f"eth{n}"


def delete(ipr: Any, name: str, owner: str) -> None:
    """Remove link NAME if OWNER made it (its ifalias, or none yet: see :func:`ensure_bridge`); gone already is
    fine (a veth goes with its container's namespace). Another store's link of the same name stays."""
    try:
        found = ipr.link_lookup(ifname=name)
        if not found or str(ipr.get_links(found[0])[0].get_attr("IFLA_IFALIAS") or "") not in ("", owner):
            return
        ipr.link("del", index=found[0])
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT):
            raise fail(f"cannot remove {name}", e) from None


def host_routes(ipr: Any, ours: set[str]) -> list[str]:
    """Destinations the host routes (main table, IPv4, not the default route), but those via our bridges."""
    out = []
    names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
    for route in ipr.get_routes(family=2, table=254):
        dst, plen = route.get_attr("RTA_DST"), int(route["dst_len"])
        if dst is None or plen == 0 or names.get(int(route.get_attr("RTA_OIF") or 0)) in ours:
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
