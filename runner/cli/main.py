"""The ``runner`` command line: thin; one module per verb does the work (create, start, run, release, exec...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from runner.cli.network import register as register_network
from shared.cli import StoreOption, run_main, run_typer

if TYPE_CHECKING:
    from runner.container.create import RunOptions

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run images from the Strata store in new namespaces, offline.")


state = StoreOption(app)
register_network(app, state)


def _run_options(image: str, command: list[str] | None, rm: bool, name: str | None, hostname: str | None,
                 env: list[str], workdir: str | None, user: str | None, entrypoint: str | None, interactive: bool,
                 tty: bool, env_file: list[str], volume: list[str], tmpfs: list[str], read_only: bool, init: bool,
                 memory: str | None, cpus: float | None, pids_limit: int | None, cap_add: list[str],
                 cap_drop: list[str], privileged: bool, security_opt: list[str], detach: bool,
                 runtime: str | None = None, memory_swap: str | None = None,
                 memory_reservation: str | None = None, cpu_shares: int | None = None,
                 ulimit: list[str] | None = None, log_driver: str | None = None,
                 log_opt: list[str] | None = None) -> RunOptions:
    from runner.container.create import RunOptions

    return RunOptions(image=image, command=command or (), name=name, hostname=hostname, env=env, workdir=workdir,
                      user=user, entrypoint=entrypoint, interactive=interactive, tty=tty, remove=rm,
                      env_files=env_file, cap_add=cap_add, cap_drop=cap_drop, privileged=privileged,
                      security_opts=security_opt, memory=memory, cpus=cpus, pids_limit=pids_limit,
                      read_only=read_only, volumes=volume, tmpfs=tmpfs, init=init, detach=detach,
                      runtime=runtime, memory_swap=memory_swap, memory_reservation=memory_reservation,
                      cpu_shares=cpu_shares, ulimits=ulimit or (), log_driver=log_driver, log_opts=log_opt or ())


def _with_network(opts: RunOptions, network: str | None, publish: list[str], publish_all: bool, dns: list[str],
                  add_host: list[str], mac_address: str | None, ip: str | None, network_alias: list[str]) -> RunOptions:
    from dataclasses import replace

    return replace(opts, network=network, publish=publish, publish_all=publish_all, dns=dns, add_hosts=add_host,
                   mac=mac_address, ip=ip, aliases=network_alias)


# The options run and create share, as Docker's (create has no -d).
_IMAGE = typer.Argument(..., help="Image reference or ID, as pulled")
_COMMAND = typer.Argument(None, help="Command and arguments (default: the image's)")
_RM = typer.Option(False, "--rm", help="Remove the container when it exits")
_NAME = typer.Option(None, "--name", help="Container name (default: its short ID)")
_HOSTNAME = typer.Option(None, "--hostname", "-h", help="Host name (default: short ID)")
_ENV = typer.Option([], "--env", "-e", help="KEY=VALUE, or KEY to pass the runner's value")
_WORKDIR = typer.Option(None, "--workdir", "-w", help="Working directory inside")
_USER = typer.Option(None, "--user", "-u", help="user[:group], names or numbers")
_ENTRYPOINT = typer.Option(None, "--entrypoint", help="Replace the image's entrypoint")
_INTERACTIVE = typer.Option(False, "--interactive", "-i", help="Keep stdin open")
_TTY = typer.Option(False, "--tty", "-t", help="Give the command a terminal")
_ENV_FILE = typer.Option([], "--env-file", help="Read VAR=VALUE lines from a file")
_VOLUME = typer.Option([], "--volume", "-v", help="/HOST/PATH:/PATH[:ro] bind mount")
_TMPFS = typer.Option([], "--tmpfs", help="/PATH[:OPTIONS] tmpfs mount")
_READ_ONLY = typer.Option(False, "--read-only", help="Mount the root filesystem read-only")
_INIT = typer.Option(False, "--init", help="Run tini as PID 1 to reap zombies and pass signals")
_MEMORY = typer.Option(None, "--memory", "-m", help="Memory limit (e.g. 512m, 1g)")
_MEMORY_SWAP = typer.Option(None, "--memory-swap", help="Memory and swap together (e.g. 1g); -1: swap unlimited")
_MEMORY_RESERVATION = typer.Option(None, "--memory-reservation", help="Soft memory limit (at most --memory)")
_CPUS = typer.Option(None, "--cpus", help="CPUs' worth of time (e.g. 0.5)")
_CPU_SHARES = typer.Option(None, "--cpu-shares", "-c", help="Relative CPU weight (default 1024)")
_ULIMIT = typer.Option([], "--ulimit", help="NAME=SOFT[:HARD], e.g. nofile=1024:2048 (-1: unlimited)")
_LOG_DRIVER = typer.Option(None, "--log-driver", help="json-file (default), local (the same files) or none")
_LOG_OPT = typer.Option([], "--log-opt", help="max-size=SIZE (default 20m), max-file=N (default 5; 1 with "
                                              "json-file's max-size alone)")
_PIDS_LIMIT = typer.Option(None, "--pids-limit", help="Most processes at once (-1: no limit)")
_CAP_ADD = typer.Option([], "--cap-add", help="Add a capability (or ALL)")
_CAP_DROP = typer.Option([], "--cap-drop", help="Drop a capability (or ALL)")
_PRIVILEGED = typer.Option(False, "--privileged", help="All capabilities, no masked paths, devices")
_SECURITY_OPT = typer.Option([], "--security-opt",
                             help="no-new-privileges, seccomp=unconfined or seccomp=PROFILE.json")
_RUNTIME = typer.Option(None, "--runtime", help="OCI runtime that starts it: runc, crun, a path, or strata (ours; "
                                               "the default unless the settings file's runtime says otherwise)")
_NETWORK = typer.Option(None, "--network", "--net", help="bridge (default, or the settings file's network), none, "
                                                         "host, container:NAME|ID, or a network's name")
_PUBLISH = typer.Option([], "--publish", "-p",
                         help="[IP:][HOST_PORT:]CONTAINER_PORT, /tcp or /udp after it: on the host")
_PUBLISH_ALL = typer.Option(False, "--publish-all", "-P", help="Publish the image's exposed ports on free host ports")
_DNS = typer.Option([], "--dns", help="Nameserver for its resolv.conf (replaces the host's)")
_ADD_HOST = typer.Option([], "--add-host", help="HOST:IP line for its /etc/hosts (IP may be host-gateway)")
_MAC = typer.Option(None, "--mac-address", help="MAC address of its interface")
_IP = typer.Option(None, "--ip", help="IPv4 address on a user network")
_ALIAS = typer.Option([], "--network-alias", help="Another name for it on a user network")


@app.command(context_settings={"allow_interspersed_args": False})
def run(image: str = _IMAGE, command: list[str] | None = _COMMAND, rm: bool = _RM, name: str | None = _NAME,
        hostname: str | None = _HOSTNAME, env: list[str] = _ENV, workdir: str | None = _WORKDIR,
        user: str | None = _USER, entrypoint: str | None = _ENTRYPOINT, interactive: bool = _INTERACTIVE,
        tty: bool = _TTY, env_file: list[str] = _ENV_FILE, volume: list[str] = _VOLUME, tmpfs: list[str] = _TMPFS,
        read_only: bool = _READ_ONLY, init: bool = _INIT, memory: str | None = _MEMORY, cpus: float | None = _CPUS,
        pids_limit: int | None = _PIDS_LIMIT, cap_add: list[str] = _CAP_ADD, cap_drop: list[str] = _CAP_DROP,
        privileged: bool = _PRIVILEGED, security_opt: list[str] = _SECURITY_OPT, runtime: str | None = _RUNTIME,
        network: str | None = _NETWORK, publish: list[str] = _PUBLISH, publish_all: bool = _PUBLISH_ALL,
        dns: list[str] = _DNS, add_host: list[str] = _ADD_HOST, mac_address: str | None = _MAC,
        ip: str | None = _IP, network_alias: list[str] = _ALIAS,
        detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background; print the ID"),
        memory_swap: str | None = _MEMORY_SWAP, memory_reservation: str | None = _MEMORY_RESERVATION,
        cpu_shares: int | None = _CPU_SHARES, ulimit: list[str] = _ULIMIT, log_driver: str | None = _LOG_DRIVER,
        log_opt: list[str] = _LOG_OPT) -> int:
    """Create a container from IMAGE and start it (create + start): in the foreground, exiting with COMMAND's
    exit code, or with -d in the background."""
    from runner.container.run import run as do_run

    opts = _run_options(image, command, rm, name, hostname, env, workdir, user, entrypoint, interactive, tty,
                        env_file, volume, tmpfs, read_only, init, memory, cpus, pids_limit, cap_add, cap_drop,
                        privileged, security_opt, detach, runtime, memory_swap, memory_reservation, cpu_shares,
                        ulimit, log_driver, log_opt)
    return do_run(state.store, _with_network(opts, network, publish, publish_all, dns, add_host, mac_address, ip,
                                             network_alias))


@app.command(context_settings={"allow_interspersed_args": False})
def create(image: str = _IMAGE, command: list[str] | None = _COMMAND, rm: bool = _RM, name: str | None = _NAME,
           hostname: str | None = _HOSTNAME, env: list[str] = _ENV, workdir: str | None = _WORKDIR,
           user: str | None = _USER, entrypoint: str | None = _ENTRYPOINT, interactive: bool = _INTERACTIVE,
           tty: bool = _TTY, env_file: list[str] = _ENV_FILE, volume: list[str] = _VOLUME,
           tmpfs: list[str] = _TMPFS, read_only: bool = _READ_ONLY, init: bool = _INIT,
           memory: str | None = _MEMORY, cpus: float | None = _CPUS, pids_limit: int | None = _PIDS_LIMIT,
           cap_add: list[str] = _CAP_ADD, cap_drop: list[str] = _CAP_DROP, privileged: bool = _PRIVILEGED,
           security_opt: list[str] = _SECURITY_OPT, runtime: str | None = _RUNTIME,
           network: str | None = _NETWORK, publish: list[str] = _PUBLISH, publish_all: bool = _PUBLISH_ALL,
           dns: list[str] = _DNS, add_host: list[str] = _ADD_HOST, mac_address: str | None = _MAC,
           ip: str | None = _IP, network_alias: list[str] = _ALIAS,
           memory_swap: str | None = _MEMORY_SWAP, memory_reservation: str | None = _MEMORY_RESERVATION,
           cpu_shares: int | None = _CPU_SHARES, ulimit: list[str] = _ULIMIT,
           log_driver: str | None = _LOG_DRIVER, log_opt: list[str] = _LOG_OPT) -> None:
    """Create a container from IMAGE (its spec, -init layer and rw layer) without starting it; print its ID."""
    from runner.container.create import create as do_create

    opts = _run_options(image, command, rm, name, hostname, env, workdir, user, entrypoint, interactive, tty,
                        env_file, volume, tmpfs, read_only, init, memory, cpus, pids_limit, cap_add, cap_drop,
                        privileged, security_opt, False, runtime, memory_swap, memory_reservation, cpu_shares,
                        ulimit, log_driver, log_opt)
    print(do_create(state.store, _with_network(opts, network, publish, publish_all, dns, add_host, mac_address,
                                               ip, network_alias)).id)


@app.command(context_settings={"allow_interspersed_args": False})
def bundle(image: str = _IMAGE, directory: str = typer.Argument(..., help="Where to write config.json and rootfs/"),
           command: list[str] | None = _COMMAND, name: str | None = _NAME, hostname: str | None = _HOSTNAME,
           env: list[str] = _ENV, workdir: str | None = _WORKDIR, user: str | None = _USER,
           entrypoint: str | None = _ENTRYPOINT, interactive: bool = _INTERACTIVE, tty: bool = _TTY,
           env_file: list[str] = _ENV_FILE, volume: list[str] = _VOLUME, tmpfs: list[str] = _TMPFS,
           read_only: bool = _READ_ONLY, init: bool = _INIT, memory: str | None = _MEMORY,
           cpus: float | None = _CPUS, pids_limit: int | None = _PIDS_LIMIT, cap_add: list[str] = _CAP_ADD,
           cap_drop: list[str] = _CAP_DROP, privileged: bool = _PRIVILEGED,
           security_opt: list[str] = _SECURITY_OPT, memory_swap: str | None = _MEMORY_SWAP,
           memory_reservation: str | None = _MEMORY_RESERVATION, cpu_shares: int | None = _CPU_SHARES,
           ulimit: list[str] = _ULIMIT, log_driver: str | None = _LOG_DRIVER,
           log_opt: list[str] = _LOG_OPT) -> None:
    """Write a standalone OCI bundle of IMAGE with these run options to DIRECTORY (config.json + a flattened
    rootfs/), for `runc run` or `crun run` elsewhere; print DIRECTORY."""
    from runner.container.bundle import bundle as do_bundle

    opts = _run_options(image, command, False, name, hostname, env, workdir, user, entrypoint, interactive, tty,
                        env_file, volume, tmpfs, read_only, init, memory, cpus, pids_limit, cap_add, cap_drop,
                        privileged, security_opt, False, "strata", memory_swap, memory_reservation, cpu_shares,
                        ulimit, log_driver, log_opt)
    # the bundle runs elsewhere, in a namespace of its runtime's making: none is what it gets
    print(do_bundle(state.store, _with_network(opts, "none", [], False, [], [], None, None, []), directory))


@app.command()
def start(containers: list[str] = typer.Argument(..., help="Names or ID prefixes"),
          attach: bool = typer.Option(False, "--attach", "-a", help="Attach its output; exit with its exit code"),
          interactive: bool = typer.Option(False, "--interactive", "-i", help="Attach stdin too")) -> int:
    """Start created (or exited) containers: in the background, printing each name; with -a (or -i) in the
    foreground, as one container's run."""
    from runner.container.run import start_command

    return start_command(state.store, containers, attach or interactive, interactive)


