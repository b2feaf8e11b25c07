"""The Beam graph: index inputs, assign shards, join boxes, write shards, write metadata.

Only small references travel through the shuffle — (split, shard) -> where an
image's bytes lie. Each shard writer reads, validates and encodes its own
images, so no image byte crosses a GroupByKey (that costs ~10x on the local
runner) and a worker's memory is bounded by one shard, never by the dataset.

Determinism: an image's place comes from a keyed hash of its name and the
seed, and from the fixed order of the work units, never from arrival order; so
the same input gives byte-identical shards on any runner and worker count.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import posixpath
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline import boxes as boxes_lib
from pipeline import layouts, tars
from pipeline.layouts import Plan, Unit
from records import features, images, manifest, shards, tfrecord
from records.synsets import SynsetTable

METRICS_NAMESPACE = "imagenet"
RAW = CompressionTypes.UNCOMPRESSED


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    output_dir: str
    num_shards: Mapping[str, int]  # split -> shard count
    seed: int = 0
    validate: str = "decode"
    resize_max_side: int = 0
    max_pixels: int = images.DEFAULT_MAX_PIXELS


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """Where one image's bytes lie, and what it is; the only thing shuffled."""

    split: str
    name: str  # base file name, unique within a split
    path: str
    offset: int  # -1: the whole file at `path`
    size: int
    wnid: str
    key: int  # keyed hash: the image's order within its unit and shard
    boxes: tuple[features.Box, ...] = ()


@dataclasses.dataclass(frozen=True)
class ShardResult:
    split: str
    index: int
    num_examples: int
    num_bytes: int
    class_counts: dict[str, int]
    conversions: dict[str, int]
    rejected: tuple[tuple[str, str, str], ...]  # (split, source, reason)


