"""The `tf.train.Example` wire format, written and read without TensorFlow.

The records job runs where TensorFlow is not installed (Dataflow workers, a
light launcher), and importing it would cost seconds and hundreds of MB per
worker for three small messages. An Example is:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    *List    { repeated <bytes | float (packed) | int64 (packed)> value = 1; }

Keys are written in sorted order, so equal records serialise to equal bytes.
`decode` accepts what any protobuf writer produces (packed or not, any key
order). tests/test_wire.py proves both sides against TensorFlow's own parser.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence

BYTES, FLOAT, INT64 = "bytes_list", "float_list", "int64_list"
_FIELD_OF_KIND = {BYTES: 1, FLOAT: 2, INT64: 3}
_KIND_OF_FIELD = {field: kind for kind, field in _FIELD_OF_KIND.items()}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

Feature = tuple[str, Sequence]  # (kind, values)


class WireError(ValueError):
    """Bytes that are not a well-formed Example."""


# --- encoding -------------------------------------------------------------------------


_SMALL_VARINTS = [bytes([n]) for n in range(0x80)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= (1 << 64) - 1  # negative int64s take ten bytes, as two's complement
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_size(value: int) -> int:
    return 1 if value < 0x80 else (value.bit_length() + 6) // 7


_FIELD_1, _FIELD_2 = b"\x0a", b"\x12"  # length-delimited fields 1 and 2
_FEATURE_TAG = {kind: bytes([field << 3 | _LENGTH]) for kind, field in _FIELD_OF_KIND.items()}


@functools.lru_cache(maxsize=256)
def _key_field(key: str) -> bytes:
    encoded = key.encode()
    return _FIELD_1 + _varint(len(encoded)) + encoded


def _list_body(kind: str, values: Sequence) -> tuple[Sequence[bytes], int]:
    """A *List message as pieces to join, and its size: image bytes are copied once, into the final join."""
    if kind == BYTES:
        body, size = [], 0
        for value in values:
            head = _FIELD_1 + _varint(len(value))
            body += (head, value)
            size += len(head) + len(value)
        return body, size
    if not values:
        return (), 0
    if kind == FLOAT:
        packed = struct.pack(f"<{len(values)}f", *values)
    else:
        packed = b"".join([_varint(int(value)) for value in values])
    head = _FIELD_1 + _varint(len(packed))
    return (head, packed), len(head) + len(packed)


def encode(features: Mapping[str, Feature]) -> bytes:
    """{key: (kind, values)} -> a serialised Example (keys sorted)."""
    pieces: list[bytes] = []
    total = 0
    for key in sorted(features):
        kind, values = features[key]
        body, size = _list_body(kind, values)
        feature_size = 1 + _varint_size(size) + size
        key_field = _key_field(key)
        entry_size = len(key_field) + 1 + _varint_size(feature_size) + feature_size
        pieces.append(
            b"".join(
                (
                    _FIELD_1,
                    _varint(entry_size),
                    key_field,
                    _FIELD_2,
                    _varint(feature_size),
                    _FEATURE_TAG[kind],
                    _varint(size),
                )
            )
        )
        pieces += body
        total += 1 + _varint_size(entry_size) + entry_size
    return b"".join([_FIELD_1, _varint(total), *pieces])


# --- decoding -------------------------------------------------------------------------


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, payload) of every field of one message, in order."""
    out, position = [], 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            value, position = _read_varint(data, position)
        elif wire_type == _LENGTH:
            length, position = _read_varint(data, position)
            value, position = data[position : position + length], position + length
            if len(value) != length:
                raise WireError("field runs past the end of the message")
        elif wire_type in (_FIXED32, _FIXED64):
            width = 4 if wire_type == _FIXED32 else 8
            value, position = data[position : position + width], position + width
            if len(value) != width:
                raise WireError("fixed-width field runs past the end of the message")
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        out.append((field, wire_type, value))
    return out


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind: str, data: bytes) -> list:
    values: list = []
    for field, wire_type, value in _fields(data):
        if field != 1:
            continue
        if kind == BYTES and wire_type == _LENGTH:
            values.append(bytes(value))
        elif kind == FLOAT and wire_type == _LENGTH:
            values.extend(struct.unpack(f"<{len(value) // 4}f", value[: len(value) // 4 * 4]))
        elif kind == FLOAT and wire_type == _FIXED32:
            values.append(struct.unpack("<f", value)[0])
        elif kind == INT64 and wire_type == _LENGTH:
            position = 0
            while position < len(value):
                number, position = _read_varint(value, position)
                values.append(_int64(number))
        elif kind == INT64 and wire_type == _VARINT:
            values.append(_int64(value))
        else:
            raise WireError(f"a {kind} holds a value of wire type {wire_type}")
    return values


def decode(serialized: bytes) -> dict[str, Feature]:
    """A serialised Example -> {key: (kind, values)}; a feature with no list at all has kind None.

    WireError for bytes that are not an Example. As in protobuf, a key given
    twice keeps its last value.
    """
    features: dict[str, Feature] = {}
    for field, wire_type, body in _fields(serialized):
        if field != 1 or wire_type != _LENGTH:
            continue
        for entry_field, entry_type, entry in _fields(body):
            if entry_field != 1 or entry_type != _LENGTH:
                continue
            key, feature = "", b""
            for part_field, part_type, part in _fields(entry):
                if part_field == 1 and part_type == _LENGTH:
                    key = bytes(part).decode("utf-8", errors="replace")
                elif part_field == 2 and part_type == _LENGTH:
                    feature = bytes(part)
            kind, values = None, []
            for kind_field, kind_type, payload in _fields(feature):
                if kind_field in _KIND_OF_FIELD and kind_type == _LENGTH:
                    kind = _KIND_OF_FIELD[kind_field]
                    values = _list_values(kind, payload)
            features[key] = (kind, values)
    return features
