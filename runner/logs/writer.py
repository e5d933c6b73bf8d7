"""A container's output, kept as Docker's json-file driver keeps it: one JSON object per line (a partial line
is a record too), in ``containers/ID/container.log``: {"log": TEXT, "stream": "stdout"|"stderr", "time": RFC 3339
with ns}, byte for byte Docker's layout.

The log is bounded: when ``container.log`` would pass ``max-size`` it is rotated, as Docker's json-file rotates it,
to ``container.log.1`` (``.1`` to ``.2``..., the oldest beyond ``max-file`` files in all deleted). The default is
Docker's ``local`` driver's bound (max-size=20m, max-file=5), not json-file's unbounded one: a container's output
must not fill the store's disk, and what the runner spends writing it (outside the container's CPU limit) stays
small: one record per line is unavoidable in this format, so records are encoded with the json module's C string
encoder, a whole chunk at a time, and written with one ``write`` per chunk read.

Foreground runs copy the output to the user's terminal too; detached runs only to the log. ``runner logs`` reads it
back (:mod:`runner.logs.reader`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from shared.errors import usage

CHUNK = 1 << 16
BATCH = 1 << 20  # what the pump reads at once, at most
BUSY = 0.01  # s: the pump's wait before reading a stream that keeps writing (the most output is delayed)
FIRST_AT_MOST = 0.02  # s: the longest pump(first=...) reads before it returns
LOG_NAME = "container.log"
DRIVERS = ("json-file", "local", "none")
OTHER_DOCKER_DRIVERS = ("syslog", "journald", "gelf", "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs",
                        "logentries")
DEFAULT_MAX_SIZE = "20m"  # Docker's local driver's defaults
DEFAULT_MAX_FILE = "5"
DOCKER_ONLY_OPTS = ("labels", "labels-regex", "env", "env-regex", "tag")  # json-file's, which we do not implement
_SIZE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?", re.ASCII)  # ASCII: int("٣") is 3
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


def parse_size(text: str) -> int:
    """``max-size`` as Docker reads it (go-units FromHumanSize: decimal units, 20m = 20,000,000 bytes)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise usage(f"invalid --log-opt max-size={text}: use a size such as 10k, 20m or 1g")
    try:  # "1.2.3" matches go-units' pattern and fails its ParseFloat; 400 digits are infinity
        size = int(float(match.group(1)) * _DECIMAL[(match.group(2) or "").lower()])
    except (ValueError, OverflowError):
        raise usage(f"invalid --log-opt max-size={text}: use a size such as 10k, 20m or 1g") from None
    if size > (1 << 63) - 1:
        raise usage(f"invalid --log-opt max-size={text}: too large")
    if size <= 0:
        raise usage(f"invalid --log-opt max-size={text}: max-size must be a positive number")
    return size


