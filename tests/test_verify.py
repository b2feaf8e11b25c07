"""`verify` on a real records build of the sample: passes intact, names every kind of damage."""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import pathlib
import shutil
import struct

import pytest
import tensorflow as tf
from PIL import Image
from pipeline_util import build_records, read_records, read_split, run_module
from records_util import cut_last_record

from records import features, manifest, parsing, synsets, tfrecord, verify, wire

TRAIN_SHARDS, VALIDATION_SHARDS = 3, 2


@pytest.fixture(scope="module")
def built(sample_dir, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("records")
    build_records(sample_dir / "tars", out, train_shards=TRAIN_SHARDS, validation_shards=VALIDATION_SHARDS)
    return out


@pytest.fixture
def copy(built, tmp_path) -> pathlib.Path:
    """A private copy of the build, to damage."""
    return pathlib.Path(shutil.copytree(built, tmp_path / "records"))


def frame_spans(path) -> list[tuple[int, int]]:
    """(offset of the frame, length of its data) for every record, walking the framing by hand."""
    data, spans, offset = pathlib.Path(path).read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        spans.append((offset, length))
        offset += 12 + length + 4
    return spans


def rewrite_shard(path, edits) -> None:
    """Re-frames a shard with valid CRCs after `edits[index](serialized) -> serialized` ran on some records."""
    with open(path, "rb") as f:
        records = list(tfrecord.read_frames(f))
    for index, edit in edits.items():
        records[index] = edit(records[index])
    pathlib.Path(path).write_bytes(b"".join(tfrecord.frame(r) for r in records))


def edit_record(**changes):
    return lambda data: features.serialize(dataclasses.replace(features.from_example(data), **changes))


def edit_manifest(records_dir, change) -> None:
    path = pathlib.Path(records_dir) / manifest.MANIFEST_NAME
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def test_intact_build_passes_and_every_record_is_counted(built):
    build = manifest.read_manifest(str(built))
    # The build holds ImageNet's quirks, which must pass: a grayscale JPEG kept as 1 channel, converted images.
    gray = [r for r in read_records(built, "train") if r.channels == 1]
    assert gray and gray[0].colorspace == "GRAY" and Image.open(io.BytesIO(gray[0].encoded)).mode == "L"
    assert build.splits["train"].conversions
    report = verify.verify(str(built), workers=2)
    assert report.ok, report.problems
    assert report.num_records == sum(s.num_examples for s in build.splits.values())
    counted = {s.name: s.num_records for s in report.shards}
    for split, stats in build.splits.items():
        on_disk = read_split(built, split)  # the test's own reader, independent of verify
        assert [counted[name] for name in sorted(on_disk)] == [len(on_disk[n]) for n in sorted(on_disk)]
        assert [counted[name] for name in sorted(on_disk)] == list(stats.shard_counts)
        per_class = collections.Counter(r.synset for records in on_disk.values() for r in records)
        shard_sum = collections.Counter()
        for shard in report.shards:
            if shard.name.startswith(split + "-"):
                shard_sum.update(shard.class_counts)
        assert shard_sum == per_class == collections.Counter(stats.class_counts)
    in_process = verify.verify(str(built), workers=1)
    assert in_process.ok and [dataclasses.replace(s, seconds=0) for s in in_process.shards] == [
        dataclasses.replace(s, seconds=0) for s in report.shards
    ]


def test_flipped_byte_names_shard_and_record(copy):
    path = copy / "train-00001-of-00003"
    offset, length = frame_spans(path)[5]
    data = bytearray(path.read_bytes())
    data[offset + 12 + length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify.verify(str(copy), workers=2)
    assert not report.ok
    assert report.problems[0].startswith("train-00001-of-00003 record 5: data CRC mismatch")
    assert all("train-00001-of-00003" in p for p in report.problems), report.problems
    shard = next(s for s in report.shards if s.name == "train-00001-of-00003")
    assert (shard.num_records, shard.complete) == (5, False)


@pytest.mark.parametrize(
    "cut, expected",
    [
        (lambda offset, length: offset + 12 + length // 3, "record 3: truncated data (file cut short)"),
        (lambda offset, length: offset + 5, "record 3: truncated header (file cut short)"),
    ],
)
def test_truncated_shard_names_the_first_lost_record(copy, cut, expected):
    path = copy / "train-00002-of-00003"
    offset, length = frame_spans(path)[3]
    data_before = path.read_bytes()
    path.write_bytes(data_before[: cut(offset, length)])
    report = verify.verify(str(copy), workers=1)
    size, record = [p for p in report.problems if "train-00002-of-00003" in p]
    assert size.startswith(f"{path}: {cut(offset, length):,} bytes, but {len(data_before):,} were written")
    assert record == f"train-00002-of-00003 {expected}; the rest of the shard cannot be read: rebuild this shard"


def test_shard_cut_at_a_record_boundary_is_found_by_its_size(copy):
    path = copy / "validation-00001-of-00002"
    last_start, _ = frame_spans(path)[-1]
    cut_last_record(str(path))  # every record left is whole: only the size tells
    offset = path.stat().st_size
    assert offset == last_start
    report = verify.verify(str(copy), workers=1)
    assert any(p.startswith(f"{path}: {offset:,} bytes, but") and "cut short" in p for p in report.problems)


def test_manifest_count_mismatch_names_the_shard(copy, built):
    counts = manifest.read_manifest(str(built)).splits["train"].shard_counts

    def one_more_in_shard_0(raw):
        raw["splits"]["train"]["shard_counts"][0] += 1
        raw["splits"]["train"]["num_examples"] += 1

    edit_manifest(copy, one_more_in_shard_0)
    report = verify.verify(str(copy), workers=1)
    assert report.problems == (f"train-00000-of-00003: holds {counts[0]} records, manifest.json says {counts[0] + 1}",)


def test_class_counts_and_rejected_rows_are_held_against_the_manifest(copy):
    def swap_one_image_between_classes(raw):
        wnids = sorted(raw["splits"]["validation"]["class_counts"])
        raw["splits"]["validation"]["class_counts"][wnids[0]] += 1
        raw["splits"]["validation"]["class_counts"][wnids[1]] -= 1

    edit_manifest(copy, swap_one_image_between_classes)
    rejected = copy / manifest.REJECTED_NAME
    lines = rejected.read_text().splitlines()
    train_rows = [line for line in lines if line.startswith("train\t")]
    rejected.write_text("\n".join(line for line in lines if line != train_rows[0]) + "\n")
    report = verify.verify(str(copy), workers=1)
    assert len(report.problems) == 2, report.problems
    assert report.problems[0] == (
        f"rejected.tsv lists {len(train_rows) - 1} rejected train images, manifest.json says {len(train_rows)}"
    )
    assert report.problems[1].startswith("validation: records per class disagree with manifest.json for 2 classes")


def test_missing_and_stray_shard_files(copy):
    (copy / "validation-00001-of-00002").unlink()
    shutil.copy(copy / "train-00000-of-00003", copy / "train-00000-of-00004")
    report = verify.verify(str(copy), workers=1)
    # Only these two: the rest is intact, and a split missing a shard is not recounted by class (a third).
    assert sorted(os.path.relpath(p, copy).split(":")[0] for p in report.problems) == [
        "train-00000-of-00004",
        "validation-00001-of-00002",
    ]
    assert any(p.startswith(f"{copy / 'train-00000-of-00004'}: not listed in manifest.json") for p in report.problems)
    assert any(
        p.startswith(f"{copy / 'validation-00001-of-00002'}: missing (manifest.json lists 2 validation shards)")
        for p in report.problems
    )
    assert "validation-00001-of-00002" not in {s.name for s in report.shards}


def test_a_shard_of_a_split_the_manifest_does_not_know_is_a_stray(copy):
    shutil.copy(copy / "train-00000-of-00003", copy / "test-00000-of-00001")  # e.g. left from another build
    report = verify.verify(str(copy), workers=1)
    assert [p.split(";")[0] for p in report.problems] == [
        f"{copy / 'test-00000-of-00001'}: not listed in manifest.json (left from another build?)"
    ]


def _truncated_jpeg(data):
    record = features.from_example(data)
    return features.serialize(dataclasses.replace(record, encoded=record.encoded[: len(record.encoded) // 2]))


def _without_encoded(data):
    example = tf.train.Example.FromString(data)
    del example.features.feature[features.ENCODED]
    return example.SerializeToString()


def test_records_with_valid_crc_but_wrong_content(copy, built):
    path = copy / "validation-00000-of-00002"
    with open(path, "rb") as f:
        originals = [features.from_example(r) for r in tfrecord.read_frames(f)]
    first, second = originals[0], originals[1]
    other_label = first.label % 4 + 1
    rewrite_shard(
        path,
        {
            0: edit_record(label=other_label),
            1: edit_record(height=second.height + 1),
            2: _truncated_jpeg,
            3: edit_record(channels=1, colorspace="GRAY"),
            4: edit_record(boxes=((0.5, 0.2, 0.4, 0.9),)),
            5: _without_encoded,
        },
    )
    report = verify.verify(str(copy), workers=1)
    problems = [p for p in report.problems if p.startswith("validation-00000-of-00002 record")]
    assert len(problems) == 6, report.problems
    label_problem = problems[0]
    assert label_problem.startswith(f"validation-00000-of-00002 record 0 ({first.filename}): label {other_label} is ")
    assert f"but the record says {first.synset!r}" in label_problem and "text is" in label_problem
    assert problems[1] == (
        f"validation-00000-of-00002 record 1 ({second.filename}): image is "
        f"{second.width}x{second.height} but the record says width {second.width}, "
        f"height {second.height + 1}"
    )
    assert problems[2].startswith(
        f"validation-00000-of-00002 record 2 ({originals[2].filename}): image/encoded does not decode as JPEG"
    )
    assert "image is RGB (3 channels, RGB) but the record says 1 channels, GRAY" in problems[3]
    assert "box 0 (0.5, " in problems[4] and "not inside [0, 1] with min <= max" in problems[4]
    assert problems[5] == "validation-00000-of-00002 record 5: missing required feature 'image/encoded'"
    # The label change moved a record between classes, so the split's class counts disagree too.
    assert any(p.startswith("validation: records per class disagree") for p in report.problems)

    capped = verify.verify(str(copy), workers=1, max_problems_per_shard=2)
    assert [p for p in capped.problems if p.startswith("validation-00000-of-00002")][2:] == [
        "validation-00000-of-00002: 4 more bad records not listed"
    ]


def test_beam_job_gives_the_same_report(copy):
    path = copy / "train-00000-of-00003"
    offset, length = frame_spans(path)[2]
    data = bytearray(path.read_bytes())
    data[offset + 12 + length - 1] ^= 0x80
    path.write_bytes(bytes(data))
    in_memory = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    by_beam = verify.verify_with_beam(str(copy), in_memory)
    by_pool = verify.verify(str(copy), workers=2)
    assert by_beam.problems == by_pool.problems
    assert by_beam.problems[0].startswith("train-00000-of-00003 record 2: data CRC mismatch")
    assert [dataclasses.replace(s, seconds=0) for s in by_beam.shards] == [
        dataclasses.replace(s, seconds=0) for s in by_pool.shards
    ]


def _cli(*args):
    return run_module("records", *args, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=120)


def test_cli_exit_codes(copy, tmp_path):
    intact = _cli("verify", copy, "--workers=1")
    assert intact.returncode == 0, intact.stderr
    assert "is intact" in intact.stdout and "verified 2/2 shards" not in intact.stdout
    assert "shards, " in intact.stderr  # progress goes through absl logging

    shard = copy / "train-00001-of-00003"
    last = len(frame_spans(shard)) - 1
    shard.write_bytes(shard.read_bytes()[:-3])
    damaged = _cli("verify", copy, "--workers=1")
    assert damaged.returncode == 1, damaged.stderr
    assert f"train-00001-of-00003 record {last}: truncated data (file cut short)" in damaged.stdout
    assert "FAILED: 2 problems" in damaged.stdout  # its size, and the record the cut fell in

    nothing = _cli("verify", tmp_path / "empty")
    assert nothing.returncode == 2
    assert "manifest.json not found" in nothing.stderr and "make records" in nothing.stderr


def _set(key, kind, values):
    def change(feature):
        del feature[key]
        getattr(feature[key], kind).value.extend(values)

    return change


def _delete(key):
    return lambda feature: feature.__delitem__(key)


def _kindless(key):
    return lambda feature: (feature.__delitem__(key), feature[key].CopyFrom(tf.train.Feature()))


@pytest.mark.parametrize(
    "change",
    [
        lambda feature: None,
        _delete(features.LABEL),
        _delete(features.FILENAME),
        _delete(features.BBOX_XMIN),
        _kindless(features.LABEL),
        _kindless(features.TEXT),
        _set(features.LABEL, "float_list", [1.0]),
        _set(features.LABEL, "int64_list", [1, 2]),
        _set(features.HEIGHT, "int64_list", []),
        _set(features.FILENAME, "bytes_list", []),
        _set(features.BBOX_YMAX, "int64_list", [1]),
        _set(features.CHANNELS, "bytes_list", [b"3"]),
    ],
    ids=[
        "intact",
        "no label",
        "no filename",
        "no xmin",
        "kindless label",
        "kindless text",
        "float label",
        "two labels",
        "no height value",
        "no filename value",
        "int ymax",
        "bytes channels",
    ],
)
def test_spec_check_agrees_with_tensorflows_parser(change):
    """verify checks PARSE_SPEC in Python (no TF op per record); TF's own parser is the judge here."""
    example = tf.train.Example.FromString(features.serialize(dataclasses.replace(RECORD, boxes=())))
    change(example.features.feature)
    assert (_schema_problems(example) == []) == _tensorflow_parses(example), _schema_problems(example)


def test_box_corner_lists_of_different_lengths_are_caught_as_tensorflow_would():
    example = tf.train.Example.FromString(features.serialize(RECORD))
    assert verify.check_record(example.SerializeToString(), TABLE) == (RECORD.synset, RECORD.filename, [])
    del example.features.feature[features.BBOX_XMIN]
    assert _schema_problems(example) == [] and not _tensorflow_parses(example)
    assert verify.check_record(example.SerializeToString(), TABLE)[2] == [
        "box corner lists differ in length (xmin, ymin, xmax, ymax: [0, 1, 1, 1])"
    ]


def _schema_problems(example) -> list[str]:
    return features.schema_problems(wire.decode(example.SerializeToString()))


def _tensorflow_parses(example) -> bool:
    try:
        parsing.parse_example(tf.constant(example.SerializeToString()))
        return True
    except tf.errors.InvalidArgumentError:
        return False


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


TABLE = synsets.SynsetTable.build(["n00000001", "n00000002"], {"n00000001": "one", "n00000002": "two"})
RECORD = features.ImageRecord(
    encoded=_jpeg(8, 6),
    filename="a.JPEG",
    height=6,
    width=8,
    label=1,
    synset="n00000001",
    text="one",
    boxes=((0.125, 0.25, 0.5, 0.75),),
)
