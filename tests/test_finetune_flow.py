"""The story users come for, end to end through the command lines: train on ImageNet, fine-tune the
model on your own classes (built by the records job from image folders), predict their names."""

from __future__ import annotations

import json

import pytest
from pipeline_util import build_records, run_module

from pipeline import sample_folders
from records import manifest

TRAIN = ("--image_size=48", "--batch_size=16", "--train_steps=40", "--save_checkpoints_steps=40")


def _run(module: str, *args: str):
    result = run_module(module, *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_imagenet_model_fine_tuned_on_image_folders_predicts_folder_names(sample_dir, sample_truth, tmp_path):
    imagenet_records, folder_records = tmp_path / "imagenet", tmp_path / "flowers"
    build_records(sample_dir / "tars", imagenet_records, train_shards=2, validation_shards=1)
    build_records(sample_dir / sample_folders.DIR_NAME, folder_records, validation_fraction=0.25)
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    _run("estimator.train", f"--records_dir={imagenet_records}", f"--model_dir={base}", *TRAIN)
    _run(
        "estimator.train",
        f"--records_dir={folder_records}",
        f"--model_dir={tuned}",
        *TRAIN,
        f"--fine_tune_ckpt={base}",
        "--fine_tune_exclude=logits",
    )
    assert manifest.read_manifest(str(tuned)).num_classes == len(sample_folders.CLASSES) != 4

    images = [sample_dir / sample_folders.DIR_NAME / "train" / c / "IMG_0001.jpg" for c in sample_folders.CLASSES]
    printed = _run("estimator.predict", f"--model_dir={tuned}", "--json", *map(str, images)).stdout
    answers = [json.loads(line) for line in printed.splitlines()]
    assert [a["image"] for a in answers] == [str(i) for i in images]
    for answer in answers:
        names = [top["synset"] for top in answer["top5"]]
        assert sorted(names) == sorted(sample_folders.CLASSES)  # five classes: the top 5 is all of them
        assert [top["text"] for top in answer["top5"]] == names  # an image folder's class text is its name
        assert [top["label"] for top in answer["top5"]] == [sample_folders.CLASSES.index(n) + 1 for n in names]
