"""Export a trained model_dir as a SavedModel that takes encoded images.

    python -m estimator.export --model_dir=DIR --export_dir=DIR [--checkpoint_path=CKPT]

Prints the path of the new timestamped SavedModel under --export_dir. Its
`serving_default` signature:
  inputs   image_bytes         string  [batch]        encoded JPEG / PNG / GIF / BMP files
  outputs  probabilities       float32 [batch, num_classes]
           top5_labels         int64   [batch, k]     1-based, as in synsets.tsv and the records
           top5_synsets        string  [batch, k]
           top5_texts          string  [batch, k]
           top5_probabilities  float32 [batch, k]
           preprocessed        float32 [batch, S, S, 3]  the network's input, 0..255 (for skew checks)
with k = min(5, num_classes). The class table is compiled into the graph as
constants (and synsets.tsv rides along in assets.extra for people), so the
SavedModel needs nothing from the model_dir.

Skew: the model was trained on what the records job stores, not on the
original files: plain RGB/grayscale JPEGs are stored byte-for-byte, anything
else (CMYK JPEG, PNG, ...) is decoded by Pillow and re-encoded as JPEG at
records.images.JPEG_QUALITY. `decode_as_stored` replays that rule in the
graph; TensorFlow's libjpeg encoder at the same quality reproduces Pillow's
re-encoding pixel for pixel (tests/test_skew.py proves it on CMYK and PNG),
so for those inputs too the SavedModel sees what the eval input_fn sees.
PNGs with transparency are laid on white as the records job does
(tests/test_export.py checks RGBA, gray, palette PNGs, GIF and BMP). Known
gaps, where only the numpy path (estimator.predict) is exact: 16-bit PNGs
(Pillow and TensorFlow reduce them to 8 bits differently), GIF transparency,
and builds made with --resize_max_side (Pillow's LANCZOS resize is not
replayed; export warns). A batch holding an undecodable image fails as a
whole with TensorFlow's InvalidArgumentError: check files before sending.

The export graph uses channels_last by default so one SavedModel serves on
CPUs and GPUs alike (channels_first convolutions have no CPU kernels).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep the CLI's stderr for real errors

import tensorflow as tf
from absl import app, flags, logging

from estimator import model, predict, preprocessing
from records import images as record_images
from records import manifest, synsets

INPUT_KEY = "image_bytes"
SIGNATURE_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reencoded(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 RGB -> the pixels of the JPEG the records job would write for them."""
    jpeg = tf.io.encode_jpeg(pixels, quality=record_images.JPEG_QUALITY)
    return preprocessing.decode_image(jpeg)


def _png_on_white(encoded: tf.Tensor) -> tf.Tensor:
    """PNG -> uint8 RGB with transparent pixels laid on white (opaque PNGs are unchanged),
    as records.images does for RGBA/LA/palette-with-transparency images."""
    rgba = tf.cast(tf.io.decode_png(encoded, channels=4), tf.int32)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    blended = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return tf.cast(blended, tf.uint8)


def decode_as_stored(encoded: tf.Tensor) -> tf.Tensor:
    """One encoded image (scalar string) -> uint8 [H, W, 3]: the pixels the eval
    input_fn decodes from the record the records job would write for this file."""
    magic = tf.strings.substr(encoded, 0, len(_JPEG_MAGIC))

    def jpeg() -> tf.Tensor:
        components = tf.image.extract_jpeg_shape(encoded)[2]
        return tf.cond(
            tf.equal(components, 4),  # CMYK/YCCK: converted to RGB and re-encoded by the records job
            lambda: _reencoded(preprocessing.decode_image(encoded)),
            lambda: preprocessing.decode_image(encoded),  # RGB or grayscale: stored as is
        )

    def other() -> tf.Tensor:
        return tf.cond(
            tf.equal(tf.strings.substr(encoded, 0, len(_PNG_MAGIC)), _PNG_MAGIC),
            lambda: _reencoded(_png_on_white(encoded)),
            lambda: _reencoded(
                tf.ensure_shape(tf.io.decode_image(encoded, channels=3, expand_animations=False), [None, None, 3])
            ),
        )

    return tf.cond(tf.equal(magic, _JPEG_MAGIC), jpeg, other)


