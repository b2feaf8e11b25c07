"""The record contract: Example layout, the one parse spec, TFRecord framing, manifest."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from records import features, manifest, parsing, shards, tfrecord


def _jpeg(width=40, height=30, mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)).convert(mode).save(
        out, "JPEG", quality=90
    )
    return out.getvalue()


RECORD = features.ImageRecord(
    encoded=_jpeg(),
    filename="n01440764_18.JPEG",
    height=30,
    width=40,
    label=7,
    synset="n01440764",
    text="tench, Tinca tinca",
    boxes=((0.125, 0.25, 0.5, 0.875), (0.0, 0.0, 1.0, 1.0)),  # float32-exact
)
# An image-folder dataset's class: its folder name, not a WordNet id, with a space in it.
FOLDER_RECORD = dataclasses.replace(RECORD, filename="red rose/IMG_0001.jpg", synset="red rose", text="red rose")
RECORDS = pytest.mark.parametrize("record", [RECORD, FOLDER_RECORD], ids=["wnid", "folder name"])


@RECORDS
def test_python_round_trip_gives_back_every_field(record):
    assert features.from_example(features.serialize(record)) == record


@RECORDS
def test_parse_spec_gives_back_every_field_in_tensorflow(record):
    parsed = parsing.parse_example(tf.constant(features.serialize(record)))
    assert parsed[features.ENCODED].numpy() == record.encoded
    assert parsed[features.FILENAME].numpy().decode() == record.filename
    assert (parsed[features.HEIGHT].numpy(), parsed[features.WIDTH].numpy()) == (30, 40)
    assert (parsed[features.LABEL].numpy(), parsed[features.CHANNELS].numpy()) == (7, 3)
    assert parsed[features.SYNSET].numpy().decode() == record.synset
    assert parsed[features.TEXT].numpy().decode() == record.text
    assert parsed[features.COLORSPACE].numpy() == b"RGB" and parsed[features.FORMAT].numpy() == b"JPEG"
    # tf.image order: ymin, xmin, ymax, xmax
    np.testing.assert_allclose(parsed["boxes"].numpy(), [[0.25, 0.125, 0.875, 0.5], [0, 0, 1, 1]], atol=1e-7)
    assert list(parsed[features.BBOX_LABEL].numpy()) == [7, 7]


def test_record_without_boxes_parses_to_an_empty_box_tensor():
    record = features.ImageRecord(**{**RECORD.__dict__, "boxes": ()})
    parsed = parsing.parse_example(tf.constant(features.serialize(record)))
    assert parsed["boxes"].shape == (0, 4)
    assert features.from_example(features.serialize(record)).boxes == ()


def test_grayscale_record_keeps_its_true_channel_count():
    record = features.ImageRecord(
        **{**RECORD.__dict__, "encoded": _jpeg(mode="L"), "channels": 1, "colorspace": "GRAY"}
    )
    parsed = parsing.parse_example(tf.constant(features.serialize(record)))
    assert parsed[features.CHANNELS].numpy() == 1 and parsed[features.COLORSPACE].numpy() == b"GRAY"


def test_framing_is_read_by_tensorflow_and_corruption_is_located(tmp_path):
    path = tmp_path / "train-00000-of-00001"
    payloads = [features.serialize(RECORD), b"", b"x" * 1000]
    path.write_bytes(b"".join(tfrecord.frame(p) for p in payloads))
    assert list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()) == payloads
    with open(path, "rb") as f:
        assert list(tfrecord.read_frames(f)) == payloads

    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the third record's data
    with pytest.raises(tfrecord.CorruptRecordError, match="record 2: data CRC mismatch"):
        list(tfrecord.read_frames(io.BytesIO(bytes(data))))
    with pytest.raises(tfrecord.CorruptRecordError, match="record 2: truncated"):
        list(tfrecord.read_frames(io.BytesIO(path.read_bytes()[:-3])))


def test_shard_names_follow_the_reference_converters():
    assert shards.shard_name("train", 0, 1024) == "train-00000-of-01024"
    assert shards.shard_names("validation", 2) == ["validation-00000-of-00002", "validation-00001-of-00002"]
    assert shards.parse_shard_name("validation-00127-of-00128") == ("validation", 127, 128)
    assert shards.parse_shard_name("train-00000-of-01024.tmp-abc") is None
    with pytest.raises(ValueError):
        shards.shard_name("train", 4, 4)


def _manifest(**overrides) -> manifest.Manifest:
    split = manifest.SplitStats(
        num_examples=5,
        num_shards=2,
        shard_counts=(3, 2),
        class_counts={"n01440764": 5},
        num_rejected=1,
        conversions={"png->jpeg": 1},
    )
    return manifest.Manifest(**{"num_classes": 1, "splits": {"train": split}, "num_rejected": 1, **overrides})


def test_manifest_round_trip_and_missing_build(tmp_path):
    manifest.write_manifest(str(tmp_path), _manifest())
    assert manifest.read_manifest(str(tmp_path)) == _manifest()
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(FileNotFoundError, match="make records"):
        manifest.read_manifest(str(tmp_path / "nowhere"))


def test_manifest_whose_counts_do_not_add_up_is_refused(tmp_path):
    text = _manifest().to_json().replace('"num_examples": 5', '"num_examples": 6')
    with pytest.raises(ValueError, match="do not add up"):
        manifest.Manifest.from_json(text)


def test_rejected_rows_survive_tabs_and_newlines(tmp_path):
    rows = [("train", "a.tar:x.JPEG", "truncated\tor corrupt\nsecond line")]
    manifest.write_rejected(str(tmp_path), rows)
    assert manifest.read_rejected(str(tmp_path)) == [("train", "a.tar:x.JPEG", "truncated or corrupt second line")]
