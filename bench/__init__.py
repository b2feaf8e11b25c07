"""Speed figures, each measured beside a baseline in the same run (`python -m bench`).

Absolute numbers from a shared 2-core machine say little on their own; a
baseline measured minutes apart on the same machine, under the same load,
turns them into a ratio that means something.

A section is a module of this package with

    run(workdir: str) -> list[Figure]

listed in bench/__main__.py's SECTIONS. It may define its own absl flags
(prefixed with its section name) and keep cached inputs under `workdir`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured number, the baseline it is judged against, and its target if it has one."""

    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    target: float | None = None  # value must be >= target, or <= target when lower_is_better
    lower_is_better: bool = False
    note: str = ""  # how it was measured, when the name alone does not say
    low: float | None = None  # range of `value` over repeated runs, when repeats were made
    high: float | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline_value (for times and memory, below 1 is better); None unless both are > 0,
        since the ratio of a signed quantity (a slope near zero) means nothing."""
        if self.baseline_value is None or not (0 < self.value < math.inf and 0 < self.baseline_value < math.inf):
            return None
        return self.value / self.baseline_value

    @property
    def target_met(self) -> bool | None:
        if self.target is None or math.isnan(self.value):
            return None  # no target, or nothing measured (a NaN says why in the note)
        return self.value <= self.target if self.lower_is_better else self.value >= self.target

    def to_json(self) -> dict[str, Any]:
        out = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }  # JSON has no NaN
        out["ratio"] = self.ratio
        out["target_met"] = self.target_met
        return out
