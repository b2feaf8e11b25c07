"""`manifest.json` and `rejected.tsv`: what a build produced, and what it refused.

The manifest's counts are the proof that every input ended in exactly one
place: `num_examples` of all splits plus `num_rejected` equals what was read.
Readers (trainer, verify, inspect) take class and example counts from here
rather than scanning shards.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from records import files, shards, synsets

MANIFEST_NAME = "manifest.json"
REJECTED_NAME = "rejected.tsv"
SYNSETS_NAME = "synsets.tsv"
FORMAT_VERSION = 2  # 2 added shard_bytes
REJECTED_HEADER = ("split", "source", "reason")


@dataclasses.dataclass(frozen=True)
class SplitStats:
    num_examples: int
    num_shards: int
    shard_counts: tuple[int, ...]  # examples per shard, by shard index
    class_counts: dict[str, int]  # class (wnid or folder name) -> examples
    num_rejected: int = 0
    conversions: dict[str, int] = dataclasses.field(default_factory=dict)  # e.g. 'cmyk->rgb' -> 22
    # Bytes of each shard file, by shard index: a shard cut short (even at a record
    # boundary) is found by one stat, without reading it. Empty in format 1 manifests.
    shard_bytes: tuple[int, ...] = ()
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # files not built: hidden, not an image...


@dataclasses.dataclass(frozen=True)
class Manifest:
    num_classes: int
    splits: dict[str, SplitStats]
    label_offset: int = synsets.LABEL_OFFSET
    num_rejected: int = 0  # images, all splits
    num_annotations_rejected: int = 0  # malformed box files (their images kept, without boxes)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Where the shards are when not beside manifest.json: a build adopted with
    # `records adopt --out_dir` describes shards it may not write next to.
    shards_dir: str = ""
    format_version: int = FORMAT_VERSION

    def shards_location(self, records_dir: str) -> str:
        return self.shards_dir or records_dir

    def shard_paths(self, records_dir: str, split: str) -> list[str]:
        """Every shard of `split` the manifest lists, in index order."""
        num_shards = self.splits[split].num_shards
        return [files.join(self.shards_location(records_dir), name) for name in shards.shard_names(split, num_shards)]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = MANIFEST_NAME) -> Manifest:
        try:
            raw = json.loads(text)
            splits = {
                name: SplitStats(
                    **{
                        **split,
                        "shard_counts": tuple(split["shard_counts"]),
                        "shard_bytes": tuple(split.get("shard_bytes", ())),
                    }
                )
                for name, split in raw.pop("splits").items()
            }
            manifest = cls(splits=splits, **raw)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{origin}: not a records manifest ({error}); rebuild the records with `make records`"
            ) from error
        for name, split in manifest.splits.items():
            if (
                sum(split.shard_counts) != split.num_examples
                or len(split.shard_counts) != split.num_shards
                or len(split.shard_bytes) not in (0, split.num_shards)
            ):
                raise ValueError(f"{origin}: split {name!r} shard counts do not add up to num_examples")
        return manifest


def write_manifest(output_dir: str, manifest: Manifest) -> None:
    files.write_atomically(files.join(output_dir, MANIFEST_NAME), manifest.to_json())


def read_manifest(records_dir: str) -> Manifest:
    path = files.join(records_dir, MANIFEST_NAME)
    if not files.exists(path):
        if any(files.glob(records_dir, shards.shard_pattern(split)) for split in shards.SPLITS):
            hint = (
                f"it holds shards from another converter: run `python -m records adopt {records_dir}` "
                "once to describe them"
            )
        else:
            hint = f"run `make records` (python -m pipeline --output_dir={records_dir}) first"
        raise FileNotFoundError(f"{path} not found: {records_dir} holds no records build; {hint}")
    return Manifest.from_json(files.read_text(path), origin=path)


def shard_file_problems(records_dir: str, built: Manifest, splits: Iterable[str] | None = None) -> list[str]:
    """What is wrong with the shard files of `splits` (default: all) against the manifest, one line each:
    missing, left from another build (readers glob every shard), or not the size that was written
    (cut short by a copy, even at a record boundary). Costs one directory listing, no reads."""
    location = built.shards_location(records_dir)
    on_disk = files.match(location, shards.shard_pattern("*"))
    split_of = {name: parsed[0] for name in on_disk if (parsed := shards.parse_shard_name(name))}
    problems = []
    for split in sorted(built.splits if splits is None else splits):
        stats = built.splits[split]
        expected = shards.shard_names(split, stats.num_shards)
        for index, name in enumerate(expected):
            if name not in on_disk:
                problems.append(
                    f"{files.join(location, name)}: missing (manifest.json lists {stats.num_shards} {split} "
                    "shards); restore the file or rebuild the records"
                )
            elif stats.shard_bytes and on_disk[name] != stats.shard_bytes[index]:
                problems.append(
                    f"{files.join(location, name)}: {on_disk[name]:,} bytes, but {stats.shard_bytes[index]:,} were "
                    f"written ({stats.shard_counts[index]} records): the file is damaged or cut short (an "
                    "interrupted copy?); copy it again from the original build or rebuild the records"
                )
        problems += [_stray(location, n) for n in sorted(set(split_of) - set(expected)) if split_of[n] == split]
    if splits is None:  # a shard of a split the manifest does not know is a stray too
        problems += [_stray(location, n) for n in sorted(split_of) if split_of[n] not in built.splits]
    return problems


def _stray(location: str, name: str) -> str:
    return (
        f"{files.join(location, name)}: not listed in manifest.json (left from another build?); "
        "readers glob every shard in the directory, so remove it or rebuild into an empty directory"
    )


def format_rejected(rows: Iterable[tuple[str, str, str]]) -> str:
    """TSV text; tabs/newlines inside fields are flattened so a row stays a row."""
    lines = ["\t".join(REJECTED_HEADER)]
    for row in rows:
        lines.append("\t".join(" ".join(str(field).split()) for field in row))
    return "\n".join(lines) + "\n"


def write_rejected(output_dir: str, rows: Iterable[tuple[str, str, str]]) -> None:
    files.write_atomically(files.join(output_dir, REJECTED_NAME), format_rejected(rows))


def read_rejected(records_dir: str) -> list[tuple[str, str, str]]:
    path = files.join(records_dir, REJECTED_NAME)
    lines = files.read_text(path).splitlines()
    if not lines or tuple(lines[0].split("\t")) != REJECTED_HEADER:
        raise ValueError(f"{path}: expected header {' '.join(REJECTED_HEADER)!r}")
    return [tuple(line.split("\t", 2)) for line in lines[1:] if line]