@app.command()
def ps(all_: bool = typer.Option(False, "--all", "-a", help="Show all containers (default: running ones)"),
       quiet: bool = typer.Option(False, "--quiet", "-q", help="Only IDs"),
       no_trunc: bool = typer.Option(False, "--no-trunc", help="Full IDs and commands"),
       filter_: list[str] = typer.Option([], "--filter", "-f",
                                         help="KEY=VALUE: status=, name=, id=, ancestor=, exited= (repeatable)"),
       format_: str | None = typer.Option(None, "--format",
                                          help="json, or a Go template: '{{.Names}}', 'table {{.ID}}\\t{{.Status}}'"),
       last: int = typer.Option(-1, "--last", "-n", help="Show the N last created containers (all states)"),
       latest: bool = typer.Option(False, "--latest", "-l", help="Show the last created container")) -> None:
    """List containers, as Docker's ps: newest first, with its columns, filters and formats."""
    from runner.cli.ps import listing

    for line in listing(state.store, all_, quiet, no_trunc, filter_, format_, last, latest):
        print(line)


@app.command()
def port(container: str = typer.Argument(..., help="Name or ID prefix")) -> None:
    """List a running container's published ports, as Docker's: 80/tcp -> 0.0.0.0:8080."""
    from runner.container.record import find
    from runner.net.records import Records

    c = find(state.store, container)
    if c.state().status != "running":
        return
    for e in Records(state.store).endpoints(container_id=c.id):
        for p in e.ports:
            print(f"{p.container_port}/{p.proto} -> {p.host_ip or '0.0.0.0'}:{p.host_port}")