def image_key(seed: int, split: str, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{split}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# --- indexing -----------------------------------------------------------------------


class IndexUnit(beam.DoFn):
    """Unit -> (split, unit name, its image refs sorted by key). Reads headers only."""

    def __init__(self, val_labels: Mapping[str, str], seed: int):
        self._val_labels = val_labels
        self._seed = seed

    def process(self, unit: Unit) -> Iterator[tuple[str, str, list[ImageRef]]]:
        if unit.kind == "nested_tar":
            found = [(m.name, unit.path, m.offset, m.size) for m in tars.list_nested_members(unit.path, unit.member)]
        elif unit.kind == "tar":
            found = [(m.name, unit.path, m.offset, m.size) for m in tars.list_members(unit.path)]
        else:
            pattern = posixpath.join(unit.path, "*")
            matched = [m for m in FileSystems.match([pattern])[0].metadata_list if not _is_dir(m.path)]
            # Same rule as planning: a folder's images are its files with an image extension.
            skipped = [m.path for m in matched if not layouts.is_image_name(m.path)]
            if skipped:
                Metrics.counter(METRICS_NAMESPACE, "non_image_files_skipped").inc(len(skipped))
                logging.warning(
                    "%s: skipped %d files without an image extension, e.g. %s", unit.path, len(skipped), skipped[0]
                )
            found = [(m.path, m.path, -1, m.size_in_bytes) for m in matched if layouts.is_image_name(m.path)]
        refs = []
        for member, path, offset, size in found:
            name = posixpath.basename(member)
            wnid = unit.wnid or self._val_labels.get(name)
            if wnid is None:  # the plan checked every flat val image has a label
                raise ValueError(f"{path}: image {name} appeared after planning and has no label")
            refs.append(ImageRef(unit.split, name, path, offset, size, wnid, image_key(self._seed, unit.split, name)))
        refs.sort(key=lambda r: (r.key, r.name))
        Metrics.counter(METRICS_NAMESPACE, f"{unit.split}/images_read").inc(len(refs))
        yield unit.split, unit.name, refs


def _is_dir(path: str) -> bool:
    return path.endswith("/") or (not path.startswith("gs://") and posixpath.isdir(path))


class AssignShards(beam.DoFn):
    """Deals each unit's refs round-robin, continuing where the previous unit stopped.

    Shard sizes then differ by at most one image, and every training shard
    holds images of every class — a hash-modulo split would be off by a few
    percent and needs no less work.
    """

    def __init__(self, num_shards: Mapping[str, int]):
        self._num_shards = num_shards

    def process(self, element, unit_sizes: Mapping[tuple[str, str], int]):
        split, unit_name, refs = element
        start = sum(n for (s, u), n in unit_sizes.items() if s == split and u < unit_name)
        num_shards = self._num_shards[split]
        for position, ref in enumerate(refs, start):
            yield (split, position % num_shards), ref


# --- bounding boxes -----------------------------------------------------------------


class ReadBoxes(beam.DoFn):
    """A bbox tarball or a folder of <wnid>/<image>.xml -> (image key, boxes).

    A malformed file is reported (tagged 'rejected') and its image keeps no
    boxes; the job goes on.
    """

    REJECTED = "rejected"

    def process(self, source: str):
        if source.endswith((".tar.gz", ".tgz", ".tar")):
            with FileSystems.open(source, compression_type=RAW) as raw:
                mode = "r|gz" if source.endswith(("gz", "tgz")) else "r|"
                with tarfile.open(fileobj=raw, mode=mode) as archive:
                    for info in archive:
                        if info.isfile() and info.name.endswith(".xml"):
                            data = archive.extractfile(info).read()
                            yield from self._parse(f"{source}:{info.name}", info.name, data)
        else:
            for metadata in FileSystems.match([posixpath.join(source, "*", "*.xml")])[0].metadata_list:
                with FileSystems.open(metadata.path, compression_type=RAW) as f:
                    yield from self._parse(metadata.path, metadata.path, f.read())

    def _parse(self, origin: str, name: str, data: bytes):
        try:
            parsed = boxes_lib.parse_voc_xml(data)
        except ValueError as error:
            Metrics.counter(METRICS_NAMESPACE, "annotations_rejected").inc()
            yield beam.pvalue.TaggedOutput(self.REJECTED, ("boxes", origin, f"{error}; image kept without boxes"))
            return
        Metrics.counter(METRICS_NAMESPACE, "annotations_read").inc()
        yield ("train", boxes_lib.image_key(name)), parsed  # boxes exist for train images only


def _attach_boxes(joined):
    _, grouped = joined
    found = list(grouped["boxes"])
    for shard_key, ref in grouped["refs"]:
        yield shard_key, (dataclasses.replace(ref, boxes=found[0]) if found else ref)


# --- writing shards -----------------------------------------------------------------


class WriteShard(beam.DoFn):
    """(split, shard) + refs -> one complete shard file, and its ShardResult.

    The file is written under a temporary name and renamed when complete, so
    a shard never appears half-written (a retried bundle just renames again).
    """

    def __init__(self, synsets: SynsetTable, options: BuildOptions):
        self._synsets = synsets
        self._options = options
        self._started = None
        self._written = 0

    def setup(self):
        self._started = time.monotonic()

    def process(self, element) -> Iterator[ShardResult]:
        (split, index), refs = element
        refs = sorted((r for r in refs if r is not None), key=lambda r: (r.key, r.name))
        num_shards = self._options.num_shards[split]
        final = posixpath.join(self._options.output_dir, shards.shard_name(split, index, num_shards))
        temp = f"{final}.tmp-{uuid.uuid4().hex}"
        data_by_name, rejected = _read_all(refs)
        counter = lambda name: Metrics.counter(METRICS_NAMESPACE, f"{split}/{name}")  # noqa: E731
        class_counts: dict[str, int] = collections.Counter()
        conversions: dict[str, int] = collections.Counter()
        num_bytes = 0
        with FileSystems.create(temp, compression_type=RAW) as out:
            for ref in refs:
                if ref.name not in data_by_name:
                    continue
                result = images.normalise_image(
                    data_by_name[ref.name],
                    validate=self._options.validate,
                    resize_max_side=self._options.resize_max_side,
                    max_pixels=self._options.max_pixels,
                )
                if isinstance(result, images.Rejected):
                    rejected.append((split, _source(ref), result.reason))
                    continue
                label = self._synsets.label_of(ref.wnid)
                record = features.ImageRecord(
                    encoded=result.jpeg,
                    filename=ref.name,
                    height=result.height,
                    width=result.width,
                    label=label,
                    synset=ref.wnid,
                    text=self._synsets.text_of(label),
                    channels=result.channels,
                    colorspace=result.colorspace,
                    boxes=ref.boxes,
                )
                framed = tfrecord.frame(features.serialize(record))
                out.write(framed)
                num_bytes += len(framed)
                class_counts[ref.wnid] += 1
                if result.conversion:
                    conversions[result.conversion] += 1
        FileSystems.rename([temp], [final])
        written = sum(class_counts.values())
        counter("images_written").inc(written)
        counter("images_rejected").inc(len(rejected))
        counter("images_converted").inc(sum(conversions.values()))
        counter("bytes_written").inc(num_bytes)
        self._written += written
        elapsed = max(time.monotonic() - self._started, 1e-9)
        logging.info(
            "wrote %s: %d images, %d rejected (this worker: %d images, %.0f images/s)",
            posixpath.basename(final),
            written,
            len(rejected),
            self._written,
            self._written / elapsed,
        )
        yield ShardResult(split, index, written, num_bytes, dict(class_counts), dict(conversions), tuple(rejected))


def _source(ref: ImageRef) -> str:
    return ref.path if ref.offset < 0 else f"{ref.path}:{ref.name}"


def _read_all(refs: list[ImageRef]) -> tuple[dict[str, bytes], list[tuple[str, str, str]]]:
    """Reads a shard's images, each source file opened once, in byte order."""
    data: dict[str, bytes] = {}
    rejected = []
    by_path = collections.defaultdict(list)
    for ref in refs:
        by_path[ref.path].append(ref)
    for path, group in by_path.items():
        try:
            with FileSystems.open(path, compression_type=RAW) as f:
                for ref in sorted(group, key=lambda r: r.offset):
                    data[ref.name] = f.read() if ref.offset < 0 else tars.read_range(f, ref.offset, ref.size)
        except OSError as error:
            for ref in group:
                if ref.name not in data:
                    rejected.append((ref.split, _source(ref), f"unreadable: {error}"))
    return data, rejected


# --- metadata -----------------------------------------------------------------------


class WriteMetadata(beam.DoFn):
    """Runs once, over every ShardResult: manifest.json, rejected.tsv, synsets.tsv."""

    def __init__(self, plan: Plan, options: BuildOptions, build_options: Mapping):
        self._plan, self._options, self._build_options = plan, options, build_options

    def process(self, _, results: list[ShardResult], annotation_rejections: list[tuple[str, str, str]]):
        by_split = collections.defaultdict(list)
        for result in results:
            by_split[result.split].append(result)
        splits = {}
        image_rejections = []
        for split, split_results in sorted(by_split.items()):
            split_results.sort(key=lambda r: r.index)
            rejected = sorted(row for r in split_results for row in r.rejected)
            image_rejections += rejected
            splits[split] = manifest.SplitStats(
                num_examples=sum(r.num_examples for r in split_results),
                num_shards=len(split_results),
                shard_counts=tuple(r.num_examples for r in split_results),
                class_counts=dict(sorted(_add(r.class_counts for r in split_results).items())),
                num_rejected=len(rejected),
                conversions=dict(sorted(_add(r.conversions for r in split_results).items())),
            )
        built = manifest.Manifest(
            num_classes=len(self._plan.synsets),
            splits=splits,
            num_rejected=len(image_rejections),
            num_annotations_rejected=len(annotation_rejections),
            options=dict(self._build_options),
            source={
                "layout": self._plan.layout,
                "input_dir": self._plan.input_dir,
                "files": dict(self._plan.fingerprint),
            },
        )
        output_dir = self._options.output_dir
        self._plan.synsets.write_tsv(posixpath.join(output_dir, manifest.SYNSETS_NAME))
        manifest.write_rejected(output_dir, image_rejections + sorted(annotation_rejections))
        manifest.write_manifest(output_dir, built)
        yield built


def _add(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = collections.Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


# --- the graph ----------------------------------------------------------------------


def build_pipeline(root: beam.Pipeline, plan: Plan, options: BuildOptions, build_options: Mapping) -> None:
    splits = sorted(plan.units)
    units = [u for split in splits for u in plan.units[split]]
    indexed = (
        root
        | "Units" >> beam.Create(units)
        | "SpreadUnits" >> beam.Reshuffle()
        | "Index" >> beam.ParDo(IndexUnit(plan.val_labels, options.seed))
    )
    unit_sizes = indexed | "UnitSizes" >> beam.Map(lambda x: ((x[0], x[1]), len(x[2])))
    assigned = indexed | "Assign" >> beam.ParDo(
        AssignShards(options.num_shards), unit_sizes=beam.pvalue.AsDict(unit_sizes)
    )

    if plan.boxes:
        read = (
            root
            | "BoxSource" >> beam.Create([plan.boxes])
            | "ReadBoxes" >> beam.ParDo(ReadBoxes()).with_outputs(ReadBoxes.REJECTED, main="boxes")
        )
        by_image = assigned | "KeyByImage" >> beam.Map(lambda kv: ((kv[1].split, boxes_lib.image_key(kv[1].name)), kv))
        assigned = (
            {"refs": by_image, "boxes": read.boxes}
            | "JoinBoxes" >> beam.CoGroupByKey()
            | "AttachBoxes" >> beam.FlatMap(_attach_boxes)
        )
        annotation_rejections = read[ReadBoxes.REJECTED]
    else:
        annotation_rejections = root | "NoBoxes" >> beam.Create([])

    every_shard = root | "AllShards" >> beam.Create(
        [((split, i), None) for split in splits for i in range(options.num_shards[split])]
    )
    results = (
        (assigned, every_shard)
        | "Merge" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(plan.synsets, options))
    )
    (
        root
        | "Finish" >> beam.Create([None])
        | "WriteMetadata"
        >> beam.ParDo(
            WriteMetadata(plan, options, build_options),
            results=beam.pvalue.AsList(results),
            annotation_rejections=beam.pvalue.AsList(annotation_rejections),
        )
    )


def prepare_output(output_dir: str, overwrite: bool) -> None:
    """Refuses to mix two builds in one directory: readers glob every shard there."""
    patterns = [posixpath.join(output_dir, shards.shard_pattern(s)) for s in shards.SPLITS]
    patterns.append(posixpath.join(output_dir, manifest.MANIFEST_NAME))
    existing = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if existing and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds records ({len(existing)} files); pass --overwrite to replace "
            "them, or choose another --output_dir"
        )
    if existing:
        FileSystems.delete(existing)
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)


