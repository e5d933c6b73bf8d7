"""``puller artifact push|pull`` (oras-py, verified around it): files round-trip byte for byte, the registry keeps an
image-spec 1.1 artifact manifest (artifactType, empty config, titled layers), corrupt blobs and hostile titles are
refused in one line with nothing left in (or outside) the output directory, and auth works after ``puller login``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import requests

from tests.faults import FaultProxy, alter, redirect, status
from tests.marks import needs_root, needs_tools
from tests.registries import HtpasswdRegistry, TokenRegistry
from tests.scripts import Registry
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]

SBOM = "application/vnd.example.sbom+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"


def make_files(where: Path) -> list[Path]:
    """One binary file (every byte value), one empty, one of 5 MB (above the 4 MiB chunked-upload threshold)."""
    where.mkdir(parents=True, exist_ok=True)
    binary = where / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 64 + os.urandom(1000))
    empty = where / "empty.json"
    empty.write_bytes(b"")
    big = where / "sbom.spdx.json"
    big.write_bytes(os.urandom(5 * 1000 * 1000))
    return [binary, empty, big]


def push(tools: Tools, ref: str, files: list[Path], *extra: str) -> str:
    result = tools.puller("artifact", "push", ref, *map(str, files), *extra)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("Pushed ") and lines[1].startswith("Digest: sha256:"), result.out
    return lines[1].removeprefix("Digest: ")


def raw_manifest(address: str, repo: str, ref: str, auth: tuple[str, str] | None = None) -> bytes:
    resp = requests.get(f"http://{address}/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST},
                        auth=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.content


def put_blob(address: str, repo: str, data: bytes) -> dict[str, object]:
    """Upload DATA as a blob (monolithic POST + PUT), by hand; its descriptor."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = requests.post(f"http://{address}/v2/{repo}/blobs/uploads/", timeout=30)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    done = requests.put(location, params={"digest": digest}, data=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert done.status_code == 201, done.text
    return {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}


