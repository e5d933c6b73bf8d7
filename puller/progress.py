"""What a pull shows: per-layer bars on a terminal, one plain line per state change elsewhere, or nothing."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from shared.digest import Digest
from shared.format import human_size

STATES = ("waiting", "downloading", "verifying", "downloaded", "unpacking", "done", "already exists")


class Progress:
    """Plain lines: what a log or a pipe wants (no byte counters, no control characters)."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self._lock = threading.Lock()

    def message(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def layer(self, digest: Digest, state: str, done: int = 0, total: int = 0) -> None:
        if state not in ("downloading", "waiting"):
            self.message(f"{digest.short}: {state}")

    def close(self) -> None:
        pass


class Quiet(Progress):
    def message(self, text: str) -> None:
        pass

    def layer(self, digest: Digest, state: str, done: int = 0, total: int = 0) -> None:
        pass


class Bars(Progress):
    """One row per layer, redrawn in place (at most ten times a second): bytes, speed, then the state.

    Messages while the rows are live go above them (the rows are erased, the line printed, the rows drawn again
    below it); once :meth:`close` has drawn the rows a last time they stay where they are and later messages
    follow them, so the screen ends as Docker's does: the layers, then Digest, Status and the reference."""

    WIDTH = 30

    def __init__(self, out: TextIO = sys.stdout) -> None:
        super().__init__(out)
        self.rows: dict[Digest, str] = {}
        self.started: dict[Digest, float] = {}
        self.drawn = 0
        self.last = 0.0

    def message(self, text: str) -> None:
        with self._lock:
            self._erase()
            print(text, file=self.out)
            self._draw()

    def layer(self, digest: Digest, state: str, done: int = 0, total: int = 0) -> None:
        with self._lock:
            if state == "downloading" and total:
                start = self.started.setdefault(digest, time.monotonic())
                filled = int(self.WIDTH * done / total)
                speed = done / max(time.monotonic() - start, 1e-3)
                bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * (self.WIDTH - filled - 1)
                text = f"downloading [{bar}] {human_size(done)}/{human_size(total)} {human_size(speed)}/s"
                if time.monotonic() - self.last < 0.1 and digest in self.rows and done < total:
                    self.rows[digest] = text
                    return
            else:
                text = state
            self.rows[digest] = text
            self._erase()
            self._draw()

    def close(self) -> None:
        """Draw the rows' last states and leave them in place."""
        with self._lock:
            if self.rows:
                self._erase()
                self._draw()
            self.rows = {}
            self.drawn = 0

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")

    def _draw(self) -> None:
        for digest, text in self.rows.items():
            self.out.write(f"{digest.short}: {text}\n")
        self.drawn = len(self.rows)
        self.last = time.monotonic()
        self.out.flush()


def for_output(quiet: bool, out: TextIO = sys.stdout) -> Progress:
    if quiet:
        return Quiet(out)
    return Bars(out) if out.isatty() else Progress(out)
