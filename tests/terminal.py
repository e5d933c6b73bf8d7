"""The user's side of a pseudo-terminal, for the tests that drive ``-it`` sessions and progress bars as a user's
terminal would."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable

from tests.tools import ROOT


class Terminal:
    """The user's side of a pty: reads what the runner shows, answers cursor queries, types lines."""

    def __init__(self, argv: list[str], rows: int = 33, cols: int = 101, env: dict[str, str] | None = None,
                 hand_over: Callable[[int], None] | None = None) -> None:
        """ARGV on a new pty of the test's, in ENV (else ours); HAND_OVER, if given, makes the pty its user's own
        first (a user's terminal is the user's: tests/tools.py's ``Tools.hand_over``)."""
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if hand_over is not None:
            hand_over(slave)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     cwd=ROOT, env=env)
        os.close(slave)
        self.seen = b""

    def read_until(self, marker: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            assert time.monotonic() < deadline, f"no {marker!r} in {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                break
            if b"\x1b[6n" in data:  # busybox's line editor asks where the cursor is
                os.write(self.master, b"\x1b[1;1R")
            self.seen += data
        return self.seen

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)
