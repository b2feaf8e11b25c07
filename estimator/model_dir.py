"""The model_dir contract: what estimator.train leaves beside its checkpoints so
that predict and export need nothing but the model_dir.

    train_config.json  the model's identity (network, image size, class count,
                       label offset) and the records_dir it was trained on
    synsets.tsv        the class table of that records build, copied
    manifest.json      that build's manifest, copied: its options say how the
                       records job normalised images, which prediction replays
    metrics.json       the final evaluation (top1, top5, loss, global_step, num_examples)

TensorFlow's checkpoints and TensorBoard events sit beside them. Files go
through records.files (local or remote), replaced atomically.
"""

from __future__ import annotations

import json
from typing import Any

from absl import logging

from records import files, manifest, synsets

TRAIN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.json"
# The keys that decide the variables' shapes: a model_dir is resumed only with the same ones.
IDENTITY_KEYS = ("model", "image_size", "num_classes", "label_offset")


def read_train_config(model_dir: str) -> dict[str, Any]:
    """The model identity a finished or ongoing run recorded."""
    path = files.join(model_dir, TRAIN_CONFIG_NAME)
    if not files.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a model_dir written by estimator.train")
    config = json.loads(files.read_text(path))
    missing = [key for key in ("model", "image_size", "num_classes") if key not in config]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it was not written by estimator.train; retrain into a new model_dir")
    return config


def read_class_table(directory: str, num_classes: int, *, counted_in: str, fix: str) -> synsets.SynsetTable:
    """`directory`/synsets.tsv, checked to hold the `num_classes` that `counted_in` declares.

    Both ends of a model_dir need this check: training before it copies the
    table in, prediction before it names classes with it.
    """
    path = files.join(directory, manifest.SYNSETS_NAME)
    if not files.exists(path):
        raise FileNotFoundError(f"{path} not found: {fix}")
    table = synsets.SynsetTable.read_tsv(path)
    if len(table) != num_classes:
        raise ValueError(
            f"{path} lists {len(table)} classes but {counted_in} says {num_classes}: "
            f"the files come from different builds; {fix}"
        )
    return table


def check_reusable(model_dir: str, train_config: dict[str, Any]) -> None:
    """Refuses a model_dir that holds another model: its checkpoint could not be restored into this one."""
    if not files.exists(files.join(model_dir, TRAIN_CONFIG_NAME)):
        return
    previous = read_train_config(model_dir)
    changed = [key for key in IDENTITY_KEYS if previous.get(key) != train_config[key]]
    if changed:
        details = ", ".join(f"{key}: {previous.get(key)!r} there, {train_config[key]!r} now" for key in changed)
        raise ValueError(
            f"{model_dir} holds a different model ({details}); pass the same flags to resume it, "
            "or use a new --model_dir (with --fine_tune_ckpt to start from its weights)"
        )


def write(records_dir: str, model_dir: str, train_config: dict[str, Any]) -> None:
    """Copies the build's manifest.json and synsets.tsv into model_dir and writes train_config.json."""
    files.makedirs(model_dir)
    for name in (manifest.MANIFEST_NAME, manifest.SYNSETS_NAME):
        files.write_atomically(files.join(model_dir, name), files.read_bytes(files.join(records_dir, name)))
    files.write_atomically(files.join(model_dir, TRAIN_CONFIG_NAME), _json(train_config))


def write_metrics(model_dir: str, metrics: dict[str, Any]) -> str:
    path = files.join(model_dir, METRICS_NAME)
    files.write_atomically(path, _json(metrics))
    return path


def records_build_options(model_dir: str) -> dict[str, Any]:
    """The options of the records build the model trained on (the `options` of the
    manifest.json copied into model_dir; the records job calls them BuildOptions).

    Prediction needs them because a file must become the JPEG that build would
    have stored: with --resize_max_side, the model never saw full-size images.
    """
    try:
        return dict(manifest.read_manifest(model_dir).options)
    except FileNotFoundError:
        logging.warning(
            "%s has no %s; assuming the records build's default options (no resizing)",
            model_dir,
            manifest.MANIFEST_NAME,
        )
        return {}


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
