"""attach, release, disconnect, prune: each one change of the records, then the kernel reconciled to them.

The kernel state Strata owns in the host's network namespace is a function of the records: a bridge per network
that has an endpoint, a host-side veth per endpoint, the store's two nft tables (``ip``/``bridge strata-HASH``),
and ip_forward (turned on while a non-internal network is in use, put back when none is). :func:`reconcile` makes
the kernel match the records, removing every link of this store's (its ifalias is the store's owner mark,
:class:`~runner.net.records.Records`) no record explains; so a failed attach (its record dropped), a release and
a crash (its records swept) all end the same way, with nothing left over. Several stores share a host: each
touches only its own links and tables, the default bridge's subnet skips what the host already routes, and
ip_forward is handed over between them (:func:`_ip_forward`).

All of it runs under the records' lock (:meth:`Records.lock`), held for the whole attach: parallel ``run``s queue
for a few milliseconds each and never collide on an address, a port or the table.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from runner.net import files, ipam
from runner.net.model import DEFAULT_POOL, Attachment, AttachOptions, Endpoint, Network, PortSpec, Published
from runner.net.records import Records, write_in_place
from shared import settings
from shared.errors import Kind, StrataError, not_found, usage
from shared.store.layout import Store

NetNS = int | str | os.PathLike[str]
IP_FORWARD = "net/ipv4/ip_forward"
HOST_LOCK = Path("/run/strata-network.lock")  # every store's: the ip_forward hand-over between stores
EPHEMERAL = range(32768, 61000)  # -P's host ports, as Docker picks them


# -- the built-in network -------------------------------------------------------------------------------------

def default_network(records: Records) -> Network:
    """The built-in ``bridge`` network. While it has containers its subnet is the one recorded in
    ``networks/bridge.json`` (:func:`_settle_default` chose it; :func:`reconcile` drops the file with the last
    container). Unused, it is the one it would prefer: the settings file's ``bip`` (Docker's daemon.json name:
    the bridge's address with prefix, e.g. ``10.88.0.1/16``), else the first of the default pool."""
    recorded = records.network("bridge")
    if recorded is not None:
        return recorded
    bip = _bip()
    if bip is not None:
        subnet, gateway = str(bip.network), str(bip.ip)
    else:
        subnet, gateway = DEFAULT_POOL[0], ipam.gateway_of(ipam.parse_subnet(DEFAULT_POOL[0]))
    return Network("bridge", hashlib.sha256(b"strata bridge").hexdigest(), subnet, gateway, f"strata-{records.tag}")


def _bip() -> ipaddress.IPv4Interface | None:
    """The settings file's ``bip`` (shared/settings.py checked that it is an IPv4 address with a prefix), held
    to the rules of a subnet of ours (at most a /29)."""
    bip = settings.load().bip
    if bip is not None:
        ipam.parse_subnet(str(bip.network))
    return bip


def _settle_default(records: Records, ipr: Any, network: Network) -> Network:
    """The default bridge's subnet for its first container: the ``bip``, else the first /16 of the default pool
    that no route of the host reaches (another store's bridge, podman's, a VPN's), as Docker picks from its
    default address pools; recorded until its last container goes. Later containers get the recorded one."""
    from runner.net import link

    if records.endpoints(network="bridge") and records.network("bridge") is not None:
        return network
    routes = link.host_routes(ipr, _our_bridges(records, ipr))
    users = [n for n in records.networks() if n.name != "bridge"]
    bip = _bip()
    if bip is not None:
        ipam.check_free_subnet(bip.network, users, routes)
        subnet, gateway = str(bip.network), str(bip.ip)
    else:
        subnet = ipam.free_subnet((n.subnet for n in users), routes, DEFAULT_POOL)
        gateway = ipam.gateway_of(ipam.parse_subnet(subnet))
    network = replace(network, subnet=subnet, gateway=gateway, created=time.time())
    records.put_network(network)
    return network


def _our_bridges(records: Records, ipr: Any) -> set[str]:
    from runner.net import link

    return {name for name, (kind, alias) in link.links(ipr).items() if kind == "bridge" and alias == records.owner}


