"""``release``: give back what a container holds on the host while it runs, and ``remove``: that, then its files.

One function for every path that ends a container: ``run`` once PID 1 has exited, the monitor of a detached one,
``rm`` (and ``prune``) for one whose owner died without releasing. Each step is idempotent, so a release that was
interrupted (its runner killed) is finished by the next one, and two releases of one container do no harm:

* what its executor holds (:meth:`runner.executor.protocol.Executor.release`): an OCI runtime's state and the overlay
  mounted for it, then the cgroup: whatever is still in it is killed (a runner killed mid-way leaves PID 1's
  namespace to us), then the group is removed; our own executor's mounts live in the container's own mount
  namespace and vanish with its last process;
* network and published ports: the container's endpoints (veth, address, port forwards) and what no other
  container uses any more (bridge, nft rules, ip_forward), by :func:`runner.net.core.release`, which also sweeps
  the endpoints of containers whose runner was killed. It imports nothing when no endpoint is recorded.

The rw layer, the -init layer and the records stay: a released container can be inspected, committed, started
again. ``remove`` takes them too, and then the container's hold on its image layers (last: until the directory is
gone, the layers must stay).
"""

from __future__ import annotations

import signal

from runner.container import lifecycle, network
from runner.container.record import Container
from shared.errors import Kind, StrataError


def release(container: Container) -> None:
    """Free the host resources of a container whose PID 1 has exited (or is being killed). Idempotent. The
    cgroup's OOM kill counter is read first, while the group is there: inspect's OOMKilled."""
    _record_oom(container)
    lifecycle.executor_of(container).release()
    network.release(container)  # after the kill: the veth goes with the namespace's last process anyway


def _record_oom(container: Container) -> None:
    from runner.isolation import cgroups

    if cgroups.oom_kills(container.id) > 0:
        container.record_oom()


def remove(container: Container, force: bool = False) -> None:
    """``rm``: kill it first if ``force``, release it, remove its directory, drop its hold. A container whose
    runner was killed still has its cgroup; its processes died with the runner (parent-death signal), or are
    killed here: by the cgroup, which is the container's own whoever now has PID 1's old pid."""
    status = container.state().status
    if status in ("running", "restarting"):
        if not force:
            raise StrataError(f"container {container.name} is {status}; stop it or use --force", Kind.STATE)
        lifecycle.stop(container, timeout=0, sig=signal.SIGKILL)  # returns once its owner recorded the exit
    release(container)
    container.store.discard(container.dir)  # one rename: a kill midway leaves litter in tmp/, never half a container
    container.store.release_hold(container.id)
    if container.spec.id_block is not None:  # its ids are free once nothing of its rw layer is left
        from runner.isolation import idmap

        idmap.release(container.store.root, container.id, container.spec.id_block)
