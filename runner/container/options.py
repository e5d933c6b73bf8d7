"""The run options of ``create``, ``run`` and ``bundle``, and :func:`resolve`, the one place they become a spec.

:class:`RunOptions` holds the options as the command line took them (:mod:`runner.cli.options` declares them once
for the three commands). :func:`resolve` parses and checks every one of them, each by the value type it becomes
(:class:`~runner.spec.Volume`, :class:`~runner.spec.Tmpfs`, :class:`~runner.spec.Rlimit`,
:class:`~runner.net.model.NetworkMode`, :class:`~runner.net.model.PortSpec`,
:class:`~runner.net.model.NetworkConfig`, :class:`~runner.isolation.cgroups.Limits`,
:class:`~runner.isolation.security.Privileges`, :class:`~runner.logs.writer.LogConfig`), so that a bad option
fails ``create`` with a one-line usage error before anything is made, and nothing after it (``start``, the
executors, ``inspect``) sees the command line's strings again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from runner.container.record import find, new_id
from runner.isolation import cgroups, security
from runner.logs.writer import LogConfig
from runner.net.model import NetworkConfig, NetworkMode
from runner.spec import (
    DEFAULT_PATH,
    INIT_PATH,
    NAMESPACES,
    RestartPolicy,
    Rlimit,
    Spec,
    Tmpfs,
    Volume,
    own_rlimits,
    seccomp_for,
    seccomp_text,
)
from shared import settings
from shared.errors import usage
from shared.store import images as stored
from shared.store.layout import Store


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The options of ``create``, ``run`` and ``bundle``, as the CLI took them (``detach`` is ``run``'s alone).
    Keyword only, as 38 positional values cannot be read; each field is the name of its parameter in
    :data:`runner.cli.options.RUN_FLAGS`."""

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
    remove: bool = False  # --rm
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
    detach_keys: str | None = None  # --detach-keys: run -it's (None: ctrl-p,ctrl-q)
    runtime: str | None = None  # --runtime: runc, crun, a path, or strata (ours); None: the settings file's
    network: str | None = None  # --network; None: the settings file's, else bridge
    publish: Sequence[str] = ()  # -p
    publish_all: bool = False  # -P
    dns: Sequence[str] = ()
    add_hosts: Sequence[str] = ()
    mac: str | None = None  # --mac-address
    ip: str | None = None
    aliases: Sequence[str] = ()  # --network-alias
    userns: str | None = None  # --userns: auto, or host (None: host)
    pull: str = "missing"  # --pull: missing, always or never (runner/verbs/pull.py; before the image is found)
    restart: str | None = None  # --restart: no, on-failure[:N], always, unless-stopped (None: no)


def resolve(opts: RunOptions, image: stored.StoredImage, store: Store) -> Spec:
    """The container ``opts`` ask for, from ``image``: every option parsed and checked here, once. The store is
    read only to find what ``--network`` names (a user network, or the container ``container:X`` shares)."""
    if opts.detach_keys:  # run -it's alone, but a bad one fails here, leaving nothing
        from runner.executor.attach import detach_keys

        detach_keys(opts.detach_keys)
    network = resolve_network(store, opts, exposed_ports(image))
    hostname = opts.hostname
    if network.mode.kind == "host" and hostname is None:  # Docker: the host's name, as it shares its network
        hostname = socket.gethostname()
    elif network.mode.kind == "container":  # Docker: the name of the container whose network it shares
        hostname = find(store, network.mode.name).spec.hostname
    spec = _spec(image, replace(opts, hostname=hostname), network)
    if _auto_userns(opts.userns, spec):
        from runner.isolation import idmap

        spec = replace(spec, id_block=idmap.allocate(settings.load().auto_userns_user, store.root, spec.id))
    return spec


def _auto_userns(userns: str | None, spec: Spec) -> bool:
    """--userns: ``auto`` asks for a block of ids of the container's own (:mod:`runner.isolation.idmap`)."""
    if userns in (None, "", "host"):
        return False
    if userns != "auto":
        raise usage(f"invalid --userns {userns!r}: auto or host")
    from shared.userns import rootless

    if rootless():
        raise usage("--userns=auto is for root: without root every container is in the user's namespace already")
    if spec.runtime:
        raise usage("--userns=auto runs under Strata's own executor: leave out --runtime (or the settings' runtime)")
    return True


def exposed_ports(image: stored.StoredImage) -> tuple[str, ...]:
    """The image's ExposedPorts ("80/tcp"), which -P publishes."""
    cfg = image.config.raw.get("config") or {}
    ports = cfg.get("ExposedPorts") if isinstance(cfg, dict) else None
    return tuple(sorted(str(p) for p in ports)) if isinstance(ports, dict) else ()