def lookup(records: Records, name: str) -> Network:
    """By name, full ID or unique ID prefix, as Docker finds networks."""
    if name == "bridge":
        return default_network(records)
    network = records.network(name)
    if network is not None:
        return network
    hexdigits = bool(name) and all(c in "0123456789abcdef" for c in name)
    matches = [n for n in all_networks(records) if n.id.startswith(name)] if hexdigits else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise usage(f"network ID prefix {name!r} is ambiguous")
    raise not_found(f"network {name} not found")


def all_networks(records: Records) -> list[Network]:
    return [default_network(records), *(n for n in records.networks() if n.name != "bridge")]


# -- attach ---------------------------------------------------------------------------------------------------

def attach(store: Store, netns: NetNS, opts: AttachOptions) -> Attachment:
    """Put the container whose network namespace NETNS names (an fd, or a path such as ``/proc/PID/ns/net`` or
    a bind-mounted netns file) on network ``opts.network``: a veth pair (eth0, or the next ethN, inside), an
    address, the default route (on the first network that is not internal), published ports. Returns the texts
    of its hosts and resolv.conf. Call it from the host's namespace, as root. On any failure nothing of it stays.
    All it knows of the container is NETNS and OPTS (its ID, name, hostname and what it asks for)."""
    from runner.net import link

    records = Records(store)
    fd, own_fd = _open_netns(netns)
    try:
        _refuse_the_hosts_namespace(fd)
        with records.lock(), link.host() as ipr:
            sweep(records, ipr)
            network = lookup(records, opts.network)
            mine = records.endpoints(container_id=opts.container_id)
            _check_request(opts, network, mine)
            network = _settle(records, ipr, network)
            ip = ipam.allocate(network, records.endpoints(network=network.name), opts.ip)
            with link.inside(fd) as inner:
                endpoint = _new_endpoint(records, network, opts, mine, ip, link.free_ifname(inner))
                records.put_endpoint(endpoint)
                endpoint = _plumb(records, ipr, fd, inner, network, endpoint)
            return Attachment(endpoint, hosts_for(records, opts.container_id),
                              files.resolv_conf(opts.host_resolv, opts.dns))
    finally:
        if own_fd:
            os.close(fd)


def _refuse_the_hosts_namespace(fd: int) -> None:
    given, own = os.fstat(fd), os.stat("/proc/thread-self/ns/net")
    if (given.st_dev, given.st_ino) == (own.st_dev, own.st_ino):
        raise StrataError("refusing to attach the host's own network namespace as a container's", Kind.USAGE)


def _check_request(opts: AttachOptions, network: Network, mine: list[Endpoint]) -> None:
    """What is refused before anything is made: a second endpoint on one network, and on the default bridge
    the options only user networks honour."""
    if any(e.network == network.name for e in mine):
        raise StrataError(f"container {opts.name} is already on network {network.name}", Kind.STATE)
    if opts.ip is not None and network.builtin:
        raise usage("--ip is only for user networks (create one with runner network create)")
    if opts.aliases and network.builtin:
        raise usage("--network-alias is only for user networks")


def _new_endpoint(records: Records, network: Network, opts: AttachOptions, mine: list[Endpoint], ip: str,
                  ifname: str) -> Endpoint:
    """The record of the container's endpoint on NETWORK, pending: nothing of it is in the kernel yet. MINE are
    the container's other endpoints (the first network that is not internal gets the default route)."""
    return Endpoint(
        container_id=opts.container_id, network=network.name, name=opts.name, hostname=opts.hostname, ip=ip,
        prefixlen=ipaddress.ip_network(network.subnet).prefixlen, gateway=network.gateway,
        mac=(opts.mac or ipam.mac_for(ip)).lower(), ifname=ifname,
        veth=veth_name(records, opts.container_id, network.name), aliases=opts.aliases,
        default_route=not network.internal and not any(e.default_route for e in mine),
        ports=_ports(opts, records.endpoints()), dns=opts.dns, add_hosts=opts.add_hosts,
        hosts_path=str(opts.hosts_path or ""), created=time.time())


