"""``runner container prune`` (``runner prune``) and ``runner system prune [-a]``, as Docker's: without ``-f`` they
ask first (Docker's warning, ``[y/N]``, the answer read from stdin: only ``y`` goes on; no answer, or the end of
input, is no), then say what they deleted, section by section, and the total reclaimed.

``system prune`` spans both tools' stores, as Docker's spans its daemon's: stopped containers, the user networks
no container is on (:func:`runner.net.core.prune`), then images through the shared store code
(:mod:`shared.store.gc`, never the puller's): what no reference or container reaches (Docker's dangling images:
what failed pulls, moved tags and forced removals left), and with ``-a`` every image no container rests on.
There is no build cache, so its line is left out of the warning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from runner.container.record import Container, all_containers
from runner.container.release import remove
from shared import reference
from shared.errors import StrataError
from shared.format import human_size
from shared.store.layout import Store

CONTAINERS_WARNING = "WARNING! This will remove all stopped containers."
QUESTION = "Are you sure you want to continue? [y/N] "


def system_warning(every_image: bool) -> str:
    """Docker's warning for ``system prune``, its build-cache line left out (there is none here)."""
    images = "all images without at least one container associated to them" if every_image else \
        "all dangling images"
    return "\n".join(["WARNING! This will remove:", "  - all stopped containers",
                      "  - all networks not used by at least one container", f"  - {images}", ""])


def confirmed(answer: str) -> bool:
    """Docker's reading of the answer: ``y`` or ``Y`` (white space around it ignored); anything else is no."""
    return answer.strip().lower() == "y"


def ask(warning: str, force: bool, read: Callable[[], str] = lambda: sys.stdin.readline()) -> bool:
    """``-f``, or the user's yes to ``warning``, asked on stdout as Docker asks."""
    if force:
        return True
    sys.stdout.write(f"{warning}\n{QUESTION}")
    sys.stdout.flush()
    return confirmed(read())


def container_prune(store: Store, force: bool) -> None:
    """``runner container prune [-f]``: every container that is not running (created ones too, as Docker's)."""
    if not ask(CONTAINERS_WARNING, force):
        return
    removed, size = _containers(store)
    _section("Deleted Containers:", removed)
    print(f"Total reclaimed space: {human_size(size)}")


def system_prune(store: Store, every_image: bool, force: bool) -> None:
    """``runner system prune [-a] [-f]``: stopped containers, unused networks, dangling (or, with -a, unused)
    images; each section Docker prints, then the total."""
    if not ask(system_warning(every_image), force):
        return
    removed, size = _containers(store)
    _section("Deleted Containers:", removed)
    _section("Deleted Networks:", _networks(store))
    lines, freed = _images(store, every_image)
    _section("Deleted Images:", lines)
    print(f"Total reclaimed space: {human_size(size + freed)}")


def _section(title: str, lines: Sequence[str]) -> None:
    if lines:
        print("\n".join([title, *lines, ""]))


def _containers(store: Store) -> tuple[list[str], int]:
    """Remove every container not running; their IDs, and the bytes their rw layers held."""
    removed, size = [], 0
    for container in all_containers(store):
        if container.state().status == "running":
            continue
        held = _rw_size(container)
        try:
            remove(container)
        except StrataError:  # started meanwhile: it is not stopped any more
            continue
        removed.append(container.id)
        size += held
    return removed, size


def _rw_size(container: Container) -> int:
    """What the container's rw layer holds (Docker's SizeRw), as far as it can be read: a walk of our own, with
    a stack, as os.walk recurses (a rw layer may be thousands of directories deep)."""
    total = 0
    stack = [str(container.path("upper"))]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:  # gone, or a path too long
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
    return total


def _networks(store: Store) -> list[str]:
    """``network prune``'s work; not begun (no netlink, no sandbox) for a store that never had a network."""
    from runner.net.records import Records

    if not Records(store).root.is_dir():
        return []
    from runner.net.core import prune
    from runner.net.sandbox import where_networks_live

    return list(where_networks_live(store, prune, store))


def _images(store: Store, every_image: bool) -> tuple[list[str], int]:
    """Docker's "Deleted Images" lines (``untagged: NAME``, ``deleted: DIGEST``) and the bytes freed."""
    from shared.store import gc

    lines: list[str] = []
    size = 0
    for name in gc.unused_images(store) if every_image else ():
        try:
            removal = gc.remove_image(store, name)
        except StrataError:  # a container took it meanwhile, or another prune removed it
            continue
        lines += [f"untagged: {_familiar(n)}" for n in removal.untagged]
        lines += [f"deleted: {f.digest}" for f in removal.deleted]
        size += removal.reclaimed
    swept = gc.collect(store)
    lines += [f"deleted: {f.digest}" for f in swept]
    return lines, size + sum(f.size for f in swept)


def _familiar(name: str) -> str:
    try:
        return reference.parse(name).familiar()
    except StrataError:
        return name
