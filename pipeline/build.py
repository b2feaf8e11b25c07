"""The records job: index the input, check it, write the shards, write the metadata.

Two Beam pipelines run one after the other, with the launcher in between:

  1. Index: one element per unit (a synset tar, a tar, a class folder). Each
     worker lists its unit's images (tar headers or a directory listing, never
     image bytes), orders them by a keyed hash and writes the order to a small
     index file in the build's scratch directory (pipeline/index.py).
  2. The launcher reads the units' summaries: it now knows every class's image
     count, so it refuses an incomplete input (a truncated tar, a class with
     no images) before a single shard is written, and sizes the shards.
  3. Write: one element per run of a split's shards. Each writer reads the
     unit indexes once for its run, then reads and validates each shard's
     images and writes the shard.
  4. The launcher gathers the shards' results into manifest.json,
     rejected.tsv and synsets.tsv.

Only units and shard numbers cross the Beam graph: on the local runner
whatever crosses a stage is held in memory, so memory stays flat however many
images there are, and a worker holds one run's references and one shard's images.

Determinism: an image's shard and place come from the keyed hash of its path
and the seed and from the fixed order of the units, never from arrival order,
so the same input gives byte-identical shards on any runner and worker count.
A build that dies midway leaves finished shards (each appears under its final
name only when complete, its result beside it in the scratch directory) and
`--resume` writes only the missing ones.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import operator
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam

from pipeline import boxes as boxes_lib
from pipeline import index, layouts, tars
from pipeline.errors import InputError
from pipeline.layouts import Plan, Unit
from pipeline.options import BuildOptions
from records import features, files, images, manifest, shards, tfrecord
from records.synsets import SynsetTable

SCRATCH_NAME = ".build"  # in the output directory, until the build is complete


@dataclasses.dataclass(frozen=True)
class Scratch:
    """The build's working files, under <output_dir>/.build until the build completes."""

    output_dir: str

    @property
    def root(self) -> str:
        return files.join(self.output_dir, SCRATCH_NAME)

    @property
    def key_path(self) -> str:  # what the build is: input, options; a resume must match it
        return files.join(self.root, "build.json")

    @property
    def units_path(self) -> str:  # every unit's summary, written when indexing is complete
        return files.join(self.root, "units.json")

    @property
    def boxes_dir(self) -> str:  # the bbox tarball, split per unit
        return files.join(self.root, "boxes")

    @property
    def index_dir(self) -> str:  # one index file per unit
        return files.join(self.root, "index")

    @property
    def results_dir(self) -> str:  # one result per finished shard
        return files.join(self.root, "shards")

    def index_path(self, split: str, position: int) -> str:
        return files.join(self.index_dir, f"{split}-{position:05d}.idx")

    def result_path(self, shard: str) -> str:
        return files.join(self.results_dir, f"{shard}.json")


# --- 1. index -------------------------------------------------------------------------


