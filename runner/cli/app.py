"""The ``runner`` command line, as a typer app: thin; one module per verb does the work (create, start, run, release,
exec...). What defines the command line: its help, usage errors and every verb; :mod:`runner.cli.main` calls the
plain forms of ``run`` and ``exec`` without it, parsed from the same declaration (:mod:`runner.cli.options`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from runner.cli.aliases import register as register_aliases
from runner.cli.network import register as register_network
from runner.cli.options import EXEC_FLAGS, RUN_FLAGS, exec_options, run_options, takes
from shared.cli import StoreOption

if TYPE_CHECKING:
    from runner.container.options import RunOptions

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run images from the Strata store in new namespaces, offline.")


state = StoreOption(app)
register_network(app, state)


@app.command(context_settings={"allow_interspersed_args": False})
@takes(RUN_FLAGS, run_options)
def run(opts: RunOptions) -> int:
    """Create a container from IMAGE and start it (create + start): in the foreground, exiting with COMMAND's
    exit code, or with -d in the background."""
    from runner.container.run import run as do_run
    from runner.verbs.pull import fetcher

    return do_run(state.store, opts, fetcher(state.store, opts))


@app.command(context_settings={"allow_interspersed_args": False})
@takes(RUN_FLAGS, run_options, omit={"detach", "detach_keys"})
def create(opts: RunOptions) -> None:
    """Create a container from IMAGE (its spec, -init layer and rw layer) without starting it; print its ID."""
    from runner.container.create import create as do_create
    from runner.verbs.pull import fetcher

    print(do_create(state.store, opts, fetcher(state.store, opts)).id)


@app.command(context_settings={"allow_interspersed_args": False})
@takes(RUN_FLAGS, run_options, omit={"detach", "detach_keys", "remove", "runtime", "restart"})
def bundle(opts: RunOptions, directory: str = typer.Argument(..., help="Where to write config.json and rootfs/"))\
        -> None:
    """Write a standalone OCI bundle of IMAGE with these run options to DIRECTORY (config.json + a flattened
    rootfs/), for `runc run` or `crun run` elsewhere; print DIRECTORY."""
    from runner.container.bundle import bundle as do_bundle
    from runner.verbs.pull import fetcher

    print(do_bundle(state.store, opts, directory, fetcher(state.store, opts)))


@app.command()
def start(containers: list[str] = typer.Argument(None, help="Names or ID prefixes"),
          attach: bool = typer.Option(False, "--attach", "-a", help="Attach its output; exit with its exit code"),
          interactive: bool = typer.Option(False, "--interactive", "-i", help="Attach stdin too"),
          all_restart: bool = typer.Option(False, "--all-restart", help="Start every container its --restart "
                                           "policy brings back, as Docker's daemon at its start (for boot)")) -> int:
    """Start created (or exited) containers: in the background, printing each name; with -a (or -i) in the
    foreground, as one container's run."""
    from shared.errors import usage

    if all_restart:
        if containers or attach or interactive:
            raise usage("--all-restart takes no container and no -a or -i")
        from runner.verbs.restart import start_by_policy

        return start_by_policy(state.store)
    if not containers:
        raise usage("start needs at least one container (or --all-restart)")
    from runner.container.run import start_command

    return start_command(state.store, containers, attach or interactive, interactive)


@app.command()
def attach(container: str = typer.Argument(..., help="Name or ID prefix"),
           detach_keys: str | None = typer.Option(None, "--detach-keys",
                                                  help="Keys that detach (default ctrl-p,ctrl-q)"),
           no_stdin: bool = typer.Option(False, "--no-stdin", help="Do not attach stdin"),
           sig_proxy: str = typer.Option("true", "--sig-proxy", help="Pass signals on to it (without -t): "
                                         "--sig-proxy=false to not")) -> int:
    """Attach to a running container's terminal or output (and stdin, if created with -i); Ctrl-P Ctrl-Q
    detaches, leaving it running; exit with its exit code."""
    from runner.verbs.attach import attach as do_attach

    return do_attach(state.store, container, detach_keys, no_stdin, sig_proxy)


@app.command()
def restart(containers: list[str] = typer.Argument(..., help="Names or ID prefixes"),
            time_: float = typer.Option(10, "--time", "-t", help="Seconds to wait before SIGKILL")) -> int:
    """Stop each container (SIGTERM, SIGKILL after the grace time) and start it again; print each name."""
    from runner.verbs.restart import restart as do_restart

    return do_restart(state.store, containers, time_)