def _plumb(records: Records, ipr: Any, fd: int, inner: Any, network: Network, endpoint: Endpoint) -> Endpoint:
    """The kernel side of a pending ENDPOINT, in order: the bridge, the veth pair into the namespace FD, the
    address and route inside (INNER: netlink there); then the record says attached, and the tables, ip_forward
    and the peers' hosts files follow it. On any failure the record goes first and the kernel follows it, so
    nothing of this endpoint stays (a kill midway leaves a pending record, which the next sweep drops)."""
    from runner.net import link

    try:
        bridge_index, mtu = link.ensure_bridge(ipr, network.bridge, network.gateway, endpoint.prefixlen,
                                               records.owner)
        link.add_veth(ipr, endpoint.veth, fd, endpoint.ifname, endpoint.mac, mtu, bridge_index, records.owner)
        link.configure_inside(inner, endpoint.ifname, endpoint.ip, endpoint.prefixlen,
                              network.gateway if endpoint.default_route else None)
        endpoint = replace(endpoint, state="attached")
        records.put_endpoint(endpoint)
        reconcile(records, ipr)
        refresh_hosts(records, {network.name}, skip=endpoint.container_id)
    except BaseException:
        records.drop_endpoint(endpoint)  # the record first: whatever happens next, the kernel follows it
        with contextlib.suppress(StrataError):
            link.delete(ipr, endpoint.veth, records.owner)
        with contextlib.suppress(StrataError, OSError):
            reconcile(records, ipr)  # else the next attach, release or prune finishes the job
            refresh_hosts(records, {network.name}, skip=endpoint.container_id)
        raise
    return endpoint


def files_without_network(hostname: str, add_hosts: Iterable[str] = (), dns: Iterable[str] = (),
                          host_resolv: Path = Path("/etc/resolv.conf")) -> Attachment:
    """``--network none``: hosts and resolv.conf for a namespace with only loopback (the caller brings lo up)."""
    return Attachment(None, files.hosts([], [], hostname, add_hosts), files.resolv_conf(host_resolv, tuple(dns)))


def host_files(hostname: str, host_hosts: Path = Path("/etc/hosts"),
               host_resolv: Path = Path("/etc/resolv.conf")) -> Attachment:
    """``--network host``: the host's own hosts and resolv.conf, as they are (its loopback resolvers are
    reachable: it is the same namespace), with the hostname added as Docker does."""
    try:
        hosts = host_hosts.read_text()
    except OSError:
        hosts = files.LOCAL
    try:
        resolv = host_resolv.read_text()
    except OSError:
        resolv = "".join(f"nameserver {s}\n" for s in files.DEFAULT_NAMESERVERS)
    if hostname not in hosts.split():
        hosts = hosts + ("" if hosts.endswith("\n") or not hosts else "\n") + f"127.0.1.1\t{hostname}\n"
    return Attachment(None, hosts, resolv)


def _open_netns(netns: NetNS) -> tuple[int, bool]:
    if isinstance(netns, int):
        return netns, False
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC), True
    except OSError as e:
        raise StrataError(f"cannot open the network namespace {os.fspath(netns)}: {e.strerror}", Kind.SYSTEM) from None


def veth_name(records: Records, container_id: str, network: str) -> str:
    """Host end: ``stv``, the store's tag (5 hex) and 7 hex of the container and network: 15 characters, what
    IFNAMSIZ allows."""
    return f"stv{records.tag}" + hashlib.sha256(f"{container_id}\0{network}".encode()).hexdigest()[:7]


def _settle(records: Records, ipr: Any, network: Network) -> Network:
    """Before a network's first container: its subnet must not be routed on the host by anyone else (another
    store's bridge took it since the network was created, say): refused, rather than breaking theirs."""
    from runner.net import link

    if network.builtin:
        return _settle_default(records, ipr, network)
    if records.endpoints(network=network.name):
        return network
    for route in link.host_routes(ipr, _our_bridges(records, ipr)):
        if ipaddress.ip_network(network.subnet).overlaps(ipaddress.ip_network(route)):
            raise StrataError(f"subnet {network.subnet} of network {network.name} is routed on this host already "
                              f"({route}): remove the network and create it with another --subnet", Kind.STATE)
    return network


def _ports(opts: AttachOptions, live: list[Endpoint]) -> tuple[Published, ...]:
    """-p and -P as concrete host ports: each checked against the ports other endpoints publish and against a
    bind(2) on the host (something listening there would be shadowed by the DNAT), 0 made a free port."""
    return published_ports(opts.publish, opts.publish_all, opts.exposed,
                           {(p.proto, p.host_port) for e in live for p in e.ports})