@app.command()
def rm(containers: list[str] = typer.Argument(..., help="Names or ID prefixes"),
       force: bool = typer.Option(False, "--force", "-f", help="Kill a running container first")) -> None:
    """Remove containers: their rw layer, -init layer and records."""
    from runner.container.record import find
    from runner.container.release import remove

    for key in containers:
        remove(find(state.store, key), force=force)
        print(key)


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
def exec_(container: str = typer.Argument(..., help="Name or ID prefix"),
          command: list[str] = typer.Argument(..., help="Command and arguments"),
          interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open"),
          tty: bool = typer.Option(False, "--tty", "-t", help="Give the command a terminal"),
          user: str | None = typer.Option(None, "--user", "-u", help="user[:group] (default: the container's)"),
          env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE"),
          workdir: str | None = typer.Option(None, "--workdir", "-w", help="Working directory inside")) -> int:
    """Run a command in a running container: its namespaces, cgroup, user, environment and capabilities."""
    from runner.container.exec import ExecOptions, exec_in
    from runner.container.record import find

    return exec_in(find(state.store, container), ExecOptions(command, interactive, tty, user, env, workdir))


@app.command()
def logs(container: str = typer.Argument(..., help="Name or ID prefix"),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the container exits"),
         timestamps: bool = typer.Option(False, "--timestamps", "-t", help="Show when each line was written"),
         tail: str = typer.Option("all", "--tail", "-n", help="Number of lines to show from the end, or all"),
         since: str | None = typer.Option(None, "--since", help="Lines since a time (2013-01-02T13:23:37Z, a "
                                                                  "Unix time) or a duration before now (42m)"),
         until: str | None = typer.Option(None, "--until", help="Lines before a time or duration, as --since"))\
        -> None:
    """Print a container's output (stdout to stdout, stderr to stderr), as docker logs."""
    import sys

    from runner.container.record import find
    from runner.logs import reader as logread
    from runner.logs.writer import LOG_NAME
    from shared.errors import Kind, StrataError

    opts = logread.ReadOptions(follow, timestamps, logread.parse_tail(tail),
                               logread.parse_time(since, "since") if since else None,
                               logread.parse_time(until, "until") if until else None)
    c = find(state.store, container)
    if c.spec.log.driver == "none":
        raise StrataError("configured logging driver does not support reading (--log-driver none)", Kind.UNSUPPORTED)
    logread.show(c.path(LOG_NAME), opts, lambda: c.state().status == "running", sys.stdout.buffer,
                 sys.stderr.buffer)


