"""The network records in the store, the one source of truth the kernel state is reconciled to::

    networks/NAME.json                    a network (the built-in ``bridge`` is written on first use)
    networks/endpoints/CID.NAME.json      one container on one network (address, veth, ports, names)
    networks/host.json                    what we changed on the host that must be put back (ip_forward)
    networks/lock                         flock(2): every change of records or of the kernel holds it

Every file appears by one rename (the store's atomic_write), so a kill leaves the old record or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from runner.net.model import Endpoint, Network
from shared.errors import Kind, StrataError, integrity
from shared.store.files import flocked, read_json, write_json
from shared.store.layout import Store

T = TypeVar("T")


class Records:
    """A store's records, and who it is on the host: ``owner`` (``strata:`` and the SHA-256 of the store's real
    path) is written as the ifalias of every link the store makes and as its nft tables' comment; ``table``
    (``strata-`` and the whole SHA-256) names its two nft tables; ``tag`` (the first 5 hex digits) is in every
    link name, where IFNAMSIZ leaves no room for more. So two stores on one host (or one store reached by two
    paths) each know their own and never touch the other's: a link is judged by its ifalias, not its name (two
    stores' tags collide by chance once in 2^20, or at will for whoever picks a store's path), while a table is
    found only by a name no other store can have; ``nft delete table`` by a tag-derived name would remove the
    tables of whichever store shares the tag."""

    def __init__(self, store: Store) -> None:
        self.root = store.root / "networks"
        self.endpoints_dir = self.root / "endpoints"
        self.host_path = self.root / "host.json"
        digest = hashlib.sha256(os.path.realpath(store.root).encode()).hexdigest()
        self.owner = "strata:" + digest
        self.tag = digest[:5]
        self.table = "strata-" + digest  # 71 characters: nft allows 255 (NFT_NAME_MAXLEN, Linux >= 4.16)

    def ensure(self) -> Records:
        try:
            self.endpoints_dir.mkdir(parents=True, exist_ok=True)
        except PermissionError as e:
            raise StrataError(f"cannot write {self.root}: {e.strerror}", Kind.SYSTEM) from None
        return self

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held for a whole attach, release or prune: records and kernel change together, and a holder that
        dies (kill -9) drops the lock with its last fd, leaving records the next holder can judge."""
        self.ensure()
        with flocked(self.root / "lock"):
            yield

    # -- networks -------------------------------------------------------------------------------------------

    def network_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def network(self, name: str) -> Network | None:
        try:
            return _parse(Network.from_json, self.network_path(name))
        except FileNotFoundError:
            return None

    def networks(self) -> list[Network]:
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.glob("*.json")):
            if path.name == "host.json":
                continue
            with contextlib.suppress(FileNotFoundError):
                out.append(_parse(Network.from_json, path))
        return out

    def put_network(self, network: Network) -> None:
        write_json(self.network_path(network.name), network.to_json())

    def drop_network(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.network_path(name))

    # -- endpoints ------------------------------------------------------------------------------------------

    def endpoint_path(self, container_id: str, network: str) -> Path:
        return self.endpoints_dir / f"{container_id}.{network}.json"

    def endpoints(self, network: str | None = None, container_id: str | None = None) -> list[Endpoint]:
        if not self.endpoints_dir.is_dir():
            return []
        out = []
        for path in sorted(self.endpoints_dir.iterdir()):
            if path.name.startswith(".") or not path.name.endswith(".json"):
                continue  # atomic_write's temp files
            cid, _, rest = path.name.partition(".")
            net = rest.removesuffix(".json")
            if (network is not None and net != network) or (container_id is not None and cid != container_id):
                continue
            with contextlib.suppress(FileNotFoundError):
                out.append(_parse(Endpoint.from_json, path))
        return sorted(out, key=lambda e: (e.created, e.container_id))

    def put_endpoint(self, endpoint: Endpoint) -> None:
        write_json(self.endpoint_path(endpoint.container_id, endpoint.network), endpoint.to_json())

    def drop_endpoint(self, endpoint: Endpoint) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.endpoint_path(endpoint.container_id, endpoint.network))

    def sweep_temp_files(self) -> None:
        """atomic_write's temp files (``.NAME.PID.RANDOM``) whose writer is gone."""
        from shared.store.files import pid_alive

        for folder in (self.root, self.endpoints_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                parts = path.name.split(".")
                if path.name.startswith(".") and len(parts) >= 4 and parts[-2].isdigit() \
                        and not pid_alive(int(parts[-2])):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)

    # -- host changes ---------------------------------------------------------------------------------------

    def host(self) -> dict[str, Any]:
        try:
            doc = _read(self.host_path)
        except FileNotFoundError:
            return {}
        return doc

    def put_host(self, doc: dict[str, Any]) -> None:
        if doc:
            write_json(self.host_path, doc)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.host_path)


def _parse(make: Callable[[dict[str, Any]], T], path: Path) -> T:
    try:
        return make(_read(path))
    except (KeyError, TypeError, ValueError) as e:
        raise integrity(f"{path} is not a record of ours: {e!r}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except ValueError as e:
        raise integrity(f"{path} is corrupt: {e}") from None
    if not isinstance(doc, dict):
        raise integrity(f"{path} is not a JSON object")
    return doc


def write_in_place(path: Path, text: str) -> None:
    """Rewrite a file that is bind-mounted into a container: a rename would leave the container on the old
    inode, so the bytes change in the same inode (no symlink followed: the path is the store's own)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:  # the container is gone: nothing to keep current
        return
    try:
        data = text.encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
