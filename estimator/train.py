"""Train (and evaluate) an ImageNet classifier on a records build.

    python -m estimator.train --records_dir=DIR --model_dir=DIR \\
        [--model=sqnxt_1_0_23] [--image_size=227] [--batch_size=64] \\
        [--train_steps=N | --train_epochs=E] [--eval_every_secs=600] \\
        [--learning_rate=0.1 --warmup_steps=N --lr_schedule=poly|cosine|step] \\
        [--weight_decay=1e-4] [--label_smoothing=0.0] \\
        [--fine_tune_ckpt=PATH] [--fine_tune_exclude=REGEX] \\
        [--distribute=none|mirrored|multi_worker]

The class count and label offset come from the build's manifest.json; the
manifest and synsets.tsv are copied into model_dir together with
train_config.json, so predict/export rebuild the same model from model_dir
alone. Rerunning with the same model_dir resumes from its last checkpoint.
The final evaluation (every validation image once) goes to model_dir/metrics.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging as logging_lib
import math
import os
import sys
from typing import Any

import tensorflow as tf
from absl import app, flags, logging

from estimator import finetune, model, nets
from estimator import input as input_lib
from records import manifest, synsets

TRAIN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.json"
DISTRIBUTE_CHOICES = ("none", "mirrored", "multi_worker")
DEFAULT_TRAIN_EPOCHS = 120  # the SqueezeNext paper's schedule
WARMUP_EPOCHS = 5  # Goyal et al.; only when --warmup_steps is not given
# Keys that must match when a model_dir is reused: they decide the variables' shapes.
_MODEL_IDENTITY = ("model", "image_size", "num_classes", "label_offset")


@dataclasses.dataclass
class TrainOptions:
    """Everything a training run is decided by; the CLI flags map 1:1 onto it."""

    records_dir: str
    model_dir: str
    model: str = "sqnxt_1_0_23"
    image_size: int | None = None  # None: the network's published size
    batch_size: int = 64  # global, all replicas together
    eval_batch_size: int | None = None
    train_steps: int | None = None
    train_epochs: float | None = None
    eval_every_secs: int = 600
    learning_rate: float = 0.1  # per 256 images
    warmup_steps: int | None = None
    lr_schedule: str = "poly"
    momentum: float = 0.9
    nesterov: bool = False
    batch_norm_momentum: float = 0.997
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    fine_tune_ckpt: str | None = None
    fine_tune_exclude: str | None = None
    distribute: str = "none"
    cpu_devices: int = 0
    save_checkpoints_steps: int | None = None
    keep_checkpoint_max: int = 5
    log_every_n_steps: int = 100
    save_summary_steps: int = 100
    shuffle_buffer: int = 10_000
    data_format: str = "auto"
    seed: int | None = None
    save_graph_def: bool = True  # graph.pbtxt + .meta files: for TensorBoard's graph view only


class CorruptShardsError(IOError):
    """A shard failed its CRC check while training; names the shard(s) and the fix."""


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices (for mirrored runs without GPUs,
    e.g. tests). Must run before TensorFlow initialises its devices."""
    if count <= 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise ValueError(f"--cpu_devices={count}: TensorFlow already initialised its devices ({error})") from error


def make_strategy(distribute: str, cpu_devices: int = 0) -> tf.distribute.Strategy | None:
    """The tf.compat.v1 strategies: Estimator drives them through their v1 API."""
    if distribute == "none":
        return None
    if distribute == "mirrored":
        if cpu_devices > 0:
            # Collective all-reduce can deadlock between logical CPU devices that
            # share a small thread pool; reducing on one device cannot.
            return tf.compat.v1.distribute.MirroredStrategy(
                devices=[f"/cpu:{i}" for i in range(cpu_devices)],
                cross_device_ops=tf.distribute.ReductionToOneDevice(),
            )
        return tf.compat.v1.distribute.MirroredStrategy()  # every local GPU (CPU when there is none)
    if distribute == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "--distribute=multi_worker reads the cluster from the TF_CONFIG environment variable, "
                'which is not set; set it on every worker (e.g. {"cluster": {"worker": ["host1:2222", '
                '"host2:2222"]}, "task": {"type": "worker", "index": 0}})'
            )
        return tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown --distribute={distribute!r}; choose one of: {', '.join(DISTRIBUTE_CHOICES)}")