def resolve_network(store: Store, opts: RunOptions, exposed: Sequence[str] = ()) -> NetworkConfig:
    """--network, resolved as Docker resolves it before anything is made: a user network must exist (recorded by
    its name), ``container:X`` must name a container (recorded by its ID); the options' checks are
    :meth:`NetworkConfig.parse`'s."""
    given = opts.network if opts.network is not None else settings.load().network
    mode = NetworkMode.parse(given or "bridge")
    if mode.kind == "user":
        from runner.net.core import lookup  # the kernel side of the network, only for a network by name
        from runner.net.records import Records

        mode = NetworkMode("user", lookup(Records(store), mode.name).name)
    elif mode.kind == "container":
        if opts.hostname is not None:
            raise usage("conflicting options: hostname and the network mode")
        mode = NetworkMode("container", find(store, mode.name).id)
    return NetworkConfig.parse(mode, publish=opts.publish, publish_all=opts.publish_all, exposed=exposed,
                               dns=opts.dns, add_hosts=opts.add_hosts, mac=opts.mac, ip=opts.ip,
                               aliases=opts.aliases, default=given in (None, "", "default"))


def read_env_file(path: str) -> list[str]:
    """Docker's --env-file: one VAR=VALUE (taken as is, no quotes) or VAR (the runner's value) per line;
    blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise usage(f"cannot read env file {path}: {e.strerror}") from None
    return [line.lstrip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def merge_env(base: Sequence[str], overrides: Sequence[str]) -> dict[str, str]:
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


def command_line(image: stored.StoredImage, opts: RunOptions) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(entrypoint, argv): as Docker, a new entrypoint also drops the image's Cmd; an empty one, the image's."""
    cfg = image.config
    if opts.entrypoint is not None:
        entrypoint: tuple[str, ...] = (opts.entrypoint,) if opts.entrypoint else ()
        cmd = tuple(opts.command)
    else:
        entrypoint = cfg.entrypoint
        cmd = tuple(opts.command) or cfg.cmd
    argv = entrypoint + cmd
    if not argv:
        raise usage(f"no command specified: {image.name} has no Entrypoint or Cmd; give one")
    return entrypoint, argv


def _spec(image: stored.StoredImage, opts: RunOptions, network: NetworkConfig) -> Spec:
    cfg = image.config
    entrypoint, argv = command_line(image, opts)
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
    cgroups.check_usable(limits)
    ulimits = {r.type: r for r in (Rlimit.parse(u) for u in opts.ulimits)}
    rlimits = tuple(ulimits.pop(r.type, r) for r in own_rlimits()) + tuple(ulimits.values())
    cid = new_id()
    hostname = opts.hostname or cid[:12]
    env = merge_env(cfg.env, [e for f in opts.env_files for e in read_env_file(f)] + list(opts.env))
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    if opts.tty:
        env.setdefault("TERM", "xterm")
    restart = RestartPolicy.parse(opts.restart or "no")
    if opts.remove and restart.name != "no":
        raise usage("Conflicting options: --restart and --rm")
    masked = () if opts.privileged else tuple(f"/{p}" for p in security.MASKED_PATHS)
    readonly = () if opts.privileged else tuple(f"/{p}" for p in security.READONLY_PATHS)
    return Spec(
        id=cid, name=opts.name or "", image=image.name, typed_image=opts.image, image_id=str(image.image_id),
        chain_ids=tuple(str(c) for c in image.chain_ids),
        args=(INIT_PATH, "--", *argv) if opts.init else argv, env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=workdir, user=opts.user if opts.user is not None else cfg.user, hostname=hostname, bundle="",
        terminal=opts.tty, interactive=opts.interactive, auto_remove=opts.remove, init=opts.init,
        privileges=privileges, seccomp=seccomp, limits=limits, read_only=opts.read_only,
        volumes=volumes, tmpfs=tmpfs, rlimits=rlimits, masked_paths=masked, readonly_paths=readonly,
        runtime=_runtime(opts.runtime), entrypoint=entrypoint,
        log=LogConfig.parse(opts.log_driver, opts.log_opts), restart=restart,
        network=network, namespaces=tuple(n for n in NAMESPACES if n != "network" or network.mode.kind != "host"))


def _runtime(option: str | None) -> str:
    """--runtime, else the settings file's: "" for our executor, without loading the OCI runtimes' (a runtime named
    is checked and made absolute by :func:`runner.executor.runtime.choose`)."""
    name = option if option is not None else settings.load().runtime
    if not name:
        return ""
    from runner.executor import runtime

    return runtime.choose(name)
