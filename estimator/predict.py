"""Predict ImageNet classes for image files or numpy arrays with a trained model_dir.

    python -m estimator.predict --model_dir=DIR [--json] [--batch_size=32] IMAGE [IMAGE ...]

An image reaches the network exactly as a validation record does: a file is
first turned by records.images.normalise_image into the JPEG bytes the records
job would store (CMYK, PNG, alpha... handled there), then decoded and cropped
by estimator/preprocessing.py, the module the eval input_fn calls. Arrays skip
the normalisation and go straight to preprocessing.eval_image.

How many images, and how the checkpoint is restored: everything goes through
ONE Estimator.predict call fed by numpy_input_fn(shuffle=False, num_epochs=1),
so the checkpoint is restored once. numpy_input_fn wants arrays, but holding
thousands of preprocessed images (600 KB each at 227x227) is not bounded
memory. Its feeder thread, though, only ever asks its columns for len(),
.shape, .dtype and `column[indices]` with consecutive index batches, in order
(one thread, no shuffle). `_LazyImageColumn` answers those by preprocessing
just the requested rows, so at any time only about
(queue_capacity + 2 batches) images exist in memory, whatever the file count.
A chunked loop of predict calls would restore once per chunk instead, and a
tf.data generator would fork the prediction path away from numpy_input_fn.
The price is leaning on how the (frozen, last-release) tf-estimator feeder
reads a column; tests/test_predict.py fails if it ever materialised the column
up front or restored more than once.

A file that cannot be read or decoded becomes a zero row flagged as failed:
the row count was fixed up front, so the row stays, but its prediction is
dropped and the failure (path and reason) is reported instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep the CLI's stderr for real errors

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from estimator import model, preprocessing
from estimator import model_dir as model_dir_lib
from records import images as record_images
from records import synsets

DEFAULT_BATCH_SIZE = 32
# Rows the numpy_input_fn queue may hold, in batches: enough to keep the model
# busy while the feeder preprocesses the next batch, few enough to bound memory.
QUEUE_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class TopClass:
    label: int  # 1-based, as in synsets.tsv and the records
    synset: str  # the class id: a WordNet id for ImageNet, the folder name for an image-folder dataset
    text: str
    probability: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    image: str  # the file path, or "array[i]"
    top5: tuple[TopClass, ...]
    probabilities: np.ndarray  # float32 [num_classes], index = label - LABEL_OFFSET


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input that could not be predicted; `reason` says why and how to fix it."""

    image: str
    reason: str


