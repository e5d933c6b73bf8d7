"""scripts/registry and scripts/build-test-image, loaded as modules (the fixtures call their functions), and the
session registry they start."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests import registries
from tests.tools import ROOT

SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/ files have no .py suffix; load them as modules to call their functions directly."""
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(SCRIPTS / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while the class is made
    loader.exec_module(module)
    return module


registry_script = load_script("registry")
image_script = load_script("build-test-image")


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    state_dir: Path

    def blob_file(self, digest: str) -> Path:
        return registries.blob_file(self.state_dir, digest)


def start_registry(state_dir: Path) -> Registry:
    return Registry(registry_script.start(state_dir), state_dir)