def published_ports(publish: Sequence[PortSpec], publish_all: bool, exposed: Sequence[str],
                    taken: set[tuple[str, int]] | None = None) -> tuple[Published, ...]:
    """-p, and -P's EXPOSED ports, as concrete host ports: each free on the host (a bind(2) succeeds) and not in
    TAKEN, a port 0 made the first free one of the ephemeral range. Also what a user's pasta publishes."""
    specs = list(publish)
    if publish_all:
        listed = {(p.container_port, p.proto) for p in specs}
        for text in exposed:
            spec = PortSpec.parse(text)
            if (spec.container_port, spec.proto) not in listed:
                specs.append(spec)
    taken = set() if taken is None else taken
    lowest = _lowest_user_port()
    for spec in specs:
        if 0 < spec.host_port < lowest:
            raise StrataError(f"cannot publish on port {spec.host_port} without root: this host lets users bind "
                              f"from {lowest} up (net.ipv4.ip_unprivileged_port_start)", Kind.UNSUPPORTED)
    out: list[Published] = []
    for spec in specs:
        if spec.host_port:
            if (spec.proto, spec.host_port) in taken or not _bindable(spec.proto, spec.host_ip, spec.host_port):
                raise StrataError(f"Bind for {spec.host_ip or '0.0.0.0'}:{spec.host_port} failed: port is already "
                                  "allocated", Kind.STATE)
            port = spec.host_port
        else:
            port = next((p for p in EPHEMERAL if (spec.proto, p) not in taken
                         and _bindable(spec.proto, spec.host_ip, p)), 0)
            if not port:
                raise StrataError("no free host port left to publish on", Kind.STATE)
        taken.add((spec.proto, port))
        out.append(Published(spec.proto, spec.host_ip, port, spec.container_port))
    return tuple(out)


def _lowest_user_port() -> int:
    """The lowest port this process may bind: 0 for root; for a user, the host's
    ``net.ipv4.ip_unprivileged_port_start`` (1024 unless the host allows lower)."""
    from shared.userns import rootless

    if not rootless():
        return 0
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def _bindable(proto: str, host_ip: str, port: int) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host_ip or "0.0.0.0", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            if e.errno == errno.EADDRNOTAVAIL:
                raise usage(f"cannot publish on {host_ip}: not an address of this host") from None
            raise
    return True


# -- user networks --------------------------------------------------------------------------------------------

def create_network(store: Store, name: str, subnet: str | None = None, internal: bool = False) -> Network:
    """A user network's record; its bridge appears with its first endpoint. SUBNET must overlap no other
    network and no route of the host; without it the first free /24 of 10.89.0.0/16 is taken."""
    from runner.net import link
    from runner.net.model import check_name

    check_name(name)
    if name in ("bridge", "none", "host", "default"):
        raise usage(f"{name} is a pre-defined network and cannot be created")
    records = Records(store)
    with records.lock(), link.host() as ipr:
        if records.network(name) is not None:
            raise StrataError(f"network with name {name} already exists", Kind.STATE)
        networks = all_networks(records)
        routes = link.host_routes(ipr, _our_bridges(records, ipr))
        if subnet is None:
            subnet = ipam.free_subnet((n.subnet for n in networks), routes)
        net = ipam.parse_subnet(subnet)
        ipam.check_free_subnet(net, networks, routes)
        network_id = os.urandom(32).hex()
        network = Network(name, network_id, str(net), ipam.gateway_of(net), f"st-{records.tag}-{network_id[:6]}",
                          internal, time.time())
        records.put_network(network)
    return network


def remove_network(store: Store, name: str) -> None:
    """Docker's ``network rm``: refused while a container is on it (a crashed one's endpoint is swept first)."""
    from runner.net import link

    if name in ("bridge", "none", "host"):
        raise StrataError(f"{name} is a pre-defined network and cannot be removed", Kind.STATE)
    records = Records(store)
    with records.lock(), link.host() as ipr:
        name = lookup(records, name).name
        if name == "bridge":
            raise StrataError("bridge is a pre-defined network and cannot be removed", Kind.STATE)
        sweep(records, ipr)
        users = records.endpoints(network=name)
        if users:
            raise StrataError(f"network {name} has active endpoints ({', '.join(e.name for e in users)})",
                              Kind.STATE)
        records.drop_network(name)
        reconcile(records, ipr)


# -- release, disconnect, prune -------------------------------------------------------------------------------

