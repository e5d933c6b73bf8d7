"""Content digests, and readers/writers that hash while streaming so nothing is read twice.

OCI image-spec, descriptor.md "Digests": ``algorithm ":" encoded``; sha256 (64 lowercase hex) is the one every
registry speaks, sha512 (128 hex) is registered too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from shared.errors import integrity, usage

# image-spec descriptor.md, "Registered algorithms"
_ENCODED = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}


@dataclass(frozen=True, order=True)
class Digest:
    """An ``algorithm:hex`` content address, validated on construction."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        pattern = _ENCODED.get(self.algorithm)
        if pattern is None:
            raise usage(f"unsupported digest algorithm {self.algorithm!r} (sha256 and sha512 are)")
        if not pattern.fullmatch(self.hex):
            raise usage(f"invalid {self.algorithm} digest {self.hex!r}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise usage(f"invalid digest {text!r}: expected ALGORITHM:HEX")
        return cls(algorithm, encoded)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        """The 12-hex-digit form Docker shows in listings."""
        return self.hex[:12]

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def verify_bytes(self, data: bytes, what: str) -> None:
        actual = Digest.of_bytes(data, self.algorithm)
        if actual != self:
            raise integrity(f"digest mismatch for {what}: expected {self}, got {actual}")


class HashingReader:
    """A read-only stream that hashes every byte it hands out, so a digest costs no second pass."""

    def __init__(self, raw: BinaryIO, algorithm: str = "sha256") -> None:
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read to EOF: trailing bytes after a tar's end marker still belong to the diff_id."""
        while self.read(chunk):
            pass

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())


class HashingWriter:
    """A write-only stream that hashes and counts what passes through to ``raw`` (None: hash only)."""

    def __init__(self, raw: BinaryIO | None, algorithm: str = "sha256") -> None:
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.count = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.count += len(data)
        if self._raw is not None:
            self._raw.write(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        if self._raw is not None:
            self._raw.flush()

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())