@dataclass(frozen=True)
class LogConfig:
    """``--log-driver`` and ``--log-opt``, as given (``opts``, which inspect shows) and as they apply."""

    driver: str = "json-file"
    opts: tuple[tuple[str, str], ...] = ()
    max_size: int = 20_000_000
    max_file: int = 5

    @classmethod
    def parse(cls, driver: str | None, opts: Sequence[str]) -> LogConfig:
        """Docker's rules, except that no setting is unbounded: json-file with ``max-size`` alone keeps one file
        (json-file's default); what is not given takes the ``local`` driver's defaults."""
        driver = driver or "json-file"
        if driver in OTHER_DOCKER_DRIVERS:
            raise usage(f"logging driver {driver!r} is not supported: use json-file, local or none")
        if driver not in DRIVERS:
            raise usage(f"logger: no log driver named {driver!r} is registered (json-file, local or none)")
        given: dict[str, str] = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep:
                raise usage(f"invalid --log-opt {opt!r}: use KEY=VALUE")
            given[key] = value
        return cls.of(driver, tuple(given.items()))

    @classmethod
    def of(cls, driver: str, opts: tuple[tuple[str, str], ...]) -> LogConfig:
        given = dict(opts)
        for key in given:
            if driver == "none" or key not in ("max-size", "max-file", "compress"):
                if key in DOCKER_ONLY_OPTS and driver != "none":
                    raise usage(f"log opt {key!r} of the {driver} log driver is not supported")
                raise usage(f"unknown log opt {key!r} for {driver} log driver")
        if given.get("compress", "false").lower() not in ("false", "0"):
            raise usage("log opt compress=true is not supported: rotated logs are kept uncompressed")
        max_size = parse_size(given.get("max-size", DEFAULT_MAX_SIZE))
        default_files = "1" if driver == "json-file" and "max-size" in given else DEFAULT_MAX_FILE
        files = given.get("max-file", default_files)
        if re.fullmatch(r"-?[0-9]{1,18}", files) is None:  # not int()'s "--5", "٣", " 3" or 5000 digits
            raise usage(f"invalid --log-opt max-file={files}: a whole number")
        if int(files) < 1:
            raise usage("max-file cannot be less than 1")
        return cls(driver, opts, max_size, int(files))

    def to_json(self) -> dict[str, Any]:
        """inspect's HostConfig.LogConfig."""
        return {"Type": self.driver, "Config": dict(self.opts)}

    @classmethod
    def from_json(cls, doc: Any) -> LogConfig:
        return cls.of(str(doc["Type"]), tuple((str(k), str(v)) for k, v in doc["Config"].items()))


_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """RFC 3339 with nine fraction digits, UTC; the date and time formatted once a second (datetime's
    strftime per call cost more than encoding a short record)."""
    global _second
    seconds, ns = divmod(time.time_ns(), 10**9)
    if seconds != _second[0]:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{ns:09d}Z"


def records(stream: str, text: str) -> str:
    """The text's records, one a line (the last one without its newline if the text does not end with one). A
    text without a backslash is encoded in one call, its encoded newlines then replaced by the end of a record
    and the start of the next: without a backslash, every ``\\n`` in the encoding is a newline of the text.
    With one, each line is encoded on its own."""
    tail = f',"stream":"{stream}","time":"{_now()}"}}\n'
    body, newline, last = text.rpartition("\n")
    out = ""
    if newline and "\\" not in body:
        between = '\\n"' + tail + '{"log":"'
        out = '{"log":"' + encode_basestring_ascii(body)[1:-1].replace("\\n", between) + '\\n"' + tail
    elif newline:
        lines = map(encode_basestring_ascii, map("{}\n".format, body.split("\n")))
        out = '{"log":' + (tail + '{"log":').join(lines) + tail
    if last:
        out += '{"log":' + encode_basestring_ascii(last) + tail
    return out


def rotated(path: Path, n: int) -> Path:
    """Docker's json-file names: ``container.log.1`` is the newest rotated file."""
    return path.with_name(f"{path.name}.{n}")


