"""The one place an image is shaped for the model.

Every path that feeds a network calls into this module: the training/eval
`input_fn`, the numpy prediction path and the exported SavedModel. If a crop or
a resize were decided in two places, a model would be evaluated on pixels it
was never trained on, and nothing would fail loudly; keeping them here means
the three paths cannot disagree on decode, crop or resize. What this module
cannot see is how an original file became the JPEG in a record: the numpy path
replays the records job's normalisation exactly, the SavedModel replays it in
the graph with the gaps export.py lists (16-bit PNGs, GIF transparency,
--resize_max_side builds). tests/test_skew.py checks the three paths agree
on the sample's files, quirks included.

Contract: output is float32 [S, S, 3], RGB, values in 0..255. Mean/std
normalisation is NOT done here but in `normalize`, which model_fn applies once,
so every path gets it identically whatever it fed in.
"""

from __future__ import annotations

from fractions import Fraction

import tensorflow as tf

# Eval keeps the central 87.5% of the short side (224 of 256, the convention of
# the reference ImageNet evaluations). A fraction, so the crop is integer math.
CROP_FRACTION = Fraction(7, 8)

# Inception-style distorted crop, as the reference ImageNet trainers sample it.
MIN_OBJECT_COVERED = 0.1
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10

# libjpeg's accurate integer IDCT is what Pillow uses, so a file decoded here and
# the same file decoded by Pillow give identical pixels (tests check it): the
# numpy prediction path may decode with Pillow and still see what training saw.
DCT_METHOD = "INTEGER_ACCURATE"

# ImageNet RGB statistics on the 0..255 scale.
RGB_MEAN = (123.675, 116.28, 103.53)
RGB_STD = (58.395, 57.12, 57.375)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG bytes -> uint8 [H, W, 3]; grayscale records (channels=1) become RGB."""
    return tf.io.decode_jpeg(encoded, channels=3, dct_method=DCT_METHOD)


def central_crop_window(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """int32 [offset_y, offset_x, crop, crop] of the eval crop.

    crop = floor(CROP_FRACTION * short side) (at least 1); offset = (side - crop + 1) // 2,
    i.e. when the margin is odd the extra pixel goes to the top/left margin.
    Everything is integer arithmetic computed once from the shape, so every
    caller (graph or eager, TF or numpy input) cuts exactly the same pixels.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    short_side = tf.minimum(height, width)
    crop = tf.maximum((short_side * CROP_FRACTION.numerator) // CROP_FRACTION.denominator, 1)
    offset_y = (height - crop + 1) // 2
    offset_x = (width - crop + 1) // 2
    return tf.stack([offset_y, offset_x, crop, crop])


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    resized = tf.image.resize(image, [image_size, image_size], method=tf.image.ResizeMethod.BILINEAR)
    resized = tf.cast(resized, tf.float32)
    return tf.ensure_shape(resized, [image_size, image_size, 3])


def _as_rgb_uint8(image) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"eval_image takes decoded uint8 pixels, got {image.dtype.name}; decode the image first")
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    if image.shape.rank != 3:
        raise ValueError(f"eval_image takes one HxWx3 image, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif image.shape[-1] is not None and image.shape[-1] != 3:
        raise ValueError(f"eval_image takes RGB (3 channels), got shape {image.shape}; drop alpha / convert first")
    return image


def eval_image(image, image_size: int) -> tf.Tensor:
    """Decoded uint8 [H, W, 3] (or [H, W] / [H, W, 1] grayscale) -> float32 [S, S, 3].

    Public and free of decoding so the numpy prediction path can call it on
    in-memory arrays and get exactly the features the eval input_fn produces.
    """
    image = _as_rgb_uint8(image)
    shape = tf.shape(image)
    window = central_crop_window(shape[0], shape[1])
    cropped = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])
    return _resize(cropped, image_size)


def preprocess_for_eval(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG bytes -> float32 [S, S, 3] by decode + `eval_image` (full decode then
    slice, deliberately the same ops the numpy path runs)."""
    return eval_image(decode_image(encoded), image_size)


def sample_crop_window(image_shape: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """int32 [offset_y, offset_x, height, width] of a random training crop.

    `boxes`: float32 [n, 4] (ymin, xmin, ymax, xmax) normalised, n may be 0 (then
    the whole image is the object). The crop covers >= 10% of some box, has 8% to
    100% of the image area and aspect 3/4..4/3. When no such crop is found in
    MAX_ATTEMPTS tries, the sampler returns the whole image; we then use the eval
    crop instead, so a failed sample never feeds a squashed full frame.
    """
    image_shape = tf.cast(image_shape, tf.int32)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.reshape(tf.cast(boxes, tf.float32), [1, -1, 4]),
        min_object_covered=MIN_OBJECT_COVERED,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE,
        max_attempts=MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
    sampling_failed = tf.reduce_all(tf.equal(size[:2], image_shape[:2]))
    return tf.cond(
        sampling_failed,
        lambda: central_crop_window(image_shape[0], image_shape[1]),
        lambda: sampled,
    )


def preprocess_for_train(encoded: tf.Tensor, boxes: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG bytes -> random crop (decoded fused, only the crop's blocks) -> resize -> random flip."""
    window = sample_crop_window(tf.image.extract_jpeg_shape(encoded), boxes)
    cropped = tf.image.decode_and_crop_jpeg(encoded, window, channels=3, dct_method=DCT_METHOD)
    return tf.image.random_flip_left_right(_resize(cropped, image_size))


def preprocess(encoded: tf.Tensor, boxes: tf.Tensor, image_size: int, is_training: bool) -> tf.Tensor:
    if is_training:
        return preprocess_for_train(encoded, boxes, image_size)
    return preprocess_for_eval(encoded, image_size)


def normalize(images: tf.Tensor) -> tf.Tensor:
    """0..255 RGB (channels last, any leading dims) -> zero mean, unit variance per channel."""
    images = tf.cast(images, tf.float32)
    return (images - tf.constant(RGB_MEAN, tf.float32)) / tf.constant(RGB_STD, tf.float32)