def release(store: Store, container_id: str, network: str | None = None) -> None:
    """Take the container off NETWORK (every network when None): its veth, address, published ports; then
    whatever nothing uses any more (bridge, rules, ip_forward). Idempotent; also the clean-up after a crash, of
    this container and of any other whose namespace is gone. Without records it imports nothing (``rm`` of a
    container that never had a network stays cheap)."""
    records = Records(store)
    if not records.endpoints(container_id=container_id, network=network) and not _anything_stale(records):
        return
    from runner.net import link

    with records.lock(), link.host() as ipr:
        sweep(records, ipr)
        gone = records.endpoints(container_id=container_id, network=network)
        for endpoint in gone:
            records.drop_endpoint(endpoint)
            link.delete(ipr, endpoint.veth, records.owner)  # with the namespace alive (disconnect): eth0 too
        reconcile(records, ipr)
        refresh_hosts(records, {e.network for e in gone}, skip=None)


def disconnect(store: Store, container_id: str, network: str) -> None:
    records = Records(store)
    network = lookup(records, network).name
    if not records.endpoints(container_id=container_id, network=network):
        raise StrataError(f"container {container_id[:12]} is not connected to network {network}", Kind.STATE)
    release(store, container_id, network)


def _anything_stale(records: Records) -> bool:
    """Cheap check without netlink: a pending record, or an attached one whose veth is gone from sysfs."""
    return any(e.state != "attached" or not Path(f"/sys/class/net/{e.veth}").exists()
               for e in records.endpoints())


def prune(store: Store) -> list[str]:
    """Sweep stale endpoints, remove every user network without endpoints, then reconcile: with no container
    on a network, that removes the bridges, the nft table and puts ip_forward back. Returns the networks removed."""
    from runner.net import link

    records = Records(store)
    removed = []
    with records.lock(), link.host() as ipr:
        sweep(records, ipr)
        used = {e.network for e in records.endpoints()}
        for network in records.networks():
            if network.name not in used and network.name != "bridge":  # bridge.json: reconcile's (see there)
                records.drop_network(network.name)
                removed.append(network.name)
        reconcile(records, ipr)
    return removed


def sweep(records: Records, ipr: Any) -> list[Endpoint]:
    """Drop the records of endpoints whose container is gone: pending ones (their writer died holding the lock,
    which the caller now holds) and attached ones whose host veth the kernel removed with the namespace. The
    caller reconciles after. Peers' hosts files are rewritten without them."""
    from runner.net import link

    names = link.link_names(ipr)
    stale = [e for e in records.endpoints() if e.state != "attached" or e.veth not in names]
    for endpoint in stale:
        records.drop_endpoint(endpoint)
    records.sweep_temp_files()
    if stale:
        refresh_hosts(records, {e.network for e in stale}, skip=None)
    return stale


def reconcile(records: Records, ipr: Any) -> None:
    """Make the host's namespace match the records (see the module doc). The caller holds the lock."""
    from runner.net import link, nat

    endpoints = records.endpoints()
    in_use = [n for n in all_networks(records) if any(e.network == n.name for e in endpoints)]
    if not any(n.builtin for n in in_use) and records.network("bridge") is not None:
        records.drop_network("bridge")  # the default subnet is chosen again with its next first container
    _remove_unwanted_links(records, ipr, {e.veth for e in endpoints} | {n.bridge for n in in_use})
    with host_locked(_host_lock()):
        needed = any(not n.internal for n in in_use)
        forwarding = _ip_forward(records, needed)
        table = nat.Ruleset(tuple(in_use), tuple(endpoints), forwarding, records.owner, records.tag,
                            records.table) if in_use else None
        nat.apply(records.table, table)
        if needed:  # after the table: when we turn it on, its ip_forward_was_0 chain says so (see _ip_forward)
            link.sysctl(IP_FORWARD, "1")


def _host_lock() -> Path:
    """Root's is shared by every store on the host. A user's stores each have a sandbox of their own
    (:mod:`runner.net.sandbox`): the lock is in the user's run-time directory, as the user may not write /run."""
    from shared.userns import host_uid, rootless

    if not rootless():
        return HOST_LOCK
    from shared.rundir import run_dir

    return run_dir(host_uid(), owner=os.geteuid()) / "network.lock"


