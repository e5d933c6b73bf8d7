"""Shared fixtures: a real registry (Debian's docker-registry) on 127.0.0.1, images built by umoci and pushed by
skopeo, a fresh store root per test, and the two CLIs run as a user runs them (subprocesses)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/ files have no .py suffix; load them as modules to call their functions directly."""
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(SCRIPTS / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


registry_script = load_script("registry")
image_script = load_script("build-test-image")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod 0/0, trusted xattrs, namespaces)")
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("docker-registry", "umoci", "skopeo")),
                                 reason="needs docker-registry, umoci and skopeo (scripts/test installs them)")


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    state_dir: Path

    @property
    def data(self) -> Path:
        return self.state_dir / "data" / "docker" / "registry" / "v2"

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return self.data / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


def start_registry(state_dir: Path) -> Registry:
    return Registry(registry_script.start(state_dir), state_dir)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    state = tmp_path_factory.mktemp("registry")
    reg = start_registry(state)
    try:
        yield reg
    finally:
        registry_script.stop(state)


@pytest.fixture(scope="session")
def test_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-layer busybox image of scripts/build-test-image, as an OCI layout (built once per session)."""
    layout = tmp_path_factory.mktemp("image") / "layout"
    image_script.build(layout)
    return layout


@pytest.fixture(scope="session")
def test_image(registry: Registry, test_layout: Path) -> str:
    ref = f"{registry.address}/strata/test:1"
    image_script.push(test_layout, ref)
    return ref


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Tools:
    """The CLIs against one store root, run as subprocesses exactly as a user would."""

    root: Path

    def _run(self, tool: str, args: tuple[str, ...], stdin: str | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run([sys.executable, "-m", tool, "--root", str(self.root), *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def puller(self, *args: str) -> Result:
        return self._run("puller", args)

    def runner(self, *args: str, stdin: str | None = None) -> Result:
        return self._run("runner", args, stdin)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[Tools]:
    root = tmp_path / "root"
    yield Tools(root)
    # whatever a test did, it must not leave mounts behind
    assert mounts_under(root) == []
