"""Docker's names for what the runner does under another name, or the puller does: ``runner container X`` (the
commands of ``runner X``, hidden from help but ``prune``: each is listed once), and ``runner images|pull|rmi|...``,
which say in one line which puller command does it (:func:`runner.verbs.pull.pointer`), instead of click's
"No such command"."""

from __future__ import annotations

import copy

import typer

from shared.cli import StoreOption

POINTERS = ("images", "image", "pull", "rmi", "push", "save", "load", "login", "logout", "tag")
CONTAINER_VERBS = {"ls": "ps", "list": "ps", "ps": "ps", **{v: v for v in (
    "attach", "commit", "cp", "create", "diff", "exec", "inspect", "kill", "logs", "pause", "port", "prune", "rename",
    "restart", "rm", "run", "start", "stats", "stop", "top", "unpause", "wait")}}


def register(app: typer.Typer, state: StoreOption) -> None:
    """Call once every command of the app is registered: the group copies those Docker has under ``container``."""
    for verb in POINTERS:
        _pointer(app, state, verb)
    group = typer.Typer(add_completion=False, no_args_is_help=True, help="Manage containers (the commands of "
                        "`runner X` as `runner container X`, as Docker's).")
    app.add_typer(group, name="container")
    commands = {(info.name or info.callback.__name__).replace("_", "-"): info for info in app.registered_commands
                if info.callback is not None and not info.hidden}
    for alias, verb in CONTAINER_VERBS.items():
        if verb in commands:
            info = copy.copy(commands[verb])
            info.name, info.hidden = alias, alias != "prune"  # the same commands: listed once, as runner X
            group.registered_commands.append(info)


def _pointer(app: typer.Typer, state: StoreOption, verb: str) -> None:
    @app.command(name=verb, hidden=True, add_help_option=False,
                 context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def point(ctx: typer.Context) -> None:
        from runner.verbs.pull import pointer
        from shared.store.layout import default_root

        root = state.store.root
        raise pointer(verb, ctx.args, None if root == default_root().absolute() else str(root))
