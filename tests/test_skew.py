"""No training/serving skew: a record, its original file and the SavedModel see the same pixels.

One tiny model is trained per module on records the real records job builds from
the generated sample (with ImageNet's CMYK, PNG-named-.JPEG, grayscale and
progressive files). For every image, three paths must agree to 1e-5:
  (1) the eval input_fn on the image's record,
  (2) the numpy prediction path (estimator.predict) on the original file,
  (3) the exported SavedModel on the original file's bytes;
first on the features the network receives, then on its probabilities.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from model_util import calibrate_batch_norm, sample_files
from pipeline_util import build_records, read_split, run_module

from estimator import export, predict, train
from estimator import input as input_lib
from records import synsets

pytestmark = pytest.mark.slow

IMAGE_SIZE = 32
QUIRKS = {"cmyk", "png", "grayscale", "progressive"}


class Trained:
    """Everything the module's tests compare, built once."""

    def __init__(self, root: pathlib.Path, sample_dir: pathlib.Path, truth: dict):
        self.records_dir = str(root / "records")
        # One shard per split keeps the eval input_fn in file order, so its
        # features can be matched to records by position.
        build_records(sample_dir / "folders", self.records_dir, train_shards=1, validation_shards=1)
        self.model_dir = str(root / "model")
        train.run(
            train.TrainOptions(
                records_dir=self.records_dir,
                model_dir=self.model_dir,
                model="sqnxt_1_0_23",
                image_size=IMAGE_SIZE,
                batch_size=8,
                train_steps=3,
                learning_rate=1e-4,  # three steps that keep the weights near their (non-saturating) start
                save_checkpoints_steps=3,
                shuffle_buffer=16,
                seed=0,
            )
        )
        by_name = {entry["name"]: (path, entry) for path, entry in sample_files(sample_dir, truth)}
        self.records, self.features, self.paths, self.kinds = [], [], [], []
        for split in ("train", "validation"):
            (records,) = read_split(self.records_dir, split).values()
            images, labels = self._eval_input(split)
            assert [r.label - synsets.LABEL_OFFSET for r in records] == labels.tolist(), (
                "the eval input_fn no longer yields a one-shard split in file order"
            )
            self.records += records
            self.features += list(images)
            for record in records:
                path, entry = by_name[record.filename]
                self.paths.append(path)
                self.kinds.append(entry["kind"])
        # Three training steps leave batch norm's moving statistics at their initial
        # values, which saturates every softmax to one-hot; calibrate them on the
        # training images so the probability comparisons below can see a difference.
        calibrate_batch_norm(self.model_dir, np.stack(self.features[: len(self.features) // 2]))
        exported = run_module("estimator.export", f"--model_dir={self.model_dir}", f"--export_dir={root / 'exports'}")
        assert exported.returncode == 0, exported.stderr[-3000:]
        self.export_path = exported.stdout.strip().splitlines()[-1]
        self.predictor = predict.load_predictor(self.model_dir)

    def _eval_input(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        input_fn = input_lib.make_input_fn(
            self.records_dir, split, input_lib.DECODE_GROUP_SIZE, IMAGE_SIZE, is_training=False
        )
        batches = list(input_fn())
        assert len(batches) == 1, "more records than one decode group: order across groups is interleaved"
        features, labels = batches[0]
        return features["image"].numpy(), labels.numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_dir, sample_truth) -> Trained:
    return Trained(tmp_path_factory.mktemp("skew"), sample_dir, sample_truth)


@pytest.fixture(scope="module")
def served(trained) -> dict[str, np.ndarray]:
    serve = tf.saved_model.load(trained.export_path).signatures[export.SIGNATURE_KEY]
    originals = [pathlib.Path(path).read_bytes() for path in trained.paths]
    return {key: value.numpy() for key, value in serve(image_bytes=tf.constant(originals)).items()}


def _assert_top5(table: synsets.SynsetTable, probabilities: np.ndarray, top5: list[str]) -> None:
    """top5 names, in order, the five highest of probabilities.

    Classes closer than the tolerance may swap places: two graphs (or batch
    sizes) may round them differently.
    """
    ranked = probabilities[[table.synsets.index(synset) for synset in top5]]
    assert np.all(np.diff(ranked) <= 1e-5), ranked
    np.testing.assert_allclose(ranked, np.sort(probabilities)[::-1][:5], atol=1e-5)


def test_the_sample_exercises_every_quirk(trained):
    assert QUIRKS <= set(trained.kinds), set(trained.kinds)
    assert len(trained.records) == len(trained.features) == len(trained.paths) > 20


def test_features_agree_across_record_file_and_saved_model(trained, served):
    for index, (path, kind) in enumerate(zip(trained.paths, trained.kinds)):
        from_record = trained.features[index]
        from_file = predict.file_features(path, IMAGE_SIZE)
        np.testing.assert_allclose(from_file, from_record, atol=1e-5, err_msg=f"numpy path, {kind} {path}")
        np.testing.assert_allclose(
            served["preprocessed"][index], from_record, atol=1e-5, err_msg=f"SavedModel, {kind} {path}"
        )


def test_probabilities_agree_across_record_file_and_saved_model(trained, served):
    from_files = list(predict.predict_files(trained.predictor, trained.paths, batch_size=7))
    assert all(isinstance(r, predict.Prediction) for r in from_files)
    numpy_path = np.stack([r.probabilities for r in from_files])
    input_fn = input_lib.make_input_fn(trained.records_dir, "validation", 64, IMAGE_SIZE, is_training=False)
    from_records = np.stack(
        [
            p["probabilities"]
            for p in trained.predictor.estimator.predict(
                input_fn, predict_keys=["probabilities"], checkpoint_path=trained.predictor.checkpoint_path
            )
        ]
    )
    validation = slice(len(trained.paths) - len(from_records), None)  # validation records come last

    np.testing.assert_allclose(served["probabilities"], numpy_path, atol=1e-5)
    np.testing.assert_allclose(from_records, numpy_path[validation], atol=1e-5)
    for probabilities, wnids in zip(numpy_path, served["top5_synsets"]):
        _assert_top5(trained.predictor.synsets, probabilities, [w.decode() for w in wnids])
    # The comparison means something: the probabilities are far from one-hot and differ per image.
    assert numpy_path.max() < 0.999 and np.ptp(numpy_path, axis=0).max() > 1e-3


def test_predict_cli_json_and_a_failed_file(trained, sample_dir, sample_truth):
    good = [trained.paths[i] for i in (0, trained.kinds.index("cmyk"), trained.kinds.index("png"))]
    ((hostile, _),) = sample_files(sample_dir, sample_truth, kinds={"truncated"}, valid=False)[:1]
    done = run_module(
        "estimator.predict", f"--model_dir={trained.model_dir}", "--json", "--batch_size=2", good[0], hostile, *good[1:]
    )
    assert done.returncode != 0
    assert f"{hostile}: truncated or corrupt" in done.stderr
    assert "1 of 4 images could not be predicted" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == good
    expected = list(predict.predict_files(trained.predictor, good))
    table = trained.predictor.synsets
    for line, result in zip(lines, expected):
        _assert_top5(table, result.probabilities, [t["synset"] for t in line["top5"]])
        for top in line["top5"]:
            index = top["label"] - synsets.LABEL_OFFSET
            assert (table.synsets[index], table.texts[index]) == (top["synset"], top["text"])
            assert top["probability"] == pytest.approx(result.probabilities[index], abs=1e-5)


def test_predict_cli_text(trained):
    path = trained.paths[trained.kinds.index("grayscale")]
    done = run_module("estimator.predict", f"--model_dir={trained.model_dir}", path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    (expected,) = predict.predict_files(trained.predictor, [path])
    assert lines == predict.format_text(expected).splitlines()
    assert lines[0] == path and len(lines) == 1 + len(expected.top5)
