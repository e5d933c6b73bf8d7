"""``runner logs``: a container's json-file log read back as Docker's ``docker logs`` reads it, in bounded memory
whatever the log's size: the files are streamed in blocks (the rotated ones first, oldest first: ``.N`` ...
``.1``, then ``container.log``), never read whole; ``--tail N`` finds where the last N records start by reading
backwards from the end in blocks, then streams forward from there.

Docker's semantics: ``--tail`` is applied first, then ``--since`` (records before it are left out) and
``--until`` (reading stops at the first record after it); both take Docker's forms (an RFC 3339 date or time,
with or without a zone, a Unix time ``SECONDS[.NANOS]``, or a Go duration before now: ``10m``, ``1h30m``).
``-t`` puts each record's time in front of it, RFC 3339 with nine fraction digits. ``-f`` follows the log until
the container has exited (or ``--until`` has passed), across rotation: the file it reads is renamed to ``.1``
and a new ``container.log`` begins, which it opens by name once it has read the old one to its end.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runner.logs.writer import rotated
from shared.errors import integrity, usage

BLOCK = 1 << 16
MAX_RECORD = 8 << 20  # no record the writer makes comes near it (a 64 KiB chunk, escaped: ~400 KiB)
_GO_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}
# re.ASCII: \d would take any script's digits ("٣" is 3 to Python's int, not to Go's parsers)
_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
                        r"([zZ]|[+-]\d{2}:\d{2})?", re.ASCII)
_UNIX = re.compile(r"(\d+)(?:\.(\d+))?", re.ASCII)
_INT64 = (1 << 63) - 1  # Go's bound on a duration in ns and on a Unix time's parts (strconv.ParseInt(s, 10, 64))

@dataclass(frozen=True)
class ReadOptions:
    follow: bool = False
    timestamps: bool = False
    tail: int | None = None  # the last N records; None: all
    since: int | None = None  # ns since the epoch
    until: int | None = None


def parse_tail(text: str) -> int | None:
    """``--tail``: a number of records, or ``all`` (a negative number means all too, as Docker's)."""
    if text == "all":
        return None
    if re.fullmatch(r"-?[0-9]+", text) is None or len(text) > 19:  # not int()'s "٣", " 3", "1_0" or 5000 digits
        raise usage(f'invalid value for "tail": {text!r}: a number of lines, or all')
    n = int(text)
    return None if n < 0 else n


def parse_duration(text: str) -> int | None:
    """A Go duration (time.ParseDuration) in ns, or None when ``text`` is not one, as when it is out of Go's
    range (then Docker tries the other forms too). Integer arithmetic: a float of 400 digits is infinity."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    pos, total = 0, 0
    while pos < len(body):
        match = _DURATION.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            return None
        whole, _, frac = match.group(1).partition(".")
        if len(whole.lstrip("0")) > 19:
            return None
        unit, frac = _GO_UNITS[match.group(2)], frac[:19]  # digits past 1 ns in an hour do not count
        total += int(whole or "0") * unit + int(frac or "0") * unit // 10 ** len(frac)
        if total > _INT64 + (sign < 0):
            return None
        pos = match.end()
    return sign * total if body else None


def _seconds(parts: tuple[int, int, int, int, int, int], zone: str | None) -> int:
    """Seconds since the epoch of a date and time (ValueError: there is no such date). Without a zone it is
    local time, as Docker's ParseInLocation; where datetime cannot place a date in local time (year 1), the
    C library's offset for it."""
    naive = datetime.datetime(*parts)
    if zone is None:
        try:
            return int(naive.timestamp())
        except (ValueError, OverflowError, OSError):
            guess = calendar.timegm(parts)
            return guess - time.localtime(guess).tm_gmtoff
    offset = 0 if zone in "zZ" else (int(zone[1:3]) * 60 + int(zone[4:6])) * (-1 if zone[0] == "-" else 1)
    return calendar.timegm(parts) - offset * 60


def _date_parts(match: re.Match[str]) -> tuple[int, int, int, int, int, int]:
    year, month, day, hour, minute, second = match.groups()[:6]
    return int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)


