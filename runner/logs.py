"""A container's output, kept as Docker's json-file driver keeps it: one JSON object per chunk, in
``containers/ID/container.log``: {"log": TEXT, "stream": "stdout"|"stderr", "time": RFC 3339 with ns}.

Foreground runs copy the output to the user's terminal too; detached runs only to the log. ``runner logs``
reads it back, and ``-f`` follows it until the container has exited.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

CHUNK = 1 << 16
LOG_NAME = "container.log"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class LogWriter:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, stream: str, data: bytes) -> None:
        """One record per line, as Docker's json-file driver writes them (a partial line is a record too)."""
        now = _now()
        records = b"".join(json.dumps({"log": line.decode(errors="replace"), "stream": stream, "time": now})
                           .encode() + b"\n" for line in data.splitlines(keepends=True))
        os.write(self.fd, records)

    def close(self) -> None:
        os.close(self.fd)


def pump(streams: dict[int, str], log: LogWriter | None, echo: bool) -> None:
    """Copy the container's stdout/stderr pipes to the log, if any (and, when ``echo``, to ours) until both
    close: which happens only when every process holding them is gone."""
    targets = {"stdout": sys.stdout.fileno(), "stderr": sys.stderr.fileno()}
    open_fds = dict(streams)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [])
        for fd in ready:
            data = os.read(fd, CHUNK)
            if not data:
                del open_fds[fd]
                continue
            stream = open_fds[fd]
            if log is not None:
                log.write(stream, data)
            if echo:
                try:
                    _write_all(targets[stream], data)
                except OSError:  # our terminal went away: keep logging, stop echoing
                    echo = False


def feed(src: int, dst: int) -> None:
    """Copy ``src`` (our stdin) to ``dst`` (the container's stdin pipe) in a thread of its own, so that a
    container which does not read its input never stalls its output; close ``dst`` at end of input."""
    def copy() -> None:
        try:
            while data := os.read(src, CHUNK):
                _write_all(dst, data)
        except OSError:  # the container closed its end, or our stdin went away: nothing more to give
            pass
        finally:
            os.close(dst)

    threading.Thread(target=copy, name="stdin", daemon=True).start()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def show(path: Path, follow: bool, running: Callable[[], bool], out: TextIO = sys.stdout,
         err: TextIO = sys.stderr, timestamps: bool = False) -> None:
    """Print the log, each chunk to the stream it came from; with ``follow``, until the container stops."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - read incrementally while following
    except FileNotFoundError:
        return
    with f:
        while True:
            stopped = not follow or not running()  # asked before reading: nothing is written after it stops
            for line in f.readlines():
                if not line.endswith(b"\n"):
                    f.seek(-len(line), os.SEEK_CUR)  # still being written: read it whole next time
                    break
                record = json.loads(line)
                target = err if record.get("stream") == "stderr" else out
                target.write((record["time"] + " " if timestamps else "") + record["log"])
                target.flush()
            if stopped:
                return
            time.sleep(0.1)
