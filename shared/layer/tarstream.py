"""A layer's uncompressed tar as tarfile reads it, through one buffer: the decompressor is read a MiB at a time,
every byte is hashed once as it passes (the diff_id), and a file's contents go from that buffer to its file; and
the plain headers (:func:`plain_header`) read as tarfile reads them, in a fifth of the time.

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
from typing import TYPE_CHECKING, BinaryIO

from shared.digest import Digest
from shared.errors import integrity

if TYPE_CHECKING:
    import tarfile

CHUNK = 1 << 20  # what the decompressor is asked for at a time
BLOCK = 512
# ustar's plain types (regular, old regular, hard link, symlink, devices, directory, fifo): nothing else follows
# their header. PAX, GNU long names, sparse files and the rest are tarfile's own.
PLAIN_TYPES = frozenset((b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6"))
REGULAR = (b"0", b"\0")
# the numeric fields, where ustar has them: checksum, mode, uid, gid, size, mtime, device major and minor
FIELDS = ((148, 156), (100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (329, 337), (337, 345))


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


def _octal(field: bytes) -> int | None:
    """A numeric header field as tarfile reads it (up to a NUL, blanks around, octal digits), when it is plainly
    that; None for anything else (base-256, a sign, an underscore, other characters): tarfile then decides."""
    body = field[:-1]
    if field[-1] in (0, 32) and body.isdigit():  # the way tars write them: digits, then a NUL or a blank
        try:
            return int(body, 8)
        except ValueError:  # an 8 or a 9
            return None
    end = field.find(0)
    digits = (field if end < 0 else field[:end]).strip(b" ")
    if digits.translate(None, b"01234567"):
        return None
    return int(digits, 8) if digits else 0


def _text(field: bytes, encoding: str, errors: str) -> str:
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode(encoding, errors)


def plain_header(cls: type[tarfile.TarInfo], tar: tarfile.TarFile, buf: bytes, offset: int) -> tarfile.TarInfo | None:
    """The member whose header block ``buf`` was read at ``offset``, as tarfile's ``fromtarfile`` makes it (and moves
    ``tar.offset`` past its data), when the block is a plain one: a plain type, every number plainly octal, the
    checksum right by the unsigned sum, no global PAX records in force. None for every other block (a PAX or GNU
    header, an end or a broken block): tarfile reads it, and says what is wrong with it."""
    kind = buf[156:157]
    if len(buf) != BLOCK or kind not in PLAIN_TYPES or tar.pax_headers:
        return None
    numbers = [n for a, b in FIELDS if (n := _octal(buf[a:b])) is not None]
    if len(numbers) != len(FIELDS) or numbers[0] != 256 + sum(buf[:148]) + sum(buf[156:]):
        return None
    chksum, mode, uid, gid, size, mtime, devmajor, devminor = numbers
    encoding, errors = tar.encoding, tar.errors or "strict"
    member = cls()
    member.name = _text(buf[0:100], encoding, errors)
    member.mode, member.uid, member.gid, member.size, member.mtime = mode, uid, gid, size, mtime
    member.chksum, member.type = chksum, kind
    member.linkname = _text(buf[157:257], encoding, errors)
    member.uname = _text(buf[265:297], encoding, errors)
    member.gname = _text(buf[297:329], encoding, errors)
    member.devmajor, member.devminor = devmajor, devminor
    prefix = _text(buf[345:500], encoding, errors)
    if kind == b"\0" and member.name.endswith("/"):  # old V7 tars: a directory is a regular file ending in /
        member.type = b"5"
    if member.type == b"5":
        member.name = member.name.rstrip("/")
    if prefix:  # ustar's long names
        member.name = f"{prefix}/{member.name}"
    member.offset = offset
    member.offset_data = offset + BLOCK
    tar.offset = member.offset_data + (-(-member.size // BLOCK) * BLOCK if member.type in REGULAR else 0)
    if member.type == b"5":
        member.name = member.name.rstrip("/")
    return member
