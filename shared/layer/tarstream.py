"""A layer's uncompressed tar as tarfile reads it, through one buffer: the decompressor is read a MiB at a time,
every byte is hashed once as it passes (the diff_id), and a file's contents go from that buffer to its file.

Why not tarfile's own stream mode (``r|``): its buffer is a bytes object that it joins and re-slices on every read,
so each 512-byte header copies whatever the buffer still holds, and each file's contents are copied twice more on
their way out (``extractfile``'s reader, then ours). Its seekable mode (``r:``) asks its file for nothing but
``read``, ``tell`` and ``seek``, and while members are read in order every seek goes forward (to the next header,
or one byte short of it to check that the padding is there), which is all :class:`TarStream` offers: reading
ahead is skipping, and a seek back before the buffer is refused. Headers are parsed by tarfile all the same: one
parser of hostile headers (``shared.layer.unpack`` makes it strict), the standard library's.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

from shared.digest import Digest
from shared.errors import integrity

CHUNK = 1 << 20  # what the decompressor is asked for at a time


class TarStream:
    """``raw`` (a decompressed layer, or any tar) read forward, hashed with ``algorithm`` and counted."""

    def __init__(self, raw: BinaryIO, algorithm: str = "sha256") -> None:
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.count = 0  # bytes taken from ``raw`` so far
        self._buf = b""  # what was taken and not yet read; ``_pos`` in it is where the reader stands
        self._pos = 0
        self._base = 0  # the stream offset of ``_buf[0]``

    def _take(self) -> bytes:
        """The next piece of ``raw`` (hashed and counted), b"" at its end."""
        data = self._raw.read(CHUNK)
        if data:
            self._hash.update(data)
            self.count += len(data)
        return data

    def _have(self, size: int) -> None:
        """At least ``size`` bytes from the reader's place on in the buffer, unless the stream ends first."""
        if len(self._buf) - self._pos >= size:
            return
        parts, have = [self._buf[self._pos:]], len(self._buf) - self._pos
        while have < size and (data := self._take()):
            parts.append(data)
            have += len(data)
        self._base += self._pos
        self._buf, self._pos = b"".join(parts), 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self._have(1 << 62)
        else:
            self._have(size)
        end = len(self._buf) if size is None or size < 0 else self._pos + size
        data = self._buf[self._pos:end]
        self._pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._base + self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Forward to ``offset`` (what is passed is read, so it is hashed), or back within the buffer."""
        if whence == os.SEEK_CUR:
            offset += self.tell()
        elif whence != os.SEEK_SET:
            raise integrity("layer tar: a seek from its end (a tar read as a stream has none)")
        if offset < self._base:
            raise integrity(f"layer tar: a seek back to byte {offset}, before what is buffered")
        while offset > self._base + len(self._buf):
            self._base += len(self._buf)
            self._buf, self._pos = self._take(), 0
            if not self._buf:
                return self.tell()  # the stream ended first: tarfile finds nothing where it looks next
        self._pos = offset - self._base
        return offset

    def copy_to(self, fd: int, size: int) -> int:
        """Write the next ``size`` bytes to ``fd`` straight from the buffer; how many there were (fewer: the
        stream ended)."""
        done = 0
        while done < size:
            if self._pos == len(self._buf):
                data = self._take()
                if not data:
                    break
                self._base += len(self._buf)
                self._buf, self._pos = data, 0
            n = min(len(self._buf) - self._pos, size - done)
            view = memoryview(self._buf)[self._pos:self._pos + n]
            while view:
                view = view[os.write(fd, view):]
            self._pos += n
            done += n
        return done

    def drain(self) -> None:
        """Read to the end: what follows a tar's end marker still belongs to the diff_id."""
        self._base += len(self._buf)
        self._buf, self._pos = b"", 0
        while self._take():
            pass

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())