@dataclasses.dataclass
class _Skipped:
    """Files of a unit that are not images to build, by reason: a count and one example."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, reason: str, path: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, path)


class IndexUnit(beam.DoFn):
    """(split, position, unit) -> its index file in scratch, and its summary (a small dict)."""

    def __init__(self, plan: Plan, options: BuildOptions, scratch: Scratch):
        self._plan, self._options, self._scratch = plan, options, scratch

    def process(self, element: tuple[str, int, Unit], boxes_ready=()) -> Iterator[dict]:
        split, position, unit = element
        listing, complete = _list_unit(unit)
        skipped = _Skipped()
        found = _images_of(unit, listing, skipped)
        summary = {
            "split": split,
            "position": position,
            "count": 0,
            "class_counts": {},
            "skipped": _skipped_once(unit, skipped),
            "rejected": [],
            "box_rejected": [],
        }
        if not complete:
            summary["truncated"] = f"{_unit_source(unit)} ends without the tar end-of-archive marker"
            if not self._options.allow_truncated_tars:
                yield summary
                return
            reason = f"archive truncated: {summary['truncated']} (interrupted download or copy); download it again"
            summary["rejected"] = [(split, _entry_source(unit, e), reason) for e in found]
            found = []
        labelled = self._labelled(unit, found, summary["rejected"])
        if unit.holdout:
            labelled = _apply_holdout(unit, labelled)
        boxes, summary["box_rejected"] = self._boxes(unit)
        entries = self._ordered(unit, labelled, boxes)
        index.write(self._scratch.index_path(split, position), entries)
        summary["count"] = len(entries)
        summary["class_counts"] = dict(collections.Counter(self._plan.synsets.synset_of(e.label) for e in entries))
        yield summary

    def _ordered(
        self, unit: Unit, labelled: list[tuple[index.Entry, int]], boxes: boxes_lib.Boxes
    ) -> list[index.Entry]:
        """The unit's index entries, with their labels and boxes, in the order of their keyed hash."""
        entries = [
            index.Entry(
                entry.inside,
                entry.offset,
                entry.size,
                label,
                index.order_key(self._options.seed, unit.split, unit.image_path(entry.inside)),
                boxes.get(boxes_lib.join_key(entry.inside), ()),
            )
            for entry, label in labelled
        ]
        return sorted(entries, key=operator.attrgetter("key", "inside"))

    def _labelled(self, unit: Unit, found: list[index.Entry], rejected: list) -> list[tuple[index.Entry, int]]:
        """(entry, label) pairs; an image without a label is added to `rejected`."""
        table = self._plan.synsets
        if unit.synset is not None:
            label = table.label_of(unit.synset)
            return [(entry, label) for entry in found]
        pairs = []
        for entry in found:
            synset = self._plan.val_labels.get(unit.image_path(entry.inside))
            if synset is None:  # the plan matched every image to a label; this one appeared since
                reason = "no label: the file appeared after the labels were matched; rerun"
                rejected.append((unit.split, _entry_source(unit, entry), reason))
            else:
                pairs.append((entry, table.label_of(synset)))
        return pairs

    def _boxes(self, unit: Unit) -> tuple[boxes_lib.Boxes, list]:
        """The unit's boxes by join key, and the rows of the box files that could not be used."""
        if unit.split != "train":
            return {}, []
        if unit.boxes:
            found, rejected = boxes_lib.read_folder(unit.boxes)
        elif self._plan.boxes_tarball:
            found, rejected = boxes_lib.read_split_file(files.join(self._scratch.boxes_dir, f"{unit.name}.json"))
        else:
            return {}, []
        return found, [list(row) for row in rejected]


def _list_unit(unit: Unit) -> tuple[list[index.Entry], bool]:
    """Every file of the unit, as (path inside it, where its bytes are), and whether the unit is whole."""
    if unit.kind in ("tar", "nested_tar"):
        listing = tars.list_nested_members(unit.path, unit.member) if unit.member else tars.list_members(unit.path)
        return [index.Entry(m.name, m.offset, m.size) for m in listing.members], listing.complete
    return [index.Entry(inside, -1, size) for inside, size in files.walk(unit.path)], True


def _images_of(unit: Unit, listing: list[index.Entry], skipped: _Skipped) -> list[index.Entry]:
    """The images to build: not hidden, with an image extension, each path once (a tar may
    hold a path twice; the later copy is the one extraction would leave, so it wins)."""
    by_path: dict[str, index.Entry] = {}
    for entry in listing:
        if layouts.is_hidden(entry.inside):
            skipped.add("hidden", _entry_source(unit, entry))
        elif not layouts.is_image_name(entry.inside):
            skipped.add("not an image", _entry_source(unit, entry))
        else:
            if entry.inside in by_path:
                skipped.add("duplicate", _entry_source(unit, entry))
            by_path[entry.inside] = entry
    return list(by_path.values())


def _skipped_once(unit: Unit, skipped: _Skipped) -> dict[str, list]:
    """reason -> [count, example]; a folder that a held-out twin lists again counts once, in train."""
    if unit.holdout and unit.holdout.take == "validation":
        return {}
    return {reason: [count, skipped.examples[reason]] for reason, count in sorted(skipped.counts.items())}


def _apply_holdout(unit: Unit, labelled: list[tuple[index.Entry, int]]) -> list[tuple[index.Entry, int]]:
    paths = [unit.image_path(entry.inside) for entry, _ in labelled]
    held = index.held_out(paths, unit.holdout.fraction, unit.holdout.seed)
    keep_held = unit.holdout.take == "validation"
    return [pair for i, pair in enumerate(labelled) if (i in held) == keep_held]


def _unit_source(unit: Unit) -> str:
    return f"{unit.path}:{unit.member.name}" if unit.member else unit.path


def _entry_source(unit: Unit, entry: index.Entry) -> str:
    """Where an image came from, as rejected.tsv and messages name it."""
    if unit.kind == "folder":
        return files.join(unit.path, entry.inside)
    return f"{_unit_source(unit)}/{entry.inside}" if unit.member else f"{unit.path}:{entry.inside}"