@app.command()
def stop(containers: list[str] = typer.Argument(..., help="Names or ID prefixes"),
         time_: float = typer.Option(10, "--time", "-t", help="Seconds to wait before SIGKILL")) -> None:
    """Send SIGTERM to each container's PID 1, then SIGKILL after the grace time."""
    from runner.container.lifecycle import stop as do_stop
    from runner.container.record import find

    for key in containers:
        do_stop(find(state.store, key), time_)
        print(key)


@app.command()
def kill(containers: list[str] = typer.Argument(..., help="Names or ID prefixes"),
         sig: str = typer.Option("KILL", "--signal", "-s", help="Signal name or number")) -> None:
    """Send a signal to each container's PID 1."""
    import signal as signal_mod

    from runner.container.lifecycle import kill as do_kill
    from runner.container.record import find
    from shared.errors import usage

    name = sig.upper().removeprefix("SIG")
    try:
        number = int(sig) if sig.isdigit() else int(signal_mod.Signals[f"SIG{name}"])
    except KeyError:
        raise usage(f"unknown signal {sig!r}") from None
    for key in containers:
        do_kill(find(state.store, key), number)
        print(key)


@app.command()
def inspect(containers: list[str] = typer.Argument(..., help="Names or ID prefixes"),
            format_: str | None = typer.Option(None, "--format", "-f",
                                               help="Go template, e.g. '{{.State.Pid}}', '{{json .Mounts}}'")) -> None:
    """Show containers as docker inspect does: a JSON array in Docker's shape (Id, State, Config, HostConfig,
    Mounts, GraphDriver, NetworkSettings...), plus Spec, the OCI runtime-spec config.json as saved."""
    import json

    from runner.cli.inspect import document
    from runner.container.record import find
    from shared.template import Template, unescape

    template = Template(unescape(format_)) if format_ and format_.strip() != "json" else None
    docs = [document(find(state.store, key)) for key in containers]
    if template is None:  # as Docker's: no format or "json" is the documents as an indented array
        print(json.dumps(docs, indent=4, ensure_ascii=False))
        return
    for doc in docs:
        print(template.render(doc))