class LogWriter:
    """Appends records to the log and rotates it at ``max-size``. The driver ``none`` writes nothing."""

    def __init__(self, path: Path, config: LogConfig | None = None) -> None:
        self.path = path
        self.config = config or LogConfig()
        self.fd = -1
        if self.config.driver != "none":
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes) -> None:
        """One record per line, as Docker's json-file driver writes them (a partial line is a record too)."""
        if self.fd < 0 or not data:
            return
        start = 0
        while start < len(data):  # in slices: a MiB of newlines is 70 MB of records
            end = _slice_end(data, start)
            self._append(records(stream, data[start:end].decode(errors="replace")).encode())
            start = end

    def _append(self, records: bytes) -> None:
        """Write whole records, rotating first whenever the next ones would pass max-size (a single record
        larger than max-size gets a file of its own, as Docker's)."""
        start, end = 0, len(records)
        while start < end:
            room = self.config.max_size - self.size
            cut = end if end - start <= room else records.rfind(b"\n", start, start + max(room, 0)) + 1
            if cut <= start:
                if self.size > 0:
                    self._rotate()
                    continue
                cut = records.find(b"\n", start) + 1 or end
            _write_all(self.fd, memoryview(records)[start:cut])
            self.size += cut - start
            start = cut

    def _rotate(self) -> None:
        """Docker's order: the oldest goes, each ``.N`` becomes ``.N+1``, the log becomes ``.1``, a new log is
        opened. Renames, so a reader following the log keeps the file it has open and finds the next by name."""
        keep = self.config.max_file - 1  # rotated files kept
        if keep:
            rotated(self.path, keep).unlink(missing_ok=True)
            for n in range(keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(rotated(self.path, n), rotated(self.path, n + 1))
            os.rename(self.path, rotated(self.path, 1))
        else:
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _slice_end(data: bytes, start: int) -> int:
    """Where the slice of ``data`` from ``start`` that the writer encodes at once ends: after its last newline,
    else at CHUNK bytes but not inside a UTF-8 sequence."""
    end = start + CHUNK
    if end >= len(data):
        return len(data)
    cut = data.rfind(b"\n", start, end) + 1
    if cut > start:
        return cut
    while end > start + 1 and data[end] & 0xC0 == 0x80:
        end -= 1
    return end


def pump(streams: dict[int, str], log: LogWriter | None, echo: bool, first: float | None = None) -> bool:
    """Copy the container's stdout/stderr pipes to the log, if any (and, when ``echo``, to ours) until both
    close: which happens only when every process holding them is gone.

    What the runner spends here is outside the container's CPU limit, and it is paid per wakeup (select, read,
    a time stamp, a write) as much as per byte: a stream that keeps writing is read in batches (:class:`Pacer`),
    from a pipe widened to hold what comes meanwhile. Each stream is read as soon as it is ready otherwise, so
    that what a command writes to both in turns comes out in the order written, unless the two writes came
    closer together than the runner wakes (two pipes carry no order between them: docs/commands.md).

    With ``first`` (seconds), only the command's first moments: return as soon as nothing came for ``first``,
    or after FIRST_AT_MOST (the streams then stay open, for the next call), reading each stream as soon as it
    is ready, without batching. Whether any stream is still open."""
    targets = {"stdout": sys.stdout.fileno(), "stderr": sys.stderr.fileno()}
    open_fds = dict(streams)
    for fd in open_fds:
        with contextlib.suppress(OSError):  # not a pipe, or above the limit for an unprivileged runner
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, BATCH)
    pacer = Pacer()
    end = time.monotonic() + FIRST_AT_MOST
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], first)
        if first is not None and (not ready or time.monotonic() > end):
            return True
        got: set[str] = set()
        for fd in ready:
            data = os.read(fd, BATCH)
            if not data:
                del open_fds[fd]
                continue
            stream = open_fds[fd]
            got.add(stream)
            if log is not None:
                log.write(stream, data)
            if echo:
                try:
                    _write_all(targets[stream], data)
                except OSError:  # our terminal went away: keep logging, stop echoing
                    echo = False
        if first is None:
            pacer.wait(got, bool(open_fds))
    return False


class Pacer:
    """When to read a stream that keeps writing in batches: by waiting BUSY after a read that came within BUSY of
    the same stream's last one (so a prompt after a pause is shown at once, and nothing waits longer than BUSY),
    but only while no other stream wrote for BUSY: batching two streams that take turns would put one's batch
    before the other's, out of the order written. Only reads that got data count: the end of the streams (a
    command that exits, its pipes closing one wakeup apart) is never waited for."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def wait(self, got: set[str], still_open: bool) -> None:
        """After a wakeup that read ``got`` (the streams that had data)."""
        if not got:
            return
        now = time.monotonic()
        if len(got) == 1 and still_open:
            (stream,) = got
            alone = all(now - at >= BUSY for other, at in self.last.items() if other != stream)
            if alone and now - self.last.get(stream, -BUSY) < BUSY:
                time.sleep(BUSY)
                now = time.monotonic()
        for stream in got:
            self.last[stream] = now


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

    import threading  # -i only

    threading.Thread(target=copy, name="stdin", daemon=True).start()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