@contextlib.contextmanager
def host_locked(path: Path) -> Iterator[None]:
    """The host-wide lock. /run is root's, but the file is opened as one that may have been planted: a symlink
    is not followed (O_CREAT through one would make a file wherever it points), and anything but a regular file
    of ours with one link is refused, with one line."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StrataError(f"cannot open the host-wide network lock {path}: {e.strerror}", Kind.SYSTEM) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise StrataError(f"the host-wide network lock {path} is not a regular file of ours: remove it",
                              Kind.SYSTEM)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_unwanted_links(records: Records, ipr: Any, wanted: set[str]) -> None:
    """Our bridges and veths no record explains. Ours: the ifalias is this store's owner mark, or there is none
    yet and the name carries this store's tag (a crash between a link's creation and its alias). Another
    store's links, and anything else on the host, are never touched."""
    from runner.net import link

    tag = records.tag
    for name, (kind, alias) in link.links(ipr).items():
        if kind not in ("bridge", "veth") or name in wanted:
            continue
        named_ours = name.startswith(f"stv{tag}") if kind == "veth" else \
            name == f"strata-{tag}" or name.startswith(f"st-{tag}-")
        if alias == records.owner or (not alias and named_ours):
            link.delete(ipr, name, records.owner)


def _ip_forward(records: Records, needed: bool) -> bool:
    """ip_forward's part of :func:`reconcile`: while a non-internal network is in use it is to be on, what it was
    recorded first (a crash between leaves it put back by prune), and the caller turns it on once our table is
    in; when none is, it is put back here. True while it was off before: the forward chain's policy is then drop,
    and the table has the ``ip_forward_was_0`` chain. Stores share the sysctl: one that finds it on with another
    store's table saying "ip_forward_was_0" inherits that, and one that leaves while another's table says so
    leaves it on; so the last one out puts it back. The mark is in our table before the sysctl goes on (the
    caller applies the table, mark included, first): a crash between the two would otherwise leave it on
    unmarked, the next store would record "was 1", and our prune would turn it off under that store's
    containers. The caller holds the host-wide lock (:func:`host_locked`)."""
    from runner.net import link

    host = records.host()
    was = host.get("ip_forward")
    if needed:
        if was is None:
            current = _read_sysctl(IP_FORWARD)
            was = "0" if current == "1" and _others_forwarding(records) else current
            host["ip_forward"] = was
            records.put_host(host)  # recorded before it changes
    elif was is not None:
        # someone else changed it since: theirs now; another store still forwarding: theirs to put back
        if was != "1" and _read_sysctl(IP_FORWARD) == "1" and not _others_forwarding(records):
            link.sysctl(IP_FORWARD, str(was))
        del host["ip_forward"]
        records.put_host(host)
        was = None
    return was is not None and was != "1"


def _others_forwarding(records: Records) -> bool:
    """Another store's table says it turned ip_forward on (its marker chain, runner/net/nat.py). Another's: any
    ``strata-`` table but ours, by its whole name (a tag is no store's own)."""
    from runner.net import nat

    doc = json.loads(nat.nft(["-j", "list", "chains", "ip"]) or "{}")
    return any(c["chain"]["name"] == nat.FORWARD_MARK and c["chain"]["table"].startswith("strata-")
               and c["chain"]["table"] != records.table for c in doc.get("nftables", ()) if "chain" in c)


def _read_sysctl(key: str) -> str:
    with open(f"/proc/sys/{key}") as f:
        return f.read().strip()


# -- names ----------------------------------------------------------------------------------------------------

def hosts_for(records: Records, container_id: str, hostname: str = "") -> str:
    """The container's hosts text from the records: its addresses, then its peers on its user networks."""
    own = sorted(records.endpoints(container_id=container_id), key=lambda e: not e.default_route)
    if not own:
        return files.hosts([], [], hostname or container_id[:12], ())
    user_nets = {e.network for e in own if e.network != "bridge"}
    peers = [e for e in records.endpoints() if e.network in user_nets and e.container_id != container_id]
    return files.hosts(own, peers, own[0].hostname, own[0].add_hosts)


def refresh_hosts(records: Records, networks: set[str], skip: str | None) -> None:
    """Rewrite, in place, the hosts files of the containers on these user networks (not the default bridge,
    whose containers do not name each other)."""
    networks.discard("bridge")
    if not networks:
        return
    for cid in {e.container_id for e in records.endpoints() if e.network in networks and e.container_id != skip}:
        own = records.endpoints(container_id=cid)
        path = next((e.hosts_path for e in own if e.hosts_path), "")
        if path:
            write_in_place(Path(path), hosts_for(records, cid))
