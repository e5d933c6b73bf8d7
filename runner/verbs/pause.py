"""``runner pause`` and ``runner unpause``: freeze and thaw every process of a running container, through the
executor that started it (our cgroup freezer, :mod:`runner.isolation.freezer`, or the OCI runtime's ``pause`` and
``resume``), and say so in its record (``paused``), which ``ps`` (``Up 5 seconds (Paused)``), ``inspect``
(``.State.Status "paused"``, ``.State.Paused``) and ``exec`` (refused while paused) read.

As Docker's: pausing one that is paused or not running, and unpausing one that is not paused, are errors in
Docker's words; ``stop``, ``kill`` and ``rm -f`` of a paused container work (they thaw it first,
:func:`runner.container.lifecycle.thaw`, as Docker's kill signals it and resumes it). Without root a container has
no cgroup to freeze: refused in one line, as Docker's rootless mode refuses it without cgroup v2.
"""

from __future__ import annotations

from runner.container import lifecycle
from runner.container.record import Container
from shared.errors import Kind, StrataError
from shared.userns import rootless


def pause(container: Container) -> None:
    """Freeze it and record it as paused (recorded after the freeze: a failed freeze is thawed, not recorded)."""
    state = container.state()
    if state.status != "running":
        raise StrataError(f"Container {container.id} is not running", Kind.STATE)
    if state.paused:
        raise StrataError(f"Container {container.id} is already paused", Kind.STATE)
    if rootless():
        raise StrataError(f"cannot pause container {container.name}: without root it has no cgroup to freeze (as "
                          "Docker's rootless mode without cgroup v2)", Kind.UNSUPPORTED)
    executor = lifecycle.executor_of(container)
    try:
        executor.pause()
    except BaseException:
        executor.resume()
        raise
    container.set_state(paused=True)


def unpause(container: Container) -> None:
    """Thaw it and record it as running again."""
    state = container.state()
    if state.status != "running" or not state.paused:
        raise StrataError(f"Container {container.id} is not paused", Kind.STATE)
    lifecycle.thaw(container)