@app.command()
def wait(containers: list[str] = typer.Argument(..., help="Names or ID prefixes")) -> int:
    """Block until each container stops; print its exit code."""
    from runner.verbs.wait import wait as do_wait

    return do_wait(state.store, containers)


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
    from runner.container.network import published
    from runner.container.record import find

    c = find(state.store, container)
    if c.state().status != "running":
        return
    for p in published(c):
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
@takes(EXEC_FLAGS, dict)
def exec_(values: dict[str, Any]) -> int:
    """Run a command in a running container: its namespaces, cgroup, user, environment and capabilities."""
    from runner.container.exec import exec_in
    from runner.container.record import find

    return exec_in(find(state.store, values["container"]), exec_options(values))


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
def prune(force: bool = typer.Option(False, "--force", "-f", help="Do not ask first")) -> None:
    """Remove every container that is not running (as docker container prune: asks first, unless -f)."""
    from runner.verbs.prune import container_prune

    container_prune(state.store, force)


@app.command(context_settings={"allow_interspersed_args": True})
def cp(src: str = typer.Argument(..., metavar="SRC", help="CONTAINER:SRC_PATH, a local path, or - (a tar on stdin)"),
       dest: str = typer.Argument(..., metavar="DEST", help="CONTAINER:DEST_PATH, a local path, or - (a tar on "
                                                           "stdout)"),
       archive: bool = typer.Option(False, "--archive", "-a", help="Keep owners (uid:gid) as they are"),
       follow: bool = typer.Option(False, "--follow-link", "-L", help="Follow a symbolic link at SRC_PATH")) -> None:
    """Copy files between a container (running or stopped) and the host, as Docker's cp: runner cp [-a] [-L]
    CONTAINER:SRC_PATH DEST_PATH|-, or runner cp [-a] [-L] SRC_PATH|- CONTAINER:DEST_PATH."""
    from runner.verbs.cp import cp as do_cp

    do_cp(state.store, src, dest, archive, follow)


@app.command()
def diff(container: str = typer.Argument(..., help="Name or ID prefix")) -> None:
    """List the changes to files in a container's filesystem since it was created: A added, C changed, D deleted."""
    from runner.container.record import find
    from runner.verbs.diff import changes

    for line in changes(find(state.store, container)):
        print(line)


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


@app.command()
def pause(containers: list[str] = typer.Argument(..., help="Names or ID prefixes")) -> None:
    """Freeze every process of each container (the cgroup freezer) until unpause."""
    from runner.container.record import find
    from runner.verbs.pause import pause as do_pause

    for key in containers:
        do_pause(find(state.store, key))
        print(key)


@app.command()
def unpause(containers: list[str] = typer.Argument(..., help="Names or ID prefixes")) -> None:
    """Thaw each paused container."""
    from runner.container.record import find
    from runner.verbs.pause import unpause as do_unpause

    for key in containers:
        do_unpause(find(state.store, key))
        print(key)


@app.command()
def rename(container: str = typer.Argument(..., help="Name or ID prefix"),
           new_name: str = typer.Argument(..., help="The new name")) -> None:
    """Rename a container."""
    from runner.container.record import find
    from runner.verbs.rename import rename as do_rename

    do_rename(find(state.store, container), new_name)


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def top(container: str = typer.Argument(..., help="Name or ID prefix"),
        ps_options: list[str] = typer.Argument(None, help="ps options (default: -ef)")) -> None:
    """Show a running container's processes, as the host's ps prints them (host pids)."""
    from runner.container.record import find
    from runner.verbs.top import top as do_top

    for line in do_top(find(state.store, container), ps_options or []):
        print(line)


@app.command()
def stats(containers: list[str] = typer.Argument(None, help="Names or ID prefixes (default: every running one)"),
          all_: bool = typer.Option(False, "--all", "-a", help="Show all containers (default: running ones)"),
          no_stream: bool = typer.Option(False, "--no-stream", help="Print one table and exit"),
          no_trunc: bool = typer.Option(False, "--no-trunc", help="Full IDs"),
          format_: str | None = typer.Option(None, "--format",
                                             help="json, or a Go template: 'table {{.Name}}\\t{{.CPUPerc}}'"))\
        -> int:
    """Show containers' CPU, memory, network, block I/O and PIDs, from their cgroups; redrawn each second until
    Ctrl-C, or once with --no-stream."""
    from runner.verbs.stats import stats as do_stats

    return do_stats(state.store, containers or [], all_, no_stream, format_, not no_trunc)


system = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage both tools' stores.")
app.add_typer(system, name="system")


@system.command(name="prune")
def system_prune(every_image: bool = typer.Option(False, "--all", "-a", help="Remove every image no container "
                                                  "uses, not only dangling ones"),
                 force: bool = typer.Option(False, "--force", "-f", help="Do not ask first")) -> None:
    """Remove stopped containers, networks no container is on, and dangling images (with -a, unused ones)."""
    from runner.verbs.prune import system_prune as do_prune

    do_prune(state.store, every_image, force)


# Docker's names for what is done elsewhere: the image verbs (puller's) and ``container X`` (last: it copies the
# commands registered above)
register_aliases(app, state)
