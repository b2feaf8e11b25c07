"""Running the records job inside tests, and reading what it wrote."""

from __future__ import annotations

import glob
import os

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import build, layouts
from records import features, tfrecord

IN_PROCESS = ("--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1")


def build_records(
    input_dir,
    output_dir,
    *,
    beam_args=IN_PROCESS,
    train_shards=3,
    validation_shards=2,
    seed=0,
    validate="decode",
    **plan_args,
):
    """Plans and runs the records job like `python -m pipeline` does; returns the Beam result."""
    plan = layouts.plan(str(input_dir), **plan_args)
    options = build.BuildOptions(
        output_dir=str(output_dir),
        num_shards={s: {"train": train_shards, "validation": validation_shards}[s] for s in plan.units},
        seed=seed,
        validate=validate,
    )
    build.prepare_output(str(output_dir), overwrite=True)
    return build.run(plan, options, {"seed": seed, "validate": validate}, PipelineOptions(list(beam_args)))


def read_split(records_dir, split: str) -> dict[str, list[features.ImageRecord]]:
    """Shard base name -> its records, in file order."""
    out = {}
    for path in sorted(glob.glob(os.path.join(str(records_dir), f"{split}-*-of-*"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = [features.from_example(r) for r in tfrecord.read_frames(f)]
    return out
