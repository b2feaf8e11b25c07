"""`inspect` on a real records build of the sample: numbers, contact sheet, plots, CLI."""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import struct

import numpy as np
import pytest
from PIL import Image
from pipeline_util import build_records, read_split, run_module

from records import inspect, manifest

TRAIN_SHARDS, VALIDATION_SHARDS = 3, 2
# What the sample generator's hostile kinds must be rejected as (rejected.tsv's reason categories).
REJECTION_KIND = {
    "truncated": "truncated or corrupt",
    "text": "not an image",
    "empty": "empty file",
    "bomb": "too large",
}


@pytest.fixture(scope="module")
def built(sample_dir, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("records")
    build_records(sample_dir / "tars", out, train_shards=TRAIN_SHARDS, validation_shards=VALIDATION_SHARDS)
    return out


@pytest.fixture(scope="module")
def summary(built) -> inspect.Summary:
    return inspect.summarize(str(built), sample_records=10_000)  # more than there are: every record sampled


def test_summary_counts_match_the_manifest_and_the_generated_truth(summary, built, sample_truth):
    build = manifest.read_manifest(str(built))
    assert [s.split for s in summary.splits] == ["train", "validation"]
    assert summary.num_classes == sample_truth["num_classes"]
    assert summary.num_annotations_rejected == len(sample_truth["malformed_xml"])
    for s in summary.splits:
        stats = build.splits[s.split]
        assert (s.num_examples, s.num_shards) == (stats.num_examples, stats.num_shards)
        assert s.conversions == stats.conversions
        assert (s.smallest_shard[1], s.largest_shard[1]) == (min(stats.shard_counts), max(stats.shard_counts))
        assert stats.shard_counts[int(s.smallest_shard[0].split("-")[1])] == s.smallest_shard[1]

        truth = [i for i in sample_truth["images"] if i["split"] == s.split]
        valid = [i for i in truth if i["valid"]]
        per_class = collections.Counter(i["wnid"] for i in valid)
        counts = [per_class[c["wnid"]] for c in sample_truth["classes"]]
        assert s.class_counts == tuple(counts)
        assert s.per_class == (min(counts), int(np.median(counts)), max(counts))
        assert s.classes_present == sum(1 for c in counts if c)

        assert sorted(s.widths) == sorted(i["width"] for i in valid)
        assert sorted(s.heights) == sorted(i["height"] for i in valid)
        assert s.num_grayscale == sum(1 for i in valid if i["channels"] == 1)
        assert s.num_with_boxes == sum(1 for i in valid if i["boxes"])

        hostile = collections.Counter(REJECTION_KIND[i["kind"]] for i in truth if not i["valid"])
        assert s.num_rejected == stats.num_rejected == sum(hostile.values())
        assert dict(s.rejected_reasons) == dict(hostile)


def test_printed_summary_shows_the_manifest_numbers(summary, built):
    text = inspect.format_summary(summary)
    build = manifest.read_manifest(str(built))
    for split, stats in build.splits.items():
        counts = sorted(stats.shard_counts)
        assert f"{split}: {stats.num_examples} examples in {stats.num_shards} shards" in text
        assert f": {counts[0]}, largest {split}-" in text and f": {counts[-1]})" in text
        per_class = sorted(stats.class_counts.values())
        assert f"min {per_class[0]} / median {int(np.median(per_class))} / max {per_class[-1]}" in text
        assert f"converted: {sum(stats.conversions.values())} (" in text
        assert f"rejected: {stats.num_rejected} (" in text
    widths = sorted(summary.splits[0].widths)
    assert f"width  {widths[0]}/" in text and f"/{widths[-1]}\n" in text
    assert f"{build.num_rejected} images rejected, {build.num_annotations_rejected} box files rejected" in text


def test_sample_is_spread_over_the_shards(built):
    shard_of = {r.filename: name for name, records in read_split(built, "train").items() for r in records}
    six = inspect.sample_split(str(built), "train", TRAIN_SHARDS, 6)
    assert len(six) == 6
    assert collections.Counter(shard_of[r.filename] for r in six) == {
        f"train-0000{i}-of-00003": 2 for i in range(TRAIN_SHARDS)
    }
    two = inspect.sample_split(str(built), "train", TRAIN_SHARDS, 2)
    assert [shard_of[r.filename] for r in two] == ["train-00000-of-00003", "train-00001-of-00003"]
    assert inspect.sample_split(str(built), "train", TRAIN_SHARDS, 0) == []


def test_a_damaged_record_shortens_the_sample_instead_of_crashing(built, tmp_path):
    copy = pathlib.Path(shutil.copytree(built, tmp_path / "records"))
    path = copy / "train-00000-of-00003"
    data = bytearray(path.read_bytes())
    (first_length,) = struct.unpack("<Q", data[:8])
    data[12 + first_length + 16 + 12 + 3] ^= 0xFF  # inside record 1's data: its CRC fails
    path.write_bytes(bytes(data))
    sample = inspect.sample_split(str(copy), "train", TRAIN_SHARDS, 1000)
    total = manifest.read_manifest(str(copy)).splits["train"].num_examples
    shard_0 = manifest.read_manifest(str(copy)).splits["train"].shard_counts[0]
    assert len(sample) == total - (shard_0 - 1)  # record 0 of shard 0 read, then the shard was given up


def test_contact_sheet_has_the_expected_size_and_captions(summary, tmp_path):
    path = tmp_path / "sheets" / "sheet.png"
    size = inspect.write_contact_sheet(summary, str(path), images_per_split=10, seed=3)
    rows = 2  # 10 images on 8 columns, per split
    expected = (
        inspect.SHEET_COLUMNS * inspect.CELL_WIDTH,
        len(summary.splits) * (inspect.TITLE_HEIGHT + rows * inspect.CELL_HEIGHT),
    )
    sheet = Image.open(path)
    assert sheet.format == "PNG" and sheet.size == size == expected
    pixels = np.asarray(sheet.convert("RGB")).astype(int)
    for block in range(len(summary.splits)):
        top = block * (inspect.TITLE_HEIGHT + rows * inspect.CELL_HEIGHT) + inspect.TITLE_HEIGHT
        for number in range(rows * inspect.SHEET_COLUMNS):
            x = (number % inspect.SHEET_COLUMNS) * inspect.CELL_WIDTH
            y = top + (number // inspect.SHEET_COLUMNS) * inspect.CELL_HEIGHT
            thumb = pixels[y : y + inspect.THUMB_SIZE, x : x + inspect.CELL_WIDTH]
            caption = pixels[y + inspect.THUMB_SIZE : y + inspect.CELL_HEIGHT, x : x + inspect.CELL_WIDTH]
            if number < 10:
                assert thumb.std() > 10, f"split block {block}, cell {number}: no picture"
                assert (caption.max(axis=-1) < 100).sum() > 30, f"split block {block}, cell {number}: no caption"
            else:
                assert (thumb == 255).all() and (caption == 255).all(), f"cell {number} should be empty"


def test_contact_sheets_differ_by_seed_and_repeat_with_it(summary, tmp_path):
    paths = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (1, 1, 2)):
        inspect.write_contact_sheet(summary, str(path), images_per_split=8, seed=seed)
    a, b, c = (np.asarray(Image.open(p)) for p in paths)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_plots_are_written_as_pngs(summary, tmp_path):
    paths = inspect.write_plots(summary, str(tmp_path / "plots"))
    assert sorted(os.path.basename(p) for p in paths) == ["image_sides.png", "images_per_class.png"]
    for path in paths:
        image = Image.open(path)
        assert image.format == "PNG" and image.width >= 600 and image.height >= 400
        assert np.asarray(image.convert("L")).std() > 5, f"{path} is blank"


def _cli(*args):
    return run_module("records", *args, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=120)


def test_cli_prints_the_summary_and_writes_sheet_and_plots(built, tmp_path):
    sheet, plots = tmp_path / "sheet.png", tmp_path / "plots"
    result = _cli("inspect", built, f"--sheet={sheet}", f"--plots={plots}", "--sheet_images=4", "--sample_records=20")
    assert result.returncode == 0, result.stderr
    build = manifest.read_manifest(str(built))
    for split, stats in build.splits.items():
        assert f"{split}: {stats.num_examples} examples in {stats.num_shards} shards" in result.stdout
    assert "image size, 20 sampled records" in result.stdout
    assert Image.open(sheet).size == (
        inspect.SHEET_COLUMNS * inspect.CELL_WIDTH,
        2 * (inspect.TITLE_HEIGHT + inspect.CELL_HEIGHT),
    )
    assert sorted(p.name for p in plots.iterdir()) == ["image_sides.png", "images_per_class.png"]

    unknown = _cli("inspect", built, "--runner=DirectRunner")
    assert unknown.returncode == 2 and "unknown arguments --runner=DirectRunner" in unknown.stderr
