"""Running a records build from start to end: the output directory, both Beam pipelines, resume.

pipeline/build.py says what each step does; this module decides which steps
run (a resumed build skips what is done), on which runner settings, and what
the person sees meanwhile (pipeline/console.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence

import apache_beam as beam

from pipeline import build, layouts
from pipeline.console import Console
from pipeline.errors import InputError
from pipeline.options import BuildOptions
from records import files, manifest, shardmap, shards

# Starting the multi-process runner's workers costs ~4.5 s on 2 cores, so a
# local build runs in this process unless its single-core work is estimated
# at twice that. One core's seconds per image, measured by `make bench` on
# 300-500 px JPEGs (README, "Speed").
WORKER_START_S = 4.5
SECONDS_PER_IMAGE = {"decode": 1.0e-3, "header": 0.1e-3}


@dataclasses.dataclass(frozen=True)
class Request:
    """One `python -m pipeline` invocation."""

    input_dir: str
    output_dir: str
    options: BuildOptions
    beam_args: Sequence[str] = ()
    overwrite: bool = False
    resume: bool = False


def run(request: Request, console: Console) -> manifest.Manifest:
    """Plans, checks and builds; returns the manifest. Raises LayoutError / InputError with the fix."""
    started = time.monotonic()
    plan = layouts.plan(request.input_dir, request.options)
    scratch = build.Scratch(request.output_dir)
    key = _build_key(plan, request.options)
    if prepare_output(request.output_dir, scratch, key, overwrite=request.overwrite, resume=request.resume):
        console.line(f"resuming the unfinished build in {request.output_dir}")
    _describe_input(console, plan)
    for warning in plan.warnings:
        console.warn(warning)
    if not files.exists(scratch.units_path):
        _index(plan, request, scratch, console)
    summaries = build.read_summaries(scratch)
    warnings = build.check_summaries(plan, request.options, summaries) + _skipped_warnings(summaries)
    counts = build.split_counts(summaries)
    num_shards = build.shard_counts(request.options, counts)
    _describe_output(console, counts, num_shards, request.output_dir)
    for warning in warnings:
        console.warn(warning)
    _write(plan, request, scratch, summaries, counts, num_shards, console)
    built = build.write_metadata(plan, request.options, scratch, summaries, num_shards)
    files.remove_tree(scratch.root)
    _summary(console, built, request.output_dir, time.monotonic() - started)
    return built


def _index(plan: layouts.Plan, request: Request, scratch: build.Scratch, console: Console) -> None:
    units = sum(len(u) for u in plan.units.values())
    options = shardmap.beam_options(request.beam_args, parallel=False)
    with console.progress("indexing", units, "units", lambda: len(files.match(scratch.index_dir, "*.idx"))):
        root = beam.Pipeline(options=options)
        build.index_pipeline(root, plan, request.options, scratch)
        root.run().wait_until_finish()


def _write(plan, request: Request, scratch: build.Scratch, summaries, counts, num_shards, console: Console) -> None:
    todo = build.shards_to_write(request.output_dir, scratch, num_shards)
    if not todo:
        return
    layouts_by_split = {
        split: build.SplitLayout.build(plan, summaries, split, num_shards[split]) for split in sorted(num_shards)
    }
    writer = build.WriteShards(
        layouts_by_split, plan.synsets, plan.filename_is_path, request.options, scratch, request.output_dir
    )
    total = sum(counts.values())
    results = _ResultCounter(scratch)
    with console.progress("writing shards", total, "images", results.images_done):
        work_s = total * SECONDS_PER_IMAGE[request.options.validate]
        root = beam.Pipeline(options=shardmap.beam_options(request.beam_args, parallel=work_s >= 2 * WORKER_START_S))
        build.write_pipeline(root, todo, writer)
        root.run().wait_until_finish()


class _ResultCounter:
    """Images written or rejected so far, from the shards' result files (each read once)."""

    def __init__(self, scratch: build.Scratch):
        self._dir = scratch.results_dir
        self._seen: dict[str, int] = {}

    def images_done(self) -> int:
        for name in files.match(self._dir, "*.json"):
            if name not in self._seen:
                result = json.loads(files.read_text(files.join(self._dir, name)))
                self._seen[name] = result["num_examples"] + len(result["rejected"])
        return sum(self._seen.values())


# --- the output directory -------------------------------------------------------------


def _build_key(plan: layouts.Plan, options: BuildOptions) -> dict:
    """What makes two builds the same build: a resume must match it."""
    return {**plan.source, "options": options.to_json(), "format_version": manifest.FORMAT_VERSION}


