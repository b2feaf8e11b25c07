"""estimator/predict.py: files and arrays -> the eval preprocessing -> one Estimator.predict -> named top-5."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from model_util import IMAGE_SIZE, noise, sample_files, write_untrained_model_dir
from PIL import Image

from estimator import model_dir as model_dir_lib
from estimator import predict, preprocessing
from records import images as record_images
from records import manifest, synsets


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("predict") / "model"
    write_untrained_model_dir(path)
    return path


@pytest.fixture(scope="module")
def predictor(model_dir) -> predict.Predictor:
    return predict.load_predictor(str(model_dir))


def _check_prediction(result: predict.Prediction, table: synsets.SynsetTable) -> None:
    probabilities = result.probabilities
    assert probabilities.shape == (len(table),) and probabilities.dtype == np.float32
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5
    assert len(result.top5) == min(5, len(table))
    expected = np.argsort(-probabilities, kind="stable")[:5]
    assert [t.probability for t in result.top5] == pytest.approx(probabilities[expected].tolist(), abs=1e-7)
    for top in result.top5:
        assert top.synset == table.synsets[top.label - synsets.LABEL_OFFSET]
        assert top.text == table.texts[top.label - synsets.LABEL_OFFSET]
        assert top.probability == pytest.approx(float(probabilities[top.label - synsets.LABEL_OFFSET]))


@dataclasses.dataclass
class ArraysRun:
    """One predict_arrays call over many small batches, watched from outside."""

    arrays: list[np.ndarray]
    results: list
    restores: list[str]  # checkpoints Saver.restore was called with
    preprocessed_before_first_result: int
    preprocessed_total: int


BATCH_SIZE = 2
NUM_FILLERS = 33


@pytest.fixture(scope="module")
def arrays_run(predictor, sample_dir, sample_truth) -> ArraysRun:
    gray = noise((45, 70), seed=1)
    plain_jpeg = sample_files(sample_dir, sample_truth, kinds={"jpeg"})[0][0]
    gray_jpeg = sample_files(sample_dir, sample_truth, kinds={"grayscale"})[0][0]
    arrays = [
        noise((50, 40, 3), seed=0),
        gray,
        np.stack([gray] * 3, -1),
        gray[..., None],
        noise((300, 20, 3), 2),
        np.asarray(Image.open(plain_jpeg).convert("RGB")),
        np.asarray(Image.open(gray_jpeg)),  # as Pillow decodes
    ] + [noise((24, 24, 3), seed=10 + i) for i in range(NUM_FILLERS)]
    assert arrays[6].ndim == 2  # a grayscale JPEG decodes to HxW
    restores, preprocessed = [], []
    restore, features = tf.compat.v1.train.Saver.restore, predict.array_features
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            tf.compat.v1.train.Saver,
            "restore",
            lambda self, sess, path: (restores.append(path), restore(self, sess, path))[1],
        )
        patch.setattr(predict, "array_features", lambda array, size: (preprocessed.append(1), features(array, size))[1])
        stream = predict.predict_arrays(predictor, arrays, batch_size=BATCH_SIZE)
        first = next(stream)
        before_first = len(preprocessed)
        results = [first] + list(stream)
    return ArraysRun(arrays, results, restores, before_first, len(preprocessed))


def test_arrays_of_any_size_gray_or_rgb_are_predicted_in_order(arrays_run, predictor):
    results = arrays_run.results
    assert [r.image for r in results] == [f"array[{i}]" for i in range(len(arrays_run.arrays))]
    for result in results:
        assert isinstance(result, predict.Prediction)
        _check_prediction(result, predictor.synsets)
    # HxW, HxWx3 and HxWx1 of the same gray picture are the same input to the network...
    np.testing.assert_allclose(results[1].probabilities, results[2].probabilities, atol=1e-6)
    np.testing.assert_allclose(results[1].probabilities, results[3].probabilities, atol=1e-6)
    # ...while different pictures give different probabilities (the model is not saturated).
    assert np.abs(results[0].probabilities - results[1].probabilities).max() > 1e-3
    assert max(r.probabilities.max() for r in results) < 0.999


def test_checkpoint_is_restored_once_for_all_batches(arrays_run, predictor):
    assert len(arrays_run.results) > 10 * BATCH_SIZE
    assert arrays_run.restores == [predictor.checkpoint_path]


def test_images_are_preprocessed_as_the_model_consumes_them(arrays_run):
    """Bounded memory: when the first prediction arrives only a few batches were preprocessed."""
    assert arrays_run.preprocessed_before_first_result <= (predict.QUEUE_BATCHES + 2) * BATCH_SIZE
    assert arrays_run.preprocessed_total == len(arrays_run.arrays)


def test_array_features_are_the_eval_preprocessing():
    array = noise((61, 83, 3), seed=4)
    expected = preprocessing.eval_image(array, IMAGE_SIZE).numpy()
    np.testing.assert_array_equal(predict.array_features(array, IMAGE_SIZE), expected)


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 4), np.uint8), "alpha"),
        (np.zeros((2, 8, 8, 3), np.uint8), "HxW"),
        (np.zeros((0, 8), np.uint8), "empty"),
    ],
)
def test_bad_arrays_are_refused_up_front_naming_the_array(predictor, array, match):
    with pytest.raises(ValueError, match=match) as error:
        predict.predict_arrays(predictor, [noise((8, 8, 3), 0), array])
    assert "array[1]" in str(error.value)


def test_files_unreadable_ones_are_reported_and_the_rest_predicted(
    predictor, arrays_run, sample_dir, sample_truth, tmp_path
):
    plain = sample_files(sample_dir, sample_truth, kinds={"jpeg"})[:2]
    gray = sample_files(sample_dir, sample_truth, kinds={"grayscale"})[:1]
    hostile = sample_files(sample_dir, sample_truth, kinds={"truncated", "text"}, valid=False)[:2]
    assert len(plain) == 2 and gray and len(hostile) == 2
    missing = str(tmp_path / "missing.JPEG")
    paths = [plain[0][0], hostile[0][0], gray[0][0], missing, hostile[1][0], str(tmp_path), plain[1][0]]
    results = list(predict.predict_files(predictor, paths, batch_size=3))
    assert [r.image for r in results] == paths
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Prediction", "Failure", "Prediction", "Failure", "Failure", "Failure", "Prediction"]
    reasons = {r.image: r.reason for r in results if isinstance(r, predict.Failure)}
    assert "not found" in reasons[missing]
    for path, _ in hostile:
        assert reasons[path].split(":")[0] in ("truncated or corrupt", "not an image"), reasons[path]
    # A file predicts exactly as its Pillow-decoded pixels do.
    for from_file, from_array in ((results[0], arrays_run.results[5]), (results[2], arrays_run.results[6])):
        _check_prediction(from_file, predictor.synsets)
        np.testing.assert_allclose(from_file.probabilities, from_array.probabilities, atol=1e-6)


def test_file_features_are_what_the_records_job_would_store(sample_dir, sample_truth):
    for path, _ in sample_files(sample_dir, sample_truth, kinds={"cmyk", "png"}):
        with open(path, "rb") as f:
            stored = record_images.normalise_image(f.read())
        assert stored.conversion  # re-encoded: the file's own pixels are not the record's
        expected = preprocessing.preprocess_for_eval(tf.constant(stored.jpeg), IMAGE_SIZE).numpy()
        np.testing.assert_array_equal(predict.file_features(path, IMAGE_SIZE), expected)


def test_text_and_json_formats(arrays_run):
    result = arrays_run.results[0]
    text = predict.format_text(result).splitlines()
    assert text[0] == "array[0]" and len(text) == 6
    for rank, (line, top) in enumerate(zip(text[1:], result.top5), start=1):
        assert line.strip().startswith(f"{rank}.") and top.text in line and top.synset in line
        assert f"label {top.label}" in line
    parsed = json.loads(predict.format_json(result))
    assert parsed["image"] == "array[0]"
    assert [t["label"] for t in parsed["top5"]] == [t.label for t in result.top5]
    assert parsed["top5"][0] == {
        "label": result.top5[0].label,
        "synset": result.top5[0].synset,
        "text": result.top5[0].text,
        "probability": result.top5[0].probability,
    }


def test_model_dir_problems_are_named(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="train_config.json"):
        predict.load_predictor(str(tmp_path))
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    for name in (model_dir_lib.TRAIN_CONFIG_NAME, manifest.SYNSETS_NAME):
        (no_checkpoint / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="train the model first"):
        predict.load_predictor(str(no_checkpoint))
    with pytest.raises(FileNotFoundError, match="not found"):
        predict.load_predictor(str(model_dir), checkpoint_path=str(model_dir / "model.ckpt-999"))
    wrong_table = tmp_path / "wrong-table"
    wrong_table.mkdir()
    (wrong_table / model_dir_lib.TRAIN_CONFIG_NAME).write_bytes(
        (model_dir / model_dir_lib.TRAIN_CONFIG_NAME).read_bytes()
    )
    synsets.SynsetTable.build(["n01440764", "n01443537"], None).write_tsv(str(wrong_table / manifest.SYNSETS_NAME))
    with pytest.raises(ValueError, match="different builds"):
        predict.load_predictor(str(wrong_table))
