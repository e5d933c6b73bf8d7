"""``create``: an image and the run options become a container: its spec (config.json), its -init layer, rw layer and
overlay plan, saved once. Nothing runs; ``start`` (:mod:`runner.container.start`) runs what this saved.

Every option is parsed and checked here, so that a bad one fails ``create`` (exit 125, nothing left behind) and
``start`` only reads typed values (:mod:`runner.spec`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from runner.container.record import Container, find, new_id, record
from runner.container.release import remove
from runner.executor import runtime
from runner.isolation import cgroups, rootfs, security
from runner.logs.writer import LogConfig
from runner.net.model import AttachOptions, NetworkConfig, NetworkMode, PortSpec
from runner.spec import DEFAULT_PATH, INIT_PATH, Rlimit, Spec, Tmpfs, Volume, own_rlimits, seccomp_for, seccomp_text
from shared.errors import usage
from shared.store import images as stored
from shared.store.layout import Store


@dataclass(frozen=True)
class RunOptions:
    """The options of ``create`` and ``run``, as the CLI took them (``detach`` is ``run``'s alone)."""

    image: str
    command: Sequence[str] = ()
    name: str | None = None
    hostname: str | None = None
    env: Sequence[str] = ()
    workdir: str | None = None
    user: str | None = None
    entrypoint: str | None = None
    interactive: bool = False
    tty: bool = False
    remove: bool = False
    env_files: Sequence[str] = ()
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    privileged: bool = False
    security_opts: Sequence[str] = ()
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpu_shares: int | None = None
    ulimits: Sequence[str] = ()
    log_driver: str | None = None  # --log-driver; None: json-file
    log_opts: Sequence[str] = ()  # --log-opt KEY=VALUE
    read_only: bool = False
    volumes: Sequence[str] = ()
    tmpfs: Sequence[str] = ()
    init: bool = False
    detach: bool = False
    runtime: str | None = None  # --runtime: runc, crun, a path, or strata (ours); None: the settings file's
    network: str | None = None  # --network; None: the settings file's, else bridge
    publish: Sequence[str] = ()  # -p
    publish_all: bool = False  # -P
    dns: Sequence[str] = ()
    add_hosts: Sequence[str] = ()
    mac: str | None = None
    ip: str | None = None
    aliases: Sequence[str] = ()  # --network-alias


def read_env_file(path: str) -> list[str]:
    """Docker's --env-file: one VAR=VALUE (taken as is, no quotes) or VAR (the runner's value) per line;
    blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise usage(f"cannot read env file {path}: {e.strerror}") from None
    return [line.lstrip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _merge_env(base: Sequence[str], overrides: Sequence[str]) -> dict[str, str]:
    """Docker's -e: ``KEY=VALUE`` sets, a bare ``KEY`` copies the runner's own value (or drops it if unset)."""
    env: dict[str, str] = {}
    for item in base:
        key, _, value = item.partition("=")
        env[key] = value
    for item in overrides:
        key, sep, value = item.partition("=")
        if not key:
            raise usage(f"invalid environment variable {item!r}")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
        else:
            env.pop(key, None)
    return env


def create(store: Store, opts: RunOptions) -> Container:
    """Resolve, record, prepare. A failure after the record removes the container again."""
    store.ensure()
    with store.in_use():  # the image's layers cannot be collected between finding and holding them
        image = stored.find(store, opts.image)
        image.layer_records(store)  # every layer must be there before anything is created
        network = network_config(store, opts, _exposed(image))
        hostname = opts.hostname
        if network.mode.kind == "host" and hostname is None:  # Docker: the host's name, as it shares its network
            hostname = socket.gethostname()
        elif network.mode.kind == "container":  # Docker: the name of the container whose network it shares
            hostname = find(store, network.mode.name).spec.hostname
        spec = _spec(image, replace(opts, hostname=hostname))
        spec = replace(spec, network=network, namespaces=tuple(
            n for n in spec.namespaces if n != "network" or network.mode.kind != "host"))
        container = record(store, spec)
    try:
        rootfs.prepare(container, [store.diff_dir(c) for c in reversed(image.chain_ids)])
    except BaseException:
        remove(container, force=True)
        raise
    return container


def _exposed(image: stored.StoredImage) -> tuple[str, ...]:
    """The image's ExposedPorts ("80/tcp"), which -P publishes."""
    cfg = image.config.raw.get("config") or {}
    ports = cfg.get("ExposedPorts") if isinstance(cfg, dict) else None
    return tuple(sorted(str(p) for p in ports)) if isinstance(ports, dict) else ()


def network_config(store: Store, opts: RunOptions, exposed: Sequence[str] = ()) -> NetworkConfig:
    """--network and its options, parsed and checked as Docker checks them, before anything is made: a user
    network must exist (recorded by its name), ``container:X`` must name a container (recorded by its ID), and
    what a mode cannot honour is refused rather than ignored."""
    mode = NetworkMode.parse(opts.network if opts.network is not None else
                             (runtime.settings_string("network") or "bridge"))
    if mode.kind == "user":
        from runner.net.core import lookup
        from runner.net.records import Records

        mode = NetworkMode("user", lookup(Records(store), mode.name).name)
    elif mode.kind == "container":
        if opts.hostname is not None:
            raise usage("conflicting options: hostname and the network mode")
        mode = NetworkMode("container", find(store, mode.name).id)
    attached = mode.network is not None
    if (opts.publish or opts.publish_all) and not attached:
        raise usage("conflicting options: port publishing and the container type network mode")
    if mode.kind == "container" and (opts.dns or opts.add_hosts):
        raise usage("conflicting options: dns and the network mode")
    if opts.mac is not None and not attached:
        raise usage("conflicting options: mac-address and the network mode")
    if (opts.ip is not None or opts.aliases) and mode.kind != "user":
        raise usage("user specified IP address and network aliases are supported on user defined networks only")
    if opts.ip is not None:
        try:
            ipaddress.IPv4Address(opts.ip)
        except ValueError:
            raise usage(f"invalid IPv4 address {opts.ip!r} for --ip") from None
    AttachOptions("c", "c", "c", mode.network or "bridge", tuple(opts.aliases), opts.ip, opts.mac, tuple(opts.dns),
                  tuple(opts.add_hosts))  # its checks of --mac-address, --dns, --add-host and aliases
    return NetworkConfig(mode, tuple(PortSpec.parse(p) for p in opts.publish), opts.publish_all, tuple(exposed),
                         tuple(opts.dns), tuple(opts.add_hosts), opts.mac.lower() if opts.mac else None, opts.ip,
                         tuple(opts.aliases))


def _spec(image: stored.StoredImage, opts: RunOptions) -> Spec:
    cfg = image.config
    if opts.entrypoint is not None:  # as Docker: a new entrypoint also drops the image's Cmd
        entrypoint: tuple[str, ...] = (opts.entrypoint,) if opts.entrypoint else ()
        cmd = tuple(opts.command)
    else:
        entrypoint = cfg.entrypoint
        cmd = tuple(opts.command) or cfg.cmd
    argv = entrypoint + cmd
    if not argv:
        raise usage(f"no command specified: {image.name} has no Entrypoint or Cmd; give one")
    workdir = opts.workdir or cfg.working_dir or "/"
    if not workdir.startswith("/"):
        raise usage(f"the working directory {workdir!r} is invalid: it needs to be an absolute path")
    privileges = security.Privileges.from_options(opts.cap_add, opts.cap_drop, opts.privileged, opts.security_opts)
    seccomp = seccomp_for(privileges)  # the profile, resolved for these capabilities: what the spec keeps
    privileges = replace(privileges, seccomp=seccomp_text(seccomp))
    volumes = tuple(Volume.parse(v) for v in opts.volumes)
    tmpfs = tuple(Tmpfs.parse(t) for t in opts.tmpfs)
    limits = cgroups.Limits.from_options(opts.memory, opts.cpus, opts.pids_limit, swap=opts.memory_swap,
                                         reservation=opts.memory_reservation, shares=opts.cpu_shares)
    ulimits = {r.type: r for r in (Rlimit.parse(u) for u in opts.ulimits)}
    rlimits = tuple(ulimits.pop(r.type, r) for r in own_rlimits()) + tuple(ulimits.values())
    cid = new_id()
    hostname = opts.hostname or cid[:12]
    env = _merge_env(cfg.env, [e for f in opts.env_files for e in read_env_file(f)] + list(opts.env))
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    if opts.tty:
        env.setdefault("TERM", "xterm")
    masked = () if opts.privileged else tuple(f"/{p}" for p in security.MASKED_PATHS)
    readonly = () if opts.privileged else tuple(f"/{p}" for p in security.READONLY_PATHS)
    return Spec(
        id=cid, name=opts.name or cid[:12], image=image.name, image_id=str(image.image_id),
        chain_ids=tuple(str(c) for c in image.chain_ids),
        args=(INIT_PATH, "--", *argv) if opts.init else argv, env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=workdir, user=opts.user if opts.user is not None else cfg.user, hostname=hostname, bundle="",
        terminal=opts.tty, interactive=opts.interactive, auto_remove=opts.remove, init=opts.init,
        privileges=privileges, seccomp=seccomp, limits=limits, read_only=opts.read_only,
        volumes=volumes, tmpfs=tmpfs, rlimits=rlimits, masked_paths=masked, readonly_paths=readonly,
        runtime=runtime.choose(opts.runtime), entrypoint=entrypoint,
        log=LogConfig.parse(opts.log_driver, opts.log_opts))
