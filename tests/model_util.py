"""A model_dir to predict and export with, without training one, and the sample's files by kind.

Shared by the prediction, export and skew tests.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow as tf

from estimator import model_dir as model_dir_lib
from estimator import nets, preprocessing
from pipeline import sample
from records import manifest, synsets

MODEL = "sqnxt_1_0_23"
IMAGE_SIZE = 32
NUM_CLASSES = 7  # more than 5, so top-5 is a real cut


def noise(shape, seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def calibrate_batch_norm(model_dir: str, images: np.ndarray, seed: int = 0) -> str:
    """Sets every batch norm's moving mean/variance to its statistics over `images`
    (float32 [N, S, S, 3], 0..255) and saves that as model_dir's latest checkpoint;
    starts from fresh weights when model_dir has no checkpoint yet.

    A fresh or few-step model keeps the initial moving statistics (0 and 1), so in
    inference mode its activations grow layer after layer and every softmax is
    one-hot: comparing such probabilities proves nothing. With the statistics of
    real activations ("precise BN") the probabilities move with every pixel.
    """
    config = model_dir_lib.read_train_config(model_dir)
    checkpoint = tf.train.latest_checkpoint(model_dir)
    with tf.Graph().as_default() as graph:
        tf.compat.v1.set_random_seed(seed)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        nets.build_network(
            config["model"],
            preprocessing.normalize(tf.constant(images, tf.float32)),
            config["num_classes"],
            True,
            "channels_last",
        )
        moving = {
            v.op.name: v
            for v in tf.compat.v1.global_variables()
            if v.op.name.endswith(("/moving_mean", "/moving_variance"))
        }
        assignments = []
        for name, variable in moving.items():
            scope, kind = name.rsplit("/", 1)
            outputs = graph.get_operation_by_name(f"{scope}/FusedBatchNormV3").outputs
            # In training mode batch norm ignores the moving statistics, so one run computes them all.
            assignments.append(variable.assign(outputs[1] if kind == "moving_mean" else outputs[2]))
        assert assignments, "found no batch norm to calibrate"
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            if checkpoint:
                saver.restore(session, checkpoint)
            else:
                session.run(tf.compat.v1.global_variables_initializer())
            session.run(assignments)
            step = int(session.run(global_step))
            return saver.save(session, os.path.join(model_dir, "model.ckpt"), global_step=step + 1)


def write_untrained_model_dir(
    model_dir: pathlib.Path, *, num_classes: int = NUM_CLASSES, image_size: int = IMAGE_SIZE, seed: int = 0
) -> synsets.SynsetTable:
    """A model_dir laid out by estimator.model_dir.write as training lays it out, holding freshly
    initialised (batch-norm calibrated) weights: predict/export need the files and the
    graph, not accuracy, and this costs seconds where a training run costs tens of them."""
    records_dir = model_dir.parent / f"{model_dir.name}-records"
    records_dir.mkdir(parents=True)
    catalog = sample.CLASS_CATALOG[:num_classes]
    table = synsets.SynsetTable.build([c[0] for c in catalog], {c[0]: c[1] for c in catalog})
    table.write_tsv(str(records_dir / manifest.SYNSETS_NAME))
    manifest.write_manifest(str(records_dir), manifest.Manifest(num_classes=num_classes, splits={}))
    model_dir_lib.write(
        str(records_dir),
        str(model_dir),
        {
            "model": MODEL,
            "image_size": image_size,
            "num_classes": num_classes,
            "label_offset": synsets.LABEL_OFFSET,
            "records_dir": str(records_dir),
        },
    )
    calibrate_batch_norm(str(model_dir), noise((32, image_size, image_size, 3), seed).astype(np.float32), seed)
    return table


def sample_files(sample_dir: pathlib.Path, truth: dict, kinds=None, valid=True) -> list[tuple[str, dict]]:
    """(path in the folders layout, truth entry) for the sample's images of these kinds."""
    out = []
    for image in truth["images"]:
        if image["valid"] != valid or (kinds and image["kind"] not in kinds):
            continue
        folder = f"train/{image['wnid']}" if image["split"] == "train" else "val"
        out.append((str(sample_dir / "folders" / folder / image["name"]), image))
    return out
