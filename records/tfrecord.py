"""TFRecord framing, written and read without TensorFlow's file layer.

The records job writes through Beam's `FileSystems` (atomic rename, gs://),
and `verify` must name the exact record that is damaged — both need the frame
format itself: uint64 length, masked CRC32C of the length, data, masked CRC32C
of the data (all little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

from records import files

_MASK_DELTA = 0xA282EAD8
FRAME_OVERHEAD = 16  # bytes around each record: its length (8), the length's CRC (4), the data's CRC (4)


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", _masked_crc(length)), data, struct.pack("<I", _masked_crc(data))))


class CorruptRecordError(ValueError):
    """A record whose frame or CRC is wrong; `index` is its 0-based position."""

    def __init__(self, index: int, message: str):
        super().__init__(f"record {index}: {message}")
        self.index = index


def read_frames(file: BinaryIO) -> Iterator[bytes]:
    """Yields each record's data, checking both CRCs; raises CorruptRecordError."""
    index = 0
    while True:
        header = file.read(12)
        if not header:
            return
        if len(header) < 12:
            raise CorruptRecordError(index, "truncated header (file cut short)")
        length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
        if _masked_crc(length_bytes) != length_crc:
            raise CorruptRecordError(index, "length CRC mismatch")
        (length,) = struct.unpack("<Q", length_bytes)
        data = file.read(length)
        footer = file.read(4)
        if len(data) < length or len(footer) < 4:
            raise CorruptRecordError(index, "truncated data (file cut short)")
        if _masked_crc(data) != struct.unpack("<I", footer)[0]:
            raise CorruptRecordError(index, "data CRC mismatch")
        yield data
        index += 1


def first_corruption(path: str) -> CorruptRecordError | None:
    """Reads every frame of the shard at `path` (local or remote); the first framing or CRC error, or None."""
    try:
        with files.open_read(path) as f:
            for _ in read_frames(f):
                pass
    except CorruptRecordError as error:
        return error
    return None
