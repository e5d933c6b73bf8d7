"""What both command lines share: the one error convention and running a typer app under it.

The apps themselves stay thin: they parse options and call plain functions of the library. typer is imported by
the functions that use it, not here: ``runner run`` and ``exec`` parse their options without it
(:mod:`runner.cli.main`), and a command's start-up is what a user waits for.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from shared.errors import Kind, StrataError, prog_name
from shared.store.layout import Store, default_root

if TYPE_CHECKING:
    import typer
    from typer._click.exceptions import UsageError

ROOT_HELP = "Store root (default: $STRATA_ROOT, else /var/lib/strata as root, else $XDG_DATA_HOME/strata)"


def version() -> str:
    """The installed package's version; from pyproject.toml when the source tree runs uninstalled."""
    from importlib import metadata

    try:
        return metadata.version("strata")
    except metadata.PackageNotFoundError:
        import tomllib

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _show_version(value: bool) -> None:
    import typer

    if value:
        print(f"{prog_name()} version {version()}")  # as "Docker version 27.3.1, build ..."
        raise typer.Exit()


class StoreOption:
    """The options both tools take before a command, as a typer callback: ``--root`` (``.store`` once the app
    has parsed it) and ``-v``/``--version``. Run without root, the tool enters the user's namespace here, before
    any command touches a store (:mod:`shared.userns`)."""

    store: Store

    def __init__(self, app: typer.Typer) -> None:
        import typer

        @app.callback()
        def _root(root: Path | None = typer.Option(None, "--root", help=ROOT_HELP),
                  _version: bool = typer.Option(False, "--version", "-v", is_eager=True, callback=_show_version,
                                                help="Print the version and exit")) -> None:
            self.store = open_store(root)


def open_store(root: Path | None) -> Store:
    """The store ``--root`` names (default: :func:`default_root`); without root, the user's namespace is entered
    first (:mod:`shared.userns`), before any command touches a store."""
    path = root or default_root()  # decided by who the user is on the host: before entering
    if os.geteuid() != 0:
        from shared import userns

        userns.enter_once()
    return Store(path)


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt: typer turns that into a silent exit 130, and we owe the user a line."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def standard_fds() -> None:
    """A tool started with stdin, stdout or stderr closed gets /dev/null there (as daemons do): else the first
    file it opened would take fd 1, and a container's output echoed to "stdout" would be written into it, and
    Python's ``sys.stdout`` would be None where the relay writes."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open("/dev/null", os.O_RDWR)  # the lowest free fd: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            name = ("stdin", "stdout", "stderr")[fd]
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def run_main(prog: str, body: Callable[[], int | None], codes: Callable[[Kind], int] = lambda k: 1,
             fast_exit: bool = False) -> NoReturn:
    """Run a CLI body under the one error convention: ``PROG: error: MESSAGE`` on one line, a non-zero exit.

    ``codes`` maps a kind to an exit status (``runner`` uses Docker's 125 for all of its own failures). With
    ``fast_exit`` a body that returns ends the process by :func:`exit_now`.
    """
    signal.signal(signal.SIGINT, _interrupt)
    standard_fds()
    try:
        status = body()
    except StrataError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code if e.exit_code is not None else codes(e.kind))
    except (Interrupted, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            where = f": {e.filename}" if e.filename else ""
            print(f"{prog}: error: {e.strerror}{where}", file=sys.stderr)
            sys.exit(codes(Kind.SYSTEM))
        raise
    if fast_exit:
        exit_now(status or 0)
    sys.exit(status or 0)


def exit_now(code: int) -> None:
    """End the process with ``code`` without the interpreter's finalization, which tears down every module and
    object one by one (measured: 25-55 ms of a ``runner run``, a third of its own time), when that is safe: the
    atexit handlers run (tempfile's and logging's clean-ups are there), stdout and stderr are flushed, and no
    other thread is alive (the interpreter would join it). Returns when it is not safe (a flush failed: the
    interpreter then reports it as usual), and the caller exits the ordinary way."""
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # what an atexit handler printed
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def usage_lines(prog: str, e: UsageError) -> list[str]:
    """Docker's two lines for a usage error: the error, then where the help is (the subcommand's, when the
    error is in one). Click's message is kept, as our messages are written (lower case, no full stop)."""
    message = e.format_message().strip().rstrip(".")
    message = message[:1].lower() + message[1:]
    where = e.ctx.command_path if e.ctx is not None else prog
    return [f"{prog}: error: {message}", f"See '{where} --help'."]


def run_typer(app: typer.Typer, usage_exit: int = 2) -> int | None:
    """Click in non-standalone mode, so our errors and Ctrl-C reach :func:`run_main` unchanged, and a command's
    integer result becomes the exit status. A usage error (unknown option or command, missing argument, bad
    value) is two lines, as Docker's (:func:`usage_lines`), and exits ``usage_exit``."""
    import typer
    from typer._click.exceptions import (  # typer >= 0.26 vendors click; pinned < 0.29
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )

    prog = prog_name()
    try:
        result = app(args=sys.argv[1:], prog_name=prog, standalone_mode=False)
    except typer.Abort:  # typer raises it when a prompt meets the end of input (Ctrl-C is Interrupted)
        raise StrataError("input ended before the command had what it asked for", Kind.USAGE) from None
    except NoArgsIsHelpError as e:  # the tool alone: its help, as Docker prints it
        e.show()
        raise SystemExit(usage_exit) from None
    except UsageError as e:
        print("\n".join(usage_lines(prog, e)), file=sys.stderr)
        raise SystemExit(usage_exit) from None
    except ClickException as e:
        e.show()
        raise SystemExit(usage_exit if e.exit_code == 2 else e.exit_code) from None
    return result if isinstance(result, int) else None
