"""The warm pull: ``puller pull REF`` when the store holds what REF names already, answered with one request.

Most pulls of a tag find it unchanged (a deploy script pulls before every run), so this path is kept lean: the
stored image is checked as the full pull checks it (:func:`current`: complete, of the platform asked for), then
one HEAD asks the registry what the tag names now (``puller/registry/lean.py``, over http.client); when that is
the stored manifest, the pull prints what the full pull would and ends. Nothing is written; nothing that only
downloading or unpacking needs is imported, nor typer (the command line is one fixed form, parsed here), nor
requests. Anything else (another option, a store that does not hold the image, a tag that moved, a registry
that does not answer the plain way) goes to the full command line, which decides and says everything:
:func:`answer` never fails a pull, it only finishes one that has nothing to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from shared.digest import Digest
from shared.errors import StrataError
from shared.image import Descriptor, Platform
from shared.reference import Reference
from shared.store.images import StoredImage, load
from shared.store.layout import INDEX_DIGEST_ANNOTATION, Store

if TYPE_CHECKING:
    from shared.settings import Settings


def top_digest(desc: Descriptor) -> Digest:
    """What the reference itself names: the index it was resolved from, else the manifest."""
    return Digest.parse(desc.annotations.get(INDEX_DIGEST_ANNOTATION, str(desc.digest)))


def current(store: Store, name: str, head: Callable[[], Digest | None], ref: Reference, wanted: Platform,
            explicit: bool) -> StoredImage | None:
    """The stored image if it is complete and still what the reference names, else None. For a tag, ``head``
    says whether it still names the same thing (a HEAD: free on Docker Hub). An image resolved from an index is
    current only for the platform it was resolved for; a single-platform image, when ``--platform`` was given,
    only if it is of that platform (else the pull goes on to the registry, which refuses it with the reason)."""
    desc = store.resolve(name)
    if desc is None:
        return None
    from_index = INDEX_DIGEST_ANNOTATION in desc.annotations
    if from_index and (desc.platform is None or not wanted.matches(desc.platform)):
        return None
    try:
        image = load(store, name, desc)
        image.layer_records(store)
    except StrataError:
        return None
    if explicit and not from_index and not wanted.matches(image.config.platform):
        return None
    if ref.digest is not None:
        return image
    return image if head() == top_digest(desc) else None


class Command(NamedTuple):
    """``puller [--root DIR] pull [-q] REF``: the one form answered here. (Not a dataclass: making one costs a
    warm pull about a millisecond.)"""

    root: Path | None
    quiet: bool
    image: str


def parse(argv: Sequence[str]) -> Command | None:
    """The command line if it is that form exactly (options as click reads them), else None."""
    root: str | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("--root"):
        if argv[i] == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif argv[i].startswith("--root="):
            root, i = argv[i][len("--root="):], i + 1
        else:
            return None
    if argv[i:i + 1] != ["pull"] or root == "":
        return None
    quiet, image = False, None
    for arg in argv[i + 1:]:
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg.startswith("-") or image is not None:
            return None  # another option (or "--"), or a second argument: the full command line decides
        else:
            image = arg
    return Command(Path(root) if root is not None else None, quiet, image) if image else None


def answer(argv: Sequence[str]) -> bool:
    """Finish ``puller pull`` here when the stored image is current (printing what the full pull prints), and say
    so; False, having printed nothing, when the full command line must run."""
    command = parse(argv)
    if command is None:
        return False
    from shared.store.layout import default_root

    try:
        path = command.root or default_root()  # decided by who the user is on the host: before entering
        if os.geteuid() != 0:
            from shared import userns

            userns.enter_once()  # (once: the full command line's second call is a no-op)
        return _answer(Store(path), command)
    except (StrataError, OSError, ValueError):  # (a store the user may not read; a helper that answers garbage)
        return False  # said again, and properly, by the full command line


def _answer(store: Store, command: Command) -> bool:
    from shared import reference, settings

    if not store.exists():
        return False
    _ = store.overlay  # a store of the other kind (root's, a user's) is refused by the full command line
    ref = reference.parse(command.image)
    notices: list[str] = []
    head = _head(ref, settings.load(), notices.append)
    with store.in_use():
        image = current(store, str(ref), head, ref, Platform.host(), False)
    if image is None:
        return False
    if not command.quiet:  # as puller.progress prints messages, a terminal's rows being drawn only for layers
        for text in (f"Pulling {ref}", *notices, f"Digest: {top_digest(image.entry)}",
                     f"Status: Image is up to date for {ref}"):
            print(text)
    print(ref, flush=True)
    return True


def _head(ref: Reference, config: Settings, notice: Callable[[str], None]) -> Callable[[], Digest | None]:
    """What the reference names now, asked where a pull asks first (the first mirror, else the registry with the
    user's credentials); :class:`~puller.registry.lean.Unsure` (the full command line asks again, of every place
    in turn) when it does not answer the plain way."""

    def head() -> Digest | None:
        from puller.registry import credentials, lean
        from puller.registry.endpoint import Endpoint

        mirrors = config.mirrors_for(ref.domain)
        if mirrors:
            return lean.head_digest(Endpoint.from_url(mirrors[0].url, config.insecure), None, ref.path,
                                    ref.identifier, notice)
        return lean.head_digest(Endpoint.for_registry(ref.registry_host, config.insecure),
                                credentials.lookup(ref.domain), ref.path, ref.identifier, notice)

    return head
