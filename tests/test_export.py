"""estimator/export.py: a SavedModel that takes encoded images, decodes them as the records
job would store them, and names its top-5 without the model_dir."""

from __future__ import annotations

import io
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from model_util import IMAGE_SIZE, NUM_CLASSES, write_untrained_model_dir
from PIL import Image

from estimator import export, predict
from records import manifest, synsets


def _picture(height: int, width: int, seed: int) -> Image.Image:
    """Smooth colour gradients plus noise: JPEG-like content whose crops differ."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _rgba(height: int, width: int, seed: int) -> Image.Image:
    alpha = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    image = _picture(height, width, seed).convert("RGBA")
    image.putalpha(Image.fromarray(alpha))
    return image


# Every kind of file the records job meets, as bytes a client would send.
ENCODED = {
    "jpeg": _encode(_picture(90, 120, 0), "JPEG", quality=90),
    "jpeg_tall": _encode(_picture(200, 37, 1), "JPEG", quality=75),
    "jpeg_444": _encode(_picture(64, 64, 2), "JPEG", quality=90, subsampling=0),
    "progressive": _encode(_picture(70, 110, 3), "JPEG", quality=85, progressive=True),
    "grayscale": _encode(_picture(80, 60, 4).convert("L"), "JPEG", quality=90),
    "cmyk": _encode(_picture(66, 99, 5).convert("CMYK"), "JPEG", quality=90),
    "png": _encode(_picture(50, 75, 6), "PNG"),
    "png_rgba": _encode(_rgba(48, 64, 7), "PNG"),
    "png_gray": _encode(_picture(40, 52, 8).convert("L"), "PNG"),
    "png_palette": _encode(_picture(44, 44, 9).convert("P"), "PNG"),
    "gif": _encode(_picture(45, 60, 10).convert("P"), "GIF"),
    "bmp": _encode(_picture(33, 47, 11), "BMP"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[str, synsets.SynsetTable]:
    """Exports a model_dir, then deletes the model_dir: the SavedModel must stand alone."""
    root = tmp_path_factory.mktemp("export")
    model_dir = root / "model"
    table = write_untrained_model_dir(model_dir)
    path = export.export(str(model_dir), str(root / "exports"))
    shutil.rmtree(model_dir)
    return path, table


@pytest.fixture(scope="module")
def serve(exported):
    return tf.saved_model.load(exported[0]).signatures[export.SIGNATURE_KEY]


@pytest.fixture(scope="module")
def served_batch(serve) -> dict[str, np.ndarray]:
    outputs = serve(image_bytes=tf.constant(list(ENCODED.values())))
    return {key: value.numpy() for key, value in outputs.items()}


def test_export_writes_a_timestamped_saved_model_with_the_synset_table(exported):
    path, table = exported
    assert pathlib.Path(path).parent.name == "exports" and pathlib.Path(path).name.isdigit()
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    copy = os.path.join(path, "assets.extra", manifest.SYNSETS_NAME)
    assert synsets.SynsetTable.read_tsv(copy) == table


def test_serving_signature_takes_image_bytes_and_names_its_outputs(serve):
    _, inputs = serve.structured_input_signature
    assert inputs == {export.INPUT_KEY: tf.TensorSpec([None], tf.string, name=export.INPUT_KEY)}
    outputs = {key: (spec.dtype, spec.shape.as_list()) for key, spec in serve.structured_outputs.items()}
    top = min(5, NUM_CLASSES)
    assert outputs == {
        "probabilities": (tf.float32, [None, NUM_CLASSES]),
        "top5_labels": (tf.int64, [None, top]),
        "top5_synsets": (tf.string, [None, top]),
        "top5_texts": (tf.string, [None, top]),
        "top5_probabilities": (tf.float32, [None, top]),
        "preprocessed": (tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3]),
    }


def test_top5_is_named_from_the_synset_table(served_batch, exported):
    _, table = exported
    probabilities = served_batch["probabilities"]
    assert probabilities.shape == (len(ENCODED), NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    for row in range(len(ENCODED)):
        labels = served_batch["top5_labels"][row]
        np.testing.assert_array_equal(labels - synsets.LABEL_OFFSET, np.argsort(-probabilities[row], kind="stable")[:5])
        np.testing.assert_allclose(
            served_batch["top5_probabilities"][row], probabilities[row][labels - synsets.LABEL_OFFSET], atol=1e-7
        )
        expected_synsets = [table.synset_of(int(label)) for label in labels]
        assert [w.decode() for w in served_batch["top5_synsets"][row]] == expected_synsets
        assert [t.decode() for t in served_batch["top5_texts"][row]] == [table.text_of(int(label)) for label in labels]
    assert np.abs(probabilities[0] - probabilities[1]).max() > 1e-3  # the images do matter


def test_preprocessed_equals_the_numpy_path_for_every_format(served_batch, tmp_path):
    """The SavedModel replays the records job's normalisation: CMYK, PNG (with alpha), GIF
    and BMP are re-encoded as it would, so their features match the numpy path's exactly."""
    for row, (kind, data) in enumerate(ENCODED.items()):
        path = tmp_path / f"{kind}.bin"
        path.write_bytes(data)
        expected = predict.file_features(str(path), IMAGE_SIZE)
        np.testing.assert_allclose(served_batch["preprocessed"][row], expected, atol=1e-5, err_msg=kind)


def test_decode_as_stored_reencodes_only_what_the_records_job_reencodes():
    plain = tf.io.decode_jpeg(ENCODED["jpeg"], channels=3, dct_method="INTEGER_ACCURATE").numpy()
    np.testing.assert_array_equal(export.decode_as_stored(tf.constant(ENCODED["jpeg"])).numpy(), plain)
    png_pixels = np.asarray(Image.open(io.BytesIO(ENCODED["png"])))
    decoded_png = export.decode_as_stored(tf.constant(ENCODED["png"])).numpy()
    assert decoded_png.shape == png_pixels.shape
    assert 0 < np.abs(decoded_png.astype(int) - png_pixels).max()  # a JPEG round trip, like the records'


def test_an_undecodable_image_fails_the_request_with_tensorflows_error(serve):
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([ENCODED["jpeg"], b"this is not an image"]))


def test_export_needs_a_trained_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_config.json"):
        export.export(str(tmp_path), str(tmp_path / "exports"))