def prepare_output(output_dir: str, scratch: build.Scratch, key: dict, *, overwrite: bool, resume: bool) -> bool:
    """Makes output_dir ready; True when an unfinished build is resumed. Refuses to mix two builds
    (readers glob every shard there) and to resume a different build."""
    unfinished = files.exists(scratch.key_path)
    finished = files.exists(files.join(output_dir, manifest.MANIFEST_NAME)) or any(
        files.match(output_dir, shards.shard_pattern(split)) for split in shards.SPLITS
    )
    if overwrite:
        _remove_build(output_dir, scratch)
    elif resume and unfinished:
        _check_same_build(scratch, key)
        _remove_temporaries(output_dir, scratch)
        return True
    elif resume and finished:
        raise InputError(f"--resume: the build in {output_dir} is complete; there is nothing to resume")
    elif unfinished:
        raise InputError(
            f"{output_dir} holds an unfinished build (interrupted?): rerun with --resume to finish it, "
            "or --overwrite to start over"
        )
    elif finished:
        raise InputError(
            f"{output_dir} already holds records; pass --overwrite to replace them, or choose another --output_dir"
        )
    files.makedirs(output_dir)
    files.makedirs(scratch.root)
    files.write_atomically(scratch.key_path, json.dumps(key, indent=1, sort_keys=True))
    return False


def _check_same_build(scratch: build.Scratch, key: dict) -> None:
    recorded = json.loads(files.read_text(scratch.key_path))
    differs = sorted(k for k in set(key) | set(recorded) if key.get(k) != recorded.get(k))
    if differs:
        details = "; ".join(f"{k}: {recorded.get(k)!r} then, {key.get(k)!r} now" for k in differs)
        raise InputError(
            f"--resume: the unfinished build in {scratch.output_dir} was started with other settings ({details}); "
            "rerun with the same input and flags, or pass --overwrite to start over"
        )


def _remove_build(output_dir: str, scratch: build.Scratch) -> None:
    doomed = [
        files.join(output_dir, n) for s in shards.SPLITS for n in files.match(output_dir, shards.shard_pattern(s))
    ]
    doomed += [
        files.join(output_dir, n) for n in (manifest.MANIFEST_NAME, manifest.SYNSETS_NAME, manifest.REJECTED_NAME)
    ]
    files.remove(doomed)
    files.remove_tree(scratch.root)
    _remove_temporaries(output_dir, scratch)


def _remove_temporaries(output_dir: str, scratch: build.Scratch) -> None:
    """Half-written files of a killed build: never read, since only complete files are renamed into place."""
    for directory in (output_dir, scratch.root, scratch.index_dir, scratch.results_dir, scratch.boxes_dir):
        files.remove([files.join(directory, n) for n in files.match(directory, f"*{files.TEMP_MARKER}*")])


# --- what the person sees ------------------------------------------------------------


_SKIPPED = {  # what a skipped file is, as a noun for _count
    "hidden": "hidden file",
    "not an image": "file without an image extension",
    "duplicate": "earlier copy of a tar member stored twice",
}


def _skipped_warnings(summaries: list[dict]) -> list[str]:
    totals: dict[str, list] = {}
    for s in summaries:
        for reason, (count, example) in s["skipped"].items():
            total = totals.setdefault(reason, [0, example])
            total[0] += count
    return [f"skipped {_count(n, _SKIPPED[reason])}, e.g. {example}" for reason, (n, example) in sorted(totals.items())]


def _describe_input(console: Console, plan: layouts.Plan) -> None:
    console.line(f"input    {plan.input_dir} ({layouts.LAYOUT_NAMES[plan.layout]})")
    console.line(f"classes  {len(plan.synsets):,}")


def _describe_output(
    console: Console, counts: Mapping[str, int], num_shards: Mapping[str, int], output_dir: str
) -> None:
    splits = sorted(counts, key=shards.SPLITS.index)
    console.line("images   " + ", ".join(f"{split} {counts[split]:,}" for split in splits))
    console.line("shards   " + ", ".join(f"{split} {num_shards[split]:,}" for split in splits) + f" -> {output_dir}")
    if console.log_path:
        console.line(f"log      {console.log_path}")


def _summary(console: Console, built: manifest.Manifest, output_dir: str, seconds: float) -> None:
    total = sum(s.num_examples for s in built.splits.values())
    console.line(f"records written to {output_dir} in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f} images/s)")
    for split, stats in sorted(built.splits.items(), key=lambda kv: shards.SPLITS.index(kv[0])):
        conversions = ", ".join(f"{n} {kind}" for kind, n in stats.conversions.items())
        console.line(
            f"  {split}: {_count(stats.num_examples, 'image')} in {_count(stats.num_shards, 'shard')} "
            f"({min(stats.shard_counts)}-{max(stats.shard_counts)} per shard), {stats.num_rejected} rejected"
            + (f", converted {conversions}" if conversions else "")
        )
    rejected = [
        _count(n, noun)
        for n, noun in ((built.num_rejected, "image"), (built.num_annotations_rejected, "box file"))
        if n
    ]
    if rejected:
        console.warn(f"rejected {' and '.join(rejected)}: reasons in {files.join(output_dir, manifest.REJECTED_NAME)}")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
