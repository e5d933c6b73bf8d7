"""``create``: an image and the run options become a container: its spec (config.json), its -init layer, rw layer and
overlay plan, saved once. Nothing runs; ``start`` (:mod:`runner.container.start`) runs what this saved.

The options are parsed and checked by :func:`runner.container.options.resolve` before anything is recorded, so
that a bad one fails ``create`` (exit 125, nothing left behind) and ``start`` only reads typed values.
"""

from __future__ import annotations

from runner.container.options import RunOptions, resolve
from runner.container.record import Container, record
from runner.container.release import remove
from runner.isolation import rootfs
from shared.store import images as stored
from shared.store.layout import Store


def create(store: Store, opts: RunOptions) -> Container:
    """Resolve, record, prepare. A failure after the record removes the container again."""
    store.ensure()
    with store.in_use():  # the image's layers cannot be collected between finding and holding them
        image = stored.find(store, opts.image)
        image.layer_records(store)  # every layer must be there before anything is created
        container = record(store, resolve(opts, image, store))
    try:
        rootfs.prepare(container.spec, [store.diff_dir(c) for c in reversed(image.chain_ids)])
    except BaseException:
        remove(container, force=True)
        raise
    return container
