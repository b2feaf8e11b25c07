"""The trainer's parser of a record: `PARSE_SPEC` for `tf.io.parse_single_example`.

Derived from `records.features.SCHEMA`, the one statement of the keys, so the
writer (which needs no TensorFlow) and this reader cannot disagree.
"""

from __future__ import annotations

import tensorflow as tf

from records import features, wire

_DTYPES = {wire.BYTES: tf.string, wire.INT64: tf.int64, wire.FLOAT: tf.float32}
BBOX_KEYS = (features.BBOX_YMIN, features.BBOX_XMIN, features.BBOX_YMAX, features.BBOX_XMAX)  # tf.image order


def _spec(field: features.Field) -> tf.io.FixedLenFeature | tf.io.VarLenFeature:
    dtype = _DTYPES[field.kind]
    if field.scalar:
        return tf.io.FixedLenFeature([], dtype, default_value=field.default)
    return tf.io.VarLenFeature(dtype)


PARSE_SPEC = {key: _spec(field) for key, field in features.SCHEMA.items()}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses ONE serialized Example (scalar string tensor) with `PARSE_SPEC`.

    Returns the raw features plus `boxes`: float32 [num_boxes, 4] in
    (ymin, xmin, ymax, xmax) order, the layout `tf.image` box ops take.
    """
    parsed = tf.io.parse_single_example(serialized, PARSE_SPEC)
    corners = [tf.sparse.to_dense(parsed.pop(key)) for key in BBOX_KEYS]
    parsed["boxes"] = tf.stack(corners, axis=-1)
    parsed[features.BBOX_LABEL] = tf.sparse.to_dense(parsed[features.BBOX_LABEL])
    return parsed
