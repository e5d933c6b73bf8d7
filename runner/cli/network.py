"""``runner network create|ls|inspect|rm|prune|connect|disconnect``: thin, over :mod:`runner.net` (the networks)
and :mod:`runner.container.network` (a container's place on them).

Kept out of :mod:`runner.cli.main` so that the start path's rebuild and this can change apart; :func:`register` adds the
group to the app in one place.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

from shared.cli import StoreOption
from shared.format import tabwrite

if TYPE_CHECKING:
    from runner.net.model import Network
    from runner.net.records import Records


def register(app: typer.Typer, state: StoreOption) -> None:
    net = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage networks.")
    app.add_typer(net, name="network")
    _register_changes(net, state)
    _register_listings(net, state)
    _register_members(net, state)


def _register_changes(net: typer.Typer, state: StoreOption) -> None:
    @net.command()
    def create(name: str = typer.Argument(..., help="Network name"),
               subnet: str | None = typer.Option(None, "--subnet", help="CIDR (default: a free /24 of 10.89/16)"),
               internal: bool = typer.Option(False, "--internal", help="No route out: no masquerade, no gateway"))\
            -> None:
        """Create a user network; its bridge appears with its first container."""
        from runner.net.core import create_network

        print(create_network(state.store, name, subnet, internal).id)

    @net.command(name="rm")
    def rm(names: list[str] = typer.Argument(..., help="Network names")) -> None:
        """Remove networks no container is on."""
        from runner.net.core import remove_network
        from runner.net.sandbox import where_networks_live

        for name in names:
            where_networks_live(state.store, remove_network, state.store, name)
            print(name)

    @net.command()
    def prune() -> None:
        """Remove every user network no container is on, and whatever of ours nothing uses on the host: bridges,
        veths of dead containers, the nft table; ip_forward is put back."""
        from runner.net.core import prune as do_prune
        from runner.net.sandbox import where_networks_live

        removed = where_networks_live(state.store, do_prune, state.store)
        if removed:
            print("Deleted Networks:")
            for name in removed:
                print(name)


def _register_listings(net: typer.Typer, state: StoreOption) -> None:
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
        print(json.dumps([inspect_document(records, lookup(records, name)) for name in names], indent=2))


def inspect_document(records: Records, n: Network) -> dict[str, Any]:
    """``docker network inspect``'s fields for one network."""
    containers = {e.container_id: {"Name": e.name, "IPv4Address": f"{e.ip}/{e.prefixlen}", "MacAddress": e.mac,
                                   "Interface": e.ifname, "HostInterface": e.veth, "Aliases": list(e.aliases),
                                   "Ports": [str(p) for p in e.ports]}
                  for e in records.endpoints(network=n.name)}
    return {"Name": n.name, "Id": n.id, "Driver": "bridge", "Internal": n.internal, "Created": n.created,
            "IPAM": {"Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]}, "Options": {"bridge": n.bridge},
            "Containers": containers}


def _register_members(net: typer.Typer, state: StoreOption) -> None:
    @net.command()
    def connect(network: str = typer.Argument(..., help="Network name"),
                container: str = typer.Argument(..., help="Container name or ID prefix (running)"),
                ip: str | None = typer.Option(None, "--ip", help="IPv4 address on the network"),
                alias: list[str] = typer.Option([], "--alias", help="Another name for it on the network")) -> None:
        """Put a running container on one more network (the next ethN)."""
        from runner.container import network as container_network
        from runner.container.record import find

        container_network.connect(find(state.store, container), network, ip, tuple(alias))

    @net.command()
    def disconnect(network: str = typer.Argument(..., help="Network name"),
                   container: str = typer.Argument(..., help="Container name or ID prefix"),
                   force: bool = typer.Option(False, "--force", "-f", help="Also when the container is not on it"))\
            -> None:
        """Take a container off a network."""
        from runner.container import network as container_network
        from runner.container.record import find

        container_network.disconnect(find(state.store, container), network, force)
