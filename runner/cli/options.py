"""The options of ``run``, ``create`` and ``bundle`` (and ``exec``'s), declared once (as skopeo's flag sets and
pip's ``cmdoptions`` are): :data:`RUN_FLAGS` names each option's parameter, type, default, names and help.

Two readers take that one declaration. :func:`takes` gives a typer command the flags it takes, as typer
declarations made from these (typer is imported when the app is built, :mod:`runner.cli.app`), and hands the
command one options value (:class:`~runner.container.options.RunOptions`), built by keyword. :func:`parse` is
click's parse of the same flags for the plain forms a script or a user types (``--name x``, ``--name=x``, ``-it``,
``-eK=V``), which ``run`` and ``exec`` use without importing typer at all (:mod:`runner.cli.main`); anything else
(``--help``, a bad value, an unknown flag, ``--``) is left to typer, so its errors and help stay the only ones.
A parameter's name is the field it fills, so adding an option is one line here and one field there; checking
its value is its value type's job (:func:`runner.container.options.resolve`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from runner.container.exec import ExecOptions
    from runner.container.options import RunOptions

R = TypeVar("R")


class Flag:
    """One option (``names`` given) or argument (no names): the type its value takes, its default (``...``:
    required), its help. A plain class: a dataclass or NamedTuple compiles code when it is made, at every start."""

    __slots__ = ("default", "help", "names", "type")

    def __init__(self, type_: Any, default: Any, names: tuple[str, ...], help_: str) -> None:
        self.type, self.default, self.names, self.help = type_, default, names, help_


def option(type_: Any, default: Any, *names: str, help: str) -> Flag:
    return Flag(type_, default, names, help)


def argument(type_: Any, default: Any, help: str) -> Flag:
    return Flag(type_, default, (), help)


OptStr = str | None
RUN_FLAGS: dict[str, Flag] = {
    "image": argument(str, ..., help="Image reference or ID, as pulled"),
    "command": argument(list[str] | None, None, help="Command and arguments (default: the image's)"),
    "remove": option(bool, False, "--rm", help="Remove the container when it exits"),
    "name": option(OptStr, None, "--name", help="Container name (default: a generated adjective_surname)"),
    "hostname": option(OptStr, None, "--hostname", "-h", help="Host name (default: short ID)"),
    "env": option(list[str], [], "--env", "-e", help="KEY=VALUE, or KEY to pass the runner's value"),
    "workdir": option(OptStr, None, "--workdir", "-w", help="Working directory inside"),
    "user": option(OptStr, None, "--user", "-u", help="user[:group], names or numbers"),
    "entrypoint": option(OptStr, None, "--entrypoint", help="Replace the image's entrypoint"),
    "interactive": option(bool, False, "--interactive", "-i", help="Keep stdin open"),
    "tty": option(bool, False, "--tty", "-t", help="Give the command a terminal"),
    "env_files": option(list[str], [], "--env-file", help="Read VAR=VALUE lines from a file"),
    "volumes": option(list[str], [], "--volume", "-v", help="/HOST/PATH:/PATH[:ro] bind mount"),
    "tmpfs": option(list[str], [], "--tmpfs", help="/PATH[:OPTIONS] tmpfs mount"),
    "read_only": option(bool, False, "--read-only", help="Mount the root filesystem read-only"),
    "init": option(bool, False, "--init", help="Run tini as PID 1 to reap zombies and pass signals"),
    "userns": option(OptStr, None, "--userns", help="auto: a user namespace of its own, ids from /etc/subuid's "
                     "containers user (root only); host: the runner's (default)"),
    "memory": option(OptStr, None, "--memory", "-m", help="Memory limit (e.g. 512m, 1g)"),
    "cpus": option(float | None, None, "--cpus", help="CPUs' worth of time (e.g. 0.5)"),
    "pids_limit": option(int | None, None, "--pids-limit", help="Most processes at once (-1: no limit)"),
    "cap_add": option(list[str], [], "--cap-add", help="Add a capability (or ALL)"),
    "cap_drop": option(list[str], [], "--cap-drop", help="Drop a capability (or ALL)"),
    "privileged": option(bool, False, "--privileged", help="All capabilities, no masked paths, devices"),
    "security_opts": option(list[str], [], "--security-opt", help="no-new-privileges, seccomp=unconfined or "
                            "seccomp=PROFILE.json"),
    "runtime": option(OptStr, None, "--runtime", help="OCI runtime that starts it: runc, crun, a path, or strata "
                      "(ours; the default unless the settings file's runtime says otherwise)"),
    "network": option(OptStr, None, "--network", "--net", help="bridge (default, or the settings file's network), "
                      "none, host, container:NAME|ID, or a network's name"),
    "publish": option(list[str], [], "--publish", "-p", help="[IP:][HOST_PORT:]CONTAINER_PORT, /tcp or /udp "
                      "after it: on the host"),
    "publish_all": option(bool, False, "--publish-all", "-P",
                          help="Publish the image's exposed ports on free host ports"),
    "dns": option(list[str], [], "--dns", help="Nameserver for its resolv.conf (replaces the host's)"),
    "add_hosts": option(list[str], [], "--add-host", help="HOST:IP line for its /etc/hosts (IP may be host-gateway)"),
    "mac": option(OptStr, None, "--mac-address", help="MAC address of its interface"),
    "ip": option(OptStr, None, "--ip", help="IPv4 address on a user network"),
    "aliases": option(list[str], [], "--network-alias", help="Another name for it on a user network"),
    "detach": option(bool, False, "--detach", "-d", help="Run in the background; print the ID"),
    "detach_keys": option(OptStr, None, "--detach-keys", help="Keys that detach from -it (default ctrl-p,ctrl-q)"),
    "restart": option(OptStr, None, "--restart", help="no (default), on-failure[:N], always or unless-stopped: "
                      "restart it when it exits, as Docker's"),
    "memory_swap": option(OptStr, None, "--memory-swap", help="Memory and swap together (e.g. 1g); -1: swap "
                          "unlimited"),
    "memory_reservation": option(OptStr, None, "--memory-reservation", help="Soft memory limit (at most --memory)"),
    "cpu_shares": option(int | None, None, "--cpu-shares", "-c", help="Relative CPU weight (default 1024)"),
    "ulimits": option(list[str], [], "--ulimit", help="NAME=SOFT[:HARD], e.g. nofile=1024:2048 (-1: unlimited)"),
    "log_driver": option(OptStr, None, "--log-driver", help="json-file (default), local (the same files) or none"),
    "log_opts": option(list[str], [], "--log-opt", help="max-size=SIZE (default 20m), max-file=N (default 5; 1 "
                       "with json-file's max-size alone)"),
    "pull": option(str, "missing", "--pull", help="Pull the image first: missing (if the store lacks it), always "
                   "or never (by puller pull)"),
}

EXEC_FLAGS: dict[str, Flag] = {
    "container": argument(str, ..., help="Name or ID prefix"),
    "command": argument(list[str], ..., help="Command and arguments"),
    "interactive": option(bool, False, "--interactive", "-i", help="Keep stdin open"),
    "tty": option(bool, False, "--tty", "-t", help="Give the command a terminal"),
    "user": option(OptStr, None, "--user", "-u", help="user[:group] (default: the container's)"),
    "env": option(list[str], [], "--env", "-e", help="KEY=VALUE"),
    "workdir": option(OptStr, None, "--workdir", "-w", help="Working directory inside"),
}


def run_options(values: Mapping[str, Any]) -> RunOptions:
    """The options value of ``run``, ``create`` and ``bundle``, from their parsed flags (COMMAND as a tuple: typer
    gives None or a list)."""
    from runner.container.options import RunOptions  # the container stack, loaded by these commands only

    return RunOptions(**{**values, "command": tuple(values["command"] or ())})


def exec_options(values: Mapping[str, Any]) -> ExecOptions:
    """The options value of ``exec``, from its parsed flags (all but CONTAINER)."""
    from runner.container.exec import ExecOptions

    return ExecOptions(**{key: value for key, value in values.items() if key != "container"})


def parse(flags: Mapping[str, Flag], args: Sequence[str]) -> dict[str, Any] | None:
    """click's parse of ``args`` by ``flags`` (options until the first argument, as ``allow_interspersed_args``
    false: the first argument's flag takes it, the last takes the rest), each value converted to its flag's type;
    None for anything but the plain forms, or a value click would refuse: typer then parses it, and says why."""
    by_name = {name: key for key, flag in flags.items() for name in flag.names}
    values: dict[str, Any] = {key: list(flag.default) if isinstance(flag.default, list) else flag.default
                              for key, flag in flags.items()}
    i = 0
    while 0 <= i < len(args) and args[i].startswith("-") and args[i] != "-":
        i = _option(flags, by_name, args, i, values)
    return None if i < 0 else _arguments(flags, values, args[i:])


def _option(flags: Mapping[str, Flag], by_name: Mapping[str, str], args: Sequence[str], i: int,
            values: dict[str, Any]) -> int:
    """Take the option (or cluster of short ones) at ``args[i]`` into ``values``; the index of the next word, or
    -1 for what :func:`parse` leaves to typer."""
    arg = args[i]
    if arg.startswith("--"):
        name, eq, attached = arg.partition("=")
        key = by_name.get(name)
        if key is None or (eq and flags[key].type is bool):  # "--" itself, or a flag given a value
            return -1
        if flags[key].type is bool:
            values[key] = True
            return i + 1
        if eq:
            return i + 1 if _take(flags[key], key, attached, values) else -1
        return i + 2 if i + 1 < len(args) and _take(flags[key], key, args[i + 1], values) else -1
    for j in range(1, len(arg)):  # a cluster: -it, -eKEY=VALUE, -ite KEY=VALUE
        key = by_name.get(f"-{arg[j]}")
        if key is None:
            return -1
        if flags[key].type is not bool:
            if j + 1 < len(arg):
                return i + 1 if _take(flags[key], key, arg[j + 1:], values) else -1
            return i + 2 if i + 1 < len(args) and _take(flags[key], key, args[i + 1], values) else -1
        values[key] = True
    return i + 1


def _take(flag: Flag, key: str, text: str, values: dict[str, Any]) -> bool:
    """Set (or, for a repeatable option, add) ``key``'s value; False if its type refuses ``text``."""
    if isinstance(flag.default, list):
        values[key].append(text)
        return True
    try:
        values[key] = float(text) if flag.type == float | None else int(text) if flag.type == int | None else text
    except ValueError:
        return False
    return True


