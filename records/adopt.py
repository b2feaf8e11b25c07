"""`records adopt`: describe TFRecords written by another converter, so that every tool here reads them.

The reference converters (inception/slim `build_imagenet_data.py`, the TPU
`imagenet_to_gcs.py`) write the same keys and shard names as the records job,
but no manifest.json or synsets.tsv. Adopting reads every record once (on all
cores, or as a Beam job for builds on gs://) and writes both: counts per
split, shard and class, each shard's size, and the label <-> synset <-> text
table the records themselves carry. The shards are not touched; with
`out_dir` the metadata goes elsewhere (a read-only or shared source) and the
manifest names where the shards are.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from records import features, files, manifest, shardmap, shards, tfrecord
from records.synsets import LABEL_OFFSET, SynsetTable


class AdoptError(ValueError):
    """The directory is not a build that can be described; the message names the file and the fix."""


def scan_shard(path: str) -> dict:
    """What one shard holds: records, bytes, records per synset, (label, synset, text) triples, and the
    first problem ('' if none). A JSON-able dict, so it travels back from Beam workers."""
    counts: collections.Counter = collections.Counter()
    classes: set[tuple[int, str, str]] = set()
    problem, num_bytes = "", 0
    try:
        with files.open_read(path) as f:
            for number, data in enumerate(tfrecord.read_frames(f)):
                try:
                    record = features.from_example(data)
                except ValueError as error:  # a missing key, bytes that are not an Example, text not UTF-8
                    problem = f"{path} record {number}: {error}"
                    break
                num_bytes += len(data) + tfrecord.FRAME_OVERHEAD
                counts[record.synset] += 1
                classes.add((record.label, record.synset, record.text))
    except ValueError as error:  # a CRC or framing error
        problem = f"{path}: {error}"
    return {
        "path": path,
        "num_records": sum(counts.values()),
        "num_bytes": num_bytes,
        "class_counts": dict(counts),
        "classes": sorted(classes),
        "problem": problem,
    }


def adopt(
    source_dir: str, out_dir: str | None = None, *, workers: int | None = None, beam_args: Sequence[str] | None = None
) -> manifest.Manifest:
    """Scans every shard in source_dir and writes synsets.tsv and manifest.json to out_dir (default:
    source_dir). AdoptError, naming the file, when the shards cannot be described."""
    out_dir = out_dir or source_dir
    if files.exists(files.join(out_dir, manifest.MANIFEST_NAME)):
        raise AdoptError(f"{out_dir} already has a {manifest.MANIFEST_NAME}; it needs no adopting")
    layout = _shard_layout(source_dir)
    by_split = {
        split: [files.join(source_dir, name) for name in shards.shard_names(split, n)] for split, n in layout.items()
    }
    paths = [path for split_paths in by_split.values() for path in split_paths]
    if beam_args is not None:
        scans = shardmap.map_with_beam(scan_shard, paths, beam_args)
    else:
        scans = list(shardmap.map_local(scan_shard, paths, workers))
    by_path = {scan["path"]: scan for scan in scans}
    problems = [by_path[p]["problem"] for p in paths if by_path[p]["problem"]]
    if problems:
        raise AdoptError(
            f"{problems[0]}; the shard cannot be adopted: copy it again from its source"
            + (f" ({len(problems) - 1} more shards have problems)" if len(problems) > 1 else "")
        )
    table = _class_table(by_path[p] for p in paths)
    built = manifest.Manifest(
        num_classes=len(table),
        splits={split: _split_stats([by_path[p] for p in split_paths]) for split, split_paths in by_split.items()},
        options={},
        source={"adopted_from": source_dir},
        shards_dir="" if out_dir == source_dir else source_dir,
    )
    files.makedirs(out_dir)
    table.write_tsv(files.join(out_dir, manifest.SYNSETS_NAME))
    manifest.write_manifest(out_dir, built)
    return built


def _shard_layout(source_dir: str) -> dict[str, int]:
    """split -> shard count, checked complete: every index 0..N-1 of one N."""
    names = files.match(source_dir, shards.shard_pattern("*"))
    layout: dict[str, set[int]] = collections.defaultdict(set)
    for name in names:
        parsed = shards.parse_shard_name(name)
        if parsed and parsed[0] in shards.SPLITS:
            split, _, total = parsed
            layout[split].add(total)
    if not layout:
        raise AdoptError(f"{source_dir}: no shards named like train-00000-of-01024 or validation-00000-of-00128")
    out = {}
    for split, totals in sorted(layout.items()):
        if len(totals) != 1:
            raise AdoptError(
                f"{source_dir}: {split} shards of two builds ({' and '.join(map(str, sorted(totals)))} "
                "shards); keep one build per directory"
            )
        (total,) = totals
        missing = [n for n in shards.shard_names(split, total) if n not in names]
        if missing:
            raise AdoptError(
                f"{source_dir}: {len(missing)} of {total} {split} shards are missing, e.g. {missing[0]}; "
                "copy them again"
            )
        out[split] = total
    return out


def _class_table(scans: Iterable[dict]) -> SynsetTable:
    """The table the records carry: each label one synset (and text), labels 1..N, none missing."""
    synset_of: dict[int, tuple[str, str, str]] = {}  # label -> (synset, text, where first seen)
    for scan in scans:
        for label, synset, text in scan["classes"]:
            seen = synset_of.setdefault(label, (synset, text, scan["path"]))
            if seen[0] != synset:
                raise AdoptError(
                    f"label {label} is {seen[0]!r} in {seen[2]} but {synset!r} in {scan['path']}: "
                    "the shards come from builds with different class lists"
                )
    labels = sorted(synset_of)
    if labels[0] < LABEL_OFFSET:
        where = synset_of[labels[0]][2]
        raise AdoptError(
            f"{where} holds label {labels[0]}: labels must be {LABEL_OFFSET}-based (0 is background, "
            "as the reference converters write them); this build would train shifted by one"
        )
    missing = sorted(set(range(LABEL_OFFSET, labels[-1] + 1)) - set(labels))
    if missing:
        raise AdoptError(
            f"labels run to {labels[-1]} but {len(missing)} have no record (e.g. {missing[0]}): their "
            "classes cannot be named; adopt the complete build"
        )
    synsets = [synset_of[label][0] for label in labels]
    texts = {synset: text for synset, text, _ in synset_of.values()}
    return SynsetTable.build(synsets, texts, keep_order=True)


def _split_stats(scans: list[dict]) -> manifest.SplitStats:
    """One split's statistics from its shards' scans, in shard order."""
    counts: collections.Counter = collections.Counter()
    for scan in scans:
        counts.update(scan["class_counts"])
    return manifest.SplitStats(
        num_examples=sum(s["num_records"] for s in scans),
        num_shards=len(scans),
        shard_counts=tuple(s["num_records"] for s in scans),
        class_counts=dict(sorted(counts.items())),
        shard_bytes=tuple(s["num_bytes"] for s in scans),
    )
