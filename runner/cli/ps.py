"""``runner ps``: Docker's container listing: its columns and wording ("Up 5 seconds", "Exited (0) 2 minutes ago",
the command quoted and cut with an ellipsis), its filters (``-f status=``, ``name=``, ``id=``, ``ancestor=``,
``exited=``) and its formats (``--format json``, ``{{json .}}``, ``table {{.ID}}\\t{{.Names}}``, ...).

Each container becomes one row of strings keyed by the names Docker's templates use (:func:`row`); the default
listing is the template Docker's is. Ages and durations use go-units' HumanDuration wording (:func:`human_duration`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from runner.container.record import Container, ContainerState, all_containers
from shared import format as fmt
from shared import reference
from shared.errors import StrataError, usage
from shared.format import human_duration
from shared.store.layout import Store

DEFAULT_FORMAT = "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"  # a table
COMMAND_WIDTH = 20  # Docker cuts COMMAND at 20 characters (ellipsis included) unless --no-trunc
HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
           "RunningFor": "CREATED", "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES", "State": "STATE",
           "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES",
           "Size": "SIZE"}
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")  # Docker's status= values
FILTERS = ("status", "name", "id", "ancestor", "exited", "label")


def status_text(state: ContainerState, now: float) -> str:
    """Docker's State.String()."""
    if state.status == "running":
        return f"Up {human_duration(now - (state.started or now))}" + (" (Paused)" if state.paused else "")
    if state.status == "restarting":
        return f"Restarting ({state.exit_code}) {human_duration(now - (state.finished or now))} ago"
    if state.status == "created" or state.started is None:
        return "Created"
    if state.finished is None:  # its runner died before it recorded the exit
        return f"Exited ({state.exit_code})"
    return f"Exited ({state.exit_code}) {human_duration(now - state.finished)} ago"


def command_text(argv: Sequence[str]) -> str:
    """What Docker's API lists as a container's Command: the path, then the arguments, those with a space in
    single quotes."""
    return " ".join([argv[0], *(f"'{a}'" if " " in a else a for a in argv[1:])]) if argv else ""


def ellipsis(text: str, width: int) -> str:
    """Docker's formatter.Ellipsis: cut to ``width`` characters, the last one an ellipsis."""
    return text if len(text) <= width else text[:width - 1] + "…"


def created_at(when: float) -> str:
    """Go's time.Time.String() of the creation second in local time, as ``{{.CreatedAt}}`` shows it."""
    return datetime.fromtimestamp(int(when)).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


def short_image(name: str) -> str:
    """The image as Docker users write it (``busybox:latest``, not ``docker.io/library/busybox:latest``)."""
    try:
        return reference.parse(name).familiar()
    except StrataError:
        return name


def ports_of(container: Container) -> str:
    """The PORTS column: a running container's published ports, as Docker writes them (0.0.0.0:8080->80/tcp)."""
    from runner.container.network import published

    if container.state().status != "running":
        return ""
    return ", ".join(str(p) for p in published(container))


def row(container: Container, state: ContainerState, now: float, trunc: bool = True) -> dict[str, str]:
    """One container as Docker's ps formatter context: the fields its templates name, as strings."""
    spec = container.spec
    command = command_text(spec.argv)
    return {
        "Command": '"' + (ellipsis(command, COMMAND_WIDTH) if trunc else command) + '"',
        "CreatedAt": created_at(spec.created),
        "ID": spec.id[:12] if trunc else spec.id,
        "Image": spec.typed_image or short_image(spec.image),  # as typed, as Docker's
        "Labels": "",
        "LocalVolumes": "0",
        "Mounts": ",".join(ellipsis(v.source, 15) if trunc else v.source for v in spec.volumes),
        "Names": container.name,
        "Networks": "",
        "Ports": ports_of(container),
        "RunningFor": f"{human_duration(now - spec.created)} ago",
        "State": state.shown,
        "Status": status_text(state, now),
    }


@dataclass(frozen=True)
class Filters:
    """``-f KEY=VALUE`` options, as Docker combines them: values of one key are alternatives (any may match),
    different keys must all match."""

    by_key: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, texts: Sequence[str]) -> Filters:
        by_key: dict[str, list[str]] = {}
        for text in texts:
            key, sep, value = text.partition("=")
            key = key.strip().lower()
            if not sep or key not in FILTERS:
                raise usage(f"invalid filter {text!r}: use status=, name=, id=, ancestor= or exited=")
            if key == "status" and value not in STATUSES:
                raise usage(f"invalid filter 'status={value}': use one of {', '.join(STATUSES)}")
            if key == "exited" and not re.fullmatch(r"-?\d+", value):
                raise usage(f"invalid filter 'exited={value}': the exit code must be a number")
            if key == "label":
                raise usage(f"invalid filter {text!r}: containers have no labels here (--label is not supported)")
            if key in ("name", "id"):
                try:
                    re.compile(value)
                except re.error as e:
                    raise usage(f"invalid filter {text!r}: {e}") from None
            by_key.setdefault(key, []).append(value)
        return cls({k: tuple(v) for k, v in by_key.items()})

    def lists_stopped(self) -> bool:
        """Docker lists stopped containers too when a status filter is given, without -a."""
        return "status" in self.by_key or "exited" in self.by_key

    def match(self, store: Store, container: Container, state: ContainerState) -> bool:
        checks: dict[str, Callable[[str], bool]] = {
            "status": lambda v: state.shown == v,
            "name": lambda v: re.search(v, container.name) is not None or re.search(v, "/" + container.name)
            is not None,
            "id": lambda v: re.search(v, container.id) is not None,
            "ancestor": lambda v: _is_ancestor(store, v, container),
            "exited": lambda v: state.status == "exited" and state.exit_code == int(v),
        }
        return all(any(checks[key](v) for v in values) for key, values in self.by_key.items())


def _is_ancestor(store: Store, text: str, container: Container) -> bool:
    """Docker's ancestor=: the image named by reference (``busybox``, ``busybox:latest``, the full name) or by
    ID (full or a prefix) is the one the container was created from. An image that is gone from the store still
    matches by the name or ID the container recorded."""
    from shared.store import images as stored

    spec = container.spec
    try:
        return str(stored.find(store, text).image_id) == spec.image_id
    except StrataError:
        pass
    hex_part = text.removeprefix("sha256:")
    if re.fullmatch(r"[a-f0-9]{4,64}", hex_part) and spec.image_id.removeprefix("sha256:").startswith(hex_part):
        return True
    try:
        wanted = reference.parse(text)
        return str(wanted) == spec.image or (wanted.tag is None and str(wanted) + ":latest" == spec.image)
    except StrataError:
        return False


def listing(store: Store, all_: bool = False, quiet: bool = False, no_trunc: bool = False,
            filters: Sequence[str] = (), format_text: str | None = None, last: int = -1,
            latest: bool = False) -> list[str]:
    """The lines ``runner ps`` prints, newest container first (as Docker's)."""
    wanted = Filters.parse(filters)
    now = time.time()
    shown: list[tuple[Container, ContainerState]] = []
    if latest:
        last = 1
    for c in all_containers(store):
        state = c.state()
        if not (all_ or last >= 0 or wanted.lists_stopped()) and state.status not in ("running", "restarting"):
            continue
        if wanted.match(store, c, state):
            shown.append((c, state))
    if last >= 0:
        shown = shown[:last]
    if quiet:
        return [c.id if no_trunc else c.id[:12] for c, _ in shown]
    return fmt.listing(format_text, [row(c, state, now, not no_trunc) for c, state in shown], DEFAULT_FORMAT,
                       HEADERS)
