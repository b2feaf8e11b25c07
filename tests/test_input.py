"""estimator/input.py: what the trainer reads from a records build, and how it fails."""

import collections
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from records_util import cut_last_record, flip_byte, make_records, replace_split, write_records_dir

from estimator import input as input_lib
from estimator import preprocessing
from records import features, manifest, shards

IMAGE_SIZE = 24


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    write_records_dir(
        out, num_classes=6, train_per_class=4, validation_per_class=6, train_shards=3, validation_shards=2
    )
    return str(out)


def _batches(input_fn, limit=None, **kwargs):
    dataset = input_fn(**kwargs)
    if limit:
        dataset = dataset.take(limit)
    return [(f["image"].numpy(), labels.numpy()) for f, labels in dataset]


def _raw_records(records_dir, split):
    out = []
    for path in sorted(tf.io.gfile.glob(os.path.join(records_dir, shards.shard_pattern(split)))):
        out.extend(features.from_example(r.numpy()) for r in tf.data.TFRecordDataset(path))
    return out


def test_training_batches_are_full_shuffled_repeated_and_0_based(records_dir):
    input_fn = input_lib.make_input_fn(records_dir, "train", 10, IMAGE_SIZE, is_training=True, shuffle_buffer=50)
    batches = _batches(input_fn, limit=8)  # 80 images from a 24-image split: it must repeat
    assert len(batches) == 8
    for images, labels in batches:
        assert images.shape == (10, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.float32
        assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 6
        assert 0.0 <= images.min() and images.max() <= 255.0
    all_labels = np.concatenate([labels for _, labels in batches])
    assert set(all_labels) == set(range(6))
    # Shuffled: not the write order (class-major round-robin over shards).
    written = [r.label - 1 for r in _raw_records(records_dir, "train")]
    assert list(all_labels[:24]) != written


def test_eval_reads_every_validation_image_exactly_once(records_dir):
    build = manifest.read_manifest(records_dir)
    input_fn = input_lib.make_input_fn(records_dir, "validation", 8, IMAGE_SIZE, is_training=False)
    batches = _batches(input_fn)
    # 36 images: four full batches and the last partial one is kept.
    assert [len(labels) for _, labels in batches] == [8, 8, 8, 8, 4]
    labels = np.concatenate([b[1] for b in batches])
    images = np.concatenate([b[0] for b in batches])
    counts = collections.Counter(int(label) for label in labels)
    assert {f"n{label + 1:08d}": c for label, c in counts.items()} == build.splits["validation"].class_counts
    # Content: the multiset of images equals the eval preprocessing of each stored record once.
    expected = sorted(
        float(preprocessing.preprocess_for_eval(tf.constant(r.encoded), IMAGE_SIZE).numpy().sum())
        for r in _raw_records(records_dir, "validation")
    )
    np.testing.assert_allclose(sorted(images.reshape(len(images), -1).sum(axis=1)), expected, rtol=1e-6)
    # Deterministic: a second pass yields the same order.
    np.testing.assert_array_equal(np.concatenate([b[1] for b in _batches(input_fn)]), labels)


def test_eval_batch_larger_than_the_split_is_one_partial_batch(records_dir):
    input_fn = input_lib.make_input_fn(records_dir, "validation", 1000, IMAGE_SIZE, is_training=False)
    assert [len(labels) for _, labels in _batches(input_fn)] == [36]


@pytest.mark.parametrize("num_pipelines", [2, 3])  # 2: one file each; 3: more pipelines than files
def test_input_pipelines_split_eval_records_exactly_once(records_dir, num_pipelines):
    input_fn = input_lib.make_input_fn(records_dir, "validation", 6, IMAGE_SIZE, is_training=False)
    sums = []
    for index in range(num_pipelines):
        context = tf.distribute.InputContext(
            num_input_pipelines=num_pipelines, input_pipeline_id=index, num_replicas_in_sync=num_pipelines
        )
        part = _batches(input_fn, input_context=context)
        assert part and all(len(labels) <= 6 // num_pipelines for _, labels in part)
        sums.extend(images.reshape(len(images), -1).sum(axis=1) for images, _ in part)
    sums = np.sort(np.concatenate(sums))
    whole = np.sort(np.concatenate([images.reshape(len(images), -1).sum(axis=1) for images, _ in _batches(input_fn)]))
    np.testing.assert_allclose(sums, whole, rtol=1e-6)


def test_per_replica_batch_is_global_batch_divided(records_dir):
    input_fn = input_lib.make_input_fn(records_dir, "train", 8, IMAGE_SIZE, is_training=True, shuffle_buffer=10)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    images, labels = _batches(input_fn, limit=1, input_context=context)[0]
    assert images.shape[0] == labels.shape[0] == 4


def test_undecodable_image_is_skipped_and_the_rest_read(tmp_path):
    write_records_dir(tmp_path, num_classes=3, train_per_class=2, validation_per_class=3, validation_shards=1)
    records = make_records("validation", 3, 3, seed=0)
    broken = records[4]
    records[4] = dataclasses.replace(broken, encoded=broken.encoded[:200] + b"\x00" * 300)
    replace_split(tmp_path, "validation", records, 1)
    input_fn = input_lib.make_input_fn(str(tmp_path), "validation", 4, IMAGE_SIZE, is_training=False)
    labels = np.concatenate([b[1] for b in _batches(input_fn)])
    assert len(labels) == 8
    expected = [r.label - 1 for i, r in enumerate(records) if i != 4]
    assert list(labels) == expected


def test_label_outside_the_manifest_classes_fails_naming_the_file(tmp_path):
    build = write_records_dir(tmp_path, num_classes=4, train_per_class=2, validation_per_class=2)
    shrunk = manifest.Manifest(num_classes=3, splits=build.splits)  # labels 4 cannot belong to 3 classes
    manifest.write_manifest(str(tmp_path), shrunk)
    input_fn = input_lib.make_input_fn(str(tmp_path), "validation", 8, IMAGE_SIZE, is_training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label_offset.*validation_3_0\.JPEG"):
        _batches(input_fn)


def test_missing_manifest_or_shards_are_clear_errors(tmp_path, records_dir):
    with pytest.raises(FileNotFoundError, match="make records"):
        input_lib.make_input_fn(str(tmp_path), "train", 8, IMAGE_SIZE, is_training=True)
    (tmp_path / manifest.MANIFEST_NAME).write_text(open(os.path.join(records_dir, manifest.MANIFEST_NAME)).read())
    with pytest.raises(FileNotFoundError, match=r"no train shards .* `make records`"):
        input_lib.make_input_fn(str(tmp_path), "train", 8, IMAGE_SIZE, is_training=True)
    raw = json.loads((tmp_path / manifest.MANIFEST_NAME).read_text())
    del raw["splits"]["validation"]
    (tmp_path / manifest.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="no 'validation' split"):
        input_lib.make_input_fn(str(tmp_path), "validation", 8, IMAGE_SIZE, is_training=False)


def test_shards_not_matching_the_manifest_are_refused_in_one_line_naming_the_shard(tmp_path):
    write_records_dir(tmp_path, num_classes=3, train_per_class=3, validation_per_class=4, train_shards=3)
    cut_last_record(str(tmp_path / "validation-00001-of-00002"))  # every remaining record is intact
    with pytest.raises(ValueError) as error:
        input_lib.split_files(str(tmp_path), "validation")
    message = str(error.value)
    assert message.startswith(str(tmp_path / "validation-00001-of-00002") + ": ")
    assert "cut short" in message and "copy it again" in message and "\n" not in message
    input_lib.split_files(str(tmp_path), "train")  # the other split is fine

    os.remove(tmp_path / "train-00001-of-00003")
    (tmp_path / "train-00000-of-00004").write_bytes(b"")  # left from another build
    with pytest.raises(
        ValueError,
        match=r"train-00001-of-00003: missing .*\(and 1 more; `python -m records verify .*` lists them all\)$",
    ):
        input_lib.split_files(str(tmp_path), "train")


def test_shards_are_read_from_the_manifests_shards_dir(tmp_path):
    shards_dir = tmp_path / "elsewhere"
    build = write_records_dir(shards_dir, num_classes=3, train_per_class=2, validation_per_class=2)
    records_dir = tmp_path / "described"
    records_dir.mkdir()
    manifest.write_manifest(str(records_dir), dataclasses.replace(build, shards_dir=str(shards_dir)))
    files = input_lib.split_files(str(records_dir), "validation")
    assert files.paths == (str(shards_dir / "validation-00000-of-00002"), str(shards_dir / "validation-00001-of-00002"))
    input_fn = input_lib.make_input_fn(str(records_dir), "validation", 8, IMAGE_SIZE, is_training=False)
    assert sum(len(labels) for _, labels in _batches(input_fn)) == 6


def test_find_corrupt_shards_names_the_damaged_shard_and_record(tmp_path):
    write_records_dir(tmp_path, num_classes=3, train_per_class=3, validation_per_class=2, train_shards=3)
    assert input_lib.find_corrupt_shards(str(tmp_path)) == []
    flip_byte(str(tmp_path / "train-00002-of-00003"))
    assert input_lib.find_corrupt_shards(str(tmp_path)) == [
        (str(tmp_path / "train-00002-of-00003"), "record 2: data CRC mismatch")
    ]