def _fraction(digits: str | None) -> int:
    return int((digits or "0")[:9].ljust(9, "0"))


def parse_time(value: str, what: str, now_ns: int | None = None) -> int:
    """``--since``/``--until`` in ns since the epoch, from Docker's forms (timetypes.GetTimestamp): a duration
    is that long before now; a date or time without a zone is local time; else a Unix time. Whatever does not
    parse is a usage error naming the option and the value, with Docker's wording where it has one."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    duration = parse_duration(value)
    if duration is not None and value != "0":
        return now_ns - duration
    match = _DATE_TIME.fullmatch(value)
    if match is not None:
        try:
            return _seconds(_date_parts(match), match.group(8)) * 10**9 + _fraction(match.group(7))
        except (ValueError, OverflowError, OSError):
            raise usage(f'invalid value for "{what}": {value!r} is not a valid date or time') from None
    unix = _UNIX.fullmatch(value)
    if unix is None or "-" in value or any(len(part.lstrip("0")) > 19 or int(part) > _INT64
                                           for part in unix.groups("0")):
        raise usage(f'invalid value for "{what}": failed to parse value as time or duration: "{value}"')
    return int(unix.group(1)) * 10**9 + _fraction(unix.group(2))


_seconds_cache: dict[tuple[str | None, ...], int] = {}


def record_time(text: str) -> int:
    """A record's ``time`` (RFC 3339, any fraction and zone) in ns since the epoch (ValueError if it is not
    one); the seconds part is cached, as a log's records share their seconds by the thousand."""
    match = _DATE_TIME.fullmatch(text)
    if match is None or match.group(4) is None or match.group(8) is None:
        raise ValueError(f"bad time {text!r}")
    key = (*match.groups()[:6], match.group(8))
    seconds = _seconds_cache.get(key)
    if seconds is None:
        seconds = _seconds(_date_parts(match), match.group(8))
        if len(_seconds_cache) > 4096:
            _seconds_cache.clear()
        _seconds_cache[key] = seconds
    return seconds * 10**9 + _fraction(match.group(7))


def fixed_time(ns: int) -> str:
    """Docker's RFC3339NanoFixed, in UTC: 2006-01-02T15:04:05.000000000Z."""
    seconds, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


class _Done(Exception):
    """--until was passed: nothing after it is shown."""


class _Printer:
    """Complete records in, their text out to the stream each came from; buffered, flushed when the stream
    changes and whenever the reader waits."""

    def __init__(self, opts: ReadOptions, out: BinaryIO, err: BinaryIO) -> None:
        self.opts = opts
        self.targets = {"stdout": out, "stderr": err}
        self.last: BinaryIO | None = None
        self.timed = opts.timestamps or opts.since is not None or opts.until is not None

    def records(self, lines: list[bytes], where: str) -> None:
        for line in lines:
            try:
                record = json.loads(line)
                text, stream = record["log"], record.get("stream")
                if not isinstance(text, str):
                    raise TypeError("its log is not a string")
                stamp = record_time(record["time"]) if self.timed else 0
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError) as e:
                # RecursionError: a record nested deeper than the json module recurses
                raise integrity(f"container log {where} has a malformed record: {type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}") from None
            if self.opts.since is not None and stamp < self.opts.since:
                continue
            if self.opts.until is not None and stamp > self.opts.until:
                raise _Done
            target = self.targets["stderr" if stream == "stderr" else "stdout"]
            if target is not self.last and self.last is not None:
                self.last.flush()
            self.last = target
            if self.opts.timestamps:
                target.write(fixed_time(stamp).encode() + b" ")
            target.write(text.encode(errors="replace"))

    def flush(self) -> None:
        for target in self.targets.values():
            target.flush()


@dataclass
class _File:
    fd: int
    name: str
    pending: bytes = b""

    def read_records(self, offset: int | None, printer: _Printer) -> None:
        """From ``offset`` (None: where the last read stopped) to the end: each complete record to the printer;
        an incomplete last line is kept for the next read (the writer may be in the middle of it)."""
        if offset is not None:
            os.lseek(self.fd, offset, os.SEEK_SET)
            self.pending = b""
        while block := os.read(self.fd, BLOCK):
            data = self.pending + block
            cut = data.rfind(b"\n") + 1
            self.pending = data[cut:]
            if len(self.pending) > MAX_RECORD:
                raise integrity(f"container log {self.name} has a record longer than {MAX_RECORD} bytes")
            if cut:
                printer.records(data[:cut - 1].split(b"\n"), self.name)


