"""``NAME@sha256:...`` names a stored image when the store holds that manifest (or the index it came from) under
any reference of NAME, as Docker resolves it: the digest ``pull`` prints can be used with ``run`` and friends."""

from __future__ import annotations

import json

from tests.images import Variant
from tests.marks import needs_root, needs_tools
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]


def printed_digest(tools: Tools, ref: str) -> str:
    pulled = tools.puller("pull", ref)
    assert pulled.code == 0, pulled.err
    return next(line.split(": ", 1)[1] for line in pulled.out.splitlines() if line.startswith("Digest: "))


def test_run_by_the_digest_pull_printed(tools: Tools, gzip_variant: Variant) -> None:
    digest = printed_digest(tools, gzip_variant.ref)
    assert digest == gzip_variant.digest
    by_digest = f"{gzip_variant.repo}@{digest}"
    ran = tools.runner("run", "--rm", by_digest, "true")
    assert ran.code == 0, ran.err
    shown = json.loads(tools.puller("inspect", by_digest).out)[0]
    assert shown["ManifestDigest"] == digest and shown["Name"] == gzip_variant.ref


def test_run_by_index_digest_and_by_its_manifest_digest(tools: Tools, index_variant: Variant) -> None:
    digest = printed_digest(tools, index_variant.ref)
    assert digest == index_variant.digest
    for d in (digest, index_variant.image().digest):
        ran = tools.runner("run", "--rm", f"{index_variant.repo}@{d}", "true")
        assert ran.code == 0, (d, ran.err)


def test_a_digest_the_store_does_not_hold_is_not_found(tools: Tools, gzip_variant: Variant,
                                                       zstd_variant: Variant) -> None:  # fmt: skip
    printed_digest(tools, gzip_variant.ref)
    other = f"{gzip_variant.repo}@{zstd_variant.digest}"  # a real digest, of another repository's image
    one_line_error(tools.runner("run", "--rm", "--pull", "never", other, "true"), 125, "No such image")
    elsewhere = f"{zstd_variant.repo}@{gzip_variant.digest}"  # the right digest in the wrong repository
    one_line_error(tools.runner("run", "--rm", "--pull", "never", elsewhere, "true"), 125, "No such image")


def test_rmi_by_digest_untags_the_references_it_names(tools: Tools, gzip_variant: Variant) -> None:
    digest = printed_digest(tools, gzip_variant.ref)
    removed = tools.puller("rmi", f"{gzip_variant.repo}@{digest}")
    assert removed.code == 0, removed.err
    assert f"Untagged: {gzip_variant.ref}" in removed.out
    assert tools.puller("images", "-q").out.strip() == ""
