"""Failures of the records job are loud, early, one line, and leave nothing behind."""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import shutil
import tarfile

import pytest
from pipeline_util import build_records, run_module

from pipeline import build, layouts
from pipeline.errors import InputError
from pipeline.options import BuildOptions
from records import files, manifest, synsets, verify


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [m for m in archive if m.isfile()]


def _cut_after(data: bytes, members_kept: int) -> bytes:
    """The tar cut cleanly where member `members_kept` begins: what an interrupted copy leaves."""
    return data[: _members(data)[members_kept].offset]


@pytest.fixture
def tars_copy(sample_dir, tmp_path):
    root = tmp_path / "tars"
    shutil.copytree(sample_dir / "tars", root)
    return root


def test_train_tar_cut_between_synset_tars_is_refused(tars_copy, tmp_path, sample_truth):
    train_tar = tars_copy / layouts.TRAIN_TAR
    train_tar.write_bytes(_cut_after(train_tar.read_bytes(), 2))
    with pytest.raises(
        layouts.LayoutError,
        match=r"ILSVRC2012_img_train.tar ends without the tar end-of-archive "
        r"marker after 2 members: the file is truncated.*--allow_truncated_tars",
    ):
        build_records(tars_copy, tmp_path / "out")
    # Going on builds from what is there, but the classes it lost are named, not silently empty.
    missing = [c["wnid"] for c in sample_truth["classes"][2:]]
    with pytest.raises(InputError, match=f"2 of 4 classes have no training images: {', '.join(missing)}"):
        build_records(tars_copy, tmp_path / "out", allow_truncated_tars=True)
    built = build_records(tars_copy, tmp_path / "out", allow_truncated_tars=True, allow_empty_classes=True)
    assert sorted(built.splits["train"].class_counts) == [c["wnid"] for c in sample_truth["classes"][:2]]


def _cut_synset_tar(train_tar, index: int, images_kept: int) -> str:
    """Rewrites the train tar with synset tar `index` cut after `images_kept` images; returns its name."""
    with tarfile.open(train_tar) as outer:
        inner = [(m, outer.extractfile(m).read()) for m in outer if m.isfile()]
    name, data = inner[index][0].name, inner[index][1]
    inner[index] = (inner[index][0], _cut_after(data, images_kept))
    with tarfile.open(train_tar, "w", format=tarfile.GNU_FORMAT) as outer:
        for info, payload in inner:
            info.size = len(payload)
            outer.addfile(info, io.BytesIO(payload))
    return name


def test_synset_tar_cut_inside_is_refused_or_its_images_rejected(tars_copy, tmp_path):
    name = _cut_synset_tar(tars_copy / layouts.TRAIN_TAR, 1, images_kept=5)
    with pytest.raises(InputError, match=f"1 tars are truncated .*{name} ends without the tar end-of-archive marker"):
        build_records(tars_copy, tmp_path / "out")
    built = build_records(tars_copy, tmp_path / "out", allow_truncated_tars=True, allow_empty_classes=True)
    rows = [r for r in manifest.read_rejected(str(tmp_path / "out")) if "archive truncated" in r[2]]
    assert len(rows) == 5 and all(f"{name}/" in r[1] for r in rows)
    assert name.removesuffix(".tar") not in built.splits["train"].class_counts


