"""Unit tests: no root, no set-up (scripts/test unit runs them as nobody)."""

from __future__ import annotations

import os
import shutil
import sys


def fresh_python() -> str:
    """An interpreter for a test that needs a fresh process (what a command's imports bring in): ours, or, where
    nobody may run it (root's pyenv, as scripts/test unit runs these), the system's python3, which reads the same
    venv through PYTHONPATH as scripts/test does."""
    if os.access(sys.executable, os.X_OK):
        return sys.executable
    return shutil.which("python3") or sys.executable