def index_pipeline(root: beam.Pipeline, plan: Plan, options: BuildOptions, scratch: Scratch) -> None:
    units = [(split, position, unit) for split in sorted(plan.units) for position, unit in enumerate(plan.units[split])]
    tarballs = [plan.boxes_tarball] if plan.boxes_tarball else []
    box_units = (
        root
        | "BoxTarball" >> beam.Create(tarballs)
        | "SplitBoxes" >> beam.FlatMap(boxes_lib.split_tarball, scratch.boxes_dir)
    )
    _ = (
        root
        | "Units" >> beam.Create(units)
        | "SpreadUnits" >> beam.Reshuffle()
        | "Index" >> beam.ParDo(IndexUnit(plan, options, scratch), boxes_ready=beam.pvalue.AsList(box_units))
        | "Gather" >> beam.combiners.ToList()
        | "WriteSummaries" >> beam.Map(_write_summaries, scratch.units_path)
    )


def _write_summaries(summaries: list[dict], path: str) -> None:
    summaries.sort(key=lambda s: (s["split"], s["position"]))
    files.write_atomically(path, json.dumps(summaries))


def read_summaries(scratch: Scratch) -> list[dict]:
    return json.loads(files.read_text(scratch.units_path))


# --- 2. check and size ----------------------------------------------------------------


def check_summaries(plan: Plan, options: BuildOptions, summaries: list[dict]) -> list[str]:
    """Raises InputError when the input is incomplete; returns warnings to show."""
    truncated = [s["truncated"] for s in summaries if s.get("truncated")]
    if truncated and not options.allow_truncated_tars:
        raise InputError(
            f"{len(truncated)} tars are truncated (interrupted download or copy): {'; '.join(truncated[:3])}"
            f"{'; ...' if len(truncated) > 3 else ''}. Download them again, or pass --allow_truncated_tars "
            "to reject their images and build the rest"
        )
    counts = split_counts(summaries)
    if not sum(counts.values()):
        raise InputError(
            f"{plan.input_dir}: no images found (image files end in {', '.join(layouts.IMAGE_EXTENSIONS)})"
        )
    train = collections.Counter()
    for s in summaries:
        if s["split"] == "train":
            train.update(s["class_counts"])
    empty = [c for c in plan.synsets.synsets if not train[c]] if "train" in plan.units else []
    if empty and not options.allow_empty_classes:
        raise InputError(
            f"{len(empty)} of {len(plan.synsets)} classes have no training images: {', '.join(empty[:10])}"
            f"{', ...' if len(empty) > 10 else ''}. Check the input is complete (an interrupted copy?), list only "
            "the classes you have with --synsets_file, or pass --allow_empty_classes"
        )
    warnings = [f"{len(truncated)} truncated tars: their images are rejected ({truncated[0]})"] if truncated else []
    if "validation" not in plan.units:
        warnings.append(
            "no validation images: estimator.train evaluates on a validation split; "
            "pass --validation_fraction=0.1 to hold out 10% of each class"
        )
    if empty:
        warnings.append(f"{len(empty)} classes have no training images: {', '.join(empty[:10])}")
    return warnings + _official_count_warnings(plan, options, counts)


def _official_count_warnings(plan: Plan, options: BuildOptions, counts: Mapping[str, int]) -> list[str]:
    if not plan.is_official_imagenet:
        return []
    differ = [
        f"{split} has {counts.get(split, 0):,} images, the official ILSVRC2012 {split} set {expected:,}"
        for split, expected in layouts.OFFICIAL_NUM_IMAGES.items()
        if split in plan.units and counts.get(split, 0) != expected
    ]
    message = "; ".join(list(plan.warnings) + differ)
    if message and options.strict_imagenet:  # the counts, or the tars' sizes and completeness (plan.warnings)
        raise InputError(f"not the complete ILSVRC2012: {message}; drop --strict_imagenet to build it anyway")
    return differ


def split_counts(summaries: Iterable[dict]) -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    for s in summaries:
        counts[s["split"]] += s["count"]
    return dict(counts)


def shard_counts(options: BuildOptions, counts: Mapping[str, int]) -> dict[str, int]:
    """The requested counts; 0 means sized from the split's image count."""
    return {split: options.num_shards.get(split, 0) or shards.auto_num_shards(split, n) for split, n in counts.items()}


# --- 3. write -------------------------------------------------------------------------


# A write element is a run of one split's shards, and its writer reads each
# unit's index once for the whole run: every shard takes a few images from
# every unit, so one shard per element would read each index once per shard
# (ImageNet: 1,000 indexes x 1,152 shards, ~100 GB). At most this many
# elements per split keeps that small and still spreads the work across workers.
WRITE_ELEMENTS_PER_SPLIT = 128


