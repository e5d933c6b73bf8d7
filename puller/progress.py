"""What a pull shows: per-layer bars on a terminal, one plain line per state change elsewhere, or nothing."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from shared.digest import Digest
from shared.format import human_size

STATES = ("waiting", "downloading", "verifying", "downloaded", "unpacking", "done", "already exists")


class Progress:
    """Plain lines: what a log or a pipe wants (no byte counters, no control characters).

    Both kinds count a layer's rate from its first ``downloading`` report, or from the first after a
    ``resuming`` one: the bytes an earlier pull left on disk are not new, and counting them would show a resumed
    download many times faster than the network is."""

    def __init__(self, out: TextIO = sys.stdout, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self._lock = threading.Lock()
        self._since: dict[Digest, tuple[float, int]] = {}  # a layer's first count: when, and how many bytes then
        self._latest: dict[Digest, tuple[float, int]] = {}  # its latest count
        self._kept: dict[Digest, int] = {}  # bytes a resumed download found on disk

    def message(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def layer(self, digest: Digest, state: str, done: int = 0, total: int = 0) -> None:
        if state == "downloading":
            self._count(digest, done)
        elif state != "waiting" and not (state == "unpacking" and done):  # (a count: the state is said already)
            self.message(f"{digest.short}: {self.words(digest, state, done, total)}")

    def _count(self, digest: Digest, done: int) -> float:
        """Note DONE bytes of DIGEST now; the rate of the new bytes so far (bytes a second)."""
        now = self.clock()
        start, base = self._since.setdefault(digest, (now, done))
        if done < base:  # the registry would not resume: the download started over
            self._since[digest] = start, base = now, done
            self._kept.pop(digest, None)
        self._latest[digest] = (now, done)
        return (done - base) / max(now - start, 1e-3)

    def words(self, digest: Digest, state: str, done: int, total: int) -> str:
        """A state as a row or a line says it (the resumed download's own words)."""
        if state == "resuming":
            self._since.pop(digest, None)  # the rate counts from the first new byte
            self._kept[digest] = done
            return f"resuming from {human_size(done)} of {human_size(total)}"
        kept = self._kept.get(digest)
        if state == "download complete" and kept is not None and digest in self._since:
            (start, base), (end, last) = self._since[digest], self._latest[digest]
            rate = (last - base) / max(end - start, 1e-3)
            return (f"download complete (resumed: {human_size(last - kept)} new at {human_size(rate)}/s, "
                    f"{human_size(kept)} from before)")
        return state

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

    def __init__(self, out: TextIO = sys.stdout, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(out, clock)
        self.rows: dict[Digest, str] = {}
        self.drawn = 0
        self.last = 0.0

    def message(self, text: str) -> None:
        with self._lock:
            self._erase()
            print(text, file=self.out)
            self._draw()

    def layer(self, digest: Digest, state: str, done: int = 0, total: int = 0) -> None:
        """A row's new state; a byte count (``downloading``, ``unpacking`` from a worker's count of what it
        consumed) redraws at most ten times a second, unless it is the last."""
        with self._lock:
            if total and (state == "downloading" or (state == "unpacking" and done)):
                filled = min(int(self.WIDTH * done / total), self.WIDTH)
                bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * (self.WIDTH - filled - 1)
                text = f"{state} [{bar}] {human_size(done)}/{human_size(total)}"
                rate = self._count(digest, done) if state == "downloading" else 0
                if rate:  # (none before the first new byte)
                    text += f" {human_size(rate)}/s"
                if self.clock() - self.last < 0.1 and digest in self.rows and done < total:
                    self.rows[digest] = text
                    return
            elif state == "downloading":
                self._count(digest, done)
                text = state
            else:
                text = self.words(digest, state, done, total)
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
        self.last = self.clock()
        self.out.flush()


def for_output(quiet: bool, out: TextIO = sys.stdout) -> Progress:
    if quiet:
        return Quiet(out)
    return Bars(out) if out.isatty() else Progress(out)