def run(
    plan: Plan, options: BuildOptions, recorded_options: Mapping, pipeline_options
) -> beam.runners.runner.PipelineResult:
    """Builds and runs the job to completion; returns Beam's result (metrics)."""
    root = beam.Pipeline(options=pipeline_options)
    build_pipeline(root, plan, options, recorded_options)
    with _ShardProgress(options):
        result = root.run()
        result.wait_until_finish()
    return result


class _ShardProgress(threading.Thread):
    """Logs finished shards / total and an ETA while the job runs.

    Watching the output directory works the same for every runner and needs
    nothing from the workers (whose logs the local runner buries).
    """

    def __init__(self, options: BuildOptions, every_secs: float = 10.0):
        super().__init__(daemon=True)
        self._options, self._every = options, every_secs
        self._done = threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self.join()

    def run(self):
        total = sum(self._options.num_shards.values())
        patterns = [posixpath.join(self._options.output_dir, shards.shard_pattern(s)) for s in self._options.num_shards]
        started = time.monotonic()
        while not self._done.wait(self._every):
            try:
                finished = sum(len(r.metadata_list) for r in FileSystems.match(patterns))
            except Exception:  # progress is best effort; the job's own errors matter
                continue
            elapsed = time.monotonic() - started
            eta = f", about {elapsed * (total - finished) / finished:.0f}s left" if finished else ""
            logging.info("progress: %d/%d shards written after %.0fs%s", finished, total, elapsed, eta)
