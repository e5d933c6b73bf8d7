"""The start path's networking: the namespace a container's PID 1 joins, and what its hosts and resolv.conf say.

Docker's (libnetwork's) sandbox, without a file: for ``bridge`` and user networks the runner makes the network
namespace itself (:func:`new_netns`: a child unshares, the runner keeps an fd of it), attaches it from the host's
namespace (:func:`runner.net.core.attach`: veth, address, route, ports) and writes the container's hosts and
resolv.conf, all before PID 1 exists; PID 1 then ``setns()``es into it (our executor), or the runtime is given its
path in config.json (runc, crun), the runtime-spec's ``{"type": "network", "path": ...}``. The runner closes its fd
once PID 1 is in, so the namespace lives exactly as long as the container's processes: the kernel removes the veth
with it, which is how a killed runner's endpoint is known to be dead (runner/net/core.py). A bind-mounted netns
file would keep a crashed container's namespace, veth and address alive until someone unmounted it.

``none``: PID 1 unshares a namespace of its own and brings ``lo`` up with one ioctl (no pyroute2 import:
:func:`runner.linux.loopback_up`); ``host``: no network namespace, the host's hosts and resolv.conf;
``container:ID``: that running container's namespace, and its files. Without root, ``bridge`` is pasta's
(:mod:`runner.net.pasta`): a namespace of the container's own, which pasta carries to the user's side.

This is where a container record meets :mod:`runner.net`, which knows no record: it is handed the container's ID,
name and hostname, its namespace (an fd) and the endpoint request (:class:`~runner.net.model.AttachOptions`);
``runner network connect|disconnect`` come through here too.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from runner import linux
from runner.net.model import Published
from shared.errors import Kind, StrataError
from shared.proc import boot_id, end
from shared.store.files import read_json, write_json
from shared.userns import rootless

PASTA_RECORD = "pasta.json"  # a user's container on the default network: its pasta and what it publishes
FORWARD_RECORD = "forward.json"  # a user's container on a user network: the forwarder of its published ports

if TYPE_CHECKING:
    from runner.container.record import Container
    from runner.net.model import AttachOptions, Endpoint
    from shared.userns import IdBlock

def new_netns(block: IdBlock | None = None) -> int:
    """A new network namespace with ``lo`` up, as an fd (:func:`runner.linux.child_namespace`). With BLOCK
    (--userns=auto) the child makes it in the container's user namespace, which may then mount its sysfs."""
    if block is None and not rootless():
        return _netns_here()
    userns = -1
    if block is not None:
        from runner.isolation import idmap

        userns = idmap.userns_of(block)

    def make() -> None:
        if userns >= 0:
            linux.setns(userns, linux.CLONE_NEWUSER)
        linux.unshare(linux.CLONE_NEWNET)
        linux.loopback_up()

    return linux.child_namespace(make, "net", "the container's network namespace")