@dataclasses.dataclass(frozen=True)
class SplitLayout:
    """How one split's images are dealt to its shards: units in plan order (unit i's index
    is index_path(split, i)), their sizes and starts."""

    num_shards: int
    units: tuple[Unit, ...]
    counts: tuple[int, ...]
    starts: tuple[int, ...]  # images in all earlier units of the split

    @classmethod
    def build(cls, plan: Plan, summaries: list[dict], split: str, num_shards: int) -> SplitLayout:
        counts = {s["position"]: s["count"] for s in summaries if s["split"] == split}
        sizes = tuple(counts[p] for p in range(len(plan.units[split])))
        starts = tuple(itertools.accumulate(sizes, initial=0))[:-1]
        return cls(num_shards, plan.units[split], sizes, starts)


class WriteShards(beam.DoFn):
    """(split, shard indexes) -> complete shard files and their results in scratch.

    Each shard is written under a temporary name and renamed when complete; its
    result (counts, rejections) is written first, so a shard under its final
    name always has one. A retried bundle just writes both again, identically.
    """

    def __init__(
        self,
        layouts_by_split: Mapping[str, SplitLayout],
        table: SynsetTable,
        filename_is_path: bool,
        options: BuildOptions,
        scratch: Scratch,
        output_dir: str,
    ):
        self._layouts, self._table, self._filename_is_path = layouts_by_split, table, filename_is_path
        self._options, self._scratch, self._output_dir = options, scratch, output_dir

    def process(self, element: tuple[str, tuple[int, ...]]) -> Iterator[str]:
        split, shard_indexes = element
        layout = self._layouts[split]
        for shard_index, chosen in zip(shard_indexes, self._rows(split, shard_indexes, layout)):
            yield self._write_shard(split, shards.shard_name(split, shard_index, layout.num_shards), chosen)

    def _write_shard(self, split: str, name: str, chosen: list[tuple[str, Unit, index.Entry]]) -> str:
        final = files.join(self._output_dir, name)
        data, rejected = _read_images(chosen)
        temp = files.temp_name(final)
        try:
            result = self._write(temp, split, chosen, data, rejected)
            files.write_atomically(self._scratch.result_path(name), json.dumps({"shard": name, **result}))
            files.rename(temp, final)
        except OSError as error:
            files.remove([temp])
            raise OSError(
                f"{final}: cannot write the shard ({images.describe_error(error)}); free disk space or "
                "fix the permissions, then finish the build with --resume"
            ) from error
        return name

    def _rows(
        self, split: str, shard_indexes: Sequence[int], layout: SplitLayout
    ) -> list[list[tuple[str, Unit, index.Entry]]]:
        """Each shard's images, in shard order: (identity, unit, entry); each unit's index read once."""
        chosen = [[] for _ in shard_indexes]
        for position, (unit, count, start) in enumerate(zip(layout.units, layout.counts, layout.starts)):
            firsts = [(shard_index - start) % layout.num_shards for shard_index in shard_indexes]
            if min(firsts, default=count) >= count:
                continue
            unit_index = index.read(self._scratch.index_path(split, position))
            for shard_rows, first in zip(chosen, firsts):
                for row in range(first, count, layout.num_shards):
                    entry = unit_index.entry(row)
                    shard_rows.append((unit.image_path(entry.inside), unit, entry))
        for shard_rows in chosen:
            shard_rows.sort(key=lambda c: (c[2].key, c[0]))
        return chosen

    def _write(self, temp: str, split: str, chosen, data: Mapping[int, bytes], rejected: list) -> dict:
        class_counts, conversions = collections.Counter(), collections.Counter()
        num_bytes = 0
        with files.open_write(temp) as out:
            for number, (identity, unit, entry) in enumerate(chosen):
                if number not in data:
                    continue
                result = images.normalise_image(
                    data.pop(number),
                    validate=self._options.validate,
                    resize_max_side=self._options.resize_max_side,
                    max_pixels=self._options.max_pixels,
                )
                if isinstance(result, images.Rejected):
                    rejected.append((split, _entry_source(unit, entry), result.reason))
                    continue
                framed = tfrecord.frame(features.serialize(self._record(identity, entry, result)))
                out.write(framed)
                num_bytes += len(framed)
                class_counts[self._table.synset_of(entry.label)] += 1
                if result.conversion:
                    conversions[result.conversion] += 1
        return {
            "num_examples": sum(class_counts.values()),
            "num_bytes": num_bytes,
            "class_counts": class_counts,
            "conversions": conversions,
            "rejected": sorted(rejected),
        }

    def _record(self, identity: str, entry: index.Entry, image: images.NormalisedImage) -> features.ImageRecord:
        return features.ImageRecord(
            encoded=image.jpeg,
            filename=identity if self._filename_is_path else posixpath.basename(identity),
            height=image.height,
            width=image.width,
            label=entry.label,
            synset=self._table.synset_of(entry.label),
            text=self._table.text_of(entry.label),
            channels=image.channels,
            colorspace=image.colorspace,
            boxes=entry.boxes,
        )


