"""Proof that a records build is whole: every byte of every shard read back and checked.

A trainer that meets a damaged record fails hours into a run, or worse,
silently learns from a wrong label; `verify` finds that up front and names the
shard and record index, so the one shard can be rebuilt. Each shard is checked
on its own (`verify_shard`), so the same function runs in a local process pool
(`verify`) or as one Beam element per shard (`verify_with_beam`) for builds
too large for one machine; only the small per-shard reports are combined and
held against manifest.json.

Per record: both TFRecord CRCs; every key of the contract's `SCHEMA`
present with the kind and arity the trainer's parser demands; a full Pillow
decode of `image/encoded` whose size and channels agree with the stored
height, width, channels and colorspace; the label within 1..N and agreeing
with synsets.tsv on synset and text; boxes inside [0, 1] and well-formed.
Per build: the set of shard files is exactly what manifest.json lists, and
the per-shard, per-class and rejected counts agree with it.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import posixpath
import time
import warnings
from collections.abc import Iterable, Sequence

from absl import logging
from PIL import Image

from records import features, files, images, manifest, shardmap, shards, tfrecord, wire
from records.synsets import SynsetTable

DEFAULT_MAX_PROBLEMS_PER_SHARD = 20
# What a decoded JPEG's Pillow mode must be stored as: (channels, colorspace).
_MODE_FIELDS = {"RGB": (3, "RGB"), "L": (1, "GRAY")}
_BOX_CORNERS = (features.BBOX_XMIN, features.BBOX_YMIN, features.BBOX_XMAX, features.BBOX_YMAX)


@dataclasses.dataclass(frozen=True)
class ShardReport:
    """What one shard held and what was wrong with it; small, so it travels between processes."""

    path: str
    num_records: int  # records whose frames (and CRCs) read back, good or bad
    num_bytes: int
    class_counts: dict[str, int]  # synset (class id) -> records, as the records say
    problems: tuple[str, ...]  # the first few, each naming shard and record index
    num_bad_records: int  # every record with a problem (problems lists at most a few)
    complete: bool  # False when a framing error or I/O error stopped the read
    seconds: float

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


@dataclasses.dataclass(frozen=True)
class Report:
    """The verdict on a whole build: empty `problems` means every check passed."""

    records_dir: str
    shards: tuple[ShardReport, ...]
    problems: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def num_records(self) -> int:
        return sum(s.num_records for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)

    @property
    def records_per_second(self) -> float:
        return self.num_records / max(self.seconds, 1e-9)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the build should hold (from manifest.json) against what is on disk."""

    records_dir: str
    built: manifest.Manifest
    table: SynsetTable
    shard_paths: tuple[str, ...]  # expected and present, in name order
    expected_counts: dict[str, int]  # shard name -> records, per manifest.json
    problems: tuple[str, ...]  # build-level: missing/stray shards, table, rejected.tsv


# --- one shard ------------------------------------------------------------------------


def verify_shard(path: str, table: SynsetTable, *, max_problems: int = DEFAULT_MAX_PROBLEMS_PER_SHARD) -> ShardReport:
    """Reads and checks every record of one shard; never raises on bad data.

    A framing error (CRC, truncation) ends the read, since nothing after it
    can be trusted to start on a record boundary.
    """
    started = time.monotonic()
    name = posixpath.basename(path)
    images.forbid_loading_truncated_images()
    problems: list[str] = []
    num_bad = num_records = num_bytes = 0
    class_counts: collections.Counter = collections.Counter()
    complete = True

    def report(message: str) -> None:
        nonlocal num_bad
        num_bad += 1
        if len(problems) < max_problems:
            problems.append(message)

    try:
        with files.open_read(path) as f:
            for index, data in enumerate(tfrecord.read_frames(f)):
                num_records += 1
                num_bytes += len(data) + tfrecord.FRAME_OVERHEAD
                synset, filename, errors = check_record(data, table)
                if synset is not None:
                    class_counts[synset] += 1
                if errors:
                    where = f"{name} record {index}" + (f" ({filename})" if filename else "")
                    report(f"{where}: {'; '.join(errors)}")
    except tfrecord.CorruptRecordError as error:
        complete = False
        report(f"{name} {error}; the rest of the shard cannot be read: rebuild this shard")
    except OSError as error:
        complete = False
        report(f"{name}: cannot read after {num_records} records ({images.describe_error(error)})")
    return ShardReport(
        path, num_records, num_bytes, dict(class_counts), tuple(problems), num_bad, complete, time.monotonic() - started
    )


