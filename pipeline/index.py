"""Index one unit: list its images, order them, and write the order down for the shard writers.

A unit is a synset tar, a tar or a folder (pipeline/layouts.py). Its index
lists every image it holds — where the bytes lie (file, offset, size), the
image's identity (its path inside the split), its boxes — sorted by a keyed
hash of that identity and the seed. That order, and the units' sizes, decide
every image's shard: the i-th image of a unit goes to shard
(images in earlier units + i) mod num_shards, so shard sizes differ by at most
one and every training shard mixes all classes.

The index lives in a small binary file per unit in the build's scratch
directory, not in the Beam graph: what crosses a shuffle on the local runner
is held in memory, and per-image references there cost gigabytes for
ImageNet. A writer reads each unit's file once for a run of shards and keeps
only those shards' rows.

File layout (little-endian): magic, header (row count, bytes of paths, box
count), a fixed-width row table (`ROW`), the paths inside the unit (UTF-8,
concatenated), the boxes (float32 xmin, ymin, xmax, ymax).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from records import files
from records.features import Box

MAGIC = b"IMGIDX1\n"
_HEADER = struct.Struct("<QQQ")  # rows, bytes of paths, boxes
ROW = np.dtype(
    [
        ("key", "<u8"),
        ("label", "<u4"),
        ("offset", "<i8"),  # -1: the whole file
        ("size", "<i8"),
        ("path_start", "<u8"),
        ("path_length", "<u4"),
        ("box_start", "<u4"),
        ("box_count", "<u4"),
    ]
)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One image of a unit."""

    inside: str  # path inside the unit (a tar member name, or relative to the folder)
    offset: int  # -1: the whole file
    size: int
    label: int = 0
    key: int = 0
    boxes: tuple[Box, ...] = ()


def order_key(seed: int, split: str, image_path: str) -> int:
    """The keyed hash that orders images: within a unit, and within a shard."""
    digest = hashlib.blake2b(f"{seed}/{split}/{image_path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def held_out(image_paths: Sequence[str], fraction: float, seed: int) -> set[int]:
    """Positions of the images that go to the validation split: the `fraction` of the class
    (rounded half up, never all of it) with the smallest keyed hash of their path."""
    count = len(image_paths)
    wanted = min(math.floor(count * fraction + 0.5), max(count - 1, 0))
    ranked = sorted(range(count), key=lambda i: (order_key(seed, "holdout", image_paths[i]), image_paths[i]))
    return set(ranked[:wanted])


def write(path: str, entries: Iterable[Entry]) -> None:
    """Writes a unit's index (entries already in their final order)."""
    entries = list(entries)
    encoded_paths = [entry.inside.encode("utf-8") for entry in entries]
    box_counts = [len(entry.boxes) for entry in entries]
    rows = np.zeros(len(entries), ROW)
    rows["key"] = [entry.key for entry in entries]
    rows["label"] = [entry.label for entry in entries]
    rows["offset"] = [entry.offset for entry in entries]
    rows["size"] = [entry.size for entry in entries]
    rows["path_length"] = [len(p) for p in encoded_paths]
    rows["path_start"] = np.cumsum(rows["path_length"], dtype=np.uint64) - rows["path_length"]
    rows["box_count"] = box_counts
    rows["box_start"] = np.cumsum(box_counts, dtype=np.uint64) - rows["box_count"]
    boxes = [box for entry in entries for box in entry.boxes]
    blob = b"".join(encoded_paths)
    header = MAGIC + _HEADER.pack(len(rows), len(blob), len(boxes))
    box_bytes = np.asarray(boxes, "<f4").reshape(-1, 4).tobytes()
    files.write_atomically(path, header + rows.tobytes() + blob + box_bytes)


@dataclasses.dataclass(frozen=True)
class UnitIndex:
    """A unit's index, read back."""

    rows: np.ndarray
    paths: bytes
    boxes: np.ndarray

    def entry(self, position: int) -> Entry:
        row = self.rows[position]
        start = int(row["path_start"])
        inside = self.paths[start : start + int(row["path_length"])].decode("utf-8")
        box_start = int(row["box_start"])
        boxes = tuple(tuple(float(v) for v in b) for b in self.boxes[box_start : box_start + int(row["box_count"])])
        return Entry(inside, int(row["offset"]), int(row["size"]), int(row["label"]), int(row["key"]), boxes)


def read(path: str) -> UnitIndex:
    data = files.read_bytes(path)
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a unit index (a build from another version?); rerun with --overwrite")
    num_rows, path_bytes, num_boxes = _HEADER.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _HEADER.size
    rows = np.frombuffer(data, ROW, num_rows, start)
    start += rows.nbytes
    paths = data[start : start + path_bytes]
    boxes = np.frombuffer(data, "<f4", num_boxes * 4, start + path_bytes).reshape(-1, 4)
    return UnitIndex(rows, paths, boxes)
