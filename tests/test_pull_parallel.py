"""A pull unpacks each layer as its bytes arrive, side by side with the others (shared/layer/parallel.py), and
commits each in order once its blob is verified, its diff_id matched and the layers below it are in.

Images made here from hand-written layers (tests/tarmaker.py), pushed with skopeo: a layer unpacked while the
layer below it is held up mid-download; a layer that links into a lower one (unpacked again the ordinary way,
after it); a hostile layer above a good one (the same one-line refusal as ever, nothing left behind).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from tests.faults import FaultProxy, stall
from tests.marks import needs_root, needs_tools
from tests.scripts import Registry, image_script
from tests.tarmaker import Entry, make_tar
from tests.tools import Tools, one_line_error

pytestmark = [needs_root, needs_tools]

TAG = "test"


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_image(layout: Path, *layers: bytes) -> list[str]:
    """An OCI layout holding one image of these uncompressed layer tars (gzip'd), tagged TAG; its blobs' digests."""
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    blobs = [_blob(layout, gzip.compress(tar, 1)) for tar in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in layers]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **_blob(layout, json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **b} for b in blobs]}
    top = _blob(layout, json.dumps(manifest).encode())
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifest["mediaType"], **top, "annotations": {"org.opencontainers.image.ref.name": TAG}}]}))
    return [str(b["digest"]) for b in blobs]


def test_a_layer_is_unpacked_while_the_one_below_still_downloads(tools: Tools, fault_proxy: FaultProxy,
                                                                 tmp_path: Path) -> None:
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(40_000))  # 1.3 MB, incompressible
    base = make_tar(Entry("data/", "dir", mode=0o750, uid=7, mtime=5), Entry("data/noise", data=noise))
    upper = make_tar(*(Entry(f"data/docs/{n}.txt", data=b"doc %d" % n) for n in range(50)))
    digests = make_image(tmp_path / "layout", base, upper)
    ref = f"{fault_proxy.address}/parallel/stalled:1"
    image_script.push(tmp_path / "layout", ref.replace(fault_proxy.address, fault_proxy.upstream), tag=TAG)
    fault_proxy.add(stall("/blobs/" + digests[0], at=0.5, seconds=4))

    seen: list[bool] = []

    def watch() -> None:  # the upper layer's files in tmp/, while the base is held up
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            if any((tools.root / "tmp").glob("*.layer/diff/data/docs/49.txt")):
                seen.append(not any((tools.root / "layers").iterdir()))  # (and nothing committed yet)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = tools.puller("pull", ref)
    watcher.join()
    assert result.code == 0, result.err
    assert seen == [True]
    assert tools.puller("fsck").code == 0
    assert list((tools.root / "tmp").iterdir()) == []
    upper_dir = next(p for p in (tools.root / "layers").iterdir() if (p / "diff/data/docs").is_dir()) / "diff"
    st = os.stat(upper_dir / "data")  # made as a parent while the base was not in: the base's metadata since
    assert (st.st_mode & 0o777, st.st_uid, st.st_mtime) == (0o750, 7, 5)
    assert (upper_dir / "data/docs/7.txt").read_bytes() == b"doc 7"


def test_a_layer_linking_into_a_lower_is_unpacked_after_it(tools: Tools, registry: Registry, tmp_path: Path) -> None:
    base = make_tar(Entry("lib/", "dir"), Entry("lib/a.so", data=b"ELF", mode=0o750, uid=7, mtime=99))
    upper = make_tar(Entry("lib/b.so", "hardlink", link="lib/a.so"), Entry("lib/c.so", "hardlink", link="lib/b.so"))
    make_image(tmp_path / "layout", base, upper)
    ref = f"{registry.address}/parallel/linked:1"
    image_script.push(tmp_path / "layout", ref, tag=TAG)
    result = tools.puller("pull", ref)
    assert result.code == 0, result.err
    upper_dir = next(p for p in (tools.root / "layers").iterdir() if (p / "diff/lib/b.so").exists()) / "diff/lib"
    st = os.stat(upper_dir / "b.so")
    assert (upper_dir / "b.so").read_bytes() == b"ELF" and (st.st_mode & 0o777, st.st_uid, st.st_mtime) == (0o750,
                                                                                                          7, 99)
    assert os.stat(upper_dir / "c.so").st_ino == st.st_ino
    assert tools.puller("fsck").code == 0 and list((tools.root / "tmp").iterdir()) == []


def test_a_hostile_layer_above_a_good_one_is_refused_as_ever(tools: Tools, registry: Registry,
                                                             tmp_path: Path) -> None:
    base = make_tar(Entry("etc/", "dir"), Entry("etc/passwd", data=b"root"))
    hostile = make_tar(Entry("../escaped", data=b"x"))
    digests = make_image(tmp_path / "layout", base, hostile)
    ref = f"{registry.address}/parallel/hostile:1"
    image_script.push(tmp_path / "layout", ref, tag=TAG)
    result = tools.puller("pull", ref)
    one_line_error(result, 1, f"layer 2 ({digests[1]}): refusing path '../escaped': it contains '..'", "puller")
    assert json.loads((tools.root / "index.json").read_text())["manifests"] == []
    assert list((tools.root / "layers").iterdir()) == [] and list((tools.root / "tmp").iterdir()) == []
    assert not (tools.root.parent / "escaped").exists()
