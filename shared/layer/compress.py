"""Streaming decompression of layer blobs: gzip through python-isal (about 2x stdlib zlib on these machines,
see notes/measurements.md), zstd through zstandard, plain tar as is. Nothing is ever held whole in memory."""

from __future__ import annotations

from typing import BinaryIO, cast

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff(head: bytes) -> str:
    """The compression a blob's first bytes show: media types lie more often than magic numbers do."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def decompressed(raw: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the uncompressed tar inside ``raw`` (which must be positioned at the blob's start)."""
    if compression == "gzip":
        from isal import igzip

        return cast(BinaryIO, igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
    if compression == "zstd":
        import zstandard

        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


def open_blob(path: str) -> BinaryIO:
    """Open a stored layer blob and return its uncompressed stream, compression detected from its magic."""
    f = open(path, "rb")  # noqa: SIM115 - ownership passes to the decompressor, closed by the caller
    head = f.read(4)
    f.seek(0)
    return decompressed(f, sniff(head))
