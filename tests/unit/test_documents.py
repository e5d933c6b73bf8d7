"""The documents a registry serves, as the puller reads them (shared.image.media_type_of): what it refuses and
why (CVE-2021-41190's ambiguous documents, schema 1, a media type that contradicts Content-Type, the size cap)."""

from __future__ import annotations

import json

import pytest

from shared.errors import Kind, StrataError
from shared.image import MAX_MANIFEST_BYTES, media_type_of

LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "a" * 64, "size": 1}


@pytest.mark.parametrize(("doc", "content_type", "message", "kind"), [
    ({"schemaVersion": 2, "manifests": [], "layers": [LAYER], "config": LAYER}, None, "CVE-2021-41190",
     Kind.INTEGRITY),
    ({"schemaVersion": 1, "fsLayers": []}, "application/vnd.docker.distribution.manifest.v1+prettyjws",
     "schema 1 manifest", Kind.UNSUPPORTED),
    ({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": [], "config": LAYER},
     "application/vnd.oci.image.index.v1+json", "does not match Content-Type", Kind.INTEGRITY),
    ({"schemaVersion": 2, "mediaType": "application/vnd.example.other+json"}, None, "unsupported media type",
     Kind.UNSUPPORTED),
])
def test_documents_refused(doc: dict[str, object], content_type: str | None, message: str, kind: Kind) -> None:
    with pytest.raises(StrataError, match=message) as info:
        media_type_of(json.dumps(doc).encode(), content_type, "manifest")
    assert info.value.kind is kind


def test_oversized_document_refused() -> None:
    with pytest.raises(StrataError, match="over the") as info:
        media_type_of(b" " * (MAX_MANIFEST_BYTES + 1), None, "manifest")
    assert info.value.kind is Kind.INTEGRITY
