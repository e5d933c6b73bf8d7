"""The ``runner`` command's entry point. ``run`` and ``exec`` are what a user waits for on every container, and
typer (with the app's twenty-odd commands built on every call) is ~35-80 ms of a start: their plain forms are
parsed here from the one declaration of their flags (:func:`runner.cli.options.parse`) and called without it.
Everything else, and every form of these that the parse leaves (``--help``, a usage error, ``--version``), goes to
the typer app (:mod:`runner.cli.app`), which defines the command line."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runner.cli.options import EXEC_FLAGS, RUN_FLAGS, exec_options, parse, run_options
from shared import codecache


def main() -> None:
    codecache.install()  # before the imports that make dataclasses: this module's own make none
    gc.disable()  # until the command's modules are in (:func:`_loaded`)
    from shared.cli import run_main

    # Docker's convention: 125 when the runner itself fails; the command's own code otherwise.
    run_main("runner", _body, lambda kind: 125, fast_exit=True)


def _body() -> int | None:
    direct = plain_command(sys.argv[1:])
    if direct is not None:
        return direct()
    from runner.cli.app import app
    from shared.cli import run_typer

    _loaded()
    return run_typer(app, usage_exit=125)


def _loaded() -> None:
    """The command's modules are in. What importing them made (~100,000 objects) lives as long as the process, and
    the cycle collector, run every 700 allocations meanwhile, only walked it again and again (5% of the imports'
    work, callgrind): from now on it is out of the collector's sight (gc.freeze, which also spares forked children
    copying its pages), and the collector runs again for what the command makes."""
    gc.freeze()
    gc.enable()


def plain_command(args: Sequence[str]) -> Callable[[], int] | None:
    """``[--root DIR] run|exec ...`` in a form :func:`~runner.cli.options.parse` takes, as the call the typer app
    would make of it; None for anything else."""
    root: Path | None = None
    i = 0
    while i < len(args) and args[i].startswith("--root"):
        value = args[i].removeprefix("--root=") if args[i].startswith("--root=") else \
            args[i + 1] if args[i] == "--root" and i + 1 < len(args) else ""
        if not value:
            return None
        root = Path(value)
        i += 1 if args[i].startswith("--root=") else 2
    verb, rest = (args[i], args[i + 1:]) if i < len(args) else ("", [])
    values = parse(RUN_FLAGS if verb == "run" else EXEC_FLAGS, rest) if verb in ("run", "exec") else None
    if values is None:
        return None

    from shared.cli import open_store

    def run() -> int:  # as the app: the store (and, without root, the user's namespace) first
        from runner.container.run import run as do_run
        from runner.verbs.pull import fetcher

        _loaded()
        store = open_store(root)
        opts = run_options(values)
        return do_run(store, opts, fetcher(store, opts))

    def exec_() -> int:
        from runner.container.exec import exec_in
        from runner.container.record import find

        _loaded()
        store = open_store(root)
        return exec_in(find(store, values["container"]), exec_options(values))

    return run if verb == "run" else exec_
