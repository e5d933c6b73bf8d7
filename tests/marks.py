"""The marks that say what a system test needs of the machine: root, the registry and image tools. A full run as
root after scripts/setup has all of them (conftest.py fails a full run in which any test skipped)."""

from __future__ import annotations

import os
import shutil

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod 0/0, trusted xattrs, namespaces)")
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("docker-registry", "umoci", "skopeo")),
                                 reason="needs docker-registry, umoci and skopeo (scripts/test installs them)")

# For a test of what the store and the CLI do once a container runs (lookups, usage errors): the executor changes
# nothing it checks, so it runs under ours only; the runtime driver's start, exec, kill, stop, logs and isolation
# keep their runc and crun variants (the ``executor`` fixture of conftest.py).
executor_independent = pytest.mark.parametrize("executor", ["strata"], indirect=True)
