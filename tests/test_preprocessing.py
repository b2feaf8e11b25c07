"""estimator/preprocessing.py: the crops are the ones documented, and every path sees the same pixels."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from estimator import preprocessing


def _jpeg(array: np.ndarray, **save_args) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=90, **save_args)
    return out.getvalue()


def _noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("subsampling", [0, 2])
def test_decode_matches_pillow_pixel_for_pixel(subsampling):
    data = _jpeg(_noise(67, 91), subsampling=subsampling)
    decoded = preprocessing.decode_image(tf.constant(data)).numpy()
    assert decoded.dtype == np.uint8 and decoded.shape == (67, 91, 3)
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_grayscale_record_decodes_to_three_equal_channels():
    data = _jpeg(_noise(40, 30, channels=1))
    decoded = preprocessing.decode_image(tf.constant(data)).numpy()
    assert decoded.shape == (40, 30, 3)
    np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])
    image = preprocessing.preprocess_for_eval(tf.constant(data), 24).numpy()
    assert image.shape == (24, 24, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])


@pytest.mark.parametrize("height,width", [(100, 60), (60, 100), (64, 64), (375, 500), (333, 500), (9, 7), (1, 5)])
def test_central_crop_window_is_centred_short_side_crop(height, width):
    offset_y, offset_x, crop_h, crop_w = preprocessing.central_crop_window(height, width).numpy()
    assert crop_h == crop_w == max(int(np.floor(0.875 * min(height, width))), 1)
    for offset, side in ((offset_y, height), (offset_x, width)):
        before, after = offset, side - offset - crop_h
        assert 0 <= after <= before <= after + 1  # centred; odd margin's extra pixel goes before


def test_eval_image_is_the_pixel_exact_central_crop():
    image = _noise(50, 37)
    offset_y, offset_x, crop, _ = preprocessing.central_crop_window(50, 37).numpy()
    assert (offset_y, offset_x, crop) == (9, 3, 32)  # 37 * 7 // 8 = 32; (50-32+1)//2; (37-32+1)//2
    # Resizing to the crop's own size is the identity, so the output IS the crop.
    out = preprocessing.eval_image(image, int(crop)).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image[9:41, 3:35].astype(np.float32))


def test_eval_input_path_equals_numpy_path_on_same_pixels():
    data = _jpeg(_noise(81, 120, seed=3))
    from_records = preprocessing.preprocess_for_eval(tf.constant(data), 56).numpy()
    pillow_pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    from_numpy = preprocessing.eval_image(pillow_pixels, 56).numpy()
    np.testing.assert_array_equal(from_records, from_numpy)
    # In a graph too (the input_fn runs inside tf.data).
    in_graph = tf.function(lambda pixels: preprocessing.eval_image(pixels, 56))(tf.constant(pillow_pixels))
    np.testing.assert_array_equal(in_graph.numpy(), from_numpy)


def test_eval_image_accepts_2d_grayscale_and_rejects_wrong_input():
    gray = _noise(30, 40, channels=1)
    out = preprocessing.eval_image(gray, 16).numpy()
    np.testing.assert_array_equal(out, preprocessing.eval_image(np.stack([gray] * 3, -1), 16).numpy())
    with pytest.raises(ValueError, match="uint8"):
        preprocessing.eval_image(gray.astype(np.float32), 16)
    with pytest.raises(ValueError, match="RGB"):
        preprocessing.eval_image(_noise(10, 10, channels=4), 16)


@pytest.mark.parametrize("is_training", [True, False])
def test_output_is_float32_square_0_to_255(is_training):
    data = tf.constant(_jpeg(_noise(70, 45)))
    for _ in range(5):
        out = preprocessing.preprocess(data, tf.zeros([0, 4]), 32, is_training).numpy()
        assert out.dtype == np.float32 and out.shape == (32, 32, 3)
        assert out.min() >= 0.0 and out.max() <= 255.0 and out.max() > 100.0


def _windows(image_shape, boxes, n=300):
    return np.array(
        [
            preprocessing.sample_crop_window(tf.constant(image_shape), tf.constant(boxes, tf.float32)).numpy()
            for _ in range(n)
        ]
    )


def test_train_crop_respects_area_aspect_and_box():
    height, width = 200, 300
    box = [0.0, 0.0, 0.25, 0.2]  # ymin, xmin, ymax, xmax: an object in the top-left corner
    windows = _windows([height, width, 3], [box])
    central = preprocessing.central_crop_window(height, width).numpy()
    sampled = windows[~np.all(windows == central, axis=1)]
    assert len(sampled) > 250  # the sampler rarely fails on such an image
    oy, ox, h, w = sampled.T
    assert np.all((oy >= 0) & (ox >= 0) & (oy + h <= height) & (ox + w <= width))
    area = h * w / (height * width)
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 0.75 - 0.05 and aspect.max() <= 4 / 3 + 0.05
    by, bx, bh, bw = box[0] * height, box[1] * width, (box[2] - box[0]) * height, (box[3] - box[1]) * width
    overlap_h = np.clip(np.minimum(oy + h, by + bh) - np.maximum(oy, by), 0, None)
    overlap_w = np.clip(np.minimum(ox + w, bx + bw) - np.maximum(ox, bx), 0, None)
    assert (overlap_h * overlap_w / (bh * bw)).min() >= 0.1 - 0.02
    # Without the box the crops spread over the whole frame; with it they follow the object.
    free = _windows([height, width, 3], np.zeros([0, 4]))
    free = free[~np.all(free == central, axis=1)]

    def centre_x(windows):
        return np.mean(windows[:, 1] + windows[:, 3] / 2)

    assert centre_x(sampled) < centre_x(free) - 20, (centre_x(sampled), centre_x(free))


def test_train_crop_falls_back_to_eval_crop_when_sampling_is_impossible():
    # 10 x 1000: no 3/4..4/3 crop can hold 8% of the area, so every sample fails.
    windows = _windows([10, 1000, 3], np.zeros([0, 4]), n=20)
    expected = preprocessing.central_crop_window(10, 1000).numpy()
    assert np.all(windows == expected)
    data = tf.constant(_jpeg(_noise(10, 1000)))
    assert preprocessing.preprocess_for_train(data, tf.zeros([0, 4]), 16).shape == (16, 16, 3)


def test_train_preprocessing_crops_from_the_boxed_object():
    # Left half red, right half blue, the box on the red half: every crop covers
    # >= 10% of the box, so every training image shows red.
    array = np.zeros((120, 160, 3), np.uint8)
    array[:, :80, 0] = 255
    array[:, 80:, 2] = 255
    data = tf.constant(_jpeg(array))
    box = tf.constant([[0.0, 0.0, 1.0, 0.45]])
    for _ in range(30):
        out = preprocessing.preprocess_for_train(data, box, 24).numpy()
        assert (out[..., 0] > 200).any()


def test_normalize_uses_the_published_imagenet_statistics():
    # The ImageNet mean and standard deviation per RGB channel on the 0..1 scale, as published
    # with the reference models (torchvision, Keras, TF slim), here on the 0..255 scale.
    mean = 255 * np.array([0.485, 0.456, 0.406])
    std = 255 * np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(preprocessing.RGB_MEAN, mean, rtol=1e-6)
    np.testing.assert_allclose(preprocessing.RGB_STD, std, rtol=1e-6)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocessing.normalize(pixels).numpy(), (pixels - mean) / std, rtol=1e-5, atol=1e-5)
