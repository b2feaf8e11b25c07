"""`tf.train.Example` layout of one ImageNet record: the keys, what each holds, and its encoding.

The keys and meanings are those of the reference ImageNet converters
(inception/slim `build_imagenet_data.py`, the TPU ResNet and Model Garden
readers), so shards written here feed those readers unchanged. `SCHEMA` is the
one statement of each key's kind and arity: `records.parsing.PARSE_SPEC` (the
trainer's TensorFlow parser) and `records.verify` are both derived from it, so
a key can never be spelt or typed two ways. This module needs no TensorFlow:
the records job encodes with `records.wire`.
"""

from __future__ import annotations

import dataclasses

from records import wire

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


@dataclasses.dataclass(frozen=True)
class Field:
    """What a key holds. `default` is what a reader assumes when a record lacks it (None: required)."""

    kind: str  # a records.wire kind: bytes_list, int64_list or float_list
    scalar: bool  # exactly one value (else a list of any length)
    default: bytes | int | None = None


SCHEMA: dict[str, Field] = {
    ENCODED: Field(wire.BYTES, True),
    FORMAT: Field(wire.BYTES, True, b"JPEG"),
    COLORSPACE: Field(wire.BYTES, True, b"RGB"),
    CHANNELS: Field(wire.INT64, True, 3),
    HEIGHT: Field(wire.INT64, True),
    WIDTH: Field(wire.INT64, True),
    FILENAME: Field(wire.BYTES, True, b""),
    LABEL: Field(wire.INT64, True),
    SYNSET: Field(wire.BYTES, True, b""),
    TEXT: Field(wire.BYTES, True, b""),
    BBOX_XMIN: Field(wire.FLOAT, False),
    BBOX_YMIN: Field(wire.FLOAT, False),
    BBOX_XMAX: Field(wire.FLOAT, False),
    BBOX_YMAX: Field(wire.FLOAT, False),
    BBOX_LABEL: Field(wire.INT64, False),
}


def serialize(record: ImageRecord) -> bytes:
    """The record as a serialised Example. Box features are written (empty) even without boxes,
    as the reference converters do, so readers never meet a missing key."""
    boxes = record.boxes
    return wire.encode(
        {
            ENCODED: (wire.BYTES, [record.encoded]),
            FORMAT: (wire.BYTES, [record.format.encode()]),
            COLORSPACE: (wire.BYTES, [record.colorspace.encode()]),
            CHANNELS: (wire.INT64, [record.channels]),
            HEIGHT: (wire.INT64, [record.height]),
            WIDTH: (wire.INT64, [record.width]),
            FILENAME: (wire.BYTES, [record.filename.encode()]),
            LABEL: (wire.INT64, [record.label]),
            SYNSET: (wire.BYTES, [record.synset.encode()]),
            TEXT: (wire.BYTES, [record.text.encode()]),
            BBOX_XMIN: (wire.FLOAT, [b[0] for b in boxes]),
            BBOX_YMIN: (wire.FLOAT, [b[1] for b in boxes]),
            BBOX_XMAX: (wire.FLOAT, [b[2] for b in boxes]),
            BBOX_YMAX: (wire.FLOAT, [b[3] for b in boxes]),
            BBOX_LABEL: (wire.INT64, [record.label] * len(boxes)),
        }
    )


def schema_problems(decoded: dict[str, wire.Feature]) -> list[str]:
    """What would make the trainer's parser (PARSE_SPEC) fail on a decoded Example; [] if nothing."""
    problems = []
    for key, field in SCHEMA.items():
        kind, values = decoded.get(key, (None, []))
        if kind is None:  # absent, or present with no list at all: TF parses both as missing
            if field.scalar and field.default is None:
                problems.append(f"missing required feature {key!r}")
        elif kind != field.kind:
            problems.append(f"feature {key!r} is a {kind}, the parse spec wants a {field.kind}")
        elif field.scalar and len(values) != 1:
            problems.append(f"feature {key!r} has {len(values)} values, the parse spec wants 1")
    return problems


def from_example(serialized: bytes) -> ImageRecord:
    """Python-side decoding, for tools (verify, inspect, adopt) and tests.

    ValueError naming the key when the record does not follow SCHEMA.
    """
    return from_decoded(wire.decode(serialized))


def from_decoded(decoded: dict[str, wire.Feature]) -> ImageRecord:
    """from_example for an Example already decoded (verify looks at the raw features too)."""
    problems = schema_problems(decoded)
    if problems:
        raise ValueError("; ".join(problems))

    def one(key: str):
        kind, values = decoded.get(key, (None, []))
        return values[0] if kind is not None else SCHEMA[key].default

    def text(key: str) -> str:
        return one(key).decode()

    xmin, ymin, xmax, ymax = (decoded.get(k, (None, []))[1] for k in (BBOX_XMIN, BBOX_YMIN, BBOX_XMAX, BBOX_YMAX))
    return ImageRecord(
        encoded=one(ENCODED),
        filename=text(FILENAME),
        height=one(HEIGHT),
        width=one(WIDTH),
        label=one(LABEL),
        synset=text(SYNSET),
        text=text(TEXT),
        channels=one(CHANNELS),
        colorspace=text(COLORSPACE),
        format=text(FORMAT),
        boxes=tuple(zip(xmin, ymin, xmax, ymax)),
    )
