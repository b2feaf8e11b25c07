"""records.wire against TensorFlow's own Example: the records job writes without TF, readers parse with it."""

from __future__ import annotations

import math

import pytest
import tensorflow as tf

from records import wire


def _tf_example(features_dict) -> tf.train.Example:
    example = tf.train.Example()
    for key, (kind, values) in features_dict.items():
        getattr(example.features.feature[key], kind).value.extend(values)
    return example


CASES = {
    "every kind": {
        "b": (wire.BYTES, [b"", b"x" * 300, "é".encode()]),
        "f": (wire.FLOAT, [0.0, -1.5, 1e-30, math.inf]),
        "i": (wire.INT64, [0, 1, 127, 128, 2**40, -1, -(2**63), 2**63 - 1]),
    },
    "empty lists": {"b": (wire.BYTES, []), "f": (wire.FLOAT, []), "i": (wire.INT64, [])},
    "keys out of order": {"zeta": (wire.INT64, [3]), "alpha": (wire.BYTES, [b"a"]), "image/x": (wire.FLOAT, [2.0])},
    "a large value": {"image/encoded": (wire.BYTES, [bytes(range(256)) * 400])},
}


@pytest.mark.parametrize("given", CASES.values(), ids=CASES.keys())
def test_encoding_is_tensorflows_deterministic_serialisation(given):
    ours = wire.encode(given)
    assert ours == _tf_example(given).SerializeToString(deterministic=True)
    parsed = tf.train.Example.FromString(ours)
    for key, (kind, values) in given.items():
        assert parsed.features.feature[key].WhichOneof("kind") == kind
        assert list(getattr(parsed.features.feature[key], kind).value) == pytest.approx(values)


@pytest.mark.parametrize("given", CASES.values(), ids=CASES.keys())
def test_decoding_gives_back_what_tensorflow_wrote(given):
    decoded = wire.decode(_tf_example(given).SerializeToString())
    assert set(decoded) == set(given)
    for key, (kind, values) in given.items():
        assert decoded[key][0] == kind and decoded[key][1] == pytest.approx(values)


def test_unpacked_repeated_numbers_and_kindless_features_decode():
    # Protobuf writers may emit repeated numbers unpacked (tag per value); TF parses both forms.
    unpacked_int = bytes([0x08, 5, 0x08, 7])  # Int64List field 1, varint, twice
    unpacked_float = bytes([0x0D]) + tf.constant(2.5).numpy().tobytes()  # FloatList field 1, fixed32
    feature_int = bytes([0x1A, len(unpacked_int)]) + unpacked_int
    feature_float = bytes([0x12, len(unpacked_float)]) + unpacked_float
    example = tf.train.Example()
    example.features.feature["i"].ParseFromString(feature_int)
    example.features.feature["f"].ParseFromString(feature_float)
    example.features.feature["none"].Clear()
    decoded = wire.decode(example.SerializeToString())
    assert decoded == {"i": (wire.INT64, [5, 7]), "f": (wire.FLOAT, [2.5]), "none": (None, [])}


@pytest.mark.parametrize("junk", [b"\x0a\x05abc", b"\xff" * 12, b"\x0b\x00"])
def test_junk_is_a_wire_error(junk):
    with pytest.raises(wire.WireError):
        wire.decode(junk)
