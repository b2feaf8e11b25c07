"""Shard file names, as the reference converters and their readers expect."""

from __future__ import annotations

import math
import re

SPLITS = ("train", "validation")
DEFAULT_NUM_SHARDS = {"train": 1024, "validation": 128}
# A split smaller than ImageNet gets one shard per this many images: readers still
# interleave several shards, and no shard is tiny.
MIN_IMAGES_PER_AUTO_SHARD = 256
_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})$")


def shard_name(split: str, index: int, num_shards: int) -> str:
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} outside 0..{num_shards - 1}")
    return f"{split}-{index:05d}-of-{num_shards:05d}"


def shard_names(split: str, num_shards: int) -> list[str]:
    return [shard_name(split, i, num_shards) for i in range(num_shards)]


def shard_pattern(split: str) -> str:
    """Glob matching every shard of a split, whatever its shard count."""
    return f"{split}-?????-of-?????"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """(split, index, num_shards) for a shard's base name, else None."""
    match = _SHARD_RE.match(name)
    if not match:
        return None
    return match["split"], int(match["index"]), int(match["total"])


def auto_num_shards(split: str, num_images: int) -> int:
    """ImageNet's 1024 / 128, or fewer for a smaller split."""
    return min(DEFAULT_NUM_SHARDS[split], max(1, math.ceil(num_images / MIN_IMAGES_PER_AUTO_SHARD)))