def test_no_images_at_all_is_an_error(tmp_path):
    for name in ("cats", "dogs"):
        (tmp_path / "in" / "train" / name).mkdir(parents=True)
        (tmp_path / "in" / "train" / name / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no images found"):
        build_records(tmp_path / "in", tmp_path / "out", allow_empty_classes=True)
    assert not (tmp_path / "out" / manifest.MANIFEST_NAME).exists()


def test_a_write_error_names_the_shard_and_the_fix(sample_dir, tmp_path, monkeypatch):
    real_open_write = files.open_write

    def disk_full(path):
        if os.path.basename(path).startswith("train-00001-of-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open_write(path)

    monkeypatch.setattr(files, "open_write", disk_full)
    with pytest.raises(Exception, match=r"out/train-00001-of-00003: cannot write the shard .*No space left.*--resume"):
        build_records(sample_dir / "folders", tmp_path / "out")


def test_killed_builds_are_refused_resumed_or_overwritten_and_leave_no_temporaries(sample_dir, tmp_path):
    out = tmp_path / "out"
    build_records(sample_dir / "folders", out)
    stray = out / f"train-00001-of-00003{files.TEMP_MARKER}0123abcd"
    stray.write_bytes(b"half a shard")
    report = verify.verify(str(out), workers=1)
    assert any(p.startswith(f"{stray}: a temporary file of an unfinished write") for p in report.problems)
    (out / build.SCRATCH_NAME).mkdir()
    (out / build.SCRATCH_NAME / "build.json").write_text("{}")
    with pytest.raises(InputError, match="holds an unfinished build .*--resume to finish it, or --overwrite"):
        build_records(sample_dir / "folders", out, overwrite=False)
    with pytest.raises(InputError, match="was started with other settings .*input_dir"):
        build_records(sample_dir / "folders", out, overwrite=False, resume=True)
    build_records(sample_dir / "folders", out, overwrite=True)
    assert not [n for n in os.listdir(out) if files.TEMP_MARKER in n or n == build.SCRATCH_NAME]
    assert verify.verify(str(out), workers=1).ok


def _cli(*args, env=None, timeout=300):
    return run_module("pipeline", *args, env=env, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input_dir=/no/such/dir", "--output_dir={tmp}/out"], "--input_dir=/no/such/dir is not a directory"),
        (["--input_dir={sample}", "--output_dir={tmp}/file/out"], "--output_dir={tmp}/file/out is not writable"),
        (["--input_dir={sample}", "--output_dir={tmp}/out", "--resume", "--overwrite"], "pass one of them"),
        (["--input_dir={sample}", "--output_dir={tmp}/out", "--validation_fraction=1.5"], "strictly between 0 and 1"),
    ],
    ids=["missing input", "output under a file", "resume and overwrite", "bad fraction"],
)
def test_usage_errors_are_one_line_without_a_flag_dump(sample_dir, tmp_path, args, message):
    (tmp_path / "file").write_text("a file, not a directory")
    values = {"sample": sample_dir / "imagefolder", "tmp": tmp_path}
    result = _cli(*(a.format(**values) for a in args))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message.format(**values) in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line: no traceback, no flag list


@pytest.mark.slow
def test_a_successful_run_leaves_nothing_in_tmp(sample_dir, tmp_path):
    scratch_tmp = tmp_path / "tmp"
    scratch_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_tmp)}
    result = _cli(f"--input_dir={sample_dir / 'kaggle'}", f"--output_dir={tmp_path / 'out'}", env=env)
    assert result.returncode == 0, result.stderr
    assert os.listdir(scratch_tmp) == []
    assert not (tmp_path / "out" / build.SCRATCH_NAME).exists()


def _thousand_classes() -> synsets.SynsetTable:
    return synsets.SynsetTable.build([f"n{i:08d}" for i in range(layouts.OFFICIAL_NUM_CLASSES)], None)


def test_a_1000_class_input_is_held_against_the_official_facts(tmp_path):
    val_tar = tmp_path / layouts.VAL_TAR
    val_tar.write_bytes(bytes(10240))
    warnings = layouts._official_size_warnings(_thousand_classes(), [str(val_tar)])
    assert warnings == [
        f"{val_tar} is 10,240 bytes; the official ILSVRC2012 file is 6,744,924,160 bytes: it is incomplete or "
        "not the original; compare its checksum with image-net.org's"
    ]
    assert layouts._official_size_warnings(synsets.SynsetTable.build(["n00000001"], None), [str(val_tar)]) == []
    plan = layouts.Plan("folders", str(tmp_path), _thousand_classes(), {"train": ()}, {}, None, {})
    summaries = [{"split": "train", "count": 1_281_000, "class_counts": {}}]
    assert build._official_count_warnings(plan, BuildOptions(), build.split_counts(summaries)) == [
        "train has 1,281,000 images, the official ILSVRC2012 train set 1,281,167"
    ]
    with pytest.raises(InputError, match="not the complete ILSVRC2012: train has 1,281,000 images"):
        build._official_count_warnings(plan, BuildOptions(strict_imagenet=True), build.split_counts(summaries))
    right_count_wrong_size = dataclasses.replace(plan, warnings=tuple(warnings))
    summaries = [{"split": "train", "count": layouts.OFFICIAL_NUM_IMAGES["train"], "class_counts": {}}]
    assert build._official_count_warnings(right_count_wrong_size, BuildOptions(), build.split_counts(summaries)) == []
    with pytest.raises(InputError, match=f"not the complete ILSVRC2012: {val_tar} is 10,240 bytes"):
        build._official_count_warnings(
            right_count_wrong_size, BuildOptions(strict_imagenet=True), build.split_counts(summaries)
        )
