"""`python -m pipeline`: build ImageNet-style input into sharded TFRecords.

Flags of our own are absl flags; every other flag (--runner, --project,
--direct_num_workers, ...) goes untouched to Beam's PipelineOptions, so the
same command runs on the DirectRunner, Dataflow, Flink or Spark.
"""

from __future__ import annotations

import logging as std_logging
import os
import time
import warnings

from absl import app, flags, logging

warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core's Python 3.11 notice

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # noqa: E402

from pipeline import build, layouts  # noqa: E402
from records import images, manifest, shards  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "input_dir", None, "ImageNet-style input: distribution tars, extracted folders or Kaggle layout; local or gs://."
)
flags.DEFINE_string("output_dir", None, "Where shards, synsets.tsv, manifest.json and rejected.tsv go; local or gs://.")
flags.DEFINE_integer("train_shards", shards.DEFAULT_NUM_SHARDS["train"], "Number of training shards.", lower_bound=1)
flags.DEFINE_integer(
    "validation_shards", shards.DEFAULT_NUM_SHARDS["validation"], "Number of validation shards.", lower_bound=1
)
flags.DEFINE_integer("seed", 0, "Seed of the keyed hash that orders and places images.")
flags.DEFINE_enum(
    "validate",
    "decode",
    ["decode", "header"],
    "decode: prove every image decodes (a truncated file never reaches training); header: only read headers (fast).",
)
flags.DEFINE_integer(
    "resize_max_side", 0, "If > 0, shrink images whose longer side exceeds this many pixels.", lower_bound=0
)
flags.DEFINE_integer(
    "max_pixels",
    images.DEFAULT_MAX_PIXELS,
    "Reject images with more pixels than this (decompression bombs).",
    lower_bound=1,
)
flags.DEFINE_string(
    "synsets_file",
    None,
    "Class list: synsets.tsv, a wnid-per-line list (keeps its order), LOC_synset_mapping.txt or meta.mat.",
)
flags.DEFINE_string(
    "val_labels_file", None, "Validation labels: a wnid-per-line file (file-name order) or LOC_val_solution.csv."
)
flags.DEFINE_bool("overwrite", False, "Replace the records already in --output_dir.")
flags.mark_flags_as_required(["input_dir", "output_dir"])

# Local default: all cores through the multi-process DirectRunner.
LOCAL_DEFAULTS = ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]


def beam_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
        given = {a.split("=")[0] for a in beam_args}
        options = PipelineOptions(beam_args + [d for d in LOCAL_DEFAULTS if d.split("=")[0] not in given])
    return options


def run(beam_args: list[str]) -> manifest.Manifest | None:
    started = time.monotonic()
    try:
        plan = layouts.plan(FLAGS.input_dir, FLAGS.synsets_file, FLAGS.val_labels_file)
    except layouts.LayoutError as error:
        raise app.UsageError(str(error)) from None
    logging.info(
        "input %s (%s): %s; %d classes",
        plan.input_dir,
        plan.layout,
        ", ".join(f"{s}: {len(u)} units" for s, u in sorted(plan.units.items())),
        len(plan.synsets),
    )
    try:
        build.prepare_output(FLAGS.output_dir, FLAGS.overwrite)
    except FileExistsError as error:
        raise app.UsageError(str(error)) from None
    num_shards = {"train": FLAGS.train_shards, "validation": FLAGS.validation_shards}
    options = build.BuildOptions(
        output_dir=FLAGS.output_dir,
        num_shards={s: num_shards[s] for s in plan.units},
        seed=FLAGS.seed,
        validate=FLAGS.validate,
        resize_max_side=FLAGS.resize_max_side,
        max_pixels=FLAGS.max_pixels,
    )
    recorded = {
        name: FLAGS[name].value
        for name in ("train_shards", "validation_shards", "seed", "validate", "resize_max_side", "max_pixels")
    }
    pipeline_options = beam_options(beam_args)
    result = build.run(plan, options, recorded, pipeline_options)
    if pipeline_options.view_as(StandardOptions).runner not in (None, "DirectRunner", "PortableRunner"):
        return None  # remote runners: the job reports on its own console
    built = manifest.read_manifest(FLAGS.output_dir)
    report(result, built, time.monotonic() - started)
    return built


def report(result, built: manifest.Manifest, seconds: float) -> None:
    counters = {}
    try:
        for counter in result.metrics().query()["counters"]:
            if counter.key.metric.namespace == build.METRICS_NAMESPACE:
                counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + counter.committed
    except Exception:  # some runners do not report metrics; the manifest still does
        pass
    total = sum(s.num_examples for s in built.splits.values())
    lines = [f"records written to {FLAGS.output_dir} in {seconds:.1f}s ({total / max(seconds, 1e-9):.0f} images/s)"]
    for split, stats in sorted(built.splits.items()):
        lines.append(
            f"  {split}: {stats.num_examples} images in {stats.num_shards} shards "
            f"({min(stats.shard_counts)}-{max(stats.shard_counts)} per shard), {stats.num_rejected} rejected, "
            f"converted {sum(stats.conversions.values())} {dict(stats.conversions) or ''}"
        )
    if built.num_rejected or built.num_annotations_rejected:
        lines.append(
            f"  rejected: {built.num_rejected} images, {built.num_annotations_rejected} box files "
            f"(reasons in {manifest.REJECTED_NAME})"
        )
    if counters:
        lines.append("  counters: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> None:
    # Beam's own INFO lines (worker harness chatter) drown the job's progress.
    std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    run(beam_args=argv[1:])


def parse_flags(argv: list[str]) -> list[str]:
    """absl takes its own flags; what it does not know is Beam's (main gets it)."""
    return FLAGS(argv, known_only=True)


if __name__ == "__main__":
    # Beam's local workers import this package by name; make sure they can.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p
    )
    app.run(main, flags_parser=parse_flags)