def serving_input_receiver_fn(image_size: int) -> Callable[[], tf.estimator.export.ServingInputReceiver]:
    """Receiver: a batch of encoded images -> {'image': float32 [batch, S, S, 3]} by the eval preprocessing."""

    def receiver() -> tf.estimator.export.ServingInputReceiver:
        image_bytes = tf.compat.v1.placeholder(tf.string, [None], name=INPUT_KEY)
        images = tf.map_fn(
            lambda encoded: preprocessing.eval_image(decode_as_stored(encoded), image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
        return tf.estimator.export.ServingInputReceiver({"image": images}, {INPUT_KEY: image_bytes})

    return receiver


def serving_model_fn(table: synsets.SynsetTable) -> Callable:
    """model.model_fn's PREDICT graph plus named, human-readable outputs for serving."""

    def model_fn(features, labels, mode, params, config):
        spec = model.model_fn(features, labels, mode, params, config)
        predictions = spec.predictions
        top = predictions["top5_classes"]
        outputs = {
            "probabilities": predictions["probabilities"],
            "top5_labels": tf.cast(top, tf.int64) + synsets.LABEL_OFFSET,
            "top5_synsets": tf.gather(tf.constant(table.synsets, name="synset_names"), top),
            "top5_texts": tf.gather(tf.constant(table.texts, name="synset_texts"), top),
            "top5_probabilities": predictions["top5_probabilities"],
            "preprocessed": features["image"],
        }
        return tf.estimator.EstimatorSpec(
            mode,
            predictions=outputs,
            export_outputs={SIGNATURE_KEY: tf.estimator.export.PredictOutput(outputs)},
        )

    return model_fn


def export(
    model_dir: str, export_dir: str, checkpoint_path: str | None = None, data_format: str = "channels_last"
) -> str:
    """Writes a SavedModel under export_dir/<timestamp>/ and returns that path."""
    predictor = predict.load_predictor(model_dir, checkpoint_path, data_format)
    if predictor.resize_max_side:
        logging.warning(
            "the records were built with --resize_max_side=%d: the model trained on downsized images, which "
            "the SavedModel does not replay; send it images already shrunk to that size",
            predictor.resize_max_side,
        )
    params = dict(predictor.estimator.params)
    estimator = tf.estimator.Estimator(serving_model_fn(predictor.synsets), model_dir=model_dir, params=params)
    path = estimator.export_saved_model(
        export_dir,
        serving_input_receiver_fn(predictor.image_size),
        assets_extra={manifest.SYNSETS_NAME: os.path.join(model_dir, manifest.SYNSETS_NAME)},
        checkpoint_path=predictor.checkpoint_path,
    )
    return path.decode() if isinstance(path, bytes) else path


# ---------------------------------------------------------------- CLI

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a program (see estimator/predict.py)."""
    flags.DEFINE_string("model_dir", None, "A model_dir written by estimator.train.")
    flags.DEFINE_string("export_dir", None, "Parent directory; the SavedModel goes to a new timestamped folder in it.")
    flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint prefix; default: the latest in --model_dir.")
    flags.DEFINE_enum(
        "data_format",
        "channels_last",
        ["channels_last", "channels_first"],
        "channels_last serves anywhere; channels_first only on GPUs.",
    )
    flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if logging.get_verbosity() < logging.DEBUG:  # TensorFlow's deprecation chatter only with --verbosity=1
        tf.get_logger().setLevel("ERROR")
    try:
        path = export(FLAGS.model_dir, FLAGS.export_dir, FLAGS.checkpoint_path, FLAGS.data_format)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(path, flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
