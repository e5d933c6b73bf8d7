"""``runner restart``: Docker's, a stop with its grace time then a start, for each container, printing each name as
given; and ``runner start --all-restart``, what Docker's daemon does when it starts: start every container its
restart policy brings back (after a reboot nothing of ours runs until something starts it: the systemd unit in
docs/commands.md runs this at boot)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from runner.container import lifecycle
from runner.container.record import all_containers, find
from runner.container.run import start_command
from shared.errors import StrataError
from shared.store.layout import Store


def restart(store: Store, keys: Sequence[str], timeout: float) -> int:
    """Each container stopped (SIGTERM, SIGKILL after ``timeout`` seconds; a restarting one just stays down) and
    started again under a monitor, its restart count back at 0, as Docker's. A container that fails is named on
    stderr and the rest go on; the exit code is then 1, as Docker's."""
    failed = False
    for key in keys:
        try:
            lifecycle.stop(find(store, key), timeout)
            start_command(store, [key], attach=False, interactive=False)  # prints the name
        except StrataError as e:
            print(f"runner: error: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def start_by_policy(store: Store) -> int:
    """Docker's daemon start (``restore``: ShouldRestart of each container that ran before): start every
    container, not running, that its policy brings back: ``always`` (even if a user stopped it), ``unless-stopped``
    unless a user stopped it, ``on-failure`` if its last exit failed and retries are left. A record of a run from
    an earlier boot reads as exited (:meth:`runner.container.record.Container.state`). Prints each name."""
    failed = False
    for container in reversed(all_containers(store)):  # oldest first
        state = container.state()
        if state.status != "exited" or container.spec.restart.name == "no":
            continue
        if not container.spec.restart.restarts(state.exit_code or 0, state.restart_count,
                                               container.stopped_by_user()):
            continue
        try:
            start_command(store, [container.name], attach=False, interactive=False)
        except StrataError as e:
            print(f"runner: error: {container.name}: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0
