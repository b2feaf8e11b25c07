"""`tf.train.Example` layout of one ImageNet record, and the one parse spec.

The keys and meanings are those of the reference ImageNet converters
(inception/slim `build_imagenet_data.py`, the TPU ResNet and Model Garden
readers), so shards written here feed those readers unchanged. Every reader in
this project parses through `PARSE_SPEC`/`parse_example`, so a key can never be
spelt two ways.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

ENCODED = "image/encoded"
FORMAT = "image/format"
COLORSPACE = "image/colorspace"
CHANNELS = "image/channels"
HEIGHT = "image/height"
WIDTH = "image/width"
FILENAME = "image/filename"
LABEL = "image/class/label"
SYNSET = "image/class/synset"
TEXT = "image/class/text"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMAX = "image/object/bbox/ymax"
BBOX_LABEL = "image/object/bbox/label"

BBOX_KEYS = (BBOX_YMIN, BBOX_XMIN, BBOX_YMAX, BBOX_XMAX)  # tf.image box order

Box = tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax), normalised


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image as stored: what a writer fills in and a Python reader gets back."""

    encoded: bytes
    filename: str
    height: int
    width: int
    label: int  # 1-based; 0 is reserved for background
    synset: str
    text: str
    channels: int = 3
    colorspace: str = "RGB"
    format: str = "JPEG"
    boxes: tuple[Box, ...] = ()


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def to_example(record: ImageRecord) -> tf.train.Example:
    """Builds the Example; box features are written (empty) even without boxes,
    as the reference converters do, so readers never meet a missing key."""
    boxes = record.boxes
    feature = {
        ENCODED: _bytes([record.encoded]),
        FORMAT: _bytes([record.format.encode()]),
        COLORSPACE: _bytes([record.colorspace.encode()]),
        CHANNELS: _ints([record.channels]),
        HEIGHT: _ints([record.height]),
        WIDTH: _ints([record.width]),
        FILENAME: _bytes([record.filename.encode()]),
        LABEL: _ints([record.label]),
        SYNSET: _bytes([record.synset.encode()]),
        TEXT: _bytes([record.text.encode()]),
        BBOX_XMIN: _floats([b[0] for b in boxes]),
        BBOX_YMIN: _floats([b[1] for b in boxes]),
        BBOX_XMAX: _floats([b[2] for b in boxes]),
        BBOX_YMAX: _floats([b[3] for b in boxes]),
        BBOX_LABEL: _ints([record.label] * len(boxes)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def serialize(record: ImageRecord) -> bytes:
    return to_example(record).SerializeToString()


def from_example(serialized: bytes) -> ImageRecord:
    """Python-side decoding, for tools (verify, inspect) and tests."""
    feature = tf.train.Example.FromString(serialized).features.feature

    def one(key: str, kind: str):
        values = getattr(feature[key], kind).value
        if len(values) != 1:
            raise ValueError(f"feature {key!r} has {len(values)} values, expected 1")
        return values[0]

    def floats(key: str) -> list[float]:
        return list(feature[key].float_list.value) if key in feature else []

    xmin, ymin, xmax, ymax = (floats(k) for k in (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX))
    return ImageRecord(
        encoded=one(ENCODED, "bytes_list"),
        filename=one(FILENAME, "bytes_list").decode(),
        height=one(HEIGHT, "int64_list"),
        width=one(WIDTH, "int64_list"),
        label=one(LABEL, "int64_list"),
        synset=one(SYNSET, "bytes_list").decode(),
        text=one(TEXT, "bytes_list").decode(),
        channels=one(CHANNELS, "int64_list"),
        colorspace=one(COLORSPACE, "bytes_list").decode(),
        format=one(FORMAT, "bytes_list").decode(),
        boxes=tuple(zip(xmin, ymin, xmax, ymax)),
    )


PARSE_SPEC = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    COLORSPACE: tf.io.FixedLenFeature([], tf.string, default_value="RGB"),
    CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=3),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    SYNSET: tf.io.FixedLenFeature([], tf.string, default_value=""),
    TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    BBOX_LABEL: tf.io.VarLenFeature(tf.int64),
}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses ONE serialized Example (scalar string tensor) with `PARSE_SPEC`.

    Returns the raw features plus `boxes`: float32 [num_boxes, 4] in
    (ymin, xmin, ymax, xmax) order, the layout `tf.image` box ops take.
    """
    parsed = tf.io.parse_single_example(serialized, PARSE_SPEC)
    corners = [tf.sparse.to_dense(parsed.pop(key)) for key in BBOX_KEYS]
    parsed["boxes"] = tf.stack(corners, axis=-1)
    parsed[BBOX_LABEL] = tf.sparse.to_dense(parsed[BBOX_LABEL])
    return parsed
