"""``create``: an image and the run options become a container: its spec (config.json), its -init layer, rw layer and
overlay plan, saved once. Nothing runs; ``start`` (:mod:`runner.container.start`) runs what this saved.

The options are parsed and checked by :func:`runner.container.options.resolve` before anything is recorded, so
that a bad one fails ``create`` (exit 125, nothing left behind) and ``start`` only reads typed values.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.container.options import RunOptions, resolve
from runner.container.record import Container, record
from runner.container.release import remove
from runner.isolation import rootfs
from shared.errors import Kind, StrataError
from shared.store import images as stored
from shared.store.layout import Store


def create(store: Store, opts: RunOptions, missing: Callable[[StrataError], None] | None = None) -> Container:
    """Resolve, record, prepare. A failure after the record removes the container again. When the store lacks
    the image (or a layer of it), ``missing`` is told why, outside the store's lock (``--pull``: it pulls the
    image, or raises Docker's error: :mod:`runner.verbs.pull`), and the image is looked up once more."""
    store.ensure()
    with store.in_use():  # the image's layers cannot be collected between finding and holding them
        image = _image(store, opts.image, missing)
        container = record(store, resolve(opts, image, store)) if isinstance(image, stored.StoredImage) else None
    if isinstance(image, StrataError) or container is None:
        assert missing is not None and isinstance(image, StrataError)
        missing(image)
        return create(store, opts)
    try:
        rootfs.prepare(container.spec, [store.diff_dir(c) for c in reversed(image.chain_ids)])
    except BaseException:
        remove(container, force=True)
        raise
    return container


def _image(store: Store, text: str, missing: object) -> stored.StoredImage | StrataError:
    """The image with every layer there; else, when someone is to be told (``missing``), why not."""
    try:
        image = stored.find(store, text)
        image.layer_records(store)  # every layer must be there before anything is created
    except StrataError as e:
        if missing is None or e.kind is not Kind.NOT_FOUND:
            raise
        return e
    return image
