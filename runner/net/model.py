"""What networking is asked for and what is recorded: parsed options, network and endpoint records.

Plain data, no kernel and no pyroute2: ``create`` parses ``--network``, ``-p`` and friends with this module alone,
and a bad value fails before anything is created.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import usage

BUILTIN = ("bridge", "none", "host")
# The default bridge's subnets, in order: the first no route of the host reaches (10.88/16 is podman's default
# too, and another store's bridge may hold one; Docker's 172.17-31/16 are left to a Docker beside us).
DEFAULT_POOL = tuple(f"10.{i}.0.0/16" for i in range(88, 79, -1))
USER_POOL = "10.89.0.0/16"  # user networks without --subnet get the first free /24 of it
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # Docker's restrictedNamePattern
MAC_RE = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")


@dataclass(frozen=True)
class NetworkMode:
    """``--network``: ``bridge`` (default), ``none``, ``host``, ``container:NAME|ID`` or a user network's name."""

    kind: str  # bridge | none | host | container | user
    name: str = ""  # the user network, or the container whose namespace is shared

    @classmethod
    def parse(cls, text: str) -> NetworkMode:
        if text in ("bridge", "default", ""):
            return cls("bridge", "bridge")
        if text in ("none", "host"):
            return cls(text)
        if text.startswith("container:"):
            target = text.removeprefix("container:")
            if not target:
                raise usage("--network container: needs a container name or ID")
            return cls("container", target)
        check_name(text)
        return cls("user", text)

    @property
    def network(self) -> str | None:
        """The network an endpoint joins, for the modes that make one."""
        return self.name if self.kind in ("bridge", "user") else None

    def __str__(self) -> str:
        """The form :meth:`parse` reads back (``container:ID`` with the ID create resolved)."""
        if self.kind in ("bridge", "none", "host"):
            return self.kind
        return f"container:{self.name}" if self.kind == "container" else self.name


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or len(name) > 64:
        raise usage(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


@dataclass(frozen=True)
class PortSpec:
    """``-p [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]``; host_port 0 means "any free port" (as ``-P`` does)."""

    container_port: int
    proto: str = "tcp"
    host_port: int = 0
    host_ip: str = ""  # "" = every address of the host

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        spec, _, proto = text.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise usage(f"invalid protocol {proto!r} in {text!r}: tcp or udp")
        host_ip = ""
        if spec.startswith("["):  # [::1]:80:80 is refused below, but parse it as Docker does first
            end = spec.find("]")
            host_ip, spec = spec[1:end], spec[end + 2:]
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        if len(parts) == 1:
            parts = ["", parts[0]]
        if len(parts) != 2:
            raise usage(f"invalid port specification {text!r}: use [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]")
        if host_ip:
            try:
                addr = ipaddress.ip_address(host_ip)
            except ValueError:
                raise usage(f"invalid host address {host_ip!r} in {text!r}") from None
            if addr.version != 4:
                raise usage(f"IPv6 host address in {text!r}: only IPv4 is published (README: not done)")
            host_ip = "" if addr.is_unspecified else str(addr)
        return cls(_port(parts[1], text), proto, _port(parts[0], text) if parts[0] else 0, host_ip)

    def __str__(self) -> str:
        host = f"{self.host_ip or '0.0.0.0'}:{self.host_port}"
        return f"{host}->{self.container_port}/{self.proto}"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise usage(f"invalid port {text!r} in {spec!r}: a number from 1 to 65535 (ranges are not supported)")
    return int(text)


def parse_add_host(text: str) -> tuple[str, str]:
    """``--add-host HOST:IP`` (or ``HOST=IP``; IP may be ``host-gateway``) -> (host, ip)."""
    sep = "=" if "=" in text else ":"
    host, _, ip = text.partition(sep)
    if not host or not ip:
        raise usage(f"invalid --add-host {text!r}: use HOST:IP")
    if ip != "host-gateway":
        try:
            ip = str(ipaddress.ip_address(ip.strip("[]")))
        except ValueError:
            raise usage(f"invalid IP address {ip!r} in --add-host {text!r}") from None
    return host, ip


@dataclass(frozen=True, kw_only=True)
class EndpointOptions:
    """What a container asks of the network it joins (``-p``, ``-P``, ``--dns``, ``--add-host``,
    ``--mac-address``, ``--ip``, ``--network-alias``), declared once for :class:`NetworkConfig` (what ``create``
    saves) and :class:`AttachOptions` (what the start path and ``network connect`` hand :func:`runner.net.core.attach`).
    The checks every mode shares are made on construction, so neither can hold a value the other would refuse."""

    publish: tuple[PortSpec, ...] = ()  # -p
    publish_all: bool = False  # -P: every exposed port on a free host port
    exposed: tuple[str, ...] = ()  # the image's ExposedPorts ("80/tcp"), for -P
    dns: tuple[str, ...] = ()  # --dns: replaces the host's nameservers
    add_hosts: tuple[str, ...] = ()  # --add-host HOST:IP
    mac: str | None = None  # --mac-address
    ip: str | None = None  # --ip, user networks only
    aliases: tuple[str, ...] = ()  # --network-alias

    def __post_init__(self) -> None:
        if self.mac is not None and not MAC_RE.fullmatch(self.mac):
            raise usage(f"invalid MAC address {self.mac!r}")
        if self.mac is not None and int(self.mac[:2], 16) & 1:
            raise usage(f"invalid MAC address {self.mac!r}: a multicast address")
        for server in self.dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise usage(f"invalid --dns {server!r}: an IP address") from None
        for entry in self.add_hosts:
            parse_add_host(entry)
        for alias in self.aliases:
            if not NAME_RE.fullmatch(alias):
                raise usage(f"invalid --network-alias {alias!r}")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig(EndpointOptions):
    """A container's network as ``create`` resolved it (``--network`` and its :class:`EndpointOptions`), saved in
    config.json's ``io.strata.network`` annotation (the runtime-spec has a network namespace, not what to put in
    it). The dataclass default is ``none`` (a lone loopback); ``create`` defaults to ``bridge``, or the settings
    file's ``network``."""

    mode: NetworkMode = NetworkMode("none")
    # bridge because no --network was given (or "default"): inspect's NetworkMode says "default", as Docker 20.10's
    default: bool = False

    @classmethod
    def parse(cls, mode: NetworkMode, *, publish: Sequence[str] = (), publish_all: bool = False,
              exposed: Sequence[str] = (), dns: Sequence[str] = (), add_hosts: Sequence[str] = (),
              mac: str | None = None, ip: str | None = None, aliases: Sequence[str] = (),
              default: bool = False) -> NetworkConfig:
        """The options as the CLI took them, for a resolved ``mode``: what the mode cannot honour is refused, as
        Docker refuses it, rather than ignored."""
        attached = mode.network is not None
        if (publish or publish_all) and not attached:
            raise usage("conflicting options: port publishing and the container type network mode")
        if mode.kind == "container" and (dns or add_hosts):
            raise usage("conflicting options: dns and the network mode")
        if mac is not None and not attached:
            raise usage("conflicting options: mac-address and the network mode")
        if (ip is not None or aliases) and mode.kind != "user":
            raise usage("user specified IP address and network aliases are supported on user defined networks only")
        if ip is not None:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise usage(f"invalid IPv4 address {ip!r} for --ip") from None
        if mac is not None and MAC_RE.fullmatch(mac):
            mac = mac.lower()
        return cls(mode=mode, publish=tuple(PortSpec.parse(p) for p in publish), publish_all=publish_all,
                   exposed=tuple(exposed), dns=tuple(dns), add_hosts=tuple(add_hosts), mac=mac, ip=ip,
                   aliases=tuple(aliases), default=default and mode.kind == "bridge")

    def to_json(self) -> dict[str, Any]:
        return {"mode": str(self.mode), "publish": [vars(p) for p in self.publish], "publish_all": self.publish_all,
                "exposed": list(self.exposed), "dns": list(self.dns), "add_hosts": list(self.add_hosts),
                "mac": self.mac, "ip": self.ip, "aliases": list(self.aliases),
                **({"default": True} if self.default else {})}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NetworkConfig:
        return cls(mode=NetworkMode.parse(str(obj["mode"])),
                   publish=tuple(PortSpec(**p) for p in obj.get("publish") or ()),
                   publish_all=bool(obj.get("publish_all")), exposed=tuple(obj.get("exposed") or ()),
                   dns=tuple(obj.get("dns") or ()), add_hosts=tuple(obj.get("add_hosts") or ()), mac=obj.get("mac"),
                   ip=obj.get("ip"), aliases=tuple(obj.get("aliases") or ()), default=bool(obj.get("default")))


@dataclass(frozen=True, kw_only=True)
class AttachOptions(EndpointOptions):
    """What the start path knows about a container when it attaches it to one network.

    ``hosts_path`` is the container's own hosts file (``containers/ID/hosts``, bind-mounted into it): on a user
    network the library rewrites it in place as peers come and go, so names stay current without a resolver.
    """

    container_id: str
    name: str
    hostname: str
    network: str = "bridge"
    hosts_path: Path | None = None
    host_resolv: Path = Path("/etc/resolv.conf")

    def __post_init__(self) -> None:
        check_name(self.network)
        super().__post_init__()


@dataclass(frozen=True)
class Network:
    """``networks/NAME.json``. The bridge exists in the kernel only while an endpoint is on it."""

    name: str
    id: str
    subnet: str
    gateway: str
    bridge: str
    internal: bool = False
    created: float = 0.0

    @property
    def builtin(self) -> bool:
        return self.name == "bridge"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "subnet": self.subnet, "gateway": self.gateway,
                "bridge": self.bridge, "internal": self.internal, "created": self.created}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Network:
        return cls(str(obj["name"]), str(obj["id"]), str(obj["subnet"]), str(obj["gateway"]), str(obj["bridge"]),
                   bool(obj.get("internal", False)), float(obj.get("created", 0.0)))