class ImageError(ValueError):
    """An image file that cannot be read or decoded."""


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A model_dir opened for prediction: the estimator, its checkpoint and class table."""

    estimator: tf.estimator.Estimator
    checkpoint_path: str
    image_size: int
    synsets: synsets.SynsetTable
    # records.images.normalise_image options of the build the model trained on.
    resize_max_side: int = 0
    max_pixels: int = record_images.DEFAULT_MAX_PIXELS


def load_predictor(model_dir: str, checkpoint_path: str | None = None, data_format: str = "auto") -> Predictor:
    """Rebuilds the trained model from model_dir alone (train_config.json, synsets.tsv, checkpoint).

    Raises FileNotFoundError / ValueError naming the missing piece and the fix.
    """
    config = model_dir_lib.read_train_config(model_dir)
    table = model_dir_lib.read_class_table(
        model_dir,
        config["num_classes"],
        counted_in=f"{model_dir}/{model_dir_lib.TRAIN_CONFIG_NAME}",
        fix="estimator.train copies it from the records build; copy the synsets.tsv of the build the model "
        "was trained on into the model_dir",
    )
    if checkpoint_path is None:
        checkpoint_path = tf.train.latest_checkpoint(model_dir)
        if checkpoint_path is None:
            raise FileNotFoundError(
                f"no checkpoint in {model_dir}: train the model first (python -m estimator.train "
                f"--model_dir={model_dir} ...)"
            )
    elif not tf.io.gfile.exists(checkpoint_path + ".index"):
        raise FileNotFoundError(f"checkpoint {checkpoint_path} not found (no {checkpoint_path}.index)")
    params = model.make_params(
        model=config["model"],
        num_classes=config["num_classes"],
        image_size=config["image_size"],
        data_format=data_format,
    )
    estimator = tf.estimator.Estimator(model_fn=model.model_fn, model_dir=model_dir, params=params)
    options = model_dir_lib.records_build_options(model_dir)
    return Predictor(
        estimator,
        checkpoint_path,
        config["image_size"],
        table,
        resize_max_side=int(options.get("resize_max_side") or 0),
        max_pixels=int(options.get("max_pixels") or record_images.DEFAULT_MAX_PIXELS),
    )


# ---------------------------------------------------------------- features


def _read(path: str) -> bytes:
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise ImageError("file not found; check the path") from None
    except (tf.errors.OpError, OSError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ImageError(f"cannot read it ({message.splitlines()[0]}); check the path and permissions") from None


def file_features(
    path: str, image_size: int, *, resize_max_side: int = 0, max_pixels: int = record_images.DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """float32 [S, S, 3], 0..255: what the eval input_fn yields for this file's record
    (pass the build's resize_max_side / max_pixels to normalise exactly like it).

    Raises ImageError (with the records job's reason) for unreadable or corrupt files.
    """
    normalised = record_images.normalise_image(_read(path), resize_max_side=resize_max_side, max_pixels=max_pixels)
    if isinstance(normalised, record_images.Rejected):
        raise ImageError(normalised.reason)
    try:
        return preprocessing.preprocess_for_eval(tf.constant(normalised.jpeg), image_size).numpy()
    except tf.errors.OpError as error:
        raise ImageError(
            f"TensorFlow cannot decode it ({error.message.splitlines()[0]}); re-save it as a baseline JPEG"
        ) from None


def check_array(array: np.ndarray, name: str = "array") -> np.ndarray:
    """The array as uint8 [H, W] / [H, W, 1] / [H, W, 3], or ValueError saying what to pass."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(
            f"{name}: want decoded uint8 pixels (0..255), got dtype {array.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
        raise ValueError(
            f"{name}: want an HxW or HxWx3 image, got shape {array.shape}; drop an alpha channel with array[..., :3]"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: the image is empty (shape {array.shape})")
    return array


def array_features(array: np.ndarray, image_size: int) -> np.ndarray:
    """float32 [S, S, 3], 0..255 for decoded pixels, through the eval input_fn's eval_image."""
    return preprocessing.eval_image(check_array(array), image_size).numpy()


class _LazyImageColumn:
    """A numpy_input_fn column whose rows are preprocessed when the feeder asks for them.

    Rows that fail come back as zeros and are recorded in `failures`, written
    by the feeder thread before the row is enqueued, hence before its
    prediction can reach the reader.
    """

    def __init__(self, loaders: Sequence[Callable[[], np.ndarray]], image_size: int):
        self._loaders = loaders
        self.shape = (len(loaders), image_size, image_size, 3)
        self.dtype = np.dtype(np.float32)
        self.failures: dict[int, str] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> np.ndarray:
        batch = np.zeros((len(indices),) + self.shape[1:], self.dtype)
        for slot, index in enumerate(indices):
            try:
                batch[slot] = self._loaders[index]()
            except ImageError as error:
                self.failures[int(index)] = str(error)
        return batch


def _top_classes(
    probabilities: np.ndarray, top_indices: np.ndarray, table: synsets.SynsetTable
) -> tuple[TopClass, ...]:
    out = []
    for index in top_indices:
        label = int(index) + synsets.LABEL_OFFSET
        out.append(TopClass(label, table.synset_of(label), table.text_of(label), float(probabilities[index])))
    return tuple(out)


def _predict(
    predictor: Predictor, names: Sequence[str], loaders: Sequence[Callable[[], np.ndarray]], batch_size: int
) -> Iterator[Prediction | Failure]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not loaders:
        return
    column = _LazyImageColumn(loaders, predictor.image_size)
    input_fn = tf.compat.v1.estimator.inputs.numpy_input_fn(
        {"image": column},
        batch_size=batch_size,
        num_epochs=1,
        shuffle=False,
        queue_capacity=QUEUE_BATCHES * batch_size,
        num_threads=1,
    )
    outputs = predictor.estimator.predict(
        input_fn,
        predict_keys=["probabilities", "top5_classes"],
        checkpoint_path=predictor.checkpoint_path,
        yield_single_examples=True,
    )
    count = 0
    for index, output in enumerate(outputs):
        count += 1
        if index in column.failures:
            yield Failure(names[index], column.failures[index])
            continue
        probabilities = output["probabilities"]
        yield Prediction(
            names[index], _top_classes(probabilities, output["top5_classes"], predictor.synsets), probabilities
        )
    if count != len(names):  # an ordering/feeding bug must never mislabel results silently
        raise RuntimeError(f"predicted {count} rows for {len(names)} images")


def predict_files(
    predictor: Predictor,
    paths: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[Prediction | Failure]:
    """One Prediction or Failure per path, in order, streamed as the model produces them."""
    size, resize, max_pixels = predictor.image_size, predictor.resize_max_side, predictor.max_pixels
    loaders = [
        lambda path=path: file_features(path, size, resize_max_side=resize, max_pixels=max_pixels) for path in paths
    ]
    return _predict(predictor, list(paths), loaders, batch_size)


def predict_arrays(
    predictor: Predictor,
    arrays: Sequence[np.ndarray],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[Prediction | Failure]:
    """One Prediction per array (uint8 HxW or HxWx3, any size), in order.

    Arrays are checked up front (ValueError naming the bad one): a wrong array
    is the caller's bug, unlike a damaged file.
    """
    size = predictor.image_size
    names = [f"array[{i}]" for i in range(len(arrays))]
    checked = [check_array(a, name) for a, name in zip(arrays, names)]
    loaders = [lambda array=array: array_features(array, size) for array in checked]
    return _predict(predictor, names, loaders, batch_size)


# ---------------------------------------------------------------- output


def format_text(prediction: Prediction) -> str:
    lines = [prediction.image]
    for rank, top in enumerate(prediction.top5, start=1):
        lines.append(f"  {rank}. {top.probability:7.2%}  {top.text}  ({top.synset}, label {top.label})")
    return "\n".join(lines)


def format_json(prediction: Prediction) -> str:
    return json.dumps(
        {
            "image": prediction.image,
            "top5": [dataclasses.asdict(top) for top in prediction.top5],
        }
    )


# ---------------------------------------------------------------- CLI

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a program, so importing this module next to other
    CLIs (the trainer's flags include --model_dir too) never collides."""
    flags.DEFINE_string(
        "model_dir", None, "A model_dir written by estimator.train (checkpoint, train_config.json, synsets.tsv)."
    )
    flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint prefix; default: the latest in --model_dir.")
    flags.DEFINE_boolean("json", False, "One JSON object per line instead of readable text.")
    flags.DEFINE_integer(
        "batch_size", DEFAULT_BATCH_SIZE, "Images per forward pass (memory grows with it).", lower_bound=1
    )
    flags.mark_flag_as_required("model_dir")


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image files after the flags")
    if logging.get_verbosity() < logging.DEBUG:  # TensorFlow's deprecation chatter only with --verbosity=1
        tf.get_logger().setLevel("ERROR")
    try:
        predictor = load_predictor(FLAGS.model_dir, FLAGS.checkpoint_path)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    failed = 0
    for result in predict_files(predictor, paths, FLAGS.batch_size):
        if isinstance(result, Failure):
            failed += 1
            print(f"error: {result.image}: {result.reason}", file=sys.stderr, flush=True)
            continue
        print(format_json(result) if FLAGS.json else format_text(result), flush=True)
    if failed:
        sys.exit(f"error: {failed} of {len(paths)} images could not be predicted (listed above)")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
