"""``runner inspect``: a container in ``docker inspect``'s shape, so that scripts written for Docker
(``docker inspect -f '{{.State.Pid}}'``, ``jq '.[0].State.ExitCode'``) work unchanged.

The document is built from the saved spec (config.json) and the state as ``state()`` reads it (so a container whose
runner died shows as exited, as everywhere else). Fields Docker has and we have no value for are there with Docker's
empty value (``""``, ``0``, ``false``, ``null``), so that a template naming them prints what Docker's would for a
container without them. The OCI runtime-spec document itself is kept under ``Spec``, a key Docker does not have.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

from runner.container.record import CONFIG_NAME, Container, ContainerState
from runner.isolation import security
from runner.logs import writer as logs
from runner.spec import Spec
from shared.store.files import read_json

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what Docker shows for "not yet"


def rfc3339_nano(when: float | None) -> str:
    """Go's time.RFC3339Nano in UTC: fractional seconds with trailing zeros dropped. Our clocks are floats, so
    the digits past the microsecond are zeros (and dropped)."""
    if when is None:
        return ZERO_TIME
    micro = round(when * 1_000_000)
    stamp = datetime.fromtimestamp(micro // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{micro % 1_000_000:06d}".rstrip("0")
    return f"{stamp}{'.' + fraction if fraction else ''}Z"


def network_mode(spec: Spec) -> str:
    """HostConfig.NetworkMode as Docker 20.10 shows it: ``default`` when no --network was given (the default
    bridge), else the mode given (``bridge``, ``none``, ``host``, ``container:ID``, a network's name)."""
    if spec.network.default:
        return "default"
    if spec.network.mode.kind == "none" and "network" not in spec.namespaces:
        return "host"  # a spec made before the network was recorded: no namespace is the host's
    return str(spec.network.mode)


def port_bindings(spec: Spec) -> dict[str, Any]:
    """HostConfig.PortBindings: each -p as given (``{"80/tcp": [{"HostIp": "", "HostPort": "8081"}]}``)."""
    out: dict[str, list[dict[str, str]]] = {}
    for p in spec.network.publish:
        out.setdefault(f"{p.container_port}/{p.proto}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port) if p.host_port else ""})
    return out


def _endpoint_doc(network_id: str = "", endpoint: Any = None, aliases: list[str] | None = None,
                  dns_names: list[str] | None = None) -> dict[str, Any]:
    """One entry of NetworkSettings.Networks: Docker's empty one, filled from an endpoint record (runner/net)."""
    e = endpoint
    endpoint_id = hashlib.sha256(f"{e.container_id}.{e.network}.{e.created!r}".encode()).hexdigest() if e else ""
    return {"IPAMConfig": None, "Links": None, "Aliases": aliases, "MacAddress": e.mac if e else "",
            "NetworkID": network_id, "EndpointID": endpoint_id, "Gateway": e.gateway if e else "",
            "IPAddress": e.ip if e else "", "IPPrefixLen": e.prefixlen if e else 0, "IPv6Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": None, "DNSNames": dns_names}


def _networks(container: Container, running: bool) -> dict[str, Any]:
    """NetworkSettings.Networks: the container's network, with its endpoint as attached while it runs."""
    from runner.net.records import Records

    spec = container.spec
    mode = spec.network.mode
    if mode.kind in ("none", "host"):
        return {network_mode(spec): _endpoint_doc()}
    if mode.network is None:  # container:X: Docker lists none
        return {}
    records = Records(container.store)
    endpoints = {e.network: e for e in records.endpoints(container_id=container.id)} if running else {}
    names = [mode.network, *(n for n in endpoints if n != mode.network)]
    out = {}
    for name in names:
        record = records.network(name)
        e = endpoints.get(name)
        user = name != "bridge"
        aliases = [*spec.network.aliases, spec.id[:12]] if user and name == mode.network else \
            ([spec.id[:12]] if user else None)
        dns = [container.name, spec.id[:12], *(e.aliases if e else spec.network.aliases)] if user else None
        out[name] = _endpoint_doc(record.id if record else "", e, aliases, dns)
    return out


def _ports(container: Container, running: bool) -> dict[str, Any]:
    """NetworkSettings.Ports while it runs: the published ports (``{"80/tcp": [{"HostIp": "0.0.0.0",
    "HostPort": "8081"}]}``), an exposed port published nowhere as null, as Docker's."""
    from runner.container.network import published

    if not running or container.spec.network.mode.network is None:
        return {}
    out: dict[str, Any] = {port if "/" in port else f"{port}/tcp": None for port in container.spec.network.exposed}
    for p in published(container):
        key = f"{p.container_port}/{p.proto}"
        out[key] = [*(out.get(key) or []), {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}]
    return out


def network_settings(container: Container, state: ContainerState) -> dict[str, Any]:
    """NetworkSettings, in Docker's shape, from what the runner recorded when it attached the container (its
    endpoint records, runner/net/records.py, and its published ports): empty as Docker's once it is not running.
    As Docker's, the top-level IPAddress, Gateway, MacAddress and IPPrefixLen are the default bridge's only. The
    SandboxKey is PID 1's /proc/PID/ns/net (``nsenter --net=`` takes it), our namespaces having no file."""
    running = state.status == "running"
    networks = _networks(container, running)
    bridge = networks.get("bridge") or _endpoint_doc()
    own_netns = running and "network" in container.spec.namespaces and container.spec.network.mode.kind != \
        "container"
    return {"Bridge": "", "SandboxID": "", "SandboxKey": f"/proc/{state.pid}/ns/net" if own_netns else "",
            "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": _ports(container, running), "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
            "EndpointID": bridge["EndpointID"], "Gateway": bridge["Gateway"], "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "IPAddress": bridge["IPAddress"], "IPPrefixLen": bridge["IPPrefixLen"],
            "IPv6Gateway": "", "MacAddress": bridge["MacAddress"], "Networks": networks}


def _state(state: ContainerState) -> dict[str, Any]:
    running = state.status == "running"
    return {  # Docker's restarting container is Running too, with no Pid
        "Status": state.shown, "Running": running or state.status == "restarting", "Paused": running and state.paused,
        "Restarting": state.status == "restarting", "OOMKilled": state.oom_killed,
        "Dead": False, "Pid": state.pid if running else 0,
        "ExitCode": state.exit_code if state.exit_code is not None else 0, "Error": state.error,
        "StartedAt": rfc3339_nano(state.started), "FinishedAt": rfc3339_nano(state.finished),
    }


def _security_opts(spec: Spec) -> list[str] | None:
    opts = []
    if spec.no_new_privileges:
        opts.append("no-new-privileges")
    if spec.privileged:
        opts.append("label=disable")
    elif spec.seccomp is None:
        opts.append("seccomp=unconfined")
    return opts or None


def _host_config(container: Container) -> dict[str, Any]:
    spec = container.spec
    caps = spec.capabilities
    base = frozenset(security.CAPABILITIES) if spec.privileged else security.DOCKER_DEFAULT_CAPS
    limits = spec.limits
    return {
        "Binds": [f"{v.source}:{v.target}" + (":ro" if v.read_only else "") for v in spec.volumes] or None,
        "ContainerIDFile": "", "LogConfig": spec.log.to_json(),
        "NetworkMode": network_mode(spec), "PortBindings": port_bindings(spec),
        "RestartPolicy": {"Name": spec.restart.name, "MaximumRetryCount": spec.restart.max_retries},
        "AutoRemove": spec.auto_remove,
        "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [0, 0],
        "CapAdd": sorted(caps - base) or None, "CapDrop": sorted(base - caps) or None,
        "CgroupnsMode": "private" if "cgroup" in spec.namespaces else "host",
        "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None,
        "IpcMode": "private" if "ipc" in spec.namespaces else "host", "Cgroup": "", "Links": None,
        "OomScoreAdj": 0, "PidMode": "" if "pid" in spec.namespaces else "host", "Privileged": spec.privileged,
        "PublishAllPorts": False, "ReadonlyRootfs": spec.read_only, "SecurityOpt": _security_opts(spec),
        "Tmpfs": {t.target: ",".join(o for o in t.mount().options if o not in ("noexec", "nosuid", "nodev"))
                  for t in spec.tmpfs} or None,
        "UTSMode": "" if "uts" in spec.namespaces else "host", "UsernsMode": "", "ShmSize": 67108864,
        "Runtime": os.path.basename(spec.runtime) if spec.runtime else "strata",
        "Isolation": "", "CpuShares": limits.shares or 0, "Memory": limits.memory or 0,
        "NanoCpus": round(limits.cpus * 1e9) if limits.cpus else 0, "CgroupParent": "",
        "BlkioWeight": 0, "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": "", "CpusetMems": "", "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
        "MemoryReservation": limits.reservation or 0,
        "MemorySwap": limits.swap or 0, "MemorySwappiness": None, "OomKillDisable": False,
        "PidsLimit": limits.pids, "Ulimits": [{"Name": r.type.removeprefix("RLIMIT_").lower(), "Soft": r.soft,
                                               "Hard": r.hard} for r in spec.rlimits] or None,
        "Init": True if spec.init else None,
        "MaskedPaths": list(spec.masked_paths), "ReadonlyPaths": list(spec.readonly_paths),
    }


def _graph_driver(container: Container) -> dict[str, Any]:
    """overlay's directories as the container mounts them: the -init layer, then the image's layers top first."""
    spec, d = container.spec, container.dir
    lowers = [str(d / "init"), *(str(container.store.diff_dir(_digest(c))) for c in reversed(spec.chain_ids))]
    return {"Name": "overlay2", "Data": {"LowerDir": ":".join(lowers), "MergedDir": str(d / "merged"),
                                         "UpperDir": str(d / "upper"), "WorkDir": str(d / "work")}}


def _digest(text: str) -> Any:
    from shared.digest import Digest

    return Digest.parse(text)


def _config(spec: Spec) -> dict[str, Any]:
    argv = spec.argv
    entrypoint = list(spec.entrypoint) if spec.entrypoint and tuple(argv[:len(spec.entrypoint)]) == \
        spec.entrypoint else None
    cmd = list(argv[len(entrypoint or ()):])
    return {
        "Hostname": spec.hostname, "Domainname": "", "User": spec.user,
        "AttachStdin": spec.interactive, "AttachStdout": True, "AttachStderr": True,
        "Tty": spec.terminal, "OpenStdin": spec.interactive, "StdinOnce": spec.interactive,
        "Env": list(spec.env), "Cmd": cmd or None, "Image": spec.typed_image or spec.image, "Volumes": None,
        "WorkingDir": spec.cwd, "Entrypoint": entrypoint, "OnBuild": None, "Labels": {},
    }


def document(container: Container, with_spec: bool = True) -> dict[str, Any]:
    """The container as ``docker inspect`` shows one (an element of its array); ``Spec`` is the OCI config."""
    spec, state = container.spec, container.state()
    argv = spec.argv
    d = container.dir
    doc: dict[str, Any] = {
        "Id": spec.id, "Created": rfc3339_nano(spec.created),
        "Path": argv[0] if argv else "", "Args": list(argv[1:]),
        "State": _state(state),
        "Image": spec.image_id,
        "ResolvConfPath": str(d / "resolv.conf"), "HostnamePath": str(d / "hostname"),
        "HostsPath": str(d / "hosts"), "LogPath": str(d / logs.LOG_NAME),
        "Name": "/" + spec.name, "RestartCount": state.restart_count, "Driver": "overlay2", "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None,
        "HostConfig": _host_config(container),
        "GraphDriver": _graph_driver(container),
        "Mounts": [{"Type": "bind", "Source": v.source, "Destination": v.target, "Mode": "ro" if v.read_only else "",
                    "RW": not v.read_only, "Propagation": "rprivate"} for v in spec.volumes],
        "Config": _config(spec),
        "NetworkSettings": network_settings(container, state),
    }
    if with_spec:
        doc["Spec"] = read_json(container.path(CONFIG_NAME))
    return doc