def log_files(path: Path) -> list[_File]:
    """The log's files open, oldest first. Opened newest first and kept by inode, so a rotation meanwhile
    gives a file twice (skipped) rather than a gap."""
    files: list[_File] = []
    seen: set[tuple[int, int]] = set()
    n = 0
    while True:
        name = path if n == 0 else rotated(path, n)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if n == 0:
                n += 1
                continue
            break
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen:
            os.close(fd)
        else:
            seen.add((st.st_dev, st.st_ino))
            files.append(_File(fd, name.name))
        n += 1
    return files[::-1]


def _complete_end(fd: int) -> int:
    """Where the last complete record of the file being written ends."""
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - BLOCK)
        block = os.pread(fd, end - start, start)
        at = block.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def tail_start(fds: list[int], n: int) -> tuple[int, int]:
    """(file index, offset) where the last ``n`` records begin, read backwards in blocks: newlines counted from
    the end of the newest file's complete records, through the older files as needed."""
    if not fds:
        return 0, 0
    for i in range(len(fds) - 1, -1, -1):
        end = _complete_end(fds[i]) if i == len(fds) - 1 else os.fstat(fds[i]).st_size
        if n == 0:
            return i, end
        need = n + 1  # the record n from the end starts after the (n+1)-th newline from the end
        count, pos = 0, end
        while pos > 0:
            start = max(0, pos - BLOCK)
            block = os.pread(fds[i], pos - start, start)
            found = block.count(b"\n")
            if count + found >= need:
                at = len(block)
                for _ in range(need - count):
                    at = block.rfind(b"\n", 0, at)
                return i, start + at + 1
            count, pos = count + found, start
        n -= count
        if n <= 0:
            return i, 0
    return 0, 0


def _switched(path: Path, current: _File) -> list[_File] | None:
    """After a rotation (``path`` no longer names the file being read): the files newer than it, oldest first,
    found by its inode among the rotated names; all there are if it is gone (each is newer then). None when
    there was no rotation."""
    st = os.fstat(current.fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return None  # between the writer's rename and its new file: look again later
    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
        return None
    files = log_files(path)
    for k, f in enumerate(files):
        same = os.fstat(f.fd)
        if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino):
            for old in files[:k + 1]:
                os.close(old.fd)
            return files[k + 1:]
    return files


def show(path: Path, opts: ReadOptions, running: Callable[[], bool], out: BinaryIO, err: BinaryIO) -> None:
    """Print the log as the options ask; with ``follow``, until the container stops."""
    files = log_files(path)
    printer = _Printer(opts, out, err)
    try:
        index, offset = tail_start([f.fd for f in files], opts.tail) if opts.tail is not None else (0, 0)
        for k, f in enumerate(files[index:]):
            f.read_records(offset if k == 0 else 0, printer)
        if opts.follow and files:
            _follow(path, files, printer, running, opts)
    except _Done:
        pass
    finally:
        printer.flush()
        for f in files:
            with contextlib.suppress(OSError):
                os.close(f.fd)


def _follow(path: Path, files: list[_File], printer: _Printer, running: Callable[[], bool],
            opts: ReadOptions) -> None:
    """Keep reading the newest file; when it is rotated away, read it to its end and go on with the newer ones.
    ``files`` is updated in place, so that the caller closes what is open."""
    while True:
        stopped = not running() or (opts.until is not None and time.time_ns() > opts.until)
        newer = _switched(path, files[-1])  # asked before the read: the old file is complete once renamed
        files[-1].read_records(None, printer)
        if newer is not None:
            os.close(files[-1].fd)
            files[:] = newer
            for f in files:
                f.read_records(0, printer)
            continue
        if stopped:
            return
        printer.flush()
        time.sleep(0.1)