def check_record(data: bytes, table: SynsetTable) -> tuple[str | None, str, list[str]]:
    """(the record's synset or None if unparsable, its file name or '', what is wrong with it or [])."""
    try:
        decoded = wire.decode(data)
    except wire.WireError as error:
        return None, "", [f"not a tf.train.Example ({images.describe_error(error)})"]
    errors = features.schema_problems(decoded)
    if errors:
        return None, "", errors
    try:
        record = features.from_decoded(decoded)
    except ValueError as error:  # e.g. a text that is not UTF-8
        return None, "", [f"records.features.from_decoded cannot read it ({images.describe_error(error)})"]
    errors = _label_problems(record, table) + _box_problems(decoded, record) + _image_problems(record)
    return record.synset, record.filename, errors


def _label_problems(record: features.ImageRecord, table: SynsetTable) -> list[str]:
    if not 1 <= record.label <= len(table):
        return [f"label {record.label} outside 1..{len(table)} (synsets.tsv has {len(table)} classes)"]
    problems = []
    if table.synset_of(record.label) != record.synset:
        problems.append(
            f"label {record.label} is {table.synset_of(record.label)} in synsets.tsv, "
            f"but the record says {record.synset!r}"
        )
    if table.text_of(record.label) != record.text:
        problems.append(
            f"label {record.label} text is {table.text_of(record.label)!r} in synsets.tsv, "
            f"but the record says {record.text!r}"
        )
    return problems


def _box_problems(decoded: dict[str, wire.Feature], record: features.ImageRecord) -> list[str]:
    lengths = [len(decoded.get(k, (None, []))[1]) for k in _BOX_CORNERS]
    labels = list(decoded.get(features.BBOX_LABEL, (None, []))[1])
    if len(set(lengths)) != 1:
        return [f"box corner lists differ in length (xmin, ymin, xmax, ymax: {lengths})"]
    problems = []
    if len(labels) != lengths[0] or any(label != record.label for label in labels):
        problems.append(f"{features.BBOX_LABEL} {labels} does not give label {record.label} once per box")
    for number, (xmin, ymin, xmax, ymax) in enumerate(record.boxes):
        if not (0.0 <= xmin <= xmax <= 1.0 and 0.0 <= ymin <= ymax <= 1.0):
            problems.append(f"box {number} {(xmin, ymin, xmax, ymax)} is not inside [0, 1] with min <= max")
    return problems


def _image_problems(record: features.ImageRecord) -> list[str]:
    if record.format != "JPEG":
        return [f"image/format is {record.format!r}; readers decode image/encoded as JPEG"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(record.encoded), formats=("JPEG", "MPO"))
            image.load()
    except Exception as error:  # noqa: BLE001 - Pillow raises anything on hostile bytes
        return [f"image/encoded does not decode as JPEG ({images.describe_error(error)}; {len(record.encoded)} bytes)"]
    problems = []
    if image.size != (record.width, record.height):
        problems.append(
            f"image is {image.width}x{image.height} but the record says width {record.width}, height {record.height}"
        )
    if image.mode not in _MODE_FIELDS:
        problems.append(f"image is a {image.mode} JPEG; readers expect RGB or grayscale")
    elif _MODE_FIELDS[image.mode] != (record.channels, record.colorspace):
        channels, colorspace = _MODE_FIELDS[image.mode]
        problems.append(
            f"image is {image.mode} ({channels} channels, {colorspace}) but the record says "
            f"{record.channels} channels, {record.colorspace}"
        )
    return problems


