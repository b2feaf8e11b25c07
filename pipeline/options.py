"""The options of a records build: everything, beyond the input itself, that decides its bytes.

One dataclass, filled from the command line's flags of the same names, recorded
as the manifest's `options`, and compared when a build is resumed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from records import images


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    num_shards: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"train": 0, "validation": 0})
    seed: int = 0  # of the keyed hash that orders and places images, and holds out validation
    validate: str = "decode"  # records.images.VALIDATE_MODES
    resize_max_side: int = 0
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    synsets_file: str | None = None
    val_labels_file: str | None = None
    validation_fraction: float = 0.0
    allow_truncated_tars: bool = False
    allow_empty_classes: bool = False
    strict_imagenet: bool = False

    def to_json(self) -> dict:
        """Plain JSON values (what the manifest records)."""
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))