def _netns_here() -> int:
    """:func:`new_netns` for root without --userns=auto, with no fork (one fewer process per bridge run): this
    thread unshares a network namespace, brings ``lo`` up, keeps an fd of it and goes back with setns(2), which root
    may do (a user's process may not: it could not return to the host's namespace, hence the child there). A
    failure to go back ends the runner: it must not go on in the container's namespace."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            linux.unshare(linux.CLONE_NEWNET)
        except OSError as e:
            raise StrataError(f"cannot make the container's network namespace: {e.strerror}", Kind.SYSTEM) from None
        try:
            linux.loopback_up()
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            try:
                linux.setns(own, linux.CLONE_NEWNET)
            except BaseException:  # still in the new namespace: nothing more may run here
                os.write(2, b"runner: cannot go back to the host's network namespace\n")
                os._exit(125)
    finally:
        os.close(own)


def setup(container: Container) -> int | None:
    """Before PID 1 is made: the fd of the network namespace it is to join (None: it makes its own, ``none``, or
    stays in the host's, ``host``), with the container's hosts and resolv.conf written. For a network, the
    endpoint is attached; on a failure nothing of it is left (the caller releases it on a later failure)."""
    from runner.net.records import write_in_place

    spec = container.spec
    config = spec.network
    hosts, resolv = container.path("hosts"), container.path("resolv.conf")
    kind = config.mode.kind
    if kind in ("none", "host"):
        from runner.net.core import files_without_network, host_files

        files = host_files(spec.hostname) if kind == "host" else \
            files_without_network(spec.hostname, config.add_hosts, config.dns)
        write_in_place(hosts, files.hosts)
        write_in_place(resolv, files.resolv_conf)
        return None
    if kind == "container":
        from runner.container.record import find

        target = find(container.store, config.mode.name)
        fd = netns_of(target)
        try:
            write_in_place(hosts, target.path("hosts").read_text())
            write_in_place(resolv, target.path("resolv.conf").read_text())
        except BaseException:
            os.close(fd)
            raise
        return fd
    if kind == "bridge" and rootless():
        return _user_mode(container)
    return _attach(container)


def _attach(container: Container) -> int:
    """A new namespace on the container's network, its hosts and resolv.conf written; for a user, its ports
    forwarded from the user's side (:mod:`runner.net.forward`)."""
    from runner.net.core import attach
    from runner.net.model import AttachOptions
    from runner.net.records import write_in_place

    spec, config = container.spec, container.spec.network
    assert config.mode.network is not None
    fd = new_netns(container.spec.id_block)
    listeners: list[socket.socket] = []
    try:
        opts = AttachOptions(
            container_id=container.id, name=container.name, hostname=spec.hostname, network=config.mode.network,
            aliases=config.aliases, ip=config.ip, mac=config.mac, dns=config.dns, add_hosts=config.add_hosts,
            publish=config.publish, publish_all=config.publish_all, exposed=config.exposed,
            hosts_path=container.path("hosts"))
        if rootless():  # root's networks live here: the sandbox's module is not imported (as release does)
            from runner.net.sandbox import where_networks_live

            opts, listeners = _listen(opts)
            result = where_networks_live(container.store, attach, container.store, fd, opts)
        else:
            result = attach(container.store, fd, opts)
        try:
            write_in_place(container.path("hosts"), result.hosts)
            write_in_place(container.path("resolv.conf"), result.resolv_conf)
            if listeners and result.endpoint is not None:
                _forward(container, result.endpoint, listeners)
        except BaseException:
            release(container)
            raise
    except BaseException:
        os.close(fd)
        raise
    finally:
        for s in listeners:
            s.close()
    return fd


def _listen(opts: AttachOptions) -> tuple[AttachOptions, list[socket.socket]]:
    """A user's -p and -P as concrete ports, bound now on the user's side (so one taken is refused before
    anything is made); the sandbox's rules are given the same ports."""
    from runner.net import forward
    from runner.net.core import published_ports
    from runner.net.model import PortSpec

    ports = published_ports(opts.publish, opts.publish_all, opts.exposed)
    concrete = tuple(PortSpec(p.container_port, p.proto, p.host_port, p.host_ip) for p in ports)
    return replace(opts, publish=concrete, publish_all=False), forward.listen(ports)


def _forward(container: Container, endpoint: Endpoint, listeners: list[socket.socket]) -> None:
    from runner.net import forward
    from runner.net.sandbox import open_netns

    fd = open_netns(container.store)
    try:
        pid, started = forward.start(fd, endpoint.ip, endpoint.ports, listeners)
    finally:
        os.close(fd)
    write_json(container.path(FORWARD_RECORD), {"pid": pid, "started": started, "boot": boot_id()})


def _user_mode(container: Container) -> int:
    """Without root, the default network is pasta's (:mod:`runner.net.pasta`): a namespace of the container's own
    (in the user's namespace), pasta started on it, what it runs as and publishes recorded in the container's
    ``pasta.json`` for :func:`release`, ``port`` and ``ps``; hosts and resolv.conf as on a bridge."""
    from runner.net import files, pasta
    from runner.net.core import published_ports
    from runner.net.records import write_in_place

    spec, config = container.spec, container.spec.network
    fd = new_netns()
    try:
        ports = published_ports(config.publish, config.publish_all, config.exposed)
        pid, started = pasta.start(fd, container.path("pasta.pid"), ports)
        try:
            write_json(container.path(PASTA_RECORD), {"pid": pid, "started": started, "boot": boot_id(),
                                                      "ports": [vars(p) for p in ports]})
            write_in_place(container.path("hosts"), files.hosts([], [], spec.hostname, config.add_hosts))
            write_in_place(container.path("resolv.conf"), files.resolv_conf(Path("/etc/resolv.conf"), config.dns))
        except BaseException:
            end(pid, started, boot_id())
            raise
    except BaseException:
        os.close(fd)
        raise
    return fd


def published(container: Container) -> list[Published]:
    """The ports a running container publishes, on a network of root's or through a user's pasta: what ``port``
    and ``ps`` show."""
    from runner.net.records import Records

    record = container.path(PASTA_RECORD)
    if record.exists():
        return [Published(**p) for p in read_json(record)["ports"]]
    return [p for e in Records(container.store).endpoints(container_id=container.id) for p in e.ports]


def netns_of(container: Container) -> int:
    """An fd of a running container's network namespace (for connect, and for ``--network container:X``).
    Opened through the recorded PID 1 and checked against its pidfd after, so it is that process's namespace
    even if the pid was reused meanwhile; the caller closes it."""
    pidfd = container.open_process()
    try:
        fd = os.open(f"/proc/{container.state().pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if poller.poll(0):
            os.close(fd)
            raise StrataError(f"container {container.name} is not running", Kind.STATE)
        return fd
    finally:
        os.close(pidfd)


def connect(container: Container, network: str, ip: str | None, aliases: tuple[str, ...]) -> None:
    """``runner network connect``: a running container onto one more network (the next ethN), its hosts file
    rewritten. Refused, as Docker refuses it, when its namespace is the host's, another container's or private."""
    from runner.net.core import attach
    from runner.net.model import AttachOptions
    from runner.net.records import write_in_place

    spec = container.spec
    mode = spec.network.mode
    if mode.network is None:
        raise StrataError(f"container {container.name} has network mode {mode.kind} and cannot be connected to a "
                          "network", Kind.STATE)
    from runner.net.sandbox import where_networks_live

    fd = netns_of(container)
    try:
        result = where_networks_live(container.store, attach, container.store, fd, AttachOptions(
            container_id=container.id, name=container.name, hostname=spec.hostname, network=network,
            aliases=aliases, ip=ip, dns=spec.network.dns, add_hosts=spec.network.add_hosts,
            hosts_path=container.path("hosts")))
    finally:
        os.close(fd)
    write_in_place(container.path("hosts"), result.hosts)


def disconnect(container: Container, network: str, force: bool) -> None:
    """``runner network disconnect``: off NETWORK (with FORCE, also when it is not on it), its hosts file
    rewritten."""
    from runner.net import core
    from runner.net.records import Records, write_in_place
    from runner.net.sandbox import where_networks_live

    store = container.store
    if force:
        where_networks_live(store, core.release, store, container.id, core.lookup(Records(store), network).name)
    else:
        where_networks_live(store, core.disconnect, store, container.id, network)
    write_in_place(container.path("hosts"), core.hosts_for(Records(container.store), container.id,
                                                           container.spec.hostname))


def release(container: Container) -> None:
    """Take the container off every network it is on, and end its pasta or forwarder (idempotent; imports
    nothing when it is on none)."""
    had_pasta = container.path(PASTA_RECORD).exists()
    for name in (FORWARD_RECORD, PASTA_RECORD):
        record = container.path(name)
        if record.exists():
            with contextlib.suppress(OSError, KeyError, ValueError, TypeError):
                said = read_json(record)
                end(int(said["pid"]), int(said["started"]), str(said["boot"]),
                    signal.SIGKILL if name == FORWARD_RECORD else signal.SIGTERM)
            record.unlink(missing_ok=True)
    if had_pasta:
        return
    from runner.net.core import release as release_endpoints

    if rootless():
        from runner.net.records import Records
        from runner.net.sandbox import where_networks_live

        if Records(container.store).endpoints(container_id=container.id):
            where_networks_live(container.store, release_endpoints, container.store, container.id)
        return
    release_endpoints(container.store, container.id)


def close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
