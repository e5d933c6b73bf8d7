"""``runner bundle IMAGE DIR [run options]``: a standalone OCI bundle for users who run elsewhere, which
``runc run`` and ``crun run`` accept as it is.

DIR gets ``config.json`` and ``rootfs/``, the container's tree flattened (the -init layer's placeholders and the
image's layers, as the overlay shows them; a copy, so the bundle owes nothing to the store), plus the
container's ``hosts``, ``hostname`` and ``resolv.conf`` (bind-mounted by absolute path, as runc needs for a bind
source) and, with --init, a copy of tini. The config is the one ``--runtime`` would give the runtime: the spec with
the user resolved from the image's /etc/passwd, Docker's device rules, no ``cgroupsPath`` (the runtime's default)
and ``root.path`` = ``rootfs``; but with the network files and every ``-v`` volume in its mounts: no runner binds
them before the runtime runs it (the root copied is the overlay alone, nothing bound on it). The container made to
build it is removed again; nothing stays in the store. Its network is ``none`` (the default, whatever the
settings say) or ``host``, with ``--dns`` and ``--add-host`` in the files it carries; the network options that
need a runner at start are refused by name (:func:`honoured`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from runner import linux
from runner.container import network
from runner.container.create import create
from runner.container.options import RunOptions
from runner.container.release import remove
from runner.executor import runtime
from runner.spec import NETWORK_FILES, TINI
from shared.errors import Kind, StrataError, usage
from shared.store.files import write_json
from shared.store.layout import Store


def bundle(store: Store, opts: RunOptions, directory: str,
           missing: Callable[[StrataError], None] | None = None) -> Path:
    """``missing``: what to do when the store lacks the image (:func:`~runner.container.create.create`)."""
    if opts.userns not in (None, "", "host"):
        raise usage("runner bundle writes no user namespace of its own: leave out --userns")
    opts = replace(honoured(opts), runtime="strata")  # our executor builds it; its runtime runs it elsewhere
    target = Path(directory).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise usage(f"{target} exists and is not an empty directory")
    container = create(store, opts, missing)
    try:
        # the overlay is mounted in a mount namespace of this process's own: a user's process may mount nothing
        # in the host's, and root's mounts vanish with it however it ends
        runtime.own_mount_namespace()
        merged = runtime.mount_rootfs(container.spec)
        doc = runtime.runtime_config(container.spec, merged)
        target.mkdir(parents=True, exist_ok=True)
        copied = subprocess.run(["cp", "-a", "--", f"{merged}/.", str(target / "rootfs")], capture_output=True,
                                text=True, check=False)  # fmt: skip
        if copied.returncode != 0:
            raise StrataError(f"cannot copy the root into {target}: {runtime.one_line(copied.stderr)}", Kind.SYSTEM)
        network.setup(container)  # none or host: no namespace, only the files a start writes (--dns, --add-host)
        for name in NETWORK_FILES:
            shutil.copyfile(container.path(name), target / name)
        if container.spec.init:
            shutil.copy2(TINI, target / "tini")
        _standalone(doc, target)
        write_json(target / "config.json", doc)
    finally:
        if os.path.ismount(container.path("merged")):
            linux.umount2(str(container.path("merged")), linux.MNT_DETACH)
        remove(container, force=True)
    return target


def honoured(opts: RunOptions) -> RunOptions:
    """The network options a bundle can keep: ``--network none`` (its own namespace, with lo: the default, not
    the settings file's) or ``host`` (none of its own), and ``--dns`` and ``--add-host``, which are the files it
    carries. The rest need a runner at start (a bridge, a published port, an address on a network) and are refused
    by name: the runtime that runs the bundle makes its namespaces, and nothing of ours is there."""
    network = opts.network or "none"
    if network not in ("none", "host"):
        raise usage(f"runner bundle cannot honour --network {network}: a bundle's runtime makes its network "
                    "(none: its own namespace with lo; host: the host's); use --network none or host")
    for flag, given in (("--publish", opts.publish), ("--publish-all", opts.publish_all), ("--ip", opts.ip),
                        ("--mac-address", opts.mac), ("--network-alias", opts.aliases)):
        if given:
            raise usage(f"runner bundle cannot honour {flag}: a bundle's runtime makes its network, with no "
                        "runner to publish ports or give addresses")
    return replace(opts, network=network)


def _standalone(doc: dict[str, Any], target: Path) -> None:
    """What names the store in the runtime's config names the bundle instead."""
    doc["root"]["path"] = "rootfs"
    doc["linux"].pop("cgroupsPath", None)
    for mount in doc["mounts"]:
        source = mount["source"]
        if mount["type"] == "bind" and os.path.basename(source) in NETWORK_FILES and \
                mount["destination"] == f"/etc/{os.path.basename(source)}":
            mount["source"] = str(target / os.path.basename(source))
        elif mount["type"] == "bind" and source == TINI:
            mount["source"] = str(target / "tini")
    doc["annotations"].pop("io.strata.runtime", None)
