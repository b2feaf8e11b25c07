"""The trainer's speed: input_fn throughput (fused vs non-fused decode) and training steps.

  * input_fn images/s, train path (sampled crop decoded with the fused
    decode_and_crop_jpeg) and eval path, against a plain reference pipeline
    that decodes the whole JPEG and then crops (decode_jpeg + crop) — measured
    side by side on the same records, at two output image sizes, so the table
    shows how cost grows with image size.
  * training images/s of sqnxt_1_0_23 at batch 32 on the CPU (graph mode,
    the model_fn's own train_op), next to ResNet-50 measured the same way.

Records come from the real records job on a bench dataset of 300-500 px
JPEGs (bench/data.py), built once and cached under workdir/train.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import tensorflow as tf
from absl import flags, logging

from bench import Figure, data

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_images", 1200, "Images in the bench records (train + validation).", lower_bound=64)
flags.DEFINE_list("train_input_sizes", ["128", "227"], "Output image sizes timed for the input_fn.")
flags.DEFINE_integer("train_input_batches", 30, "Batches of 32 timed per input pipeline.", lower_bound=2)
flags.DEFINE_integer("train_steps_timed", 3, "Training steps timed per network (after one warm-up).", lower_bound=1)

BATCH = 32
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_records(workdir: str) -> str:
    """A records build of the bench dataset (made once with `python -m pipeline`)."""
    dataset = data.ensure_dataset(os.path.join(workdir, "data"), FLAGS.train_images)
    out = os.path.join(workdir, "train", f"records-{FLAGS.train_images}")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                f"--input_dir={dataset.input_dir}",
                f"--output_dir={out}",
                "--train_shards=8",
                "--validation_shards=2",
                "--overwrite",
            ],
            cwd=_REPO_ROOT,
            check=True,
            capture_output=True,
        )
    return out


def _reference_train_map(image_size: int):
    """What the fused path replaces: decode every pixel, then cut the same kind of window."""
    from estimator import preprocessing
    from records import features, parsing

    def preprocess(serialized):
        parsed = parsing.parse_example(serialized)
        image = tf.io.decode_jpeg(parsed[features.ENCODED], channels=3, dct_method=preprocessing.DCT_METHOD)
        window = preprocessing.sample_crop_window(tf.shape(image), parsed["boxes"])
        cropped = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])
        resized = tf.image.resize(cropped, [image_size, image_size])
        return tf.image.random_flip_left_right(resized), parsed[features.LABEL]

    return preprocess


def _reference_dataset(records_dir: str, image_size: int) -> tf.data.Dataset:
    files = tf.io.gfile.glob(os.path.join(records_dir, "train-*-of-*"))
    return (
        tf.data.TFRecordDataset(files)
        .repeat()
        .map(_reference_train_map(image_size), tf.data.AUTOTUNE)
        .batch(BATCH, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _images_per_second(dataset: tf.data.Dataset, batches: int) -> float:
    iterator = iter(dataset)
    for _ in range(3):  # warm-up: threads, autotune, file opening
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - started)


def _input_figures(records_dir: str) -> list[Figure]:
    from estimator import input as input_lib

    figures = []
    for size in (int(s) for s in FLAGS.train_input_sizes):
        ours = {}
        for split, is_training in (("train", True), ("validation", False)):
            fn = input_lib.make_input_fn(records_dir, split, BATCH, size, is_training)
            dataset = fn().repeat() if not is_training else fn()
            ours[split] = _images_per_second(dataset, FLAGS.train_input_batches)
        reference = _images_per_second(_reference_dataset(records_dir, size), FLAGS.train_input_batches)
        logging.info(
            "input_fn at %dpx: train %.0f/s (reference %.0f/s), eval %.0f/s",
            size,
            ours["train"],
            reference,
            ours["validation"],
        )
        note = f"{BATCH}-image batches from 300-500 px JPEG records, {os.cpu_count()} CPUs"
        figures += [
            Figure(
                f"input_fn train @{size}px (fused decode_and_crop)",
                ours["train"],
                "images/s",
                "decode_jpeg + crop",
                reference,
                target=reference,
                note=note,
            ),
            Figure(
                f"input_fn eval @{size}px (decode + central crop)",
                ours["validation"],
                "images/s",
                "train path, same size",
                ours["train"],
                note=note,
            ),
        ]
    return figures


def _train_images_per_second(model_name: str, image_size: int, model_dir: str) -> float:
    from estimator import model

    graph = tf.Graph()
    with graph.as_default():
        images = tf.random.uniform([BATCH, image_size, image_size, 3], 0, 255)
        labels = tf.random.uniform([BATCH], 0, 1000, dtype=tf.int32)
        params = model.make_params(
            model=model_name,
            num_classes=1000,
            image_size=image_size,
            batch_size=BATCH,
            train_steps=1000,
            log_every_n_steps=10**9,
        )
        spec = model.model_fn(
            {"image": images}, labels, tf.estimator.ModeKeys.TRAIN, params, tf.estimator.RunConfig(model_dir=model_dir)
        )
        with tf.compat.v1.Session() as session:
            session.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer()])
            session.run(spec.train_op)  # warm-up: kernels chosen, memory allocated
            started = time.perf_counter()
            for _ in range(FLAGS.train_steps_timed):
                session.run(spec.train_op)
            return FLAGS.train_steps_timed * BATCH / (time.perf_counter() - started)


def run(workdir: str) -> list[Figure]:
    records_dir = ensure_records(workdir)
    figures = _input_figures(records_dir)
    model_dir = os.path.join(workdir, "train", "model")  # the hooks' files; no checkpoint is written
    sqnxt = _train_images_per_second("sqnxt_1_0_23", 227, model_dir)
    resnet = _train_images_per_second("resnet50", 224, model_dir)
    logging.info("training: sqnxt_1_0_23 %.1f images/s, resnet50 %.1f images/s", sqnxt, resnet)
    figures.append(
        Figure(
            f"training sqnxt_1_0_23 @227px, batch {BATCH}",
            sqnxt,
            "images/s",
            "resnet50 @224px, same batch",
            resnet,
            note=f"graph-mode train_op (forward, backward, momentum update, BN updates), synthetic input, "
            f"mean of {FLAGS.train_steps_timed} steps after a warm-up; {os.cpu_count()} CPUs",
        )
    )
    return figures
