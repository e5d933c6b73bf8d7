"""Container networking (issue 11): bridges, veth pairs, addresses, NAT and published ports, with pyroute2.

The start path (:mod:`runner.container.network`) makes the container's network namespace, calls :func:`.core.attach`
with it, writes the hosts and resolv.conf texts it returns, and calls :func:`.core.release` when the container is gone
(run, monitor, rm); ``release`` is idempotent and also cleans up after a crash. This package knows no container
record: it is given a namespace (an fd or a path), the container's ID, name and hostname and the endpoint request
(:class:`.model.AttachOptions`), and keeps its own records under the store's ``networks/``. pyroute2 is imported only
inside those calls, never when this package is imported, so ``--network none`` and every other command pay
nothing for it; nor does this package import its modules, so a command that only needs the model (the
spec, ``ps``) does not load the operations.

Modules: :mod:`.model` (options, records, parsing), :mod:`.records` (the files under ``networks/`` and their
lock), :mod:`.ipam` (addresses), :mod:`.link` (netlink: bridge, veth, addresses, routes), :mod:`.nat`
(nftables: masquerade, published ports, forwarding), :mod:`.files` (hosts, resolv.conf), :mod:`.core` (the
operations, all as one reconciliation of the kernel to the records).
"""