# --- the whole build ------------------------------------------------------------------


def verify(
    records_dir: str,
    workers: int | None = None,
    *,
    max_problems_per_shard: int = DEFAULT_MAX_PROBLEMS_PER_SHARD,
    progress_every_secs: float = 10.0,
) -> Report:
    """Checks every shard in `workers` processes (None: all cores; 1: this process).

    Raises FileNotFoundError/ValueError (naming the file and the fix) only
    when there is no build to check: no manifest.json or an unreadable
    synsets.tsv. Everything else ends up in `Report.problems`.
    """
    started = time.monotonic()
    plan = _plan(records_dir)
    workers = workers or os.cpu_count() or 1
    logging.info("verifying %d shards of %s with %d workers", len(plan.shard_paths), records_dir, workers)
    checked = shardmap.map_local(
        verify_shard, plan.shard_paths, workers, table=plan.table, max_problems=max_problems_per_shard
    )
    reports = _with_progress(checked, len(plan.shard_paths), started, progress_every_secs)
    return _combine(plan, reports, time.monotonic() - started)


def verify_with_beam(
    records_dir: str, beam_args: Sequence[str], *, max_problems_per_shard: int = DEFAULT_MAX_PROBLEMS_PER_SHARD
) -> Report:
    """The same checks as a Beam job: one element per shard, reports combined here."""
    started = time.monotonic()
    plan = _plan(records_dir)
    logging.info("verifying %d shards of %s as a Beam job", len(plan.shard_paths), records_dir)
    raw = shardmap.map_with_beam(
        _verify_shard_as_dict, plan.shard_paths, beam_args, table=plan.table, max_problems=max_problems_per_shard
    )
    reports = [ShardReport(**{**r, "problems": tuple(r["problems"])}) for r in raw]
    return _combine(plan, reports, time.monotonic() - started)


def _verify_shard_as_dict(path: str, table: SynsetTable, max_problems: int) -> dict:
    return dataclasses.asdict(verify_shard(path, table, max_problems=max_problems))


def _with_progress(reports: Iterable[ShardReport], total: int, started: float, every_secs: float) -> list[ShardReport]:
    done, records, last_log = [], 0, time.monotonic()
    for shard_report in reports:
        done.append(shard_report)
        records += shard_report.num_records
        if shard_report.num_bad_records:
            logging.warning(
                "%s: %d bad records, first: %s",
                shard_report.name,
                shard_report.num_bad_records,
                shard_report.problems[0],
            )
        now = time.monotonic()
        if now - last_log >= every_secs or len(done) == total:
            last_log = now
            logging.info(
                "verified %d/%d shards, %d records, %.0f records/s",
                len(done),
                total,
                records,
                records / max(now - started, 1e-9),
            )
    return done


def _plan(records_dir: str) -> _Plan:
    built = manifest.read_manifest(records_dir)
    table = SynsetTable.read_tsv(posixpath.join(records_dir, manifest.SYNSETS_NAME))
    problems = []
    if built.num_classes != len(table):
        problems.append(f"manifest.json says {built.num_classes} classes but synsets.tsv lists {len(table)}")
    expected = {}
    for split, stats in sorted(built.splits.items()):
        for index, count in enumerate(stats.shard_counts):
            expected[shards.shard_name(split, index, stats.num_shards)] = count
    problems += manifest.shard_file_problems(records_dir, built)
    location = built.shards_location(records_dir)
    on_disk = set(files.match(location, shards.shard_pattern("*")))
    for temporary in sorted(files.match(location, f"*{files.TEMP_MARKER}*")):
        problems.append(
            f"{files.join(location, temporary)}: a temporary file of an unfinished write (a killed build?); "
            "finish the build with --resume, or delete the file"
        )
    problems += _rejected_problems(records_dir, built)
    paths = tuple(files.join(location, n) for n in sorted(set(expected) & on_disk))
    return _Plan(records_dir, built, table, paths, expected, tuple(problems))


