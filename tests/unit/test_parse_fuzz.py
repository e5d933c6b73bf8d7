"""Fuzzing the parsers a registry or a user feeds (issue 13): references, platforms, descriptors, manifests,
indexes and image configs. Whatever the input, the answer is a value or a StrataError: never another exception
(which the CLIs would show as a traceback). Documents are generated both as random JSON and as real documents
with random changes, so the fuzzer reaches past the first type check."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared import reference
from shared.errors import StrataError
from shared.image import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGEST = "sha256:" + "a" * 64

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                           max_leaves=20)

DESCRIPTOR = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 10}
MANIFEST = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 5},
            "layers": [DESCRIPTOR, DESCRIPTOR]}
INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [{**DESCRIPTOR, "mediaType": OCI_MANIFEST, "platform": {"os": "linux", "architecture": "amd64"}}]}
CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "Cmd": ["sh"], "User": "0"},
          "rootfs": {"type": "layers", "diff_ids": [DIGEST]}, "history": [{"created_by": "x"}]}



@st.composite
def mutated(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """DOC with some keys (top level, or one level down) replaced by random JSON or removed."""
    out = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        if not out:
            break
        target = out
        key = draw(st.sampled_from(sorted(target)))
        if isinstance(target[key], dict) and target[key] and draw(st.booleans()):
            target, key = target[key], draw(st.sampled_from(sorted(target[key])))
        if draw(st.booleans()):
            target[key] = draw(json_values)
        else:
            del target[key]
    return out  # type: ignore[no-any-return]


def only_strata_errors(call: Any, *args: Any) -> None:
    with contextlib.suppress(StrataError):
        call(*args)


@FUZZ
@given(st.text(max_size=300))
def test_reference_parsing(text: str) -> None:
    only_strata_errors(reference.parse, text)


@FUZZ
@given(st.text(max_size=60))
def test_platform_parsing(text: str) -> None:
    only_strata_errors(Platform.parse, text)


@FUZZ
@given(json_values)
def test_descriptor_from_random_json(value: Any) -> None:
    only_strata_errors(Descriptor.from_json, value, "descriptor")


def as_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


@FUZZ
@given(st.one_of(json_values, mutated(MANIFEST)), st.sampled_from([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, ""]))
@example({**MANIFEST, "config": {**DESCRIPTOR, "digest": None}}, OCI_MANIFEST)  # found: a traceback, now one line
@example({**MANIFEST, "layers": [{**DESCRIPTOR, "urls": 7}]}, OCI_MANIFEST)
@example({**MANIFEST, "layers": [{**DESCRIPTOR, "annotations": ["x"]}]}, OCI_MANIFEST)
def test_manifest_parsing(value: Any, media_type: str) -> None:
    only_strata_errors(Manifest.parse, as_bytes(value), media_type)


@FUZZ
@given(st.one_of(json_values, mutated(INDEX)), st.sampled_from([OCI_INDEX, OCI_MANIFEST, ""]))
def test_index_parsing(value: Any, media_type: str) -> None:
    only_strata_errors(Index.parse, as_bytes(value), media_type)


@FUZZ
@given(st.one_of(json_values, mutated(CONFIG)))
@example({**CONFIG, "config": {"Cmd": True}})  # found: a traceback, now one line
def test_config_parsing(value: Any) -> None:
    only_strata_errors(ImageConfig.parse, as_bytes(value))


@FUZZ
@given(st.binary(max_size=200))
def test_documents_that_are_not_json(raw: bytes) -> None:
    only_strata_errors(Manifest.parse, raw, OCI_MANIFEST)
    only_strata_errors(Index.parse, raw, OCI_INDEX)
    only_strata_errors(ImageConfig.parse, raw)
