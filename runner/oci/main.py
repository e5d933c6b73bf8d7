"""``runner-oci``: the runner's executor behind runc's command line, for the callers that drive a runtime by it
(Docker's ``runtimes``, containerd's ``BinaryName`` / ``ctr --runc-binary``, podman's ``--runtime``, conmon).

runc's shape, because callers parse it: global options before the verb (``--root``, ``--log``, ``--log-format
text|json``, ``--systemd-cgroup``, ``--debug``), the verbs and their options as runc 1.1 names them, exit status
1 for any failure of ours (``exec`` and ``run`` return the command's), the error on stderr and, with ``--log``, as a
JSON line ``{"level": "error", "msg": ..., "time": ...}`` that containerd's shim reads back for its message.
argparse, not typer: callers need runc's exact spellings, and the start-up of every call counts (a ``docker run``
makes four).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Sequence

from shared import codecache
from shared.errors import StrataError

VERSION = "0.1.0"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner-oci", description="Strata's executor as an OCI runtime (runc's CLI)")
    p.add_argument("--root", default=None, help="state directory (default /run/runner-oci)")
    p.add_argument("--log", default=None, help="log file (callers read errors from it)")
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.add_argument("--systemd-cgroup", action="store_true", help="cgroupsPath is slice:prefix:name")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--rootless", default="auto", choices=("true", "false", "auto"),
                   help="runner-oci runs as root: true is refused")
    p.add_argument("-v", "--version", action="store_true")
    verbs = p.add_subparsers(dest="verb", metavar="COMMAND")

    def verb(name: str, text: str, *ids: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        for i in ids:
            sub.add_argument(i)
        return sub

    def creating(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-b", "--bundle", default=".")
        sub.add_argument("--console-socket")
        sub.add_argument("--pid-file")
        sub.add_argument("--no-pivot", action="store_true")
        sub.add_argument("--no-new-keyring", action="store_true")
        sub.add_argument("--preserve-fds", type=int, default=0)

    creating(verb("create", "create a container from a bundle; its command waits for start", "id"))
    verb("start", "start the command of a created container", "id")
    run = verb("run", "create and start a container, and wait for it unless --detach", "id")
    creating(run)
    run.add_argument("-d", "--detach", action="store_true")
    run.add_argument("--keep", action="store_true")
    verb("state", "the container's state, as runtime-spec JSON", "id")
    kill = verb("kill", "send a signal (default SIGTERM) to the container's init", "id")
    kill.add_argument("signal", nargs="?", default="SIGTERM")
    kill.add_argument("-a", "--all", action="store_true")
    delete = verb("delete", "delete a stopped container (--force: any)", "id")
    delete.add_argument("-f", "--force", action="store_true")
    _exec_options(verb("exec", "run another process in a running container", "id"))
    listing = verb("list", "the containers under --root")
    listing.add_argument("-f", "--format", default="table", choices=("table", "json"))
    listing.add_argument("-q", "--quiet", action="store_true")
    ps = verb("ps", "the processes in a container", "id")
    ps.add_argument("-f", "--format", default="table", choices=("table", "json"))
    ps.add_argument("ps_args", nargs=argparse.REMAINDER)
    verb("pause", "freeze every process of the container", "id")
    verb("resume", "thaw a paused container", "id")
    verb("features", "the runtime-spec features document")
    spec = verb("spec", "write a config.json to start from")
    spec.add_argument("-b", "--bundle", default=".")
    spec.add_argument("--rootless", action="store_true")
    _update_options(verb("update", "change a running container's resources", "id"))
    return p


def _exec_options(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("command", nargs=argparse.REMAINDER)
    for flag in ("--console-socket", "--cwd", "--pid-file"):
        ex.add_argument(flag, default=None)
    for flag in ("--process-label", "--apparmor", "--cgroup"):  # runc's; refused when given (commands.py)
        ex.add_argument(flag, default=None)
    ex.add_argument("-p", "--process", default=None)
    ex.add_argument("-u", "--user", default=None)
    ex.add_argument("-e", "--env", action="append", default=[])
    ex.add_argument("-g", "--additional-gids", action="append", default=[])
    ex.add_argument("-c", "--cap", action="append", default=[])
    ex.add_argument("-t", "--tty", action="store_true")
    ex.add_argument("-d", "--detach", action="store_true")
    ex.add_argument("--no-new-privs", action="store_true")
    ex.add_argument("--preserve-fds", type=int, default=0)  # refused above 0: the stage passes none on
    ex.add_argument("--ignore-paused", action="store_true")


def _update_options(update: argparse.ArgumentParser) -> None:
    update.add_argument("-r", "--resources", default=None, help="a LinuxResources JSON file, or - for stdin")
    for flag in ("--memory", "--memory-swap", "--memory-reservation", "--cpu-quota", "--cpu-period", "--cpu-share",
                 "--pids-limit"):
        update.add_argument(flag, default=None)


def _log(args: argparse.Namespace, level: str, message: str) -> None:
    """A line in --log as runc writes it (logrus): JSON with --log-format json, else logfmt."""
    if not args.log:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # logrus's RFC 3339 (datetime costs ~10 ms)
    if args.log_format == "json":
        line = json.dumps({"level": level, "msg": message, "time": now})
    else:
        line = f'time="{now}" level={level} msg={json.dumps(message)}'
    try:
        with open(args.log, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    codecache.install()  # before the imports that make dataclasses (shared/codecache.py: the runner's too)
    args = _parser().parse_args(argv)
    if args.version:
        sys.stdout.write(f"runner-oci version {VERSION}\nspec: 1.0.2\n")
        return 0
    if args.verb is None:
        _parser().print_help()
        return 1
    if args.debug:
        _log(args, "debug", f"runner-oci {args.verb} {getattr(args, 'id', '')}".rstrip())
    from runner.oci import commands

    try:
        return commands.dispatch(args)
    except StrataError as e:
        message = str(e)
        _log(args, "error", message)
        sys.stderr.write(f"runner-oci: {message}\n")
        return e.exit_code if args.verb in ("exec", "run") and e.exit_code else 1
    except KeyboardInterrupt:
        _log(args, "error", "interrupted")
        sys.stderr.write("runner-oci: interrupted\n")
        return 130
    except OSError as e:  # the machine said no (shared.cli's rule): a line, not a traceback
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        message = f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
        _log(args, "error", message)
        sys.stderr.write(f"runner-oci: {message}\n")
        return 1


def entry() -> None:
    """The console script: ``root`` default by who runs it."""
    os.umask(0o022)
    sys.exit(main())


