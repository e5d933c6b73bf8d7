"""``runner wait``: Docker's, block until each container stops and print its exit code, one per line, in the
order given. With no daemon to ask, PID 1 (not our child) is waited for through a pidfd (poll(2) says when it
has exited), then its exit code is read from the record its owner (``run`` or the monitor) writes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from runner.container.record import Container, ContainerState, find, wait_exited
from shared.errors import StrataError, not_found
from shared.store.layout import Store

POLL = 0.01  # seconds between reads of a record that is about to change (an exit being written; a restart)
RECORD_GRACE = 5.0  # how long PID 1's owner may take to record its exit once it has exited (a live monitor: more)


def wait(store: Store, keys: Sequence[str]) -> int:
    """Print each container's exit code once it is not running. A container that fails (no such container) is
    named on stderr and the rest go on; the exit code is then 1, as Docker's."""
    failed = False
    for key in keys:
        try:
            print(exit_code_of(find(store, key)), flush=True)
        except StrataError as e:
            print(f"runner: error: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def exit_code_of(container: Container) -> int:
    """Docker's wait (condition not-running): at once for a container that is not running (a created one's is
    0, as Docker's); else at the next exit of PID 1, a restart policy notwithstanding (Docker's restarting
    container counts as running: it returns at the exit of the run it restarts into)."""
    while True:
        recorded, state = container.as_written(), container.state()
        if state.status == "restarting":  # its monitor waits out the back-off (0.1 s to a minute)
            time.sleep(5 * POLL)
            continue
        if recorded.status == "running" and state.status != "running":  # PID 1 has exited, not yet recorded
            return _recorded_exit(container, recorded)
        if state.status != "running":
            return state.exit_code or 0
        pidfd = container.verified_pidfd()
        if pidfd is None:  # it exited since the state was read: read it again
            continue
        try:
            while not wait_exited(pidfd, 3600):
                pass
        finally:
            os.close(pidfd)
        return _recorded_exit(container, state)


def _recorded_exit(container: Container, run: ContainerState) -> int:
    """The exit code of the run ``run`` recorded, whose PID 1 has exited: once its owner has written it (a
    moment; at most :data:`RECORD_GRACE`). If the owner died first, the record's reading of a run whose runner is
    gone (137: PID 1 got the parent-death SIGKILL). A container removed meanwhile has no code left to read."""
    deadline = time.monotonic() + RECORD_GRACE
    while True:
        if not container.dir.exists():
            raise not_found(f"no such container: {container.name} (removed while waited for)")
        recorded = container.as_written()
        if recorded.status != "running" or recorded.started != run.started:
            break
        if time.monotonic() > deadline and not (container.monitor_alive() and time.monotonic() < deadline + 60):
            break  # its owner is gone (a monitor still alive, busy releasing it on a loaded machine, gets a minute)
        time.sleep(POLL)
    state = container.state()
    if state.status == "running":  # a restart ran and is running already: its previous exit was not seen
        return exit_code_of(container)
    return state.exit_code or 0