def put_artifact(address: str, repo: str, tag: str, layers: list[tuple[str, bytes]]) -> None:
    """A hand-made artifact manifest: each (title, bytes) one layer."""
    config = put_blob(address, repo, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM,
                "config": {**config, "mediaType": EMPTY},
                "layers": [{**put_blob(address, repo, data), "annotations": {TITLE: title}} for title, data in layers]}
    resp = requests.put(f"http://{address}/v2/{repo}/manifests/{tag}", data=json.dumps(manifest),
                        headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert resp.status_code == 201, resp.text


def listing(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*"))


def test_push_pull_round_trips_bytes_and_registry_keeps_artifact_type(tools: Tools, registry: Registry,
                                                                       tmp_path: Path) -> None:
    files = make_files(tmp_path / "src")
    ref = f"{registry.address}/strata/sbom:v1"
    digest = push(tools, ref, files, "--artifact-type", SBOM)

    # What the registry keeps: the manifest bytes as pushed, so artifactType itself (not only config.mediaType)
    raw = raw_manifest(registry.address, "strata/sbom", "v1")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["artifactType"] == SBOM
    empty_digest = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert manifest["config"] == {"mediaType": EMPTY, "size": 2, "digest": empty_digest}
    assert [layer["annotations"][TITLE] for layer in manifest["layers"]] == [f.name for f in files]
    assert [layer["size"] for layer in manifest["layers"]] == [f.stat().st_size for f in files]

    for pulled_ref in (ref, f"{registry.address}/strata/sbom@{digest}"):
        out = tmp_path / f"out-{len(pulled_ref)}"
        result = tools.puller("artifact", "pull", pulled_ref, "-o", str(out))
        assert result.code == 0, result.err
        assert result.out.splitlines() == [str(out / f.name) for f in files]
        assert listing(out) == sorted(f.name for f in files)  # no temp files left beside them
        for f in files:
            assert (out / f.name).read_bytes() == f.read_bytes()


def test_corrupted_blob_is_refused_and_nothing_is_left(tools: Tools, registry: Registry, fault_proxy: FaultProxy,
                                                       tmp_path: Path) -> None:
    files = make_files(tmp_path / "src")
    push(tools, f"{fault_proxy.address}/strata/corrupt:1", files)
    # the 5 MB file went up in 4 MiB PATCHes (oras-py's monolithic PUT would hold a file whole in memory)
    assert len(fault_proxy.requests("/blobs/uploads/", method="PATCH")) == 2
    big = "sha256:" + hashlib.sha256(files[2].read_bytes()).hexdigest()  # the last layer: the others came first
    fault_proxy.add(alter(f"/blobs/{big}", at=0.5, times=None))
    out = tmp_path / "out"
    result = tools.puller("artifact", "pull", f"{fault_proxy.address}/strata/corrupt:1", "-o", str(out))
    one_line_error(result, 1, "digest mismatch", tool="puller")
    assert big in result.err and "sbom.spdx.json" in result.err
    assert listing(out) == []  # the two good files were not renamed into place, their temps are gone


def test_redirects_and_passing_failures(tools: Tools, registry: Registry, fault_proxy: FaultProxy,
                                        tmp_path: Path) -> None:
    files = make_files(tmp_path / "src")[:2]
    push(tools, f"{registry.address}/strata/flaky:1", files)
    fault_proxy.add(status("/manifests/", 500, times=2))
    fault_proxy.add(status("/blobs/", 503, times=1))
    fault_proxy.add(redirect("/blobs/", times=None))  # to a CDN, which refuses requests carrying Authorization
    out = tmp_path / "out"
    result = tools.puller("artifact", "pull", f"{fault_proxy.address}/strata/flaky:1", "-o", str(out))
    assert result.code == 0, result.err
    assert all((out / f.name).read_bytes() == f.read_bytes() for f in files)
    assert fault_proxy.cdn_log and not fault_proxy.cdn_saw_authorization


@pytest.mark.parametrize("title", ["../escape", "sub/../../escape", "ABSOLUTE"])
def test_hostile_title_is_refused_and_nothing_written_outside(tools: Tools, registry: Registry, tmp_path: Path,
                                                              title: str) -> None:
    sentinel = tmp_path / "escape"
    if title == "ABSOLUTE":
        title = str(sentinel)
    put_artifact(registry.address, "strata/hostile", "1", [("fine.txt", b"fine\n"), (title, b"pwned\n")])
    out = tmp_path / "out"
    result = tools.puller("artifact", "pull", f"{registry.address}/strata/hostile:1", "-o", str(out))
    one_line_error(result, 1, "refus", tool="puller")
    assert title in result.err
    assert not sentinel.exists()
    assert not out.exists() or listing(out) == []


def test_symlink_in_output_dir_is_not_followed(tools: Tools, registry: Registry, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "charts").symlink_to(outside)
    put_artifact(registry.address, "strata/symlinked", "1", [("charts/app.tgz", b"chart\n")])
    result = tools.puller("artifact", "pull", f"{registry.address}/strata/symlinked:1", "-o", str(out))
    one_line_error(result, 1, "symlink", tool="puller")
    assert list(outside.iterdir()) == []
    # a symlink where the file itself goes is replaced, not written through
    (out / "charts").unlink()
    (out / "charts").mkdir()
    (out / "charts" / "app.tgz").symlink_to(outside / "target")
    result = tools.puller("artifact", "pull", f"{registry.address}/strata/symlinked:1", "-o", str(out))
    assert result.code == 0, result.err
    assert not (out / "charts" / "app.tgz").is_symlink() and (out / "charts" / "app.tgz").read_bytes() == b"chart\n"
    assert list(outside.iterdir()) == []


def test_missing_reference_is_not_found(tools: Tools, registry: Registry, tmp_path: Path) -> None:
    result = tools.puller("artifact", "pull", f"{registry.address}/strata/no-such-artifact:1", "-o",
                          str(tmp_path / "out"))
    one_line_error(result, 1, "not found", tool="puller")
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []


def test_an_image_is_not_an_artifact(tools: Tools, test_image: str, tmp_path: Path) -> None:
    result = tools.puller("artifact", "pull", test_image, "-o", str(tmp_path / "out"))
    one_line_error(result, 1, "puller pull", tool="puller")
    assert listing(tmp_path / "out") == []


def test_unreachable_registry_fails_at_once(tools: Tools, tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("a")
    result = tools.puller("artifact", "push", "127.0.0.1:9/strata/x:1", str(f))
    one_line_error(result, 1, "connection refused", tool="puller")


def test_bad_input_is_one_line(tools: Tools, registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("2")
    ref = f"{registry.address}/strata/bad:1"
    one_line_error(tools.puller("artifact", "push", ref, str(tmp_path / "d")), 2, "not a regular file", "puller")
    one_line_error(tools.puller("artifact", "push", ref, str(tmp_path / "missing")), 2, "cannot read", "puller")
    one_line_error(tools.puller("artifact", "push", ref, str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")),
                   2, "both be titled", "puller")
    one_line_error(tools.puller("artifact", "push", ref, str(tmp_path / "a" / "x"), "--artifact-type", "sbom"),
                   2, "not a media type", "puller")


def test_htpasswd_registry_after_login(tools: Tools, htpasswd_registry: HtpasswdRegistry, tmp_path: Path) -> None:
    reg = htpasswd_registry
    files = make_files(tmp_path / "src")[:2]
    ref = f"{reg.address}/strata/config:1"
    denied = tools.puller("artifact", "push", ref, *map(str, files))
    one_line_error(denied, 1, "login", tool="puller")
    login = tools.puller("login", "-u", reg.username, "--password-stdin", reg.address, stdin=reg.password + "\n")
    assert login.code == 0, login.err
    push(tools, ref, files, "--artifact-type", SBOM)
    assert json.loads(raw_manifest(reg.address, "strata/config", "1", reg.creds))["artifactType"] == SBOM
    result = tools.puller("artifact", "pull", ref, "-o", str(tmp_path / "out"))
    assert result.code == 0, result.err
    assert all((tmp_path / "out" / f.name).read_bytes() == f.read_bytes() for f in files)


def test_token_registry_after_login(tools: Tools, token_registry: TokenRegistry, tmp_path: Path) -> None:
    reg = token_registry
    files = make_files(tmp_path / "src")[:2]
    ref = f"{reg.address}/strata/artifact:1"
    user, password = reg.creds(reg.owner)
    login = tools.puller("login", "-u", user, "--password-stdin", reg.address, stdin=password + "\n")
    assert login.code == 0, login.err
    push(tools, ref, files)
    result = tools.puller("artifact", "pull", ref, "-o", str(tmp_path / "out"))
    assert result.code == 0, result.err
    assert all((tmp_path / "out" / f.name).read_bytes() == f.read_bytes() for f in files)
    # bob may not push to alice's repositories: one line, from the registry's refusal
    other, other_password = reg.creds(reg.other_user)
    assert tools.puller("login", "-u", other, "--password-stdin", reg.address, stdin=other_password + "\n").code == 0
    refused = tools.puller("artifact", "push", ref, str(files[0]))
    assert refused.code == 1 and refused.err.count("\n") == 1 and refused.err.startswith("puller: error: "), \
        refused.err


def test_pull_removes_temps_a_killed_pull_left(tools: Tools, registry: Registry, tmp_path: Path) -> None:
    """A pull killed midway (kill -9) leaves .puller-artifact.PID.RANDOM beside its files; the next pull into
    that directory removes those whose PID is gone and keeps a live one's (another pull at work)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = [out / f".puller-artifact.{child.pid}.{'a' * 16}", out / "sub" / f".puller-artifact.{child.pid}.{'b' * 16}"]
    live = out / f".puller-artifact.{os.getpid()}.{'c' * 16}"
    for path in [*dead, live]:
        path.write_bytes(b"partial download")
    put_artifact(registry.address, "strata/leftovers", "1", [("a.txt", b"a\n"), ("sub/b.txt", b"b\n")])
    result = tools.puller("artifact", "pull", f"{registry.address}/strata/leftovers:1", "-o", str(out))
    assert result.code == 0, result.err
    assert listing(out) == sorted([live.name, "a.txt", "sub", "sub/b.txt"])