def _read_images(chosen: Sequence[tuple[str, Unit, index.Entry]]) -> tuple[dict[int, bytes], list]:
    """A shard's image bytes by position in `chosen`: each source file opened once, read in byte order."""
    by_source = collections.defaultdict(list)
    for number, (_, unit, entry) in enumerate(chosen):
        source = unit.path if entry.offset >= 0 else files.join(unit.path, entry.inside)
        by_source[source].append((entry.offset, number))
    data, rejected = {}, []
    for source, wanted in by_source.items():
        try:
            with files.open_read(source) as f:
                for offset, number in sorted(wanted):
                    entry = chosen[number][2]
                    data[number] = f.read() if offset < 0 else tars.read_range(f, offset, entry.size)
        except OSError as error:
            for _, number in wanted:
                if number not in data:
                    _, unit, entry = chosen[number]
                    rejected.append((unit.split, _entry_source(unit, entry), f"unreadable: {error}"))
    return data, rejected


def write_pipeline(root: beam.Pipeline, todo: Sequence[tuple[str, tuple[int, ...]]], shard_writer: WriteShards) -> None:
    _ = (
        root
        | "Shards" >> beam.Create(list(todo))
        | "SpreadShards" >> beam.Reshuffle()
        | "WriteShards" >> beam.ParDo(shard_writer)
    )


def shards_to_write(
    output_dir: str, scratch: Scratch, num_shards: Mapping[str, int]
) -> list[tuple[str, tuple[int, ...]]]:
    """Every shard that is not finished, as write elements (runs of a split's shards).
    A finished shard has its final file and its result."""
    done_shards = set(files.match(output_dir, shards.shard_pattern("*")))
    done_results = set(files.match(scratch.results_dir, "*.json"))
    todo = []
    for split, count in sorted(num_shards.items()):
        names = [shards.shard_name(split, shard_index, count) for shard_index in range(count)]
        missing = [i for i, name in enumerate(names) if not (name in done_shards and f"{name}.json" in done_results)]
        run_length = math.ceil(count / WRITE_ELEMENTS_PER_SPLIT)
        todo += [(split, tuple(missing[i : i + run_length])) for i in range(0, len(missing), run_length)]
    return todo


# --- 4. metadata ----------------------------------------------------------------------


def write_metadata(
    plan: Plan, options: BuildOptions, scratch: Scratch, summaries: list[dict], num_shards: Mapping[str, int]
) -> manifest.Manifest:
    """manifest.json, rejected.tsv and synsets.tsv from the units' summaries and the shards' results."""
    output_dir = scratch.output_dir
    splits, image_rejections = {}, []
    for split, count in sorted(num_shards.items()):
        results = [_read_result(scratch, shards.shard_name(split, i, count)) for i in range(count)]
        split_summaries = [s for s in summaries if s["split"] == split]
        rejected = sorted(
            [tuple(r) for s in split_summaries for r in s["rejected"]]
            + [tuple(r) for r in results for r in r["rejected"]]
        )
        image_rejections += rejected
        splits[split] = manifest.SplitStats(
            num_examples=sum(r["num_examples"] for r in results),
            num_shards=count,
            shard_counts=tuple(r["num_examples"] for r in results),
            class_counts=dict(sorted(_add(r["class_counts"] for r in results).items())),
            num_rejected=len(rejected),
            conversions=dict(sorted(_add(r["conversions"] for r in results).items())),
            shard_bytes=tuple(r["num_bytes"] for r in results),
            skipped=dict(sorted(_add({k: v[0] for k, v in s["skipped"].items()} for s in split_summaries).items())),
        )
    box_rejections = sorted(("boxes", origin, reason) for s in summaries for origin, reason in s["box_rejected"])
    built = manifest.Manifest(
        num_classes=len(plan.synsets),
        splits=splits,
        num_rejected=len(image_rejections),
        num_annotations_rejected=len(box_rejections),
        options=options.to_json(),
        source=plan.source,
    )
    plan.synsets.write_tsv(files.join(output_dir, manifest.SYNSETS_NAME))
    manifest.write_rejected(output_dir, image_rejections + box_rejections)
    manifest.write_manifest(output_dir, built)
    return built


def _read_result(scratch: Scratch, shard: str) -> dict:
    return json.loads(files.read_text(scratch.result_path(shard)))


def _add(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = collections.Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)
