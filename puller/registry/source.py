"""A registry (and its mirrors) as a source of images.

Places are tried in order, mirrors first (Docker's semantics): the first that serves the reference's document
serves the rest, and a blob a mirror fails to serve is fetched from the next place. Digests are checked the same
way whichever host answered, so a mirror can make a pull fail, never make it wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from puller.registry.client import FetchedManifest, RegistryClient, RetryPolicy
from puller.registry.endpoint import Endpoint
from shared.digest import Digest
from shared.errors import Cancelled, Kind, StrataError, integrity
from shared.image import Descriptor
from shared.reference import Reference
from shared.settings import Settings
from shared.transfer.model import Document, Feed, ProgressFn

# A mirror is a shortcut: one quick retry, then on to the next place (Docker falls back at once).
MIRROR_RETRY = RetryPolicy(attempts=2, base_delay=0.2)

T = TypeVar("T")


@dataclass(frozen=True)
class Place:
    """One host serving a repository: a mirror or the registry itself."""

    client: RegistryClient
    repository: str

    @property
    def name(self) -> str:
        return self.client.host


def places_for(ref: Reference, settings: Settings, notice: Callable[[str], None] = lambda m: None) -> list[Place]:
    """Mirrors of the reference's registry first, then the registry itself (with the user's credentials)."""
    from puller.registry import credentials

    out = [Place(RegistryClient(Endpoint.from_url(m.url, settings.insecure), None, MIRROR_RETRY, notice), ref.path)
           for m in settings.mirrors_for(ref.domain)]
    origin = Endpoint.for_registry(ref.registry_host, settings.insecure)
    out.append(Place(RegistryClient(origin, credentials.lookup(ref.domain), notice=notice), ref.path))
    return out


def _document(fetched: FetchedManifest) -> Document:
    return Document(fetched.raw, fetched.media_type, fetched.digest)


class RegistrySource:
    """``docker://REF``: a reference at a registry, through its mirrors."""

    resumes = True  # blob(): a scratch holding an interrupted download's first bytes is continued with Range

    def __init__(self, ref: Reference, places: Sequence[Place]) -> None:
        self.ref = ref
        self.places = list(places)

    def describe(self) -> str:
        return str(self.ref)

    def cancel(self) -> None:
        """Stop every transfer now (Ctrl-C, or another blob failed)."""
        for place in self.places:
            place.client.abort()

    def _first(self, fetch: Callable[[Place], T]) -> T:
        """FETCH from the first place that serves it. A digest that does not match is final (a mirror serving
        wrong bytes must not be papered over); other failures move on to the next place."""
        errors: list[str] = []
        for place in self.places:
            try:
                result = fetch(place)
            except StrataError as e:
                if isinstance(e, Cancelled) or (place is self.places[-1] and not errors):
                    raise
                if e.kind is Kind.INTEGRITY or place is self.places[-1]:
                    raise StrataError(f"{e}" + (f" (mirrors: {'; '.join(errors)})" if errors else ""),
                                      e.kind) from None
                errors.append(f"{place.name}: {e}")
                continue
            return result
        raise StrataError(f"no source for {self.ref}", Kind.REGISTRY)

    def top(self) -> Document:
        name = str(self.ref)
        found: list[Place] = []

        def get(place: Place) -> FetchedManifest:
            fetched = place.client.get_manifest(place.repository, self.ref.identifier, f"manifest of {name}")
            found.append(place)
            return fetched

        doc = _document(self._first(get))
        self.places = self.places[self.places.index(found[0]):]  # the rest from where the reference was found
        return doc

    def head(self) -> Digest | None:
        """What the reference names now, by HEAD (free on Docker Hub); None when no place says."""
        for place in self.places:
            try:
                return place.client.head_manifest(place.repository, self.ref.identifier, f"manifest of {self.ref}")
            except StrataError:
                continue
        return None

    def manifest(self, desc: Descriptor) -> Document:
        what = f"{desc.platform or desc.digest} manifest of {self.ref}"
        fetched = self._first(lambda p: p.client.get_manifest(p.repository, str(desc.digest), what))
        if fetched.digest != desc.digest:
            raise integrity(f"{self.ref}: the registry served {fetched.digest} for {desc.digest}")
        return _document(fetched)

    def config(self, desc: Descriptor) -> bytes:
        return self._first(lambda p: p.client.get_small_blob(p.repository, desc, f"config of {self.ref}"))

    def blob(self, desc: Descriptor, scratch: Path, progress: ProgressFn) -> Path:
        return self.blob_streamed(desc, scratch, progress, None)

    def blob_streamed(self, desc: Descriptor, scratch: Path, progress: ProgressFn, feed: Feed | None) -> Path:
        """:meth:`blob`, each piece also handed to ``feed`` as it arrives (the store unpacks it meanwhile)."""
        what = f"blob {desc.digest} of {self.ref}"

        def fetch(place: Place) -> Path:  # what a failed place left is a prefix of the same blob: kept
            progress(desc, "downloading", 0)
            place.client.fetch_blob(place.repository, desc, scratch, what,
                                    lambda n: progress(desc, "downloading", n), feed,
                                    lambda n: progress(desc, "resuming", n))
            progress(desc, "downloaded", desc.size)
            return scratch

        return self._first(fetch)
