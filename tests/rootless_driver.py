"""Run as a test's unprivileged user (tests/rootless.py): look at the user's store from inside the user's namespace.

    python3 -m tests.rootless_driver snapshot STORE IMAGE SCRATCH
        the image's diff dirs merged by overlayfs as the runner will mount them (``userxattr``), read-only, in a
        mount namespace of its own under SCRATCH; prints the tree (tests/treesnap.py) as JSON, as the namespace
        sees it: an image's owners are its own ids there.
    python3 -m tests.rootless_driver extract TAR DEST
        the store's unpacker on one tar, in the user's namespace, with the user store's format; prints JSON:
        {"left_out": [...]} or {"error": MESSAGE, "kind": KIND}.
    python3 -m tests.rootless_driver seccomp
        Docker's profile put in place as the runner does it (program, then install) in a child of a process in the
        user's namespace, and tests/test_seccomp.py's probe of what it refuses; prints the answers as JSON.
    python3 -m tests.rootless_driver fuzz EXAMPLES
        tests/test_unpack_fuzz.py's property on EXAMPLES random tars, in the user's namespace, with the user
        store's format and ids; prints its counts as JSON.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
from pathlib import Path

from shared import userns
from shared.errors import StrataError
from shared.layer.unpack import extract
from shared.layer.whiteout import USER_OVERLAY
from shared.store import images as stored
from shared.store.layout import Store
from tests.treesnap import snapshot

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE, MS_RDONLY = 0x4000, 1 << 18, 1


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def merged_snapshot(root: str, image: str, scratch: str) -> dict[str, list[object]]:
    userns.enter_once()
    store = Store(Path(root))
    found = stored.find(store, image)
    lowers = ":".join(str(store.diff_dir(c)) for c in reversed(found.chain_ids))
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    target = Path(scratch) / "merged"
    target.mkdir()
    options = f"lowerdir={lowers},{','.join(store.overlay.mount_options)}".encode()
    _check(libc.mount(b"overlay", str(target).encode(), b"overlay", MS_RDONLY, options), "mount overlay")
    tree = snapshot(target)
    return {path: [*node[:7], list(node.rdev) if node.rdev else None, [[k, v.hex()] for k, v in node.xattrs],
                   node.mtime_ns] for path, node in tree.items()}


def extract_tar(tar: str, dest: str) -> dict[str, object]:
    userns.enter_once()
    mapping = userns.entered()
    assert mapping is not None
    os.mkdir(dest, 0o755)
    try:
        with open(tar, "rb") as f:
            return {"left_out": list(extract(f, Path(dest), (), USER_OVERLAY, mapping.size))}
    except StrataError as e:
        return {"error": str(e), "kind": e.kind.name}


def seccomp_refusals() -> dict[str, int]:
    userns.enter_once()
    from runner.isolation import seccomp, seccomp_default, security
    from tests.test_seccomp import docker_refusals, in_child

    with tempfile.TemporaryDirectory() as cache:
        program = seccomp.program(seccomp_default.PROFILE, security.DOCKER_DEFAULT_CAPS, Path(cache))
    assert program is not None
    return in_child(seccomp_default.PROFILE, docker_refusals,
                    loader=lambda profile, caps: lambda: seccomp.install(program))


def fuzz(examples: str) -> dict[str, int]:
    userns.enter_once()
    mapping = userns.entered()
    assert mapping is not None
    from tests import test_unpack_fuzz

    test_unpack_fuzz.fuzz(int(examples), USER_OVERLAY, mapping.size, database=None)
    return test_unpack_fuzz.RUNS


def main() -> None:
    op, *args = sys.argv[1:]
    if op == "snapshot":
        print(json.dumps(merged_snapshot(*args)))
    elif op == "extract":
        print(json.dumps(extract_tar(*args)))
    elif op == "seccomp":
        print(json.dumps(seccomp_refusals()))
    elif op == "fuzz":
        print(json.dumps(fuzz(*args)))
    else:
        raise SystemExit(f"unknown op {op}")


if __name__ == "__main__":
    main()
