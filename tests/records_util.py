"""A small, learnable records build for the trainer's tests.

Written straight through records/ (serialize, manifest with shard sizes,
synsets.tsv), in the layout of the records job's output but for rejected.tsv
(nothing is rejected here), from Pillow-drawn JPEGs: each class is a
colour, drawn as a noisy background plus a boxed ellipse, so a network learns
it in a few hundred steps even from random crops. `write_records_dir` is the
one entry point; swap it for the real pipeline output without touching tests.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from records import features, manifest, shards, synsets, tfrecord

PALETTE = (
    (220, 40, 40),
    (40, 200, 40),
    (40, 60, 220),
    (230, 220, 40),
    (200, 40, 200),
    (40, 210, 210),
    (240, 140, 30),
    (120, 120, 120),
)


def wnid(index: int) -> str:
    return f"n{index + 1:08d}"


def class_table(num_classes: int, names: Sequence[str] | None = None) -> synsets.SynsetTable:
    """Class i is wnid(i), "class i" (ImageNet-style), or names[i] with its name as text
    (an image-folder dataset's folder names), in label order."""
    if names is None:
        return synsets.SynsetTable.build(
            [wnid(i) for i in range(num_classes)], {wnid(i): f"class {i}" for i in range(num_classes)}
        )
    assert len(names) == num_classes, (names, num_classes)
    return synsets.SynsetTable.build(names, {name: name for name in names}, keep_order=True)


def learnable_jpeg(
    class_index: int, rng: np.random.Generator, height: int, width: int, grayscale: bool = False
) -> tuple[bytes, tuple[float, float, float, float]]:
    """JPEG bytes and the object's box (xmin, ymin, xmax, ymax), normalised."""
    colour = np.array(PALETTE[class_index % len(PALETTE)], np.float32)
    pixels = colour * 0.6 + rng.normal(0, 25, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    box_w, box_h = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    x0, y0 = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
    ImageDraw.Draw(image).ellipse([x0, y0, x0 + box_w, y0 + box_h], fill=tuple(int(c) for c in colour))
    if grayscale:
        image = image.convert("L")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue(), (x0 / width, y0 / height, (x0 + box_w) / width, (y0 + box_h) / height)


def make_records(
    split: str,
    num_classes: int,
    per_class: int,
    seed: int,
    size_range: tuple[int, int] = (40, 72),
    with_boxes: bool = True,
    class_names: Sequence[str] | None = None,
) -> list[features.ImageRecord]:
    table = class_table(num_classes, class_names)
    rng = np.random.default_rng([seed, shards.SPLITS.index(split)])
    records = []
    for number in range(per_class):
        for class_index in range(num_classes):
            height, width = (int(v) for v in rng.integers(*size_range, size=2))
            grayscale = number == per_class - 1 and class_index == 0  # one grayscale JPEG, as in ImageNet
            data, box = learnable_jpeg(class_index, rng, height, width, grayscale=grayscale)
            records.append(
                features.ImageRecord(
                    encoded=data,
                    filename=f"{split}_{class_index}_{number}.JPEG",
                    height=height,
                    width=width,
                    label=class_index + synsets.LABEL_OFFSET,
                    synset=table.synsets[class_index],
                    text=table.texts[class_index],
                    channels=1 if grayscale else 3,
                    boxes=(box,) if with_boxes and split == "train" else (),
                )
            )
    return records


def write_split(out_dir: str, split: str, records: list[features.ImageRecord], num_shards: int) -> manifest.SplitStats:
    """Round-robin into shards, as TFRecords the pipeline would write."""
    shard_counts = [0] * num_shards
    class_counts: dict[str, int] = {}
    paths = [os.path.join(out_dir, name) for name in shards.shard_names(split, num_shards)]
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    for index, record in enumerate(records):
        writers[index % num_shards].write(features.serialize(record))
        shard_counts[index % num_shards] += 1
        class_counts[record.synset] = class_counts.get(record.synset, 0) + 1
    for writer in writers:
        writer.close()
    return manifest.SplitStats(
        num_examples=len(records),
        num_shards=num_shards,
        shard_counts=tuple(shard_counts),
        class_counts=class_counts,
        shard_bytes=tuple(os.path.getsize(path) for path in paths),
    )


def write_records_dir(
    out_dir,
    *,
    num_classes: int = 6,
    train_per_class: int = 24,
    validation_per_class: int = 6,
    train_shards: int = 3,
    validation_shards: int = 2,
    seed: int = 0,
    size_range: tuple[int, int] = (40, 72),
    class_names: Sequence[str] | None = None,
) -> manifest.Manifest:
    """A complete build in out_dir: shards + manifest.json (with shard sizes) + synsets.tsv."""
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    per_class = {"train": train_per_class, "validation": validation_per_class}
    num_shards = {"train": train_shards, "validation": validation_shards}
    splits = {
        split: write_split(
            out_dir,
            split,
            make_records(split, num_classes, per_class[split], seed, size_range, class_names=class_names),
            num_shards[split],
        )
        for split in shards.SPLITS
    }
    build = manifest.Manifest(num_classes=num_classes, splits=splits)
    manifest.write_manifest(out_dir, build)
    class_table(num_classes, class_names).write_tsv(os.path.join(out_dir, manifest.SYNSETS_NAME))
    return build


def replace_split(out_dir, split: str, records: list[features.ImageRecord], num_shards: int) -> None:
    """Rewrites one split of a build and its entry in manifest.json, as a rebuild would."""
    out_dir = str(out_dir)
    build = manifest.read_manifest(out_dir)
    stats = write_split(out_dir, split, records, num_shards)
    manifest.write_manifest(out_dir, dataclasses.replace(build, splits={**build.splits, split: stats}))


def cut_last_record(path: str) -> None:
    """Truncates a shard exactly at its last record's start: every frame left is intact."""
    with open(path, "rb") as f:
        lengths = [len(frame) for frame in tfrecord.read_frames(f)]
    with open(path, "r+b") as f:
        f.truncate(sum(length + 16 for length in lengths[:-1]))


def flip_byte(path: str, offset_from_end: int = 40) -> None:
    """Damages one byte inside the last record's data, so its CRC no longer matches."""
    with open(path, "r+b") as f:
        f.seek(-offset_from_end, os.SEEK_END)
        value = f.read(1)[0]
        f.seek(-offset_from_end, os.SEEK_END)
        f.write(bytes([value ^ 0xFF]))
