"""``runner rename OLD NEW``: a container's name is the ``io.strata.container.name`` annotation of its config.json
(:mod:`runner.spec`), which ``find``, ``ps`` and ``inspect`` read. It is rewritten under the store's lock, the one
:func:`runner.container.record.record` reserves names under, so two renames (or a rename and a ``create``) cannot
both take one name; config.json is replaced by one rename(2), so a reader sees the old name or the new.

What else holds the name: the container's hold on its layers (named in ``rmi``'s messages), and, on a user
network, its endpoint records, from which the hosts files of the other containers on that network name it
(Docker's embedded DNS; ours is a hosts file, :mod:`runner.net.files`): those records are renamed under the
network lock and the peers' hosts files rewritten in place, so peers reach it by the new name and no longer by the
old, as with Docker. Its own hostname does not change (Docker's neither).
"""

from __future__ import annotations

from runner.container.record import CONFIG_NAME, NAME_RE, Container, all_containers
from shared.digest import Digest
from shared.errors import Kind, StrataError, not_found, usage
from shared.store.files import read_json, write_json


def rename(container: Container, new: str) -> None:
    """Docker's checks and words: an empty name, the same name, an invalid one, one in use."""
    new = new.removeprefix("/")
    if not new:
        raise usage("Neither old nor new names may be empty")
    if not NAME_RE.fullmatch(new):
        raise usage(f"Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if new == container.name:
        raise usage("Renaming a container with the same name as its current name")
    store = container.store
    with store.lock():
        for other in all_containers(store):
            if other.name == new:
                raise StrataError(f'Conflict. The container name "/{new}" is already in use by container '
                                  f'"{other.id}". You have to remove (or rename) that container to be able to reuse '
                                  "that name.", Kind.STATE)
        from runner.spec import A_NAME

        if not container.path(CONFIG_NAME).exists():  # removed since it was found
            raise not_found(f"no such container: {container.name}")
        doc = read_json(container.path(CONFIG_NAME))
        doc["annotations"][A_NAME] = new
        write_json(container.path(CONFIG_NAME), doc)
        store.hold(container.id, "container", new, [Digest.parse(c) for c in container.spec.chain_ids])
    _rename_endpoints(container, new)


def _rename_endpoints(container: Container, new: str) -> None:
    """Its endpoint records carry the name its peers' hosts files give it: renamed, and those files rewritten."""
    from dataclasses import replace

    from runner.net.records import Records

    records = Records(container.store)
    if not records.endpoints(container_id=container.id):
        return
    from runner.net.core import refresh_hosts

    with records.lock():
        mine = records.endpoints(container_id=container.id)
        for endpoint in mine:
            records.put_endpoint(replace(endpoint, name=new))
        refresh_hosts(records, {e.network for e in mine}, skip=container.id)