def resolve_train_steps(train_steps: int | None, train_epochs: float | None, num_examples: int, batch_size: int) -> int:
    if train_steps is not None and train_epochs is not None:
        raise ValueError("give --train_steps or --train_epochs, not both")
    if train_steps is None:
        epochs = DEFAULT_TRAIN_EPOCHS if train_epochs is None else train_epochs
        train_steps = math.ceil(epochs * num_examples / batch_size)
    if train_steps < 1:
        raise ValueError(f"training would run {train_steps} steps; pass --train_steps/--train_epochs > 0")
    return train_steps


def read_train_config(model_dir: str) -> dict[str, Any]:
    """The model identity a finished/ongoing run recorded; predict and export use it."""
    path = os.path.join(model_dir, TRAIN_CONFIG_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a model_dir written by estimator.train")
    with tf.io.gfile.GFile(path) as f:
        config = json.load(f)
    missing = [key for key in ("model", "image_size", "num_classes") if key not in config]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it was not written by estimator.train; retrain into a new model_dir")
    return config


def read_class_table(directory: str, num_classes: int, *, counted_in: str, fix: str) -> synsets.SynsetTable:
    """`directory`/synsets.tsv, checked to hold the `num_classes` that `counted_in` declares.

    Both ends of a model_dir need this check: training before it copies the
    table in, prediction before it names classes with it.
    """
    path = os.path.join(directory, manifest.SYNSETS_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: {fix}")
    table = synsets.SynsetTable.read_tsv(path)
    if len(table) != num_classes:
        raise ValueError(
            f"{path} lists {len(table)} classes but {counted_in} says {num_classes}: "
            f"the files come from different builds; {fix}"
        )
    return table


def prepare_model_dir(records_dir: str, model_dir: str, train_config: dict[str, Any]) -> None:
    """Copies manifest.json + synsets.tsv and writes train_config.json; refuses to
    reuse a model_dir whose model differs (its checkpoint could not be restored)."""
    tf.io.gfile.makedirs(model_dir)
    config_path = os.path.join(model_dir, TRAIN_CONFIG_NAME)
    if tf.io.gfile.exists(config_path):
        previous = read_train_config(model_dir)
        changed = [k for k in _MODEL_IDENTITY if previous.get(k) != train_config[k]]
        if changed:
            details = ", ".join(f"{k}: {previous.get(k)!r} there, {train_config[k]!r} now" for k in changed)
            raise ValueError(
                f"{model_dir} holds a different model ({details}); pass the same flags to resume it, "
                "or use a new --model_dir (with --fine_tune_ckpt to start from its weights)"
            )
    read_class_table(
        records_dir,
        train_config["num_classes"],
        counted_in="manifest.json",
        fix="the records build is incomplete or mixed (predict needs the synset table); rebuild it with `make records`",
    )
    for name in (manifest.MANIFEST_NAME, manifest.SYNSETS_NAME):
        tf.io.gfile.copy(os.path.join(records_dir, name), os.path.join(model_dir, name), overwrite=True)
    _write_json(config_path, train_config)


def _write_json(path: str, value: dict[str, Any]) -> None:
    temp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temp, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(temp, path, overwrite=True)


def _json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}


def _data_format(choice: str) -> str:
    if choice != "auto":
        return choice
    # NCHW is the fast layout for cuDNN; CPU kernels want NHWC.
    return "channels_first" if tf.config.list_physical_devices("GPU") else "channels_last"


def _model_params(options: TrainOptions, build: manifest.Manifest, image_size: int, train_examples: int) -> dict:
    train_steps = resolve_train_steps(options.train_steps, options.train_epochs, train_examples, options.batch_size)
    warmup_steps = options.warmup_steps
    if warmup_steps is None:
        steps_per_epoch = max(train_examples // options.batch_size, 1)
        warmup_steps = min(WARMUP_EPOCHS * steps_per_epoch, train_steps // 10)
    return model.make_params(
        model=options.model,
        num_classes=build.num_classes,
        image_size=image_size,
        batch_size=options.batch_size,
        train_steps=train_steps,
        learning_rate=options.learning_rate,
        warmup_steps=warmup_steps,
        lr_schedule=options.lr_schedule,
        momentum=options.momentum,
        nesterov=options.nesterov,
        batch_norm_momentum=options.batch_norm_momentum,
        weight_decay=options.weight_decay,
        label_smoothing=options.label_smoothing,
        data_format=_data_format(options.data_format),
        fine_tune_ckpt=options.fine_tune_ckpt or None,
        fine_tune_exclude=options.fine_tune_exclude or None,
        log_every_n_steps=options.log_every_n_steps,
    )


def _run_config(options: TrainOptions, strategy: tf.distribute.Strategy | None) -> tf.estimator.RunConfig:
    """Checkpoints every --eval_every_secs (or --save_checkpoints_steps): local
    train_and_evaluate evaluates right after a checkpoint, so the two go together."""
    if options.save_checkpoints_steps:
        checkpoint_every = {"save_checkpoints_steps": options.save_checkpoints_steps}
    else:
        checkpoint_every = {"save_checkpoints_secs": options.eval_every_secs}
    return tf.estimator.RunConfig(
        model_dir=options.model_dir,
        tf_random_seed=options.seed,
        save_summary_steps=options.save_summary_steps,
        keep_checkpoint_max=options.keep_checkpoint_max,
        log_step_count_steps=options.log_every_n_steps,
        train_distribute=strategy,
        checkpoint_save_graph_def=options.save_graph_def,
        **checkpoint_every,
    )


def run(options: TrainOptions) -> dict[str, Any]:
    """Trains with train_and_evaluate, then writes and returns the final metrics
    {top1, top5, loss, global_step, num_examples} (chief only; {} elsewhere).

    Everything that can be checked without TensorFlow graphs (records, model
    name, strategy, fine-tune checkpoint, model_dir) is checked first.
    """
    build = manifest.read_manifest(options.records_dir)
    if options.model not in nets.network_names():
        raise ValueError(f"unknown --model={options.model!r}; choose one of: {', '.join(nets.network_names())}")
    image_size = options.image_size or nets.default_image_size(options.model)
    strategy = make_strategy(options.distribute, options.cpu_devices)
    num_replicas = strategy.num_replicas_in_sync if strategy else 1
    if options.batch_size % num_replicas:
        raise ValueError(
            f"--batch_size={options.batch_size} (global) does not split evenly over {num_replicas} replicas; "
            f"use a multiple of {num_replicas}"
        )
    train_files = input_lib.split_files(options.records_dir, "train")
    validation_files = input_lib.split_files(options.records_dir, "validation")
    params = _model_params(options, build, image_size, train_files.num_examples)
    if params["fine_tune_ckpt"] and not tf.train.latest_checkpoint(options.model_dir):
        finetune.resolve_checkpoint(params["fine_tune_ckpt"])
    identity = {
        "model": options.model,
        "image_size": image_size,
        "num_classes": build.num_classes,
        "label_offset": build.label_offset,
        "records_dir": options.records_dir,
    }
    prepare_model_dir(options.records_dir, options.model_dir, identity)
    logging.info(
        "training %s at %dx%d on %d classes: %d steps of %d images (%.2f epochs) over %d replica(s), "
        "warmup %d steps, %s schedule",
        options.model,
        image_size,
        image_size,
        build.num_classes,
        params["train_steps"],
        options.batch_size,
        params["train_steps"] * options.batch_size / train_files.num_examples,
        num_replicas,
        params["warmup_steps"],
        options.lr_schedule,
    )

    estimator = tf.estimator.Estimator(model_fn=model.model_fn, config=_run_config(options, strategy), params=params)
    train_input_fn = input_lib.make_input_fn(
        options.records_dir,
        "train",
        options.batch_size,
        image_size,
        is_training=True,
        shuffle_buffer=options.shuffle_buffer,
    )
    eval_input_fn = input_lib.make_input_fn(
        options.records_dir,
        "validation",
        options.eval_batch_size or options.batch_size,
        image_size,
        is_training=False,
    )
    train_spec = tf.estimator.TrainSpec(train_input_fn, max_steps=params["train_steps"])
    eval_spec = tf.estimator.EvalSpec(
        eval_input_fn, steps=None, start_delay_secs=0, throttle_secs=options.eval_every_secs
    )
    try:
        outcome = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
        if not estimator.config.is_chief:
            return {}
        # Local runs return the evaluation of the last checkpoint; distributed
        # ones, and resumed runs that had nothing left to train, return none.
        metrics = outcome[0] if outcome else None
        final_step = estimator.get_variable_value(tf.compat.v1.GraphKeys.GLOBAL_STEP)
        if not metrics or metrics.get("global_step") != final_step:
            metrics = estimator.evaluate(eval_input_fn)
    except tf.errors.DataLossError as error:
        raise _corrupt_shards_error(options.records_dir, error) from error
    return _write_final_metrics(options.model_dir, metrics, validation_files.num_examples)


def _write_final_metrics(model_dir: str, metrics: dict[str, Any], validation_examples: int) -> dict[str, Any]:
    final = _json_safe(
        {
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "loss": metrics["cross_entropy"],  # exact mean over the images, without weight decay
            "global_step": metrics["global_step"],
            "num_examples": metrics["num_examples"],
        }
    )
    if final["num_examples"] != validation_examples:
        logging.warning(
            "the final evaluation saw %d of the %d validation images: the others could not be decoded "
            "(see the 'Error raised with error message' warnings above); check the build with the records "
            "verify CLI",
            final["num_examples"],
            validation_examples,
        )
    path = os.path.join(model_dir, METRICS_NAME)
    _write_json(path, final)
    logging.info("final evaluation: %s (written to %s)", final, path)
    return final


def _corrupt_shards_error(records_dir: str, error: tf.errors.DataLossError) -> CorruptShardsError:
    logging.error("a shard in %s failed its CRC check; scanning the shards to find which", records_dir)
    corrupt = input_lib.find_corrupt_shards(records_dir)
    if corrupt:
        named = "; ".join(f"{path} ({reason})" for path, reason in corrupt)
    else:
        named = f"could not locate it again ({error.message.splitlines()[0]})"
    return CorruptShardsError(
        f"corrupt records shard(s): {named}. The file was damaged after it was written (disk, copy or "
        f"download); re-copy it from the original build or rebuild the records with `make records`"
    )


# ---------------------------------------------------------------- CLI

FLAGS = flags.FLAGS
_DEFAULTS = TrainOptions(records_dir="", model_dir="")


def _define_flags() -> None:
    """Defined only when run as a program, so importing this module (predict and
    export do) never clashes with another CLI's flags in absl's registry."""
    flags.DEFINE_string("records_dir", None, "Records build: shards + manifest.json + synsets.tsv.")
    flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, train_config.json, metrics.json.")
    flags.DEFINE_enum("model", _DEFAULTS.model, nets.network_names(), "Network to train.")
    flags.DEFINE_integer("image_size", None, "Square input size; default: the network's published size.")
    flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size (all replicas together).")
    flags.DEFINE_integer("eval_batch_size", None, "Evaluation batch size; default --batch_size.")
    flags.DEFINE_integer("train_steps", None, "Total training steps (global step to stop at).")
    flags.DEFINE_float("train_epochs", None, f"Training length in epochs (default {DEFAULT_TRAIN_EPOCHS}).")
    flags.DEFINE_integer("eval_every_secs", _DEFAULTS.eval_every_secs, "Checkpoint + evaluate at most this often.")
    flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Peak learning rate per 256 images.")
    flags.DEFINE_integer("warmup_steps", None, f"Linear warmup; default min({WARMUP_EPOCHS} epochs, 10% of training).")
    flags.DEFINE_enum("lr_schedule", _DEFAULTS.lr_schedule, list(model.LR_SCHEDULES), "Decay after warmup.")
    flags.DEFINE_float("momentum", _DEFAULTS.momentum, "SGD momentum.")
    flags.DEFINE_boolean("nesterov", _DEFAULTS.nesterov, "Nesterov momentum.")
    flags.DEFINE_float(
        "batch_norm_momentum",
        _DEFAULTS.batch_norm_momentum,
        "Decay of batch norm's moving statistics; ~0.9 for runs of a few hundred steps.",
    )
    flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "L2 on convolution/dense kernels (not batch norm).")
    flags.DEFINE_float("label_smoothing", _DEFAULTS.label_smoothing, "Label smoothing of the training loss.")
    flags.DEFINE_string(
        "fine_tune_ckpt", None, "Checkpoint prefix or directory to start from (when model_dir has none)."
    )
    flags.DEFINE_string("fine_tune_exclude", None, "Regex of variables NOT restored, e.g. 'logits'.")
    flags.DEFINE_enum(
        "distribute",
        _DEFAULTS.distribute,
        list(DISTRIBUTE_CHOICES),
        "mirrored: all local GPUs; multi_worker: the cluster in TF_CONFIG.",
    )
    flags.DEFINE_integer("cpu_devices", 0, "With --distribute=mirrored: mirror over N logical CPU devices (testing).")
    flags.DEFINE_integer("save_checkpoints_steps", None, "Checkpoint every N steps instead of --eval_every_secs.")
    flags.DEFINE_integer("keep_checkpoint_max", _DEFAULTS.keep_checkpoint_max, "Checkpoints to keep.")
    flags.DEFINE_integer("log_every_n_steps", _DEFAULTS.log_every_n_steps, "Progress log interval.")
    flags.DEFINE_integer("save_summary_steps", _DEFAULTS.save_summary_steps, "TensorBoard summary interval.")
    flags.DEFINE_integer("shuffle_buffer", _DEFAULTS.shuffle_buffer, "Records held for shuffling.")
    flags.DEFINE_enum(
        "data_format",
        _DEFAULTS.data_format,
        ["auto", "channels_first", "channels_last"],
        "auto: channels_first on GPU, channels_last on CPU.",
    )
    flags.DEFINE_integer("seed", None, "Graph-level random seed.")
    flags.DEFINE_boolean(
        "save_graph_def",
        _DEFAULTS.save_graph_def,
        "Write graph.pbtxt and .meta files (TensorBoard's graph view); large graphs take seconds.",
    )
    flags.mark_flags_as_required(["records_dir", "model_dir"])


class _DropDeprecations(logging_lib.Filter):
    """TF 1.x APIs (all of tf.estimator) warn on every use; progress drowns in it."""

    def filter(self, record: logging_lib.LogRecord) -> bool:
        return "is deprecated and will be removed" not in record.getMessage()


def _quiet_tensorflow_logging() -> None:
    """INFO progress, each line once (through absl, with timestamps), no deprecation spam."""
    logging.set_verbosity(logging.INFO)
    tf_logger = tf.get_logger()
    tf_logger.setLevel(logging_lib.INFO)
    tf_logger.addFilter(_DropDeprecations())
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    _quiet_tensorflow_logging()
    options = TrainOptions(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainOptions)})
    try:
        if options.cpu_devices and options.distribute != "mirrored":
            raise ValueError("--cpu_devices only applies to --distribute=mirrored")
        configure_cpu_devices(options.cpu_devices)
        run(options)
    except (ValueError, FileNotFoundError, CorruptShardsError) as error:
        logging.error("%s", error)
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
