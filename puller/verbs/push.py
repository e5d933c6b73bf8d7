"""``puller push REF [DEST]``: store -> registry, a composition of :mod:`shared.transfer` like pull.

The stored image (:class:`shared.store.transfer.StoreSource`: its files were verified when stored) is resolved
and copied into a :class:`puller.registry.sink.RegistrySink`: blobs the repository has are skipped, blobs another
repository of the same registry holds are mounted from it (the candidates: the store's other references on that
registry whose images name the blob), the rest streamed; the manifest last. Auth as pull's (Docker's config.json,
``puller login``), with ``pull,push`` on the destination and ``pull`` on a mount's source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import typer

from shared.cli import StoreOption
from shared.digest import Digest
from shared.reference import Reference
from shared.store.layout import Store

if TYPE_CHECKING:
    from puller.progress import Progress
    from shared.image import Descriptor


def register(app: typer.Typer, state: StoreOption) -> None:
    @app.command()
    def push(image: str = typer.Argument(..., help="The stored image: NAME[:TAG], NAME@DIGEST or an image ID"),
             dest: str | None = typer.Argument(None, help="HOST[:PORT]/NAME[:TAG] to push to (default: IMAGE's "
                                               "own reference)"),
             jobs: int = typer.Option(3, "--jobs", "-j", min=1, max=16, help="Parallel blob uploads"),
             quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the pushed reference"),
             insecure: list[str] = typer.Option([], "--insecure-registry", help="HOST[:PORT] to reach over plain "
                                                "HTTP or unchecked TLS (repeatable)")) -> None:
        """Upload a stored image to a registry: blobs it has are skipped, others mounted or streamed, the
        manifest last."""
        do_push(state.store, image, dest, jobs, quiet, insecure)


def mount_candidates(store: Store, dest: Reference) -> dict[Digest, list[str]]:
    """For each blob, the repositories of DEST's registry (other than DEST's) that the store's references say
    hold it: each was pulled from there (or pushed there and tagged so), so a mount from it will likely work."""
    from shared import reference
    from shared.store.images import all_images

    found: dict[Digest, list[str]] = {}
    for img in all_images(store):
        ref = reference.parse(img.name)
        if ref.domain != dest.domain or ref.path == dest.path:
            continue
        for desc in (*img.manifest.layers, img.manifest.config):
            repos = found.setdefault(desc.digest, [])
            if ref.path not in repos:
                repos.append(ref.path)
    return found


class PushReport:
    """What push shows: one line per layer once it is settled (Docker's words), bars' worth of bytes on a
    terminal meanwhile; the config is a blob like the layers, but not one Docker shows."""

    def __init__(self, show: Progress, layers: Sequence[Digest]) -> None:
        from puller.progress import Bars

        self.show = show
        self.bars = isinstance(show, Bars)
        self.layers = set(layers)
        self.final: dict[Digest, str] = {}
        self._last: dict[Digest, float] = {}
        self._lock = threading.Lock()

    def __call__(self, desc: Descriptor, status: str, done: int) -> None:
        from puller.registry.sink import MOUNTED, PUSHING
        from shared.format import human_size

        digest = desc.digest
        if digest not in self.layers:
            return
        if status == PUSHING:
            if self.bars:
                now = time.monotonic()
                with self._lock:
                    if now - self._last.get(digest, 0.0) < 0.1 and done < desc.size:
                        return
                    self._last[digest] = now
                self.show.layer(digest, f"Pushing {human_size(done)}/{human_size(desc.size)}")
            return
        with self._lock:
            if digest in self.final:  # "done" after "mounted from": the mount is what the user wants to know
                return
            if status.startswith(MOUNTED):
                line = f"Mounted from {status.removeprefix(MOUNTED)}"
            elif status == "already exists":
                line = "Layer already exists"
            elif status == "done":
                line = "Pushed"
            else:
                return
            self.final[digest] = line
        self.show.layer(digest, line)


def do_push(store: Store, image: str, dest_text: str | None, jobs: int = 3, quiet: bool = False,
            insecure: Sequence[str] = ()) -> Reference:
    from puller import progress as progress_mod
    from puller.registry import credentials
    from puller.registry.client import RegistryClient
    from puller.registry.endpoint import Endpoint
    from puller.registry.sink import RegistrySink
    from shared import reference, settings
    from shared.errors import usage
    from shared.store.images import find, no_such_image
    from shared.store.transfer import StoreSource
    from shared.transfer.model import copy, resolve

    if not store.exists():
        raise no_such_image(image)
    config = settings.load().with_options(insecure)
    store.sweep_tmp()
    with store.in_use():  # no GC takes the blobs we read
        img = find(store, image)
        dest = reference.parse(dest_text or img.name)
        if dest.digest is not None and dest.digest != img.entry.digest:
            raise usage(f"cannot push {img.name} (manifest {img.entry.digest}) to {dest}: a digest reference "
                        "names the manifest it is, not a place (give a tag, or that digest)")
        source = StoreSource(store, img)
        resolved = resolve(source, None)
        candidates = mount_candidates(store, dest)
        client = RegistryClient(Endpoint.for_registry(dest.registry_host, config.insecure),
                                credentials.lookup(dest.domain))
        sink = RegistrySink(dest, client, lambda d: candidates.get(d, ()), lambda: store.temp_path("push"))
        show = progress_mod.for_output(quiet)
        show.message(f"The push refers to repository [{dest.repository}]")
        report = PushReport(show, [d.digest for d in resolved.image.manifest.layers])
        try:
            copy(source, sink, resolved, dest.tag, jobs, report)
        finally:
            sink.close()
        show.close()
        doc = resolved.image.manifest_doc
        show.message(f"{dest.tag + ': ' if dest.tag else ''}digest: {doc.digest} size: {len(doc.raw)}")
        if quiet:
            print(dest)
    return dest