def _rejected_problems(records_dir: str, built: manifest.Manifest) -> list[str]:
    if not files.exists(files.join(records_dir, manifest.REJECTED_NAME)):
        if built.num_rejected or built.num_annotations_rejected:
            return [f"{manifest.REJECTED_NAME} missing but manifest.json counts {built.num_rejected} rejected images"]
        return []
    try:
        rows = manifest.read_rejected(records_dir)
    except ValueError as error:
        return [str(error)]
    per_split = collections.Counter(row[0] for row in rows)
    problems = []
    for split, stats in sorted(built.splits.items()):
        if per_split[split] != stats.num_rejected:
            problems.append(
                f"{manifest.REJECTED_NAME} lists {per_split[split]} rejected {split} images, "
                f"manifest.json says {stats.num_rejected}"
            )
    others = sum(n for split, n in per_split.items() if split not in built.splits)
    if others != built.num_annotations_rejected:
        problems.append(
            f"{manifest.REJECTED_NAME} lists {others} rejected box files, "
            f"manifest.json says {built.num_annotations_rejected}"
        )
    return problems


def _combine(plan: _Plan, reports: Iterable[ShardReport], seconds: float) -> Report:
    by_name = {r.name: r for r in reports}
    problems = list(plan.problems)
    for path in plan.shard_paths:
        if posixpath.basename(path) not in by_name:  # only a runner losing work could do this; never pass it
            problems.append(f"{posixpath.basename(path)}: no report came back, so it was not verified; run again")
    for name, shard_report in sorted(by_name.items()):
        problems += shard_report.problems
        unlisted = shard_report.num_bad_records - len(shard_report.problems)
        if unlisted > 0:
            problems.append(f"{name}: {unlisted} more bad records not listed")
        expected = plan.expected_counts[name]
        if shard_report.complete and shard_report.num_records != expected:
            problems.append(f"{name}: holds {shard_report.num_records} records, manifest.json says {expected}")
    for split, stats in sorted(plan.built.splits.items()):
        split_reports = [by_name.get(shards.shard_name(split, i, stats.num_shards)) for i in range(stats.num_shards)]
        if not all(r is not None and r.complete for r in split_reports):
            continue  # a missing or cut shard is reported already; its classes cannot be counted
        counted = collections.Counter()
        for shard_report in split_reports:
            counted.update(shard_report.class_counts)
        wrong = sorted(w for w in set(counted) | set(stats.class_counts) if counted[w] != stats.class_counts.get(w, 0))
        if wrong:
            listed = ", ".join(f"{w} {counted[w]} vs {stats.class_counts.get(w, 0)}" for w in wrong[:5])
            problems.append(
                f"{split}: records per class disagree with manifest.json for {len(wrong)} classes "
                f"(shards vs manifest: {listed})"
            )
    ordered = tuple(by_name[n] for n in sorted(by_name))
    return Report(plan.records_dir, ordered, tuple(problems), seconds)


def format_report(report: Report) -> str:
    """The lines the CLI prints: every problem, then one summary line."""
    rate = (
        f"{report.num_records} records ({report.num_bytes / 1e6:.1f} MB) in {len(report.shards)} shards, "
        f"{report.seconds:.1f}s, {report.records_per_second:.0f} records/s"
    )
    if report.ok:
        return f"verified {rate}: {report.records_dir} is intact"
    lines = [f"  {p}" for p in report.problems]
    lines.append(f"FAILED: {len(report.problems)} problems in {report.records_dir} ({rate})")
    return "\n".join(lines)
