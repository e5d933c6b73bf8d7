"""``runner network create|ls|inspect|rm|prune|connect|disconnect``: thin, over :mod:`runner.net`.

Kept out of :mod:`runner.cli.main` so that the start path's rebuild and this can change apart; :func:`register` adds the
group to the app in one place.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from shared.cli import StoreOption
from shared.format import tabwrite


def register(app: typer.Typer, state: StoreOption) -> None:
    net = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage networks.")
    app.add_typer(net, name="network")

    @net.command()
    def create(name: str = typer.Argument(..., help="Network name"),
               subnet: str | None = typer.Option(None, "--subnet", help="CIDR (default: a free /24 of 10.89/16)"),
               internal: bool = typer.Option(False, "--internal", help="No route out: no masquerade, no gateway"))\
            -> None:
        """Create a user network; its bridge appears with its first container."""
        from runner.net.core import create_network

        print(create_network(state.store, name, subnet, internal).id)

    @net.command(name="ls")
    def ls(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only IDs")) -> None:
        """List networks."""
        from runner.net.core import all_networks
        from runner.net.records import Records

        rows = [(n.id[:12], n.name, "bridge", n.subnet + (" (internal)" if n.internal else ""))
                for n in all_networks(Records(state.store))]
        rows += [("host", "host", "host", ""), ("none", "none", "null", "")]
        if quiet:
            for row in rows[:-2]:
                print(row[0])
            return
        header = ("NETWORK ID", "NAME", "DRIVER", "SUBNET")
        print("\n".join(tabwrite(["\t".join(r) for r in [header, *sorted(rows, key=lambda r: r[1])]])))

    @net.command()
    def inspect(names: list[str] = typer.Argument(..., help="Network names")) -> None:
        """Show networks as JSON, with the containers on them."""
        from runner.net.core import lookup
        from runner.net.records import Records

        records = Records(state.store)
        out: list[dict[str, Any]] = []
        for name in names:
            n = lookup(records, name)
            containers = {e.container_id: {"Name": e.name, "IPv4Address": f"{e.ip}/{e.prefixlen}",
                                           "MacAddress": e.mac, "Interface": e.ifname, "HostInterface": e.veth,
                                           "Aliases": list(e.aliases), "Ports": [str(p) for p in e.ports]}
                          for e in records.endpoints(network=n.name)}
            out.append({"Name": n.name, "Id": n.id, "Driver": "bridge", "Internal": n.internal,
                        "Created": n.created, "IPAM": {"Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
                        "Options": {"bridge": n.bridge}, "Containers": containers})
        print(json.dumps(out, indent=2))

    @net.command(name="rm")
    def rm(names: list[str] = typer.Argument(..., help="Network names")) -> None:
        """Remove networks no container is on."""
        from runner.net.core import remove_network

        for name in names:
            remove_network(state.store, name)
            print(name)

    @net.command()
    def prune() -> None:
        """Remove every user network no container is on, and whatever of ours nothing uses on the host: bridges,
        veths of dead containers, the nft table; ip_forward is put back."""
        from runner.net.core import prune as do_prune

        removed = do_prune(state.store)
        if removed:
            print("Deleted Networks:")
            for name in removed:
                print(name)

    @net.command()
    def connect(network: str = typer.Argument(..., help="Network name"),
                container: str = typer.Argument(..., help="Container name or ID prefix (running)"),
                ip: str | None = typer.Option(None, "--ip", help="IPv4 address on the network"),
                alias: list[str] = typer.Option([], "--alias", help="Another name for it on the network")) -> None:
        """Put a running container on one more network (the next ethN)."""
        import os

        from runner.container.record import find
        from runner.net.core import attach, container_netns
        from runner.net.model import AttachOptions
        from runner.net.records import write_in_place
        from shared.errors import Kind, StrataError

        c = find(state.store, container)
        mode = c.spec.network.mode
        if mode.network is None:  # Docker's refusal: its namespace is the host's, another container's, or private
            raise StrataError(f"container {c.name} has network mode {mode.kind} and cannot be connected to a "
                              "network", Kind.STATE)
        fd = container_netns(c)
        try:
            result = attach(state.store, fd, AttachOptions(
                container_id=c.id, name=c.name, hostname=c.spec.hostname, network=network, aliases=tuple(alias),
                ip=ip, dns=c.spec.network.dns, add_hosts=c.spec.network.add_hosts, hosts_path=c.path("hosts")))
        finally:
            os.close(fd)
        write_in_place(c.path("hosts"), result.hosts)

    @net.command()
    def disconnect(network: str = typer.Argument(..., help="Network name"),
                   container: str = typer.Argument(..., help="Container name or ID prefix"),
                   force: bool = typer.Option(False, "--force", "-f", help="Also when the container is not on it"))\
            -> None:
        """Take a container off a network."""
        from runner.container.record import find
        from runner.net.core import disconnect as do_disconnect
        from runner.net.core import hosts_for, lookup, release
        from runner.net.records import Records, write_in_place

        c = find(state.store, container)
        if force:
            release(state.store, c.id, lookup(Records(state.store), network).name)
        else:
            do_disconnect(state.store, c.id, network)
        write_in_place(c.path("hosts"), hosts_for(Records(state.store), c.id, c.spec.hostname))
