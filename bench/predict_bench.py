"""Prediction latency: the predict CLI as a user runs it, and a loaded SavedModel per batch.

What is measured, on an untrained network of the real shape (default
SqueezeNext 1.0-23 at its 227 px, 1000 classes: weights do not change the
cost) and ImageNet-sized JPEGs (300-500 px, q85-95):
  * wall time of the whole `python -m estimator.predict` process for 1 and
    for N images (startup, TensorFlow import, graph build and the one
    checkpoint restore included), fastest of --predict_repeats; their
    difference / (N - 1) is the marginal cost of an image, the number that
    matters for big batches of files. The floor it sits on is a process that
    only imports TensorFlow, measured the same way.
  * latency of one call to a loaded SavedModel's serving_default (JPEG bytes in,
    top-5 out), batch of 1 and batch of N, median of --predict_calls calls after
    a warm-up call; the batch-of-N figure is judged against N batch-of-1 calls.
Each figure's low/high is the range over its repeats or calls.

The section builds its own model_dir (fresh weights, estimator.train's file
layout) and SavedModel under workdir/predict and keeps them between runs.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import flags, logging

from bench import Figure
from records import files

FLAGS = flags.FLAGS
flags.DEFINE_string("predict_model", "sqnxt_1_0_23", "Network to time (estimator/nets names).")
flags.DEFINE_integer("predict_image_size", None, "Input size; default: the network's published size.")
flags.DEFINE_integer("predict_num_classes", 1000, "Classes of the timed network.", lower_bound=1)
flags.DEFINE_integer(
    "predict_images", 100, "N: images in the large CLI run and the large SavedModel batch.", lower_bound=2
)
flags.DEFINE_integer("predict_repeats", 3, "CLI runs per measurement; the fastest counts.", lower_bound=1)
flags.DEFINE_integer("predict_calls", 10, "SavedModel calls per batch size; the median counts.", lower_bound=1)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SIDE_RANGE = (300, 501)
_QUALITY_RANGE = (85, 96)


def _write_images(directory: str, count: int) -> list[str]:
    """ImageNet-sized JPEGs drawn like the sample's (cached: drawing costs more than predicting)."""
    from pipeline import pictures

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = os.path.join(directory, f"bench_{index:05d}.JPEG")
        width, height = (int(v) for v in rng.integers(*_SIDE_RANGE, size=2))
        quality = int(rng.integers(*_QUALITY_RANGE))
        if not os.path.exists(path):
            picture, _ = pictures.draw_picture(index % 10 + 1, 10, width, height, rng)
            out = io.BytesIO()
            picture.save(out, "JPEG", quality=quality)
            files.write_atomically(path, out.getvalue())
        paths.append(path)
    return paths


def _ensure_model_dir(model_dir: str, model_name: str, image_size: int, num_classes: int) -> None:
    """A model_dir laid out as estimator.train lays it out (estimator/model_dir.py), holding a
    freshly initialised checkpoint: weights do not change the cost. Kept while its identity matches."""
    import tensorflow as tf

    from estimator import model
    from estimator import model_dir as model_dir_lib
    from records import manifest, synsets

    config = {
        "model": model_name,
        "image_size": image_size,
        "num_classes": num_classes,
        "label_offset": synsets.LABEL_OFFSET,
        "records_dir": model_dir + "-records",
    }
    try:
        if tf.train.latest_checkpoint(model_dir) and model_dir_lib.read_train_config(model_dir) == config:
            return
    except FileNotFoundError:
        pass
    shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(config["records_dir"], exist_ok=True)
    wnids = [f"n{index:08d}" for index in range(1, num_classes + 1)]
    table = synsets.SynsetTable.build(wnids, {w: f"bench class {i}" for i, w in enumerate(wnids)})
    table.write_tsv(os.path.join(config["records_dir"], manifest.SYNSETS_NAME))
    manifest.write_manifest(config["records_dir"], manifest.Manifest(num_classes=num_classes, splits={}))
    model_dir_lib.write(config["records_dir"], model_dir, config)
    params = model.make_params(model=model_name, num_classes=num_classes, image_size=image_size)
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        tf.compat.v1.train.get_or_create_global_step()
        model.model_fn(
            {"image": images}, None, tf.estimator.ModeKeys.PREDICT, params, tf.estimator.RunConfig(model_dir=model_dir)
        )
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, os.path.join(model_dir, "model.ckpt"), global_step=0)


