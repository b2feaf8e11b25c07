"""`manifest.json` and `rejected.tsv`: what a build produced, and what it refused.

The manifest's counts are the proof that every input ended in exactly one
place: `num_examples` of all splits plus `num_rejected` equals what was read.
Readers (trainer, verify, inspect) take class and example counts from here
rather than scanning shards.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

import tensorflow as tf

from records import synsets

MANIFEST_NAME = "manifest.json"
REJECTED_NAME = "rejected.tsv"
SYNSETS_NAME = "synsets.tsv"
FORMAT_VERSION = 1
REJECTED_HEADER = ("split", "source", "reason")


@dataclasses.dataclass(frozen=True)
class SplitStats:
    num_examples: int
    num_shards: int
    shard_counts: tuple[int, ...]  # examples per shard, by shard index
    class_counts: dict[str, int]  # wnid -> examples
    num_rejected: int = 0
    conversions: dict[str, int] = dataclasses.field(default_factory=dict)  # e.g. 'cmyk->rgb' -> 22


@dataclasses.dataclass(frozen=True)
class Manifest:
    num_classes: int
    splits: dict[str, SplitStats]
    label_offset: int = synsets.LABEL_OFFSET
    num_rejected: int = 0  # images, all splits
    num_annotations_rejected: int = 0  # malformed box files (their images kept, without boxes)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = MANIFEST_NAME) -> Manifest:
        try:
            raw = json.loads(text)
            splits = {
                name: SplitStats(**{**split, "shard_counts": tuple(split["shard_counts"])})
                for name, split in raw.pop("splits").items()
            }
            manifest = cls(splits=splits, **raw)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{origin}: not a records manifest ({error}); rebuild the records with `make records`"
            ) from error
        for name, split in manifest.splits.items():
            if sum(split.shard_counts) != split.num_examples or len(split.shard_counts) != split.num_shards:
                raise ValueError(f"{origin}: split {name!r} shard counts do not add up to num_examples")
        return manifest


def write_manifest(output_dir: str, manifest: Manifest) -> None:
    _write_atomically(os.path.join(output_dir, MANIFEST_NAME), manifest.to_json())


def read_manifest(records_dir: str) -> Manifest:
    path = os.path.join(records_dir, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {records_dir} holds no records build; run `make records` "
            f"(python -m pipeline --output_dir={records_dir}) first"
        )
    with tf.io.gfile.GFile(path) as f:
        return Manifest.from_json(f.read(), origin=path)


def format_rejected(rows: Iterable[tuple[str, str, str]]) -> str:
    """TSV text; tabs/newlines inside fields are flattened so a row stays a row."""
    lines = ["\t".join(REJECTED_HEADER)]
    for row in rows:
        lines.append("\t".join(" ".join(str(field).split()) for field in row))
    return "\n".join(lines) + "\n"


def write_rejected(output_dir: str, rows: Iterable[tuple[str, str, str]]) -> None:
    _write_atomically(os.path.join(output_dir, REJECTED_NAME), format_rejected(rows))


def read_rejected(records_dir: str) -> list[tuple[str, str, str]]:
    path = os.path.join(records_dir, REJECTED_NAME)
    with tf.io.gfile.GFile(path) as f:
        lines = f.read().splitlines()
    if not lines or tuple(lines[0].split("\t")) != REJECTED_HEADER:
        raise ValueError(f"{path}: expected header {' '.join(REJECTED_HEADER)!r}")
    return [tuple(line.split("\t", 2)) for line in lines[1:] if line]


def _write_atomically(path: str, text: str) -> None:
    """Write then rename, so a reader never sees half a file (also on gs://)."""
    temp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temp, path, overwrite=True)
