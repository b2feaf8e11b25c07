"""`python -m pipeline`: build ImageNet, or any image-folder dataset, into sharded TFRecords.

Flags of our own are absl flags; every other flag (--runner, --project,
--direct_num_workers, ...) goes untouched to Beam's PipelineOptions, so the
same command runs on the DirectRunner, Dataflow, Flink or Spark.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as std_logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator

from absl import app, flags

from pipeline.console import Console
from pipeline.errors import InputError
from pipeline.options import BuildOptions
from records import files, images, shards

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "input_dir",
    None,
    "ILSVRC2012 tars, extracted ImageNet folders, Kaggle's layout, or train/<class>/ image folders; local or gs://.",
)
flags.DEFINE_string("output_dir", None, "Where shards, synsets.tsv, manifest.json and rejected.tsv go; local or gs://.")
flags.DEFINE_integer(
    "train_shards",
    0,
    f"Training shards; 0: {shards.DEFAULT_NUM_SHARDS['train']}, or one per "
    f"{shards.MIN_IMAGES_PER_AUTO_SHARD} images for smaller sets.",
    lower_bound=0,
    upper_bound=99_999,
)
flags.DEFINE_integer(
    "validation_shards",
    0,
    f"Validation shards; 0: {shards.DEFAULT_NUM_SHARDS['validation']}, or fewer for smaller sets.",
    lower_bound=0,
    upper_bound=99_999,
)
flags.DEFINE_integer("seed", 0, "Seed of the keyed hash that orders and places images (and holds out validation).")
flags.DEFINE_enum(
    "validate",
    "decode",
    list(images.VALIDATE_MODES),
    "decode: prove every image decodes (a truncated file never reaches training); header: only read headers (fast).",
)
flags.DEFINE_integer("resize_max_side", 0, "If > 0, shrink images whose longer side exceeds this.", lower_bound=0)
flags.DEFINE_integer(
    "max_pixels", images.DEFAULT_MAX_PIXELS, "Reject images with more pixels (decompression bombs).", lower_bound=1
)
flags.DEFINE_string(
    "synsets_file",
    None,
    "Class list: synsets.tsv, a wnid list (keeps its order), LOC_synset_"
    "mapping.txt or meta.mat; for image folders one class name per line, optionally name<TAB>text.",
)
flags.DEFINE_string(
    "val_labels_file", None, "Validation labels: a wnid-per-line file (file-name order) or LOC_val_solution.csv."
)
flags.DEFINE_float(
    "validation_fraction",
    0.0,
    "Inputs without a validation split: hold out this fraction of each "
    "class's training images (chosen by a keyed hash of their path and --seed).",
)
flags.DEFINE_bool(
    "allow_truncated_tars",
    False,
    "Build from tars that end without their end-of-archive marker (their images are rejected) instead of stopping.",
)
flags.DEFINE_bool("allow_empty_classes", False, "Build even when a listed class has no training images.")
flags.DEFINE_bool(
    "strict_imagenet",
    False,
    "Stop, instead of warning, when a 1,000-class ILSVRC2012 input differs "
    "from the official image counts or tar sizes.",
)
flags.DEFINE_bool("overwrite", False, "Replace the records already in --output_dir.")
flags.DEFINE_bool("resume", False, "Finish an interrupted build in --output_dir: only the missing shards are written.")
flags.DEFINE_bool("verbose", False, "Show Beam's and the job's own logging on the console instead of in build.log.")
flags.mark_flags_as_required(["input_dir", "output_dir"])


def request(beam_args: list[str]):
    """The flags as one build request (a pipeline.job.Request): every BuildOptions field is a flag."""
    from pipeline import job

    named = {f.name: FLAGS[f.name].value for f in dataclasses.fields(BuildOptions) if f.name != "num_shards"}
    num_shards = {"train": FLAGS.train_shards, "validation": FLAGS.validation_shards}
    options = BuildOptions(num_shards=num_shards, **named)
    return job.Request(FLAGS.input_dir, FLAGS.output_dir, options, beam_args, FLAGS.overwrite, FLAGS.resume)


def main(argv: list[str]) -> None:
    console = Console()
    if FLAGS.overwrite and FLAGS.resume:
        _fail(console, "--overwrite starts over, --resume finishes what is there: pass one of them")
    if not FLAGS.verbose:
        std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core's Python-version notice
    try:
        check_writable(FLAGS.output_dir)
        with _private_tempdir(), console.capture(FLAGS.output_dir, FLAGS.verbose):
            from pipeline import job  # with the console captured: Beam prints notices on import

            job.run(request(argv[1:]), console)
    except InputError as error:
        _fail(console, str(error))
    except Exception as error:  # noqa: BLE001 - a worker's failure, already logged in full
        _fail(console, _worker_error(error), console.log_path)


@contextlib.contextmanager
def _private_tempdir() -> Iterator[None]:
    """Beam's local runners leave directories in the temp dir (staging, job service): give them,
    and the worker processes, one of our own, removed however the run ends."""
    path = tempfile.mkdtemp(prefix="records-job-")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = path, path
    try:
        yield
    finally:
        if saved[0] is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        shutil.rmtree(path, ignore_errors=True)


def check_writable(output_dir: str) -> None:
    """Raises InputError unless output_dir can be created and written: before any worker starts."""
    probe = files.join(output_dir, f".write-test{files.TEMP_MARKER}probe")
    try:
        files.makedirs(output_dir)
        files.write_atomically(probe, b"")
        files.remove([probe])
    except OSError as error:
        raise InputError(
            f"--output_dir={output_dir} is not writable ({type(error).__name__}: {error.strerror or error}); "
            "choose a directory you can write to"
        ) from None


def _worker_error(error: Exception) -> str:
    """The one line that says what went wrong, from Beam's wrapping of a worker's exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    ours = [line for line in lines if "--resume" in line or "cannot write" in line]
    return (ours or lines or [type(error).__name__])[-1].split(" [while running")[0]


def _fail(console: Console, message: str, log_path: str | None = None) -> None:
    details = f" (details in {log_path})" if log_path else ""
    print(f"error: {message}{details}", file=console.err, flush=True)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl takes its own flags; what it does not know is Beam's (main gets it)."""
    return FLAGS(argv, known_only=True)


if __name__ == "__main__":
    # Beam's local workers import this package by name; make sure they can.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p
    )
    app.run(main, flags_parser=parse_flags)
