"""`python -m records inspect|verify|adopt RECORDS_DIR [flags]`: look at, prove, or adopt a records build.

  inspect  counts per split, shard sizes, class balance, sampled image sizes,
           conversions and rejection reasons; --sheet=FILE.png draws a
           captioned contact sheet, --plots=DIR writes PNG plots.
  verify   reads every record of every shard and checks it against the
           contract, synsets.tsv and manifest.json, on all cores (--workers),
           or as a Beam job (--beam, plus any Beam flags such as --runner).
  adopt    describes shards written by another converter (the reference
           ImageNet converters): writes their synsets.tsv and manifest.json,
           into RECORDS_DIR or --out_dir, so that every tool here reads them.

Exit status: 0 all good; 1 verify found problems; 2 nothing to check (bad
arguments, no build in RECORDS_DIR, shards that cannot be adopted).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import warnings

from absl import app, flags

from records import adopt as adopt_lib
from records import inspect as inspect_lib
from records import verify as verify_lib

COMMANDS = ("inspect", "verify", "adopt")
FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "sample_records",
    inspect_lib.DEFAULT_SAMPLE_RECORDS,
    "inspect: records read per split (spread over its shards) for image statistics.",
    lower_bound=0,
)
flags.DEFINE_string("sheet", None, "inspect: write a contact sheet PNG of random records with their labels here.")
flags.DEFINE_integer("sheet_images", 16, "inspect: records per split on the contact sheet.", lower_bound=1)
flags.DEFINE_integer("sheet_seed", 0, "inspect: which random records the contact sheet shows.")
flags.DEFINE_string(
    "plots", None, "inspect: write PNG plots (images per class, image side lengths) into this directory."
)
flags.DEFINE_integer(
    "workers", 0, "verify, adopt: processes reading shards in parallel; 0 = one per core.", lower_bound=0
)
flags.DEFINE_bool("beam", False, "verify, adopt: run as a Beam job (one element per shard); other flags go to Beam.")
flags.DEFINE_string("out_dir", None, "adopt: write synsets.tsv and manifest.json here instead of beside the shards.")
flags.DEFINE_integer(
    "max_problems_per_shard",
    verify_lib.DEFAULT_MAX_PROBLEMS_PER_SHARD,
    "verify: bad records listed per shard (all are counted).",
    lower_bound=1,
)

_CANNOT_CHECK = 2


def run_inspect(records_dir: str) -> None:
    summary = inspect_lib.summarize(records_dir, FLAGS.sample_records)
    print(inspect_lib.format_summary(summary), flush=True)
    if FLAGS.sheet:
        width, height = inspect_lib.write_contact_sheet(summary, FLAGS.sheet, FLAGS.sheet_images, FLAGS.sheet_seed)
        print(f"contact sheet: {FLAGS.sheet} ({width}x{height})")
    if FLAGS.plots:
        for path in inspect_lib.write_plots(summary, FLAGS.plots):
            print(f"plot: {path}")


def run_verify(records_dir: str, beam_args: list[str]) -> int:
    if FLAGS.beam:
        report = verify_lib.verify_with_beam(
            records_dir, beam_args, max_problems_per_shard=FLAGS.max_problems_per_shard
        )
    else:
        report = verify_lib.verify(
            records_dir, FLAGS.workers or None, max_problems_per_shard=FLAGS.max_problems_per_shard
        )
    print(verify_lib.format_report(report), flush=True)
    return 0 if report.ok else 1


def run_adopt(records_dir: str, beam_args: list[str]) -> int:
    built = adopt_lib.adopt(
        records_dir, FLAGS.out_dir, workers=FLAGS.workers or None, beam_args=beam_args if FLAGS.beam else None
    )
    out_dir = FLAGS.out_dir or records_dir
    splits = ", ".join(f"{split} {stats.num_examples:,} in {stats.num_shards}" for split, stats in built.splits.items())
    print(f"adopted {records_dir}: {built.num_classes} classes; records in shards: {splits}", flush=True)
    print(f"  wrote {out_dir}/synsets.tsv and {out_dir}/manifest.json; use --records_dir={out_dir}", flush=True)
    return 0


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] not in COMMANDS:
        _cannot(
            f"usage: python -m records {{{'|'.join(COMMANDS)}}} RECORDS_DIR [flags] (--help lists the flags); "
            f"got {' '.join(argv[1:]) or 'nothing'}"
        )
    command, records_dir, rest = argv[1], argv[2], argv[3:]
    if rest and not (command in ("verify", "adopt") and FLAGS.beam):
        _cannot(f"unknown arguments {' '.join(rest)} (Beam flags need --beam); see python -m records --help")
    std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)  # worker chatter drowns the progress
    try:
        if command == "inspect":
            run_inspect(records_dir)
            status = 0
        elif command == "verify":
            status = run_verify(records_dir, rest)
        else:
            status = run_adopt(records_dir, rest)
    except (FileNotFoundError, ValueError) as error:  # no build there, or its metadata is unusable
        _cannot(f"cannot {command} {records_dir}: {error}")
    sys.exit(status)


def _cannot(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(_CANNOT_CHECK)


def parse_flags(argv: list[str]) -> list[str]:
    """absl takes its own flags; the rest are positional arguments or, with --beam, Beam's."""
    return FLAGS(argv, known_only=True)


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)  # google-api-core's Python 3.11 notice
    # Beam's local workers import this package by name; make sure they can.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p
    )
    app.run(main, flags_parser=parse_flags)
