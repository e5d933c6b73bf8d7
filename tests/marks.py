"""The marks that say what a system test needs of the machine: root, the registry and image tools. A full run as
root after scripts/setup has all of them (conftest.py fails a full run in which any test skipped)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import pytest

from tests.tools import EXECUTORS

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod 0/0, trusted xattrs, namespaces)")
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("docker-registry", "umoci", "skopeo")),
                                 reason="needs docker-registry, umoci and skopeo (scripts/test installs them)")

# For a test of what the store and the CLI do once a container runs (lookups, usage errors): the executor changes
# nothing it checks, so it runs under ours only; the runtime driver's start, exec, kill, stop, logs and isolation
# keep their runc, crun and runner-oci variants (the ``executor`` fixture of conftest.py).
executor_independent = pytest.mark.parametrize("executor", ["strata"], indirect=True)

# A battery's attacks run as root under each executor and, the same code, as a user with subordinate ranges
# (conftest's ``who``, tests/rootless.py's UserTools) under ours: a user's runner refuses --runtime for now. The
# root variants keep their ids (strata, runc, crun, runner-oci); the user's is "user". ``also_as_user``: for a test
# of ours alone, with no executor.
as_root_and_user = pytest.mark.parametrize(("who", "executor"), [*(("root", e) for e in EXECUTORS), ("user", "strata")],
                                           indirect=True, ids=[*EXECUTORS, "user"])
also_as_user = pytest.mark.parametrize("who", ["root", "user"], indirect=True)


def as_root_and_user_over(argname: str, values: Sequence[str], user: Sequence[str]) -> pytest.MarkDecorator:
    """``as_root_and_user`` with one more parameter: each of VALUES as root under every executor, those of USER as
    a user too (the attacks that matter there, not every one)."""
    rows = [(v, "root", e) for v in values for e in EXECUTORS] + [(v, "user", "strata") for v in values if v in user]
    ids = [f"{v}-{e}" for v in values for e in EXECUTORS] + [f"{v}-user" for v in values if v in user]
    return pytest.mark.parametrize((argname, "who", "executor"), rows, indirect=["who", "executor"], ids=ids)