def _arguments(flags: Mapping[str, Flag], values: dict[str, Any], rest: Sequence[str]) -> dict[str, Any] | None:
    """The arguments, in their order: each takes one word, the last every word left (none: its default, or None
    when it is required)."""
    arguments = [key for key, flag in flags.items() if not flag.names]
    for n, key in enumerate(arguments):
        if n == len(arguments) - 1:
            values[key] = list(rest[n:]) if len(rest) > n else flags[key].default
        else:
            values[key] = rest[n] if len(rest) > n else flags[key].default
        if values[key] is ...:
            return None
    return values


def takes(flags: Mapping[str, Flag], make: Callable[[dict[str, Any]], Any], omit: Collection[str] = ()) \
        -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command ``def verb(opts, *own) -> R`` every flag of ``flags`` but ``omit``: the first argument,
    then its own arguments, then the rest of ``flags`` (so ``bundle IMAGE DIR [COMMAND]...``); it is called with
    ``make(values)`` (the omitted flags absent: the options value's defaults) and its own."""
    import functools
    import inspect

    import typer

    chosen = [name for name in flags if name not in omit]
    first = next(name for name, flag in flags.items() if not flag.names)

    def declared(name: str) -> inspect.Parameter:
        flag = flags[name]
        declaration = typer.Option(flag.default, *flag.names, help=flag.help) if flag.names else \
            typer.Argument(flag.default, help=flag.help)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=declaration, annotation=flag.type)

    def decorate(verb: Callable[..., R]) -> Callable[..., R]:
        own = list(inspect.signature(verb).parameters.values())[1:]  # the first is opts
        params = [declared(first), *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own),
                  *(declared(name) for name in chosen if name != first)]

        @functools.wraps(verb)
        def command(**given: Any) -> R:
            return verb(make({name: given.pop(name) for name in chosen}), **given)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
