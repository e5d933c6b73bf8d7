"""The run options, declared once for ``run``, ``create`` and ``bundle`` (as skopeo's flag sets and pip's
``cmdoptions`` are): :data:`RUN_FLAGS` names each option's parameter, type and typer declaration, and
:func:`run_options` gives a command the ones it takes and hands it one
:class:`~runner.container.options.RunOptions`, built by keyword. A parameter's name is the ``RunOptions`` field it
fills, so adding an option is one line here and one field there; checking it is its value type's job
(:func:`runner.container.options.resolve`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

R = TypeVar("R")


@dataclass(frozen=True)
class Flag:
    """One run option: the type typer converts it to, and its typer declaration (names, default, help)."""

    type: Any
    declaration: Any


OptStr = str | None
RUN_FLAGS: dict[str, Flag] = {
    "image": Flag(str, typer.Argument(..., help="Image reference or ID, as pulled")),
    "command": Flag(list[str] | None, typer.Argument(None, help="Command and arguments (default: the image's)")),
    "remove": Flag(bool, typer.Option(False, "--rm", help="Remove the container when it exits")),
    "name": Flag(OptStr, typer.Option(None, "--name", help="Container name (default: its short ID)")),
    "hostname": Flag(OptStr, typer.Option(None, "--hostname", "-h", help="Host name (default: short ID)")),
    "env": Flag(list[str], typer.Option([], "--env", "-e", help="KEY=VALUE, or KEY to pass the runner's value")),
    "workdir": Flag(OptStr, typer.Option(None, "--workdir", "-w", help="Working directory inside")),
    "user": Flag(OptStr, typer.Option(None, "--user", "-u", help="user[:group], names or numbers")),
    "entrypoint": Flag(OptStr, typer.Option(None, "--entrypoint", help="Replace the image's entrypoint")),
    "interactive": Flag(bool, typer.Option(False, "--interactive", "-i", help="Keep stdin open")),
    "tty": Flag(bool, typer.Option(False, "--tty", "-t", help="Give the command a terminal")),
    "env_files": Flag(list[str], typer.Option([], "--env-file", help="Read VAR=VALUE lines from a file")),
    "volumes": Flag(list[str], typer.Option([], "--volume", "-v", help="/HOST/PATH:/PATH[:ro] bind mount")),
    "tmpfs": Flag(list[str], typer.Option([], "--tmpfs", help="/PATH[:OPTIONS] tmpfs mount")),
    "read_only": Flag(bool, typer.Option(False, "--read-only", help="Mount the root filesystem read-only")),
    "init": Flag(bool, typer.Option(False, "--init", help="Run tini as PID 1 to reap zombies and pass signals")),
    "userns": Flag(OptStr, typer.Option(None, "--userns", help="auto: a user namespace of its own, ids from "
                                        "/etc/subuid's containers user (root only); host: the runner's (default)")),
    "memory": Flag(OptStr, typer.Option(None, "--memory", "-m", help="Memory limit (e.g. 512m, 1g)")),
    "cpus": Flag(float | None, typer.Option(None, "--cpus", help="CPUs' worth of time (e.g. 0.5)")),
    "pids_limit": Flag(int | None, typer.Option(None, "--pids-limit", help="Most processes at once (-1: no limit)")),
    "cap_add": Flag(list[str], typer.Option([], "--cap-add", help="Add a capability (or ALL)")),
    "cap_drop": Flag(list[str], typer.Option([], "--cap-drop", help="Drop a capability (or ALL)")),
    "privileged": Flag(bool, typer.Option(False, "--privileged", help="All capabilities, no masked paths, devices")),
    "security_opts": Flag(list[str], typer.Option([], "--security-opt", help="no-new-privileges, "
                                                  "seccomp=unconfined or seccomp=PROFILE.json")),
    "runtime": Flag(OptStr, typer.Option(None, "--runtime", help="OCI runtime that starts it: runc, crun, a path, "
                                         "or strata (ours; the default unless the settings file's runtime says "
                                         "otherwise)")),
    "network": Flag(OptStr, typer.Option(None, "--network", "--net", help="bridge (default, or the settings file's "
                                         "network), none, host, container:NAME|ID, or a network's name")),
    "publish": Flag(list[str], typer.Option([], "--publish", "-p", help="[IP:][HOST_PORT:]CONTAINER_PORT, /tcp or "
                                            "/udp after it: on the host")),
    "publish_all": Flag(bool, typer.Option(False, "--publish-all", "-P",
                                           help="Publish the image's exposed ports on free host ports")),
    "dns": Flag(list[str], typer.Option([], "--dns", help="Nameserver for its resolv.conf (replaces the host's)")),
    "add_hosts": Flag(list[str], typer.Option([], "--add-host",
                                              help="HOST:IP line for its /etc/hosts (IP may be host-gateway)")),
    "mac": Flag(OptStr, typer.Option(None, "--mac-address", help="MAC address of its interface")),
    "ip": Flag(OptStr, typer.Option(None, "--ip", help="IPv4 address on a user network")),
    "aliases": Flag(list[str], typer.Option([], "--network-alias", help="Another name for it on a user network")),
    "detach": Flag(bool, typer.Option(False, "--detach", "-d", help="Run in the background; print the ID")),
    "memory_swap": Flag(OptStr, typer.Option(None, "--memory-swap",
                                             help="Memory and swap together (e.g. 1g); -1: swap unlimited")),
    "memory_reservation": Flag(OptStr, typer.Option(None, "--memory-reservation",
                                                    help="Soft memory limit (at most --memory)")),
    "cpu_shares": Flag(int | None, typer.Option(None, "--cpu-shares", "-c",
                                                help="Relative CPU weight (default 1024)")),
    "ulimits": Flag(list[str], typer.Option([], "--ulimit",
                                            help="NAME=SOFT[:HARD], e.g. nofile=1024:2048 (-1: unlimited)")),
    "log_driver": Flag(OptStr, typer.Option(None, "--log-driver",
                                            help="json-file (default), local (the same files) or none")),
    "log_opts": Flag(list[str], typer.Option([], "--log-opt", help="max-size=SIZE (default 20m), max-file=N "
                                             "(default 5; 1 with json-file's max-size alone)")),
}
# the options of the container's network, which a bundle (run elsewhere, in its runtime's namespace) has none of
NETWORK_FLAGS = frozenset({"network", "publish", "publish_all", "dns", "add_hosts", "mac", "ip", "aliases"})


def run_options(omit: Collection[str] = ()) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command ``def verb(opts: RunOptions, *own) -> R`` every run option but ``omit``: IMAGE first, then
    its own arguments, then COMMAND (so ``bundle IMAGE DIR [COMMAND]...``), then the options; it is called with
    them gathered in one ``RunOptions`` (the omitted ones at its defaults)."""
    chosen = [name for name in RUN_FLAGS if name not in omit]

    def shared(name: str) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=RUN_FLAGS[name].declaration,
                                 annotation=RUN_FLAGS[name].type)

    def decorate(verb: Callable[..., R]) -> Callable[..., R]:
        own = list(inspect.signature(verb).parameters.values())[1:]  # the first is opts
        params = [shared("image"), *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own),
                  *(shared(name) for name in chosen if name != "image")]

        @functools.wraps(verb)
        def command(**given: Any) -> R:
            from runner.container.options import RunOptions  # the container stack, loaded by these commands only

            values = {name: given.pop(name) for name in chosen}
            values["command"] = tuple(values["command"] or ())
            return verb(RunOptions(**values), **given)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