def _process_seconds(argv: list[str], log_path: str) -> float:
    started = time.monotonic()
    with open(log_path, "wb") as log:
        done = subprocess.run(argv, cwd=_REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        with open(log_path, errors="replace") as f:
            raise RuntimeError(
                f"{' '.join(argv[:4])} ... exited with {done.returncode}; log {log_path}:\n{f.read()[-3000:]}"
            )
    return seconds


def _repeated(argv: list[str], log_path: str) -> list[float]:
    return [_process_seconds(argv, log_path) for _ in range(FLAGS.predict_repeats)]


def _serving_latencies(export_path: str, paths: list[str]) -> dict[int, list[float]]:
    """Seconds of each timed serving_default call, by batch size (1 and N)."""
    import tensorflow as tf

    serve = tf.saved_model.load(export_path).signatures["serving_default"]
    encoded = [open(path, "rb").read() for path in paths]
    out = {}
    for size in (1, len(paths)):
        batch = tf.constant(encoded[:size])
        serve(image_bytes=batch)  # warm-up: the first call builds the function
        times = []
        for _ in range(FLAGS.predict_calls):
            started = time.perf_counter()
            serve(image_bytes=batch)["top5_labels"].numpy()
            times.append(time.perf_counter() - started)
        out[size] = times
    return out


def _cli_seconds(model_dir: str, paths: list[str], logs: str) -> dict[str, list[float]]:
    """Wall seconds of the predict CLI on 1 and on all `paths`, and of a bare TensorFlow import."""
    cli = [sys.executable, "-m", "estimator.predict", f"--model_dir={model_dir}", "--json"]
    seconds = {
        "import": _repeated([sys.executable, "-c", "import tensorflow"], os.path.join(logs, "import.log")),
        "one": _repeated(cli + paths[:1], os.path.join(logs, "cli-1.log")),
        "many": _repeated(cli + paths, os.path.join(logs, f"cli-{len(paths)}.log")),
    }
    logging.info(
        "predict CLI: %.2fs for 1 image, %.2fs for %d (TensorFlow import alone %.2fs)",
        min(seconds["one"]),
        min(seconds["many"]),
        len(paths),
        min(seconds["import"]),
    )
    return seconds


def run(workdir: str) -> list[Figure]:
    from estimator import export, nets

    root = os.path.join(workdir, "predict")
    logs = os.path.join(root, "logs")
    os.makedirs(logs, exist_ok=True)
    image_size = FLAGS.predict_image_size or nets.default_image_size(FLAGS.predict_model)
    model_dir = os.path.join(root, f"model-{FLAGS.predict_model}-{image_size}-{FLAGS.predict_num_classes}")
    _ensure_model_dir(model_dir, FLAGS.predict_model, image_size, FLAGS.predict_num_classes)
    paths = _write_images(os.path.join(root, "images"), FLAGS.predict_images)
    cli = _cli_seconds(model_dir, paths, logs)
    export_path = export.export(model_dir, os.path.join(root, "exports"))
    try:
        calls = _serving_latencies(export_path, paths)
    finally:
        shutil.rmtree(export_path)
    median_ms = {size: statistics.median(times) * 1e3 for size, times in calls.items()}
    logging.info("SavedModel: %.1f ms for 1 image, %.1f ms for %d", median_ms[1], median_ms[len(paths)], len(paths))
    what = f"{FLAGS.predict_model} at {image_size}px, {FLAGS.predict_num_classes} classes; {os.cpu_count()} CPUs"
    serving_ms_per_image = median_ms[len(paths)] / len(paths)
    return [
        *_cli_figures(cli, len(paths), what, serving_ms_per_image),
        *_serving_figures(calls, median_ms, len(paths), what),
    ]


def _cli_figures(seconds: dict[str, list[float]], count: int, what: str, serving_ms_per_image: float) -> list[Figure]:
    one, many = seconds["one"], seconds["many"]
    fastest = f"whole process, fastest of {FLAGS.predict_repeats}"
    return [
        Figure(
            "predict CLI: wall time, 1 image",
            min(one),
            "s",
            "python -c 'import tensorflow'",
            min(seconds["import"]),
            lower_is_better=True,
            note=f"{fastest}; {what}",
            low=min(one),
            high=max(one),
        ),
        Figure(
            f"predict CLI: wall time, {count} images",
            min(many),
            "s",
            "predict CLI, 1 image",
            min(one),
            lower_is_better=True,
            note=f"{fastest}; one checkpoint restore for all images",
            low=min(many),
            high=max(many),
        ),
        Figure(
            f"predict CLI: marginal time per image, 1->{count}",
            (min(many) - min(one)) / (count - 1) * 1e3,
            "ms",
            f"SavedModel per image at batch {count}",
            serving_ms_per_image,
            lower_is_better=True,
            note="(t_N - t_1) / (N - 1): what each further file costs (read, normalise, decode, network)",
        ),
    ]


def _serving_figures(calls: dict[int, list[float]], median_ms: dict[int, float], count: int, what: str) -> list[Figure]:
    single, batch = median_ms[1], median_ms[count]
    return [
        Figure(
            "SavedModel: latency, batch of 1",
            single,
            "ms",
            lower_is_better=True,
            note=f"loaded in-process, JPEG bytes in, top-5 out; median of {FLAGS.predict_calls}; {what}",
            low=min(calls[1]) * 1e3,
            high=max(calls[1]) * 1e3,
        ),
        Figure(
            f"SavedModel: latency, batch of {count}",
            batch,
            "ms",
            f"{count} calls of batch 1",
            single * count,
            lower_is_better=True,
            note=f"median of {FLAGS.predict_calls}",
            low=min(calls[count]) * 1e3,
            high=max(calls[count]) * 1e3,
        ),
    ]