@dataclass(frozen=True)
class Published:
    """One published port as set up: the host side is always concrete (a free port was chosen for 0)."""

    proto: str
    host_ip: str
    host_port: int
    container_port: int

    def __str__(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}->{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class Endpoint:
    """``networks/endpoints/CID.NETWORK.json``: one container on one network, and who is setting it up.

    ``state`` is ``pending`` from the moment the address is taken until the veth is in place, ``attached``
    after. A pending record is only ever seen by a lock holder when its writer died mid-setup (the writer holds
    the lock throughout); an attached record is alive exactly while its host-side veth exists, which the kernel
    removes with the container's network namespace. So liveness needs no pid and no guess.
    """

    container_id: str
    network: str
    name: str
    hostname: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    veth: str  # host side
    ifname: str  # inside the container
    state: str = "pending"
    aliases: tuple[str, ...] = ()
    default_route: bool = False
    ports: tuple[Published, ...] = ()
    dns: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()
    hosts_path: str = ""
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"container_id": self.container_id, "network": self.network, "name": self.name,
                "hostname": self.hostname, "ip": self.ip, "prefixlen": self.prefixlen, "gateway": self.gateway,
                "mac": self.mac, "veth": self.veth, "ifname": self.ifname, "state": self.state,
                "aliases": list(self.aliases), "default_route": self.default_route,
                "ports": [vars(p) for p in self.ports], "dns": list(self.dns), "add_hosts": list(self.add_hosts),
                "hosts_path": self.hosts_path, "created": self.created}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Endpoint:
        return cls(str(obj["container_id"]), str(obj["network"]), str(obj["name"]), str(obj["hostname"]),
                   str(obj["ip"]), int(obj["prefixlen"]), str(obj["gateway"]), str(obj["mac"]), str(obj["veth"]),
                   str(obj["ifname"]), str(obj["state"]), tuple(obj.get("aliases") or ()),
                   bool(obj.get("default_route")), tuple(Published(**p) for p in obj.get("ports") or ()),
                   tuple(obj.get("dns") or ()), tuple(obj.get("add_hosts") or ()), str(obj.get("hosts_path", "")),
                   float(obj.get("created", 0.0)))


@dataclass(frozen=True)
class Attachment:
    """What :func:`runner.net.core.attach` gives the start path: the endpoint made, and the texts to write into the
    container's own ``hosts`` and ``resolv.conf`` (bind-mounted over the -init placeholders)."""

    endpoint: Endpoint | None
    hosts: str
    resolv_conf: str
