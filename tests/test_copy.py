"""``puller copy SRC DEST`` between registries, OCI layouts, archives and the store, checked with skopeo.

The air-gap workflow is the headline: registry -> oci-archive on one side, oci-archive -> another registry (or the
store) on the other, every digest unchanged. Location parsing is pure logic and tested as such.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from puller.verbs.copy import STORE, Location, parse_location
from shared.errors import Kind, StrataError
from tests.images import Variant
from tests.marks import needs_root, needs_tools
from tests.scripts import Registry
from tests.tools import Tools, one_line_error

# -- locations (pure) --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("docker://127.0.0.1:5000/a/b:1", Location("docker", "127.0.0.1:5000/a/b:1")),
    ("oci:/tmp/dir", Location("oci", "/tmp/dir")),
    ("oci:/tmp/dir:v1", Location("oci", "/tmp/dir", "v1")),
    ("oci-archive:img.tar:busybox:1", Location("oci-archive", "img.tar", "busybox:1")),
    ("docker-archive:x.tar", Location("docker-archive", "x.tar")),
    ("busybox:1", Location(STORE, "busybox:1")),
    ("localhost:5000/x:1", Location(STORE, "localhost:5000/x:1")),
])  # fmt: skip
def test_locations_parse_as_skopeo_names_them(text: str, want: Location) -> None:
    assert parse_location(text) == want
    assert str(parse_location(text)) == text


@pytest.mark.parametrize(("text", "kind"), [
    ("docker:busybox", Kind.USAGE), ("docker://", Kind.USAGE), ("oci:", Kind.USAGE), ("oci-archive::x", Kind.USAGE),
    ("dir:/tmp/x", Kind.UNSUPPORTED), ("containers-storage:x", Kind.UNSUPPORTED), ("http://x/y", Kind.USAGE),
    ("", Kind.USAGE),
])  # fmt: skip
def test_bad_locations_are_one_line_errors(text: str, kind: Kind) -> None:
    with pytest.raises(StrataError) as info:
        parse_location(text)
    assert info.value.kind is kind and "\n" not in str(info.value)


# -- with the peers ---------------------------------------------------------------------------------------------



def skopeo_inspect(location: str) -> dict[str, object]:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", location], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def skopeo_digest(location: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", location], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def copied(tools: Tools, *args: str) -> str:
    result = tools.puller("copy", *args)
    assert result.code == 0, result.err
    return result.out.strip()


@needs_root
@needs_tools
def test_air_gap_workflow_keeps_every_digest(tools: Tools, tmp_path: Path, registry: Registry,
                                             gzip_variant: Variant) -> None:  # fmt: skip
    archive = tmp_path / "img.tar"
    digest = copied(tools, f"docker://{gzip_variant.ref}", f"oci-archive:{archive}")
    assert digest == gzip_variant.digest
    assert skopeo_digest(f"oci-archive:{archive}") == gzip_variant.digest
    inside = f"{registry.address}/airgap/inside:1"
    assert copied(tools, f"oci-archive:{archive}", f"docker://{inside}") == gzip_variant.digest
    assert skopeo_digest(f"docker://{inside}") == gzip_variant.digest
    # and into the store, to run offline
    offline = Tools(tmp_path / "offline", tools.docker_config, tools.settings)
    assert copied(offline, f"oci-archive:{archive}", "airgap/img:1") == gzip_variant.digest
    ran = offline.runner("run", "--rm", "airgap/img:1", "true")
    assert ran.code == 0, ran.err
    # or loaded: it comes back under the name it left with, as the README's workflow runs it
    loaded = Tools(tmp_path / "loaded", tools.docker_config, tools.settings)
    result = loaded.puller("load", "-i", str(archive))
    assert result.code == 0 and result.out == f"Loaded image: {gzip_variant.ref}\n", (result.out, result.err)
    ran = loaded.runner("run", "--rm", gzip_variant.ref, "true")
    assert ran.code == 0, ran.err


@needs_root
@needs_tools
def test_whole_index_travels_with_all_platforms(tools: Tools, tmp_path: Path, registry: Registry,
                                                index_variant: Variant) -> None:  # fmt: skip
    layout = tmp_path / "layout"
    assert copied(tools, "--all-platforms", f"docker://{index_variant.ref}", f"oci:{layout}:multi") == \
        index_variant.digest
    index = skopeo_inspect(f"oci:{layout}:multi")
    assert {m["digest"] for m in index["manifests"]} >= set(index_variant.manifests.values())  # type: ignore[index, union-attr]
    dest = f"{registry.address}/copied/multi:1"
    assert copied(tools, "--all-platforms", f"oci:{layout}:multi", f"docker://{dest}") == index_variant.digest
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"], check=True,
                         capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == index_variant.digest  # the index, byte for byte
    for digest in index_variant.manifests.values():  # and every image of it, by digest
        assert skopeo_inspect(f"docker://{dest.rsplit(':', 1)[0]}@{digest}")["config"]


@needs_root
@needs_tools
def test_one_platform_of_an_index_is_named_by_its_manifest(tools: Tools, tmp_path: Path,
                                                           index_variant: Variant) -> None:  # fmt: skip
    layout = tmp_path / "one"
    digest = copied(tools, "--platform", "linux/arm64", f"docker://{index_variant.ref}", f"oci:{layout}:arm")
    assert digest == index_variant.image("linux/arm64/v8").digest
    assert skopeo_digest(f"oci:{layout}:arm") == digest


@needs_root
@needs_tools
def test_store_to_docker_archive_reads_with_skopeo(tools: Tools, tmp_path: Path, gzip_variant: Variant) -> None:
    assert tools.puller("pull", "-q", gzip_variant.ref).code == 0
    archive = tmp_path / "d.tar"
    copied(tools, gzip_variant.ref, f"docker-archive:{archive}")
    config = skopeo_inspect(f"docker-archive:{archive}")
    image = gzip_variant.image()
    # skopeo rebuilds a manifest for a docker-archive; the config (the image ID) is the same bytes
    assert config["config"]["digest"] == image.config  # type: ignore[index]


@needs_root
@needs_tools
def test_all_platforms_into_the_store_is_refused_on_one_line(tools: Tools, index_variant: Variant) -> None:
    one_line_error(tools.puller("copy", "--all-platforms", f"docker://{index_variant.ref}", "x/y:1"), 1,
                   "one image per name", tool="puller")
    one_line_error(tools.puller("copy", "nothing/here:1", "oci:/tmp/never"), 1, "No such image", tool="puller")


# -- found by review: each a regression test ---------------------------------------------------------------------


def _layout_with_index(tmp_path: Path, tools: Tools, variant: Variant, entries: list[dict[str, object]]) -> Path:
    """An OCI layout holding VARIANT (copied there by us) and an index named ``crafted`` listing ENTRIES."""
    layout = tmp_path / "crafted"
    copied(tools, f"docker://{variant.ref}", f"oci:{layout}:orig")
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": entries}).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(raw)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{digest}",
                               "size": len(raw), "annotations": {"org.opencontainers.image.ref.name": "crafted"}})
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def _manifest_entry(layout: Path) -> dict[str, object]:
    (entry,) = [e for e in json.loads((layout / "index.json").read_text())["manifests"]
                if e["annotations"]["org.opencontainers.image.ref.name"] == "orig"]
    return {**entry, "annotations": {}, "platform": {"os": "linux", "architecture": "amd64"}}


@needs_root
@needs_tools
def test_a_whole_index_with_an_entry_we_cannot_move_is_refused_before_anything_moves(
        tools: Tools, tmp_path: Path, gzip_variant: Variant) -> None:  # fmt: skip
    """The index is written as it is, so an entry left behind (a nested index) would leave it naming a blob the
    destination does not have: refused, in one line, with nothing written."""
    layout = _layout_with_index(tmp_path, tools, gzip_variant, [])
    manifest = _manifest_entry(layout)
    nested = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + "0" * 64, "size": 2}
    layout = _layout_with_index(tmp_path / "b", tools, gzip_variant, [manifest, nested])
    out = tmp_path / "out"
    one_line_error(tools.puller("copy", "--all-platforms", f"oci:{layout}:crafted", f"oci:{out}:x"), 1,
                   "nested indexes are not followed", tool="puller")
    assert not (out / "index.json").exists() or "x" not in (out / "index.json").read_text()


@needs_root
@needs_tools
def test_an_index_naming_one_manifest_many_times_is_read_once(tools: Tools, tmp_path: Path,
                                                             gzip_variant: Variant) -> None:  # fmt: skip
    """300 entries naming one manifest: each document is read once (it was read, and held, 300 times), and an
    index of more than 1024 entries is refused."""
    base = _layout_with_index(tmp_path / "a", tools, gzip_variant, [])
    entry = _manifest_entry(base)
    layout = _layout_with_index(tmp_path / "b", tools, gzip_variant, [entry] * 300)
    assert copied(tools, "--all-platforms", f"oci:{layout}:crafted", f"oci:{tmp_path / 'out'}:x")
    big = _layout_with_index(tmp_path / "c", tools, gzip_variant, [entry] * 1025)
    one_line_error(tools.puller("copy", "--all-platforms", f"oci:{big}:crafted", f"oci:{tmp_path / 'o2'}:x"), 1,
                   "over the 1024", tool="puller")


@needs_root
@needs_tools
def test_a_digest_in_the_destination_name_must_be_what_is_copied(tools: Tools, tmp_path: Path,
                                                                gzip_variant: Variant) -> None:  # fmt: skip
    assert tools.puller("pull", "-q", gzip_variant.ref).code == 0
    lie = f"localhost/t@sha256:{'1' * 64}"
    one_line_error(tools.puller("copy", gzip_variant.ref, lie), 2, "names digest", tool="puller")
    assert tools.puller("inspect", lie).code != 0
    right = f"localhost/t@{gzip_variant.digest}"
    assert copied(tools, gzip_variant.ref, right) == gzip_variant.digest
    assert tools.runner("run", "--rm", right, "true").code == 0


@needs_root
@needs_tools
def test_a_layout_gets_copies_of_the_stores_blobs_never_links(tools: Tools, tmp_path: Path,
                                                             gzip_variant: Variant) -> None:  # fmt: skip
    """A hard link would make the user's layout and the store one inode: a chown -R or an edit of either would
    change a blob the store trusts."""
    assert tools.puller("pull", "-q", gzip_variant.ref).code == 0
    out = tmp_path / "out"
    copied(tools, gzip_variant.ref, f"oci:{out}:x")
    for blob in (out / "blobs/sha256").iterdir():
        stored = tools.root / "blobs/sha256" / blob.name
        assert stored.exists() and blob.stat().st_ino != stored.stat().st_ino and blob.stat().st_nlink == 1


@needs_root
@needs_tools
def test_copy_into_a_missing_directory_fails_before_moving_anything(tools: Tools, tmp_path: Path,
                                                                   gzip_variant: Variant) -> None:  # fmt: skip
    result = tools.puller("copy", f"docker://{gzip_variant.ref}", f"oci-archive:{tmp_path / 'nope' / 'x.tar'}")
    one_line_error(result, 2, "is not a directory", tool="puller")
