"""``puller save`` / ``puller load`` and the layout and archive places under them (shared/transfer/layout.py,
archive.py), checked against skopeo as the peer: what we save, skopeo reads with the same config and layer
digests; what skopeo writes (docker-archive, oci-archive), we load and run; a save loaded into a fresh store is
the same image (ID and manifest digest); a hostile archive is one line of error and leaves the store as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.marks import needs_root, needs_tools
from tests.tools import ROOT, Result, Tools, one_line_error

pytestmark = [needs_root, needs_tools]

REF_NAME = "org.opencontainers.image.ref.name"


def skopeo(*args: str | Path) -> str:
    proc = subprocess.run(["skopeo", *map(str, args)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def puller_io(tools: Tools, *args: str, stdin: Path | None = None, stdout: Path | None = None) -> Result:
    """The puller CLI with binary stdin/stdout files (an archive piped in or out)."""
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    with open(stdin or os.devnull, "rb") as fin, open(stdout or os.devnull, "wb") as fout:
        proc = subprocess.run([sys.executable, "-m", "puller", "--root", str(tools.root), *args], stdin=fin,
                              stdout=fout, stderr=subprocess.PIPE, text=False, timeout=120, cwd=ROOT, env=env)
    return Result(proc.returncode, "", proc.stderr.decode())


def inspect(tools: Tools, ref: str) -> dict[str, object]:
    result = tools.puller("inspect", ref)
    assert result.code == 0, result.err
    described: dict[str, object] = json.loads(result.out)[0]
    return described


def diff_ids(described: dict[str, object]) -> list[str]:
    layers = described["Layers"]
    assert isinstance(layers, list)
    return [x["DiffID"] for x in layers]


def assert_fsck_clean(tools: Tools) -> None:
    result = tools.puller("fsck")
    assert result.code == 0 and result.err == "", (result.out, result.err)


def runs(tools: Tools, image: str) -> None:
    result = tools.runner("run", "--rm", image, "cat", "/etc/layer1.txt", "/etc/layer2.txt")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["from layer 1", "from layer 2"]


def member_json(archive: Path, name: str) -> Any:
    with tarfile.open(archive) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return json.loads(f.read())


def manifest_digest(raw: str) -> str:
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


@pytest.fixture
def pulled(stored_test_image: str) -> str:
    return stored_test_image


@pytest.fixture(scope="session")
def skopeo_archives(tmp_path_factory: pytest.TempPathFactory, test_layout: Path) -> dict[str, Path]:
    """The test image as skopeo writes it: docker-archive (legacy form: HEX.tar layers, ID/layer.tar symlinks,
    no registry manifest) and oci-archive (gzip layers), named example.com/strata/NAME:1."""
    out = tmp_path_factory.mktemp("skopeo-archives")
    archives = {"docker-archive": out / "docker.tar", "oci-archive": out / "oci.tar"}
    for transport, path in archives.items():
        name = "da" if transport == "docker-archive" else "oa"
        skopeo("copy", "--quiet", f"oci:{test_layout}:test", f"{transport}:{path}:example.com/strata/{name}:1")
    return archives


# -- save: skopeo reads what we write ---------------------------------------------------------------------------


def test_save_is_read_by_skopeo_with_the_same_digests(tools: Tools, pulled: str, tmp_path: Path) -> None:
    archive = tmp_path / "saved.tar"
    result = tools.puller("save", "-o", str(archive), pulled)
    assert result.code == 0 and result.out == "", result.err
    ours = inspect(tools, pulled)

    raw = json.loads(skopeo("inspect", "--raw", f"docker-archive:{archive}:{pulled}"))
    assert raw["config"]["digest"] == ours["Id"]
    assert [x["digest"] for x in raw["layers"]] == diff_ids(ours)  # skopeo names docker-archive layers by diff_id
    described = json.loads(skopeo("inspect", f"docker-archive:{archive}"))
    assert described["Layers"] == diff_ids(ours)

    layout = tmp_path / "layout"
    skopeo("copy", "--quiet", "--preserve-digests", f"docker-archive:{archive}", f"oci:{layout}:copied")
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_bytes())
    assert manifest["config"]["digest"] == ours["Id"]
    assert [x["digest"] for x in manifest["layers"]] == diff_ids(ours)
    for layer in manifest["layers"]:  # and the bytes are those tars
        data = (layout / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]

    with tarfile.open(archive) as tf:
        assert {"manifest.json", "repositories", "index.json", "oci-layout"} <= set(tf.getnames())
    (item,) = member_json(archive, "manifest.json")
    assert item["RepoTags"] == [pulled] and item["Config"] == f"blobs/sha256/{str(ours['Id']).split(':')[1]}"


def test_save_is_loaded_by_podman_with_the_same_image_id(tools: Tools, pulled: str, tmp_path: Path) -> None:
    """podman load (its own storage under tmp_path, vfs: the host's containers-storage is not touched) takes our
    archive, under our name and image ID, and runs it; podman also reads the store's layout directly."""
    archive = tmp_path / "saved.tar"
    assert tools.puller("save", "-o", str(archive), pulled).code == 0
    runroot = Path(tempfile.mkdtemp(prefix="strata-pm-"))  # podman wants a runroot under 50 characters
    storage = ["--root", str(tmp_path / "podman-root"), "--runroot", str(runroot),
               "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]

    def podman(*args: str) -> str:
        done = subprocess.run(["podman", *storage, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        loaded = podman("load", "-i", str(archive))
        assert pulled.split("/", 1)[1] in loaded
        (image,) = json.loads(podman("images", "--format", "json"))
        assert "sha256:" + image["Id"] == inspect(tools, pulled)["Id"]
        # (this VM: hard rlimits below podman's defaults, and a cgroup v1+v2 hybrid that podman's crun refuses)
        ran = podman("--runtime", "runc", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024",
                     "--ulimit", "nproc=1024:1024", pulled, "cat", "/etc/layer1.txt")
        assert ran == "from layer 1\n"
        podman("rmi", "--all")  # and the store itself, an OCI layout, is read by podman as it is
        podman("pull", "-q", f"oci:{tools.root}")  # (its one image; a name holding ":" confuses podman)
        (image,) = json.loads(podman("images", "--format", "json"))
        assert "sha256:" + image["Id"] == inspect(tools, pulled)["Id"]
    finally:
        subprocess.run(["podman", *storage, "system", "reset", "--force"], capture_output=True, timeout=300)
        shutil.rmtree(tmp_path / "podman-root", ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


def test_save_to_stdout_is_the_same_archive_and_refuses_a_terminal(tools: Tools, pulled: str,
                                                                     tmp_path: Path) -> None:
    assert tools.puller("save", "-o", str(tmp_path / "a.tar"), pulled).code == 0
    piped = puller_io(tools, "save", pulled, stdout=tmp_path / "b.tar")
    assert piped.code == 0, piped.err
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()  # deterministic

    leader, follower = os.openpty()
    try:
        env = {**os.environ, "STRATA_CONFIG": str(tools.settings)}
        proc = subprocess.run([sys.executable, "-m", "puller", "--root", str(tools.root), "save", pulled],
                              stdout=follower, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    one_line_error(Result(proc.returncode, "", proc.stderr), 2, "cowardly refusing to save to a terminal",
                   tool="puller")


def test_failed_save_leaves_nothing_at_the_destination(tools: Tools, pulled: str, tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    result = tools.puller("save", "-o", str(dest), pulled, "no/such:image")
    one_line_error(result, 1, "no/such:image", tool="puller")
    assert list(tmp_path.glob("out.tar*")) == []
    assert list((tools.root / "tmp").iterdir()) == []


# -- load: what skopeo writes, and layouts ----------------------------------------------------------------------


def test_skopeo_docker_archive_loads_and_runs(tools: Tools, skopeo_archives: dict[str, Path]) -> None:
    archive = skopeo_archives["docker-archive"]
    result = tools.puller("load", "-i", str(archive))
    assert result.code == 0, result.err
    assert result.out == "Loaded image: example.com/strata/da:1\n"
    # no registry manifest in a legacy docker-archive: ours is skopeo's, byte for byte
    ours = inspect(tools, "example.com/strata/da:1")
    assert ours["ManifestDigest"] == manifest_digest(skopeo("inspect", "--raw", f"docker-archive:{archive}"))
    runs(tools, "example.com/strata/da:1")
    assert_fsck_clean(tools)


def test_skopeo_oci_archive_loads_from_stdin_and_runs(tools: Tools, skopeo_archives: dict[str, Path],
                                                      test_layout: Path) -> None:
    result = puller_io(tools, "load", stdin=skopeo_archives["oci-archive"])
    assert result.code == 0, result.err
    ours = inspect(tools, "example.com/strata/oa:1")
    assert ours["ManifestDigest"] == manifest_digest(skopeo("inspect", "--raw", f"oci:{test_layout}:test"))
    runs(tools, "example.com/strata/oa:1")
    assert list((tools.root / "tmp").iterdir()) == []  # the spooled copy of stdin is gone
    assert_fsck_clean(tools)


def test_docker_archive_layers_through_links_and_compressed(tools: Tools, skopeo_archives: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """Docker 1.10-24's form: manifest.json Layers are ``ID/layer.tar``, which may be a link to another member
    (followed inside the archive, never on disk), and a layer may be compressed."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(skopeo_archives["docker-archive"]) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            members.append((m, f.read() if f else None))
    files = {m.name: data for m, data in members}
    (entry,) = json.loads(files["manifest.json"] or b"")
    link = next(m.name for m, _ in members if m.issym() and m.linkname == f"../{entry['Layers'][0]}")
    entry["Layers"] = [link, "legacy2/layer.tar"]
    entry["RepoTags"] = ["legacy:1"]
    gz = gzip.compress(files[json.loads(files["manifest.json"] or b"")[0]["Layers"][1]] or b"")
    members = [(m, d) for m, d in members if m.name != "manifest.json"]
    members += [(_file("legacy2/layer.tar"), gz), (_file("manifest.json"), json.dumps([entry]).encode())]
    archive = _tar(tmp_path / "legacy.tar", members)
    result = tools.puller("load", "-i", str(archive))
    assert result.code == 0, result.err
    assert result.out == "Loaded image: docker.io/library/legacy:1\n"
    layers = inspect(tools, "legacy:1")["Layers"]
    assert isinstance(layers, list)
    assert layers[1]["Digest"] == "sha256:" + hashlib.sha256(gz).hexdigest()  # the blob as it is in the archive
    runs(tools, "legacy:1")
    assert_fsck_clean(tools)


def test_oci_layout_dir_loads_names_and_unnamed(tools: Tools, test_layout: Path, tmp_path: Path) -> None:
    result = tools.puller("load", "-i", str(test_layout))
    assert result.code == 0, result.err
    assert result.out == "Loaded image: docker.io/library/test:latest\n"  # ref.name "test", normalized as Docker
    runs(tools, "test")

    unnamed = tmp_path / "unnamed"
    shutil.copytree(test_layout, unnamed)
    index = json.loads((unnamed / "index.json").read_text())
    for entry in index["manifests"]:
        entry.pop("annotations", None)
    (unnamed / "index.json").write_text(json.dumps(index))
    result = tools.puller("load", "-i", str(unnamed))
    assert result.code == 0, result.err
    image_id = str(inspect(tools, "test")["Id"])
    assert result.out == f"Loaded image ID: {image_id}\n"
    runs(tools, image_id.split(":")[1][:12])  # kept as localhost/unnamed@DIGEST, run by its ID
    assert_fsck_clean(tools)


def test_save_then_load_into_a_fresh_store_is_the_same_image(tools: Tools, pulled: str, rich_image: str,
                                                             tmp_path: Path) -> None:
    assert tools.puller("pull", "--quiet", rich_image).code == 0
    archive = tmp_path / "two.tar"
    result = tools.puller("save", "-o", str(archive), pulled, rich_image)
    assert result.code == 0, result.err
    before = {ref: inspect(tools, ref) for ref in (pulled, rich_image)}

    fresh = Tools(tmp_path / "fresh", tools.docker_config, tools.settings)
    loaded = fresh.puller("load", "-i", str(archive))
    assert loaded.code == 0, loaded.err
    assert loaded.out.splitlines() == [f"Loaded image: {pulled}", f"Loaded image: {rich_image}"]
    for ref, was in before.items():
        now = inspect(fresh, ref)
        assert (now["Id"], now["ManifestDigest"], now["Layers"]) == (was["Id"], was["ManifestDigest"], was["Layers"])
    runs(fresh, pulled)
    assert_fsck_clean(fresh)

    # a compressed archive, as `docker save | gzip` makes, loads the same (stdin is spooled, then decompressed)
    gz = tmp_path / "two.tar.gz"
    subprocess.run(f"gzip -c {archive} > {gz}", shell=True, check=True)
    again = Tools(tmp_path / "again", tools.docker_config, tools.settings)
    assert puller_io(again, "load", stdin=gz).code == 0
    assert inspect(again, rich_image)["ManifestDigest"] == before[rich_image]["ManifestDigest"]


def test_one_image_under_two_names_and_by_id(tools: Tools, pulled: str, tmp_path: Path) -> None:
    image_id = str(inspect(tools, pulled)["Id"])
    archive = tmp_path / "ids.tar"
    # the same image named twice is one manifest.json entry with both tags; by ID it has no name (as Docker)
    assert tools.puller("save", "-o", str(archive), pulled, pulled, image_id[7:19]).code == 0
    (item,) = member_json(archive, "manifest.json")
    assert item["RepoTags"] == [pulled]
    raw = json.loads(skopeo("inspect", "--raw", f"docker-archive:{archive}"))
    assert raw["config"]["digest"] == image_id
    index = member_json(archive, "index.json")
    assert [m.get("annotations", {}) for m in index["manifests"]] == [
        {"io.containerd.image.name": pulled, REF_NAME: "1"}, {}]  # Docker's annotations; the unnamed one bare


def test_layout_and_oci_archive_sinks_are_read_by_skopeo(tools: Tools, pulled: str, tmp_path: Path) -> None:
    """The classes ``puller copy`` builds on: store -> oci:DIR:REF and store -> oci-archive:FILE:REF."""
    from shared.store import images as stored
    from shared.store.layout import Store
    from shared.store.transfer import StoreSource
    from shared.transfer.archive import OciArchiveSink, OciArchiveSource
    from shared.transfer.layout import LayoutSink, LayoutSource, names_in
    from shared.transfer.model import copy, resolve

    store = Store(tools.root)
    source = StoreSource(store, stored.find(store, pulled))
    layout = tmp_path / "layout"
    sink = LayoutSink(layout)
    copy(source, sink, resolve(source, None), "mine")
    copy(source, sink, resolve(source, None), "mine")  # same name again: replaced, not doubled
    copy(source, sink, resolve(source, None), "other")
    sink.close()
    assert names_in(layout) == ["mine", "other"]
    assert json.loads(skopeo("inspect", f"oci:{layout}:mine"))["Digest"] == inspect(tools, pulled)["ManifestDigest"]
    back = LayoutSource(layout, "other")
    assert back.top().digest == source.top().digest
    with pytest.raises(Exception, match="several images; name one: mine, other"):
        LayoutSource(layout, None).top()

    archive = tmp_path / "oci.tar"
    with OciArchiveSink(archive, store.temp_path("stage")) as oci:
        copy(source, oci, resolve(source, None), "mine")
    assert not list(tmp_path.glob("oci.tar.tmp-*"))
    assert json.loads(skopeo("inspect", f"oci-archive:{archive}:mine"))["Digest"] == \
        inspect(tools, pulled)["ManifestDigest"]
    assert OciArchiveSource(archive, "mine").top().digest == source.top().digest


# -- hostile archives -------------------------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


MANIFEST = json.dumps([{"Config": "c.json", "RepoTags": ["evil:1"], "Layers": ["l.tar"]}]).encode()


def _hostile(kind: str, tmp_path: Path, good: Path) -> Path:
    """An archive that is hostile in one way (KIND)."""
    out = tmp_path / f"{kind}.tar"
    if kind == "dotdot":
        return _tar(out, [(_file("../escape"), b"x"), (_file("manifest.json"), MANIFEST)])
    if kind == "absolute":
        return _tar(out, [(_file("/etc/cron.d/evil"), b"x"), (_file("manifest.json"), MANIFEST)])
    if kind == "symlink":
        return _tar(out, [(_link("manifest.json", "/etc/passwd", tarfile.SYMTYPE), None)])
    if kind == "hardlink":
        return _tar(out, [(_file("manifest.json"), MANIFEST), (_link("l.tar", "../../etc/shadow", tarfile.LNKTYPE),
                                                              None)])
    if kind == "duplicate":
        return _tar(out, [(_file("manifest.json"), MANIFEST), (_file("manifest.json"), b"[]")])
    if kind == "huge-manifest":
        return _tar(out, [(_file("manifest.json"), b"[" + b" " * (5 << 20) + b"]")])
    if kind == "not-a-tar":
        out.write_bytes(b"this is not an archive\n" * 100)
        return out
    if kind == "truncated":
        data = good.read_bytes()
        out.write_bytes(data[: len(data) // 2])
        return out
    if kind == "bad-blob":  # the big layer's bytes changed, its size kept: the digest tells
        changed = bytearray(good.read_bytes())
        with tarfile.open(good) as tf:
            member = max(tf.getmembers(), key=lambda m: m.size)
        changed[member.offset_data + member.size // 2] ^= 0xFF
        out.write_bytes(bytes(changed))
        return out
    raise ValueError(kind)


LISTED = "{{.Repository}} {{.Tag}} {{.Digest}} {{.ID}} {{.Size}}"  # what a listing shows, less the age


@pytest.mark.parametrize(("kind", "code", "text"), [
    ("dotdot", 1, "climbs out of the archive"),
    ("absolute", 1, "has an absolute name"),
    ("symlink", 1, "points outside the archive"),
    ("hardlink", 1, "points outside the archive"),
    ("duplicate", 1, "holds 'manifest.json' twice"),
    ("huge-manifest", 1, "over the 4194304-byte limit"),
    ("not-a-tar", 1, "is not a tar archive"),
    ("truncated", 1, "is truncated"),
    ("bad-blob", 1, "hashes to sha256:"),
])
def test_hostile_archive_is_one_line_and_stores_nothing(tools: Tools, pulled: str, tmp_path: Path,
                                                        skopeo_archives: dict[str, Path], kind: str, code: int,
                                                        text: str) -> None:
    before = tools.puller("images", "--digests", "--no-trunc", "--format", LISTED).out
    layers_before = sorted(p.name for p in (tools.root / "layers").iterdir())
    archive = _hostile(kind, tmp_path, skopeo_archives["docker-archive"])
    result = tools.puller("load", "-i", str(archive))
    one_line_error(result, code, text, tool="puller")
    assert tools.puller("images", "--digests", "--no-trunc", "--format", LISTED).out == before
    assert sorted(p.name for p in (tools.root / "layers").iterdir()) == layers_before
    assert list((tools.root / "tmp").iterdir()) == []
    assert_fsck_clean(tools)


def test_layout_to_layout_moves_a_whole_index(variants_layout: Path, tmp_path: Path) -> None:
    """``oci:A:index`` -> ``oci:B:all`` with every platform (Resolved.whole_index): the index itself is the
    entry, byte for byte, and skopeo reads each platform back out of B."""
    from shared.transfer.layout import LayoutSink, LayoutSource
    from shared.transfer.model import copy, resolve

    source = LayoutSource(variants_layout, "index")
    resolved = resolve(source, None, all_platforms=True)
    sink = LayoutSink(tmp_path / "b")
    copy(source, sink, resolved, "all")
    sink.close()
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'b'}:all").encode() == resolved.top.raw
    arm = json.loads(skopeo("inspect", "--override-arch", "arm64", "--override-variant", "v8",
                            f"oci:{tmp_path / 'b'}:all"))
    assert arm["Architecture"] == "arm64"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["blobs", "index.json", "oci-layout"]


@pytest.mark.parametrize(("kind", "text"), [("symlink-blob", "is a symlink, which a layout may not hold"),
                                            ("changed-layer", "hashes to sha256:"),
                                            ("huge-index", "over the 4194304-byte limit")])
def test_hostile_layout_dir_is_one_line_and_stores_nothing(tools: Tools, test_layout: Path, tmp_path: Path,
                                                           kind: str, text: str) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(test_layout, layout)
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"].split(":")[1]).read_bytes())
    layer = layout / "blobs/sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    if kind == "symlink-blob":
        layer.unlink()
        layer.symlink_to("/etc/passwd")
    elif kind == "changed-layer":
        data = bytearray(layer.read_bytes())
        data[len(data) // 2] ^= 0xFF
        layer.write_bytes(bytes(data))
    else:
        (layout / "index.json").write_bytes(b" " * (5 << 20) + b"{}")
    result = tools.puller("load", "-i", str(layout))
    one_line_error(result, 1, text, tool="puller")
    assert tools.puller("images", "-q").out == ""
    assert list((tools.root / "layers").iterdir()) == []
    assert_fsck_clean(tools)


# -- review fixes: writing DEST, bounded reading, leftovers, what an archive path may be --------------------------

# A fresh interpreter runs the puller as its only child, so RUSAGE_CHILDREN's ru_maxrss is that puller's peak
# (as tests/test_transport_defects.py measures it).
MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n{proc.returncode}\\n{proc.stderr}")
"""


def puller_measured(tools: Tools, *args: str) -> tuple[int, Result]:
    """(peak RSS in MiB, result) of the puller CLI in a fresh child."""
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "puller", "--root", str(tools.root), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=True).stdout
    rss, code, err = out.split("\n", 2)
    print(f"peak RSS of puller {args[0]}: {int(rss) / 1024:.1f} MiB")
    return int(rss) // 1024, Result(int(code), "", err)


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_save_into_a_device_writes_into_it_never_replaces_it(tools: Tools, pulled: str, tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))  # a char device 1,3 of our own, never the real /dev/null
    result = tools.puller("save", "-o", str(null), pulled)
    assert result.code == 0, result.err
    st = os.lstat(null)
    assert (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_save_never_writes_through_a_planted_temp_symlink(tools: Tools, pulled: str, tmp_path: Path) -> None:
    """A symlink planted where the temp file would go (the old DEST.tmp-PID, planted by a child that then
    becomes the puller, so it knows the PID) is not followed: the file it points at keeps its bytes."""
    dest, sentinel = tmp_path / "out.tar", tmp_path / "sentinel"
    sentinel.write_bytes(b"precious\n")
    plant = ("import os, sys; os.symlink(sys.argv[1], sys.argv[2] + f'.tmp-{os.getpid()}'); "
             "os.execv(sys.executable, [sys.executable, '-m', 'puller', *sys.argv[3:]])")
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    proc = subprocess.run([sys.executable, "-c", plant, str(sentinel), str(dest), "--root", str(tools.root), "save",
                           "-o", str(dest), pulled], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sentinel.read_bytes() == b"precious\n"
    assert not dest.is_symlink() and member_json(dest, "manifest.json")[0]["RepoTags"]


def test_save_to_a_symlink_writes_its_target(tools: Tools, pulled: str, tmp_path: Path) -> None:
    """As `docker save -o LINK`: the link is followed (its target gets the archive), the link stays."""
    real, link = tmp_path / "real.tar", tmp_path / "link.tar"
    real.write_bytes(b"old\n")
    link.symlink_to(real.name)
    result = tools.puller("save", "-o", str(link), pulled)
    assert result.code == 0, result.err
    assert link.is_symlink() and os.readlink(link) == real.name
    assert member_json(real, "manifest.json")[0]["RepoTags"]
    assert sorted(p.name for p in tmp_path.iterdir() if p != tools.settings) == ["link.tar", "real.tar", "root"]


def _layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(layer: bytes, pad: int = 0) -> bytes:
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"pad": "x" * pad}},
                       "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()


def test_many_entries_naming_one_big_config_load_in_bounded_memory(tools: Tools, tmp_path: Path) -> None:
    """500 manifest.json entries naming one 4 MiB config (each through its own link to one layer, so they are
    500 images to read) once made `load` peak at 4.1 GB: each entry kept its own copy, parsed (8 MiB an entry).
    150 entries are enough to tell: kept copies would be 1.2 GB, four times the bound."""
    layer = _layer_tar({"hello.txt": b"hello\n"})
    config = _config(layer, (4 << 20) - 1024)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(_file("c.json"), config), (_file("l.tar"), layer)]
    entries = []
    for i in range(150):
        members.append((_link(f"l{i}.tar", "l.tar", tarfile.SYMTYPE), None))
        entries.append({"Config": "c.json", "RepoTags": [f"example.com/many:{i}"], "Layers": [f"l{i}.tar"]})
    members.append((_file("manifest.json"), json.dumps(entries).encode()))
    archive = _tar(tmp_path / "many.tar", members)
    peak, result = puller_measured(tools, "load", "-i", str(archive))
    assert result.code == 0, result.err
    assert peak < 300, f"load of 150 entries naming one 4 MiB config peaked at {peak} MiB"
    assert tools.puller("inspect", "example.com/many:149").code == 0

    entries.append({"Config": "c.json", "RepoTags": [], "Layers": ["l.tar"]})
    entries *= 7  # 1057
    too_many = _tar(tmp_path / "too-many.tar", [*members[:-1], (_file("manifest.json"), json.dumps(entries).encode())])
    one_line_error(tools.puller("load", "-i", str(too_many)), 1, "lists 1057 images, over the 1000", tool="puller")


def _raw_header(name: bytes, size: int, kind: bytes) -> bytes:
    """One ustar header block, by hand (tarfile would not write a lying size)."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108], h[108:116], h[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    h[124:136] = f"{size:011o}\0".encode()
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[257:265] = b"ustar\x0000"
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


@pytest.mark.parametrize("via", ["file", "stdin"])
@pytest.mark.parametrize("kind", [b"L", b"K", b"x", b"g"])
def test_huge_extended_tar_header_is_refused_unread(tools: Tools, tmp_path: Path, kind: bytes, via: str) -> None:
    """An 800 MB GNU longname/longlink or PAX header (sparse on disk) is refused from its size field: read
    whole, it made `load` use 843 MB."""
    archive = tmp_path / "long.tar"
    size = 800 << 20
    with open(archive, "wb") as f:
        f.write(_raw_header(b"././@LongLink", size, kind))
        f.truncate(512 + size + 512 * 3)
    if via == "file":
        peak, result = puller_measured(tools, "load", "-i", str(archive))
    else:
        with open(archive, "rb") as fin:
            env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
            cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "puller", "--root", str(tools.root), "load"]
            out = subprocess.run(cmd, stdin=fin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
                                 check=True).stdout
        rss, code, err = out.split("\n", 2)
        peak, result = int(rss) // 1024, Result(int(code), "", err)
    one_line_error(result, 1, "extended tar header", tool="puller")
    assert "over the 1048576-byte limit" in result.err
    assert peak < 200, f"peak {peak} MiB"
    assert list((tools.root / "tmp").iterdir()) == []


def test_killed_save_leaves_a_temp_the_next_save_removes(tools: Tools, tmp_path: Path) -> None:
    """kill -9 during `save -o` leaves .DEST.strata-tmp.PID.RANDOM; the next save into that directory removes
    it (its PID is gone), and keeps a live process's."""
    layer = _layer_tar({"big": os.urandom(1 << 20) * 256})  # 256 MiB: a write long enough to be caught at
    _tar(tmp_path / "big.tar", [(_file("c.json"), _config(layer)), (_file("l.tar"), layer),
                                (_file("manifest.json"), json.dumps([{"Config": "c.json", "RepoTags": ["big:1"],
                                                                      "Layers": ["l.tar"]}]).encode())])
    del layer
    assert tools.puller("load", "-i", str(tmp_path / "big.tar")).code == 0
    (tmp_path / "big.tar").unlink()
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    proc = subprocess.Popen([sys.executable, "-m", "puller", "--root", str(tools.root), "save", "-o",
                             str(out / "img.tar"), "big:1"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        temps: list[Path] = []
        while proc.poll() is None:
            temps = [p for p in out.glob(f".img.tar.strata-tmp.{proc.pid}.*") if p.stat().st_size > (16 << 20)]
            if temps:
                proc.kill()
                break
    finally:
        proc.kill()
        proc.wait()
    assert len(temps) == 1 and temps[0].exists(), "the save ended before it could be killed mid-write"
    assert not (out / "img.tar").exists()
    live = out / f".img.tar.strata-tmp.{os.getpid()}.{'0' * 16}"
    live.write_bytes(b"another save at work")
    result = tools.puller("save", "-o", str(out / "img.tar"), "big:1")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == [live.name, "img.tar"]
    assert member_json(out / "img.tar", "manifest.json")[0]["RepoTags"] == ["big:1"]


@pytest.mark.parametrize("kind", ["dev-zero", "gzip-of-zeros", "stdin-zero"])
def test_endless_or_zero_input_is_refused_at_once(tools: Tools, tmp_path: Path, kind: str) -> None:
    """`load -i /dev/zero` once spooled without end (485 MB and counting), a gzip bomb the same: input whose
    first block is not a tar header is refused at once, and nothing is left in tmp/."""
    if kind == "gzip-of-zeros":
        bomb = tmp_path / "zeros.tar.gz"
        with gzip.open(bomb, "wb", compresslevel=1) as f:
            for _ in range(256):
                f.write(bytes(1 << 20))
        result = tools.puller("load", "-i", str(bomb))
    elif kind == "dev-zero":
        result = tools.puller("load", "-i", "/dev/zero")
    else:
        result = puller_io(tools, "load", stdin=Path("/dev/zero"))
    one_line_error(result, 1, "is not a tar archive", tool="puller")
    assert list((tools.root / "tmp").iterdir()) == []


def test_spooling_stops_at_the_end_of_the_archive(tools: Tools, skopeo_archives: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """What follows the end-of-archive blocks (here: endless zeros) is not read: a pipe is spooled only as far
    as the tar's headers declare."""
    feeder = subprocess.Popen(f"cat {skopeo_archives['docker-archive']} /dev/zero", shell=True,
                              stdout=subprocess.PIPE)
    try:
        env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
        proc = subprocess.run([sys.executable, "-m", "puller", "--root", str(tools.root), "load"],
                              stdin=feeder.stdout, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    finally:
        feeder.kill()
        feeder.wait()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Loaded image: example.com/strata/da:1"]
    assert list((tools.root / "tmp").iterdir()) == []


def _copy_result(tools: Tools, src: str, dest: Path, stdin: int | None = None) -> Result:
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    proc = subprocess.run([sys.executable, "-m", "puller", "--root", str(tools.root), "copy", src, f"oci:{dest}"],
                          stdin=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("kind", ["oci-dir", "docker-dir", "stdin-pipe", "fifo", "gzip"])
def test_copy_from_an_archive_that_is_not_a_plain_file_is_one_line(tools: Tools, tmp_path: Path,
                                                                    skopeo_archives: dict[str, Path],
                                                                    kind: str) -> None:
    dest = tmp_path / "dest"
    if kind in ("oci-dir", "docker-dir"):
        transport = "oci-archive" if kind == "oci-dir" else "docker-archive"
        one_line_error(_copy_result(tools, f"{transport}:{tmp_path}", dest), 2, "is a directory", tool="puller")
    elif kind == "stdin-pipe":
        with subprocess.Popen(["cat", str(skopeo_archives["docker-archive"])], stdout=subprocess.PIPE) as feeder:
            assert feeder.stdout is not None
            result = _copy_result(tools, "docker-archive:/dev/stdin", dest, stdin=feeder.stdout.fileno())
            feeder.kill()
        one_line_error(result, 2, "is not a regular file", tool="puller")
    elif kind == "fifo":
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        one_line_error(_copy_result(tools, f"oci-archive:{fifo}", dest), 2, "is not a regular file", tool="puller")
    else:
        packed = tmp_path / "x.tar.gz"
        packed.write_bytes(gzip.compress(skopeo_archives["docker-archive"].read_bytes(), compresslevel=1))
        one_line_error(_copy_result(tools, f"docker-archive:{packed}", dest), 1,
                       "is gzip-compressed: an archive is read in place", tool="puller")
    assert not dest.exists() or listing_of(dest) == []


def listing_of(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*") if p.is_file() and p.name != "oci-layout"
                  and p.name != "index.json")


def test_next_write_into_a_layout_removes_killed_writers_temps(tools: Tools, pulled: str, tmp_path: Path) -> None:
    """A copy into oci:DIR killed midway leaves .tmp.PID.RANDOM files in DIR; the next copy into DIR removes
    those whose PID is gone and keeps a live writer's."""
    layout = tmp_path / "layout"
    assert tools.puller("copy", pulled, f"oci:{layout}").code == 0
    dead = layout / f".tmp.{dead_pid()}.{'a' * 16}"
    live = layout / f".tmp.{os.getpid()}.{'b' * 16}"
    dead.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    result = tools.puller("copy", pulled, f"oci:{layout}:again")
    assert result.code == 0, result.err
    assert not dead.exists() and live.exists()
