"""``puller save`` (store -> docker-archive) and ``puller load`` (docker-archive, oci-archive or an OCI layout
directory -> store): compositions of :mod:`shared.transfer` like pull.

save keeps every document byte for byte (the stored manifest, config and compressed layer blobs), so an image
saved and loaded elsewhere has the same image ID and manifest digest. load moves every image into the store
through :class:`shared.store.transfer.StoreSink` with :func:`shared.transfer.model.copy`, so each blob is verified
and each layer unpacked and checked against its diff_id exactly as a pull does; every image of the input is read
and checked (documents, names) before the first one is stored.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import typer

from shared.cli import StoreOption
from shared.errors import StrataError, integrity, not_found, usage
from shared.store.layout import Store

if TYPE_CHECKING:
    from shared.transfer.model import Resolved, Source

UNNAMED_REPOSITORY = "localhost/unnamed"  # where `load` keeps an image its archive gives no name


def register(app: typer.Typer, state: StoreOption) -> None:
    @app.command()
    def save(images: list[str] = typer.Argument(..., help="References or image IDs to put in one archive"),
             output: Path | None = typer.Option(None, "--output", "-o", help="Write to FILE (default: stdout)")) \
            -> None:
        """Write images to a tar archive in `docker save`'s format (docker/podman load, skopeo docker-archive:)."""
        if output is None and sys.stdout.isatty():
            raise usage("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        do_save(state, images, output)

    @app.command()
    def load(input_: Path | None = typer.Option(None, "--input", "-i", help="Read from FILE or an OCI layout "
                                                "directory (default: stdin)"),
             platform: str | None = typer.Option(None, "--platform", help="For an index: OS/ARCH or OS/ARCH/VARIANT "
                                                 "(default: the host's)"),
             quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors")) -> None:
        """Load images from a docker-archive, an oci-archive (either maybe compressed) or an OCI layout dir."""
        if input_ is None and sys.stdin.isatty():
            raise usage("requested load from stdin, but stdin is a terminal (use -i FILE or a redirect)")
        for line in do_load(state, input_, platform):
            if not quiet:
                print(line, flush=True)


def _name_of(store: Store, text: str) -> str | None:
    """The full reference TEXT names in the store, or None when TEXT is an image ID (saved without a name, as
    Docker saves `docker save ID`)."""
    from shared import reference

    with contextlib.suppress(StrataError):
        name = str(reference.parse(text))
        if store.resolve(name) is not None:
            return name
    return None


def do_save(state: StoreOption, texts: list[str], output: Path | None) -> None:
    from shared.store.images import find, no_such_image
    from shared.store.transfer import StoreSource
    from shared.transfer.archive import DockerArchiveSink
    from shared.transfer.model import copy, resolve

    store = state.store
    if not store.exists():
        raise no_such_image(texts[0])
    if output is not None and output.is_dir():
        raise usage(f"{output} is a directory; -o takes the archive's file name")
    store.sweep_tmp()
    with store.in_use():
        found = [(_name_of(store, t), find(store, t)) for t in texts]
        dest: Path | BinaryIO = output if output is not None else sys.stdout.buffer
        with DockerArchiveSink(dest, store.temp_path("save")) as sink:
            for name, image in found:
                source = StoreSource(store, image)
                copy(source, sink, resolve(source, None), name)


def _input(store_tmp: Path, given: Path | None) -> tuple[Path, Path | None]:
    """A path that can be read by member: the directory or regular file given, else a spooled (and
    decompressed) copy in the store's tmp/; the second item is that copy, to remove afterwards."""
    from shared.transfer.archive import needs_spool, spool

    if given is not None:
        if not given.exists():
            raise not_found(f"{given}: no such file or directory")
        if not needs_spool(given):
            return given, None
    copy = store_tmp / f"{os.getpid()}.{os.urandom(8).hex()}.load"
    try:
        if given is None:
            spool(sys.stdin.buffer, copy)
        else:
            with open(given, "rb") as f:
                spool(f, copy)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    if copy.stat().st_size == 0:
        copy.unlink()
        raise usage("the input is empty: nothing to load")
    return copy, copy


def _check(source: Source, names: list[str], resolved: Resolved) -> None:
    """A name with a digest must name the manifest the source holds."""
    from shared import reference

    for name in names:
        ref = reference.parse(name)
        if ref.digest is not None and ref.digest != resolved.image.digest:
            raise integrity(f"{source.describe()} names {name}, but holds manifest {resolved.image.digest}")


def do_load(state: StoreOption, given: Path | None, platform_text: str | None) -> list[str]:
    """Load every image at GIVEN (stdin when None); return the lines to print, Docker's ``Loaded image: NAME``
    (``Loaded image ID: sha256:...`` for one without a name, kept as localhost/unnamed@MANIFEST-DIGEST)."""
    from shared.image import Platform
    from shared.store.transfer import StoreSink
    from shared.transfer.archive import open_input
    from shared.transfer.model import copy, resolve

    wanted = Platform.parse(platform_text) if platform_text else None
    store = state.store.ensure()
    store.sweep_tmp()
    lines: list[str] = []
    with store.in_use():
        path, spooled = _input(store.tmp, given)
        try:
            with open_input(path, str(given) if given is not None else "stdin") as images:
                if not images:
                    raise not_found(f"{given or 'the input'} holds no image")
                # read and check everything before storing anything, keeping none of it: an archive may list
                # up to 1000 images, each with a config of up to 4 MiB (parsed, many times that); each is
                # read again to be stored (the archive keeps the documents' bytes once, shared)
                for source, names in images:
                    _check(source, names, resolve(source, wanted))
                for source, names in images:
                    resolved = resolve(source, wanted)
                    _check(source, names, resolved)  # the same documents (the archive is read-only to us)
                    sink = StoreSink(store)
                    targets = names or [f"{UNNAMED_REPOSITORY}@{resolved.image.digest}"]
                    copy(source, sink, resolved, targets[0])
                    for name in targets[1:]:
                        sink.put_image(resolved, name)
                    lines += [f"Loaded image: {n}" for n in names] or \
                        [f"Loaded image ID: {resolved.image.image_id}"]
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
    return lines
