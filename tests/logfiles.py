"""Container log files as the tests look at them and make them (tests/test_logs.py, tests/unit/test_log_files.py)."""

from __future__ import annotations

import json
from pathlib import Path

from runner.logs.reader import fixed_time


def files_of(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(d.iterdir())}


def record(text: str, ns: int, stream: str = "stdout") -> bytes:
    return json.dumps({"log": text, "stream": stream, "time": fixed_time(ns)}, separators=(",", ":")).encode() + b"\n"