@app.command()
def prune() -> None:
    """Remove every container that is not running."""
    from runner.container.record import all_containers
    from runner.container.release import remove

    for c in all_containers(state.store):
        if c.state().status != "running":
            remove(c)
            print(c.id)


class _CommitCommand(typer.core.TyperCommand):
    """Docker's form of a bool flag, ``--pause=false`` (``-p=true``...), which click's flags refuse: rewritten to
    ``--no-pause``/``--pause`` before parsing."""

    def parse_args(self, ctx: typer._click.core.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                out += args[i:]
                break
            flag, sep, value = arg.partition("=")
            taken = i > 0 and args[i - 1] in ("-m", "--message", "-a", "--author", "-c", "--change")  # a value
            if sep and flag in ("--pause", "-p") and not taken:
                if value.lower() not in ("true", "false", "1", "0", "t", "f"):
                    from shared.errors import usage

                    raise usage(f"invalid argument {value!r} for {flag}: use true or false")
                arg = "--pause" if value.lower() in ("true", "1", "t") else "--no-pause"
            out.append(arg)
        return super().parse_args(ctx, out)


@app.command(cls=_CommitCommand)
def commit(container: str = typer.Argument(..., help="Name or ID prefix"),
           reference: str = typer.Argument(..., help="REPOSITORY[:TAG] for the new image"),
           message: str | None = typer.Option(None, "--message", "-m", help="Commit message (in the history)"),
           author: str | None = typer.Option(None, "--author", "-a", help="Author (e.g. \"Name <email>\")"),
           change: list[str] = typer.Option([], "--change", "-c",
                                            help="Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, "
                                                 "LABEL, EXPOSE, VOLUME, STOPSIGNAL, ONBUILD"),
           pause: bool = typer.Option(True, "--pause/--no-pause", "-p",
                                      help="Freeze a running container while its layer is packed "
                                           "(--pause=false: pack it live)")) -> None:
    """Create a new image from a container's changes (its rw layer); print the new image's ID."""
    from runner.container.commit import CommitOptions
    from runner.container.commit import commit as do_commit

    print(do_commit(state.store, CommitOptions(container, reference, message, author, change, pause)))


def main() -> None:
    # Docker's convention: 125 when the runner itself fails; the command's own code otherwise.
    run_main("runner", lambda: run_typer(app, usage_exit=125), lambda kind: 125)
