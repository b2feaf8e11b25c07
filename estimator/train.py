"""Train (and evaluate) an ImageNet classifier on a records build.

    python -m estimator.train --records_dir=DIR --model_dir=DIR \\
        [--model=sqnxt_1_0_23] [--image_size=S] [--batch_size=N] \\
        [--train_steps=N | --train_epochs=E] [--eval_every_secs=S] \\
        [--learning_rate=LR --warmup_steps=N --lr_schedule=poly|cosine|step] \\
        [--weight_decay=W] [--label_smoothing=L] [--batch_norm_momentum=M] \\
        [--fine_tune_ckpt=PATH] [--fine_tune_exclude=REGEX] \\
        [--distribute=none|mirrored|multi_worker] [--verbosity=1]

Every flag, the records and their shards (against manifest.json) are checked
before anything is written. The class count comes from the build's manifest;
once the training graph is built, the model_dir contract (estimator/model_dir.py:
train_config.json, copies of manifest.json and synsets.tsv) is written, so
predict and export rebuild the same model from model_dir alone. Rerunning with
the same model_dir resumes from its last checkpoint. The final evaluation
(every validation image once) goes to model_dir/metrics.json.

The console shows a header, one progress line per --log_every_n_steps, the
evaluations and where things were written; --verbosity=1 adds TensorFlow's own
INFO stream.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Before TensorFlow is imported: keeps its C++ start-up banners (oneDNN, cpu_feature_guard) off the console.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib
import dataclasses
import json
import logging as logging_lib
import math
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from absl import app, flags, logging

from estimator import finetune, hooks, model, nets
from estimator import input as input_lib
from estimator import model_dir as model_dir_lib
from records import files

DISTRIBUTE_CHOICES = ("none", "mirrored", "multi_worker")
DEFAULT_TRAIN_EPOCHS = 120  # the SqueezeNext paper's schedule
WARMUP_EPOCHS = 5  # Goyal et al.; only when --warmup_steps is not given
# Collective all-reduce deadlocks when workers checkpoint on their own clocks, so
# multi-worker runs checkpoint by steps (TF itself falls back to 1000, with a warning).
MULTI_WORKER_CHECKPOINT_STEPS = 1000
_PARAMS = model.DEFAULT_PARAMS  # the one home of the model's defaults


@dataclasses.dataclass
class TrainOptions:
    """Everything a training run is decided by; the CLI flags map 1:1 onto it."""

    records_dir: str
    model_dir: str
    model: str = _PARAMS["model"]
    image_size: int | None = _PARAMS["image_size"]  # None: the network's published size
    batch_size: int = _PARAMS["batch_size"]  # global, all replicas together
    eval_batch_size: int | None = None
    train_steps: int | None = None
    train_epochs: float | None = None  # None (and no train_steps): DEFAULT_TRAIN_EPOCHS
    eval_every_secs: int = 600
    learning_rate: float = _PARAMS["learning_rate"]  # peak; batches over 256 scale it (model.peak_learning_rate)
    warmup_steps: int | None = None  # None: min(WARMUP_EPOCHS, 10% of the run)
    lr_schedule: str = _PARAMS["lr_schedule"]
    momentum: float = _PARAMS["momentum"]
    nesterov: bool = _PARAMS["nesterov"]
    batch_norm_momentum: float = _PARAMS["batch_norm_momentum"]
    weight_decay: float = _PARAMS["weight_decay"]
    label_smoothing: float = _PARAMS["label_smoothing"]
    fine_tune_ckpt: str | None = None
    fine_tune_exclude: str | None = None
    distribute: str = "none"
    cpu_devices: int = 0
    save_checkpoints_steps: int | None = None
    keep_checkpoint_max: int = 5
    log_every_n_steps: int = _PARAMS["log_every_n_steps"]
    save_summary_steps: int = 100
    shuffle_buffer: int = 10_000
    data_format: str = _PARAMS["data_format"]
    seed: int | None = None
    save_graph_def: bool = True  # graph.pbtxt + .meta files: for TensorBoard's graph view only

    def check(self) -> None:
        """The flags that are not model hyperparameters (model.make_params checks those)."""
        model.check_rules(dataclasses.asdict(self), _OPTION_RULES)
        if self.train_steps is not None and self.train_epochs is not None:
            raise ValueError(f"--train_epochs={self.train_epochs}: give --train_steps or --train_epochs, not both")
        if self.distribute == "multi_worker" and self.save_summary_steps == 0:
            # TF's multi-worker session adds its checkpoint saver only when summaries are on:
            # without them the run would save no checkpoint and evaluate untrained weights.
            raise ValueError("--save_summary_steps=0: --distribute=multi_worker needs summaries (pass >= 1)")
        if self.cpu_devices and self.distribute != "mirrored":
            raise ValueError(f"--cpu_devices={self.cpu_devices}: only applies to --distribute=mirrored")
        if self.fine_tune_exclude and not self.fine_tune_ckpt:
            raise ValueError(
                f"--fine_tune_exclude={self.fine_tune_exclude}: only applies with --fine_tune_ckpt "
                "(the checkpoint to start from)"
            )


_OPTION_RULES: tuple[model.Rule, ...] = (
    ("batch_size", lambda v: v >= 1, "must be >= 1 (images per step, all replicas together)"),
    ("eval_batch_size", lambda v: v >= 1, "must be >= 1"),
    ("train_steps", lambda v: v >= 1, "must be >= 1"),
    ("train_epochs", lambda v: v > 0, "must be > 0"),
    ("warmup_steps", lambda v: v >= 0, "must be >= 0"),
    ("eval_every_secs", lambda v: v >= 1, "must be >= 1"),
    ("save_checkpoints_steps", lambda v: v >= 1, "must be >= 1"),
    ("keep_checkpoint_max", lambda v: v >= 1, "must be >= 1"),
    ("log_every_n_steps", lambda v: v >= 1, "must be >= 1"),
    ("save_summary_steps", lambda v: v >= 0, "must be >= 0 (0: no summaries)"),
    ("shuffle_buffer", lambda v: v >= 1, "must be >= 1"),
    ("cpu_devices", lambda v: v >= 0, "must be >= 0"),
    ("distribute", lambda v: v in DISTRIBUTE_CHOICES, f"choose one of: {', '.join(DISTRIBUTE_CHOICES)}"),
)


class CorruptShardsError(IOError):
    """A shard failed its CRC check while training; names the shard(s) and the fix."""


@dataclasses.dataclass(frozen=True)
class Role:
    """This process's part: the chief evaluates, writes metrics.json and keeps
    checkpoints in model_dir; other workers only train."""

    name: str  # "local", "chief 0", "worker 1", ...
    is_chief: bool


_TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'


def cluster_role(distribute: str) -> Role:
    """Who this process is, read from TF_CONFIG: task type `chief`, or `worker` 0 when the cluster has no chief.

    Read here because TF's independent-worker mode leaves `RunConfig.is_chief`
    True in every process outside its own training loop.
    """
    if distribute != "multi_worker":
        return Role("local", True)
    if not os.environ.get("TF_CONFIG"):
        raise ValueError(
            "--distribute=multi_worker reads the cluster from the TF_CONFIG environment variable, "
            f"which is not set; set it on every worker (e.g. {_TF_CONFIG_EXAMPLE})"
        )
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        cluster, task_type, index = tf_config["cluster"], tf_config["task"]["type"], int(tf_config["task"]["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a cluster description ({error!r}); set it like {_TF_CONFIG_EXAMPLE}"
        ) from None
    if task_type not in ("chief", "worker"):
        raise ValueError(
            f"TF_CONFIG task type {task_type!r}: --distribute=multi_worker runs 'chief' and 'worker' tasks only "
            "(the chief evaluates at the end)"
        )
    return Role(f"{task_type} {index}", task_type == "chief" or ("chief" not in cluster and index == 0))


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices (for mirrored runs without GPUs,
    e.g. tests). Must run before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise ValueError(f"--cpu_devices={count}: TensorFlow already initialised its devices ({error})") from error


def make_strategy(distribute: str, cpu_devices: int = 0) -> tf.distribute.Strategy | None:
    """The tf.compat.v1 strategies: Estimator drives them through their v1 API."""
    if distribute == "mirrored" and cpu_devices > 0:
        configure_cpu_devices(cpu_devices)
        # Collective all-reduce can deadlock between logical CPU devices that
        # share a small thread pool; reducing on one device cannot.
        return tf.compat.v1.distribute.MirroredStrategy(
            devices=[f"/cpu:{i}" for i in range(cpu_devices)], cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if distribute == "mirrored":
        return tf.compat.v1.distribute.MirroredStrategy()  # every local GPU (CPU when there is none)
    if distribute == "multi_worker":
        return tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy()
    return None


def resolve_train_steps(train_steps: int | None, train_epochs: float | None, num_examples: int, batch_size: int) -> int:
    """--train_steps, or --train_epochs (default DEFAULT_TRAIN_EPOCHS) of the training split in steps."""
    if train_steps is not None:
        return train_steps
    epochs = DEFAULT_TRAIN_EPOCHS if train_epochs is None else train_epochs
    return math.ceil(epochs * num_examples / batch_size)


def _model_params(options: TrainOptions, num_classes: int, train_examples: int) -> dict[str, Any]:
    """model.make_params from the options (the fields the two share), with the run's length and warmup."""
    train_steps = resolve_train_steps(options.train_steps, options.train_epochs, train_examples, options.batch_size)
    warmup_steps = options.warmup_steps
    if warmup_steps is None:
        warmup_steps = min(WARMUP_EPOCHS * max(train_examples // options.batch_size, 1), train_steps // 10)
    elif warmup_steps >= train_steps:
        raise ValueError(f"--warmup_steps={warmup_steps}: must be below the run's {train_steps} steps")
    shared = {name: getattr(options, name) for name in _PARAMS if hasattr(options, name)}
    return model.make_params(
        **{**shared, "num_classes": num_classes, "train_steps": train_steps, "warmup_steps": warmup_steps}
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """A run that passed every check: what it trains, on what, and this process's part in it."""

    params: dict[str, Any]
    train_config: dict[str, Any]  # model_dir's train_config.json
    strategy: tf.distribute.Strategy | None
    role: Role
    train_examples: int
    validation_examples: int

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy else 1


def plan_run(options: TrainOptions) -> Plan:
    """Every check that needs no graph, cheapest first; writes nothing.

    Raises ValueError / FileNotFoundError (one line naming the flag or file and the fix).
    """
    options.check()
    train_files = input_lib.split_files(options.records_dir, "train")
    validation_files = input_lib.split_files(options.records_dir, "validation")
    params = _model_params(options, train_files.num_classes, train_files.num_examples)
    train_config = {key: params[key] for key in ("model", "image_size", "num_classes")}
    train_config.update(label_offset=train_files.label_offset, records_dir=options.records_dir)
    model_dir_lib.check_reusable(options.model_dir, train_config)
    model_dir_lib.read_class_table(
        options.records_dir,
        train_files.num_classes,
        counted_in="manifest.json",
        fix="the records build is incomplete or mixed (predict needs the synset table); rebuild it with `make records`",
    )
    if options.fine_tune_ckpt and not tf.train.latest_checkpoint(options.model_dir):
        finetune.resolve_checkpoint(options.fine_tune_ckpt)
    role = cluster_role(options.distribute)
    strategy = make_strategy(options.distribute, options.cpu_devices)
    plan = Plan(params, train_config, strategy, role, train_files.num_examples, validation_files.num_examples)
    if options.batch_size % plan.num_replicas:
        raise ValueError(
            f"--batch_size={options.batch_size} (global) does not split evenly over {plan.num_replicas} replicas; "
            f"use a multiple of {plan.num_replicas}"
        )
    return plan


def run(options: TrainOptions) -> dict[str, Any]:
    """Trains with train_and_evaluate, then (on the chief) evaluates the last
    checkpoint on every validation image, writes metrics.json and returns
    {top1, top5, loss, global_step, num_examples}; other workers return {}."""
    plan = plan_run(options)
    _log_header(options, plan)
    with _checkpoint_dir(options.model_dir, plan.role) as checkpoint_dir:
        config = _run_config(options, checkpoint_dir, plan.strategy)
        estimator = tf.estimator.Estimator(model_fn=model.model_fn, config=config, params=plan.params)
        try:
            metrics = _train_and_evaluate(estimator, options, plan)
        except tf.errors.DataLossError as error:
            raise _corrupt_shards_error(options.records_dir, error) from error
    if not plan.role.is_chief:
        logging.info("%s done; the chief evaluates and writes %s", plan.role.name, model_dir_lib.METRICS_NAME)
        return {}
    return _write_final_metrics(options.records_dir, options.model_dir, metrics, plan.validation_examples)


def _train_and_evaluate(estimator: tf.estimator.Estimator, options: TrainOptions, plan: Plan) -> dict[str, Any] | None:
    """tf.estimator.train_and_evaluate, then the final evaluation on the chief (None elsewhere)."""
    image_size = plan.params["image_size"]
    train_input_fn = input_lib.make_input_fn(
        options.records_dir, "train", options.batch_size, image_size, True, shuffle_buffer=options.shuffle_buffer
    )
    eval_batch_size = options.eval_batch_size or options.batch_size
    eval_input_fn = input_lib.make_input_fn(options.records_dir, "validation", eval_batch_size, image_size, False)
    write_model_dir = hooks.AfterSessionCreated(
        lambda: model_dir_lib.write(options.records_dir, options.model_dir, plan.train_config)
    )
    train_spec = tf.estimator.TrainSpec(
        train_input_fn, max_steps=plan.params["train_steps"], hooks=[write_model_dir] if plan.role.is_chief else []
    )
    eval_spec = tf.estimator.EvalSpec(
        eval_input_fn,
        steps=None,
        start_delay_secs=0,
        throttle_secs=options.eval_every_secs,
        exporters=[_EvaluationReporter()],
    )
    outcome = tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    if not plan.role.is_chief:
        return None
    # Local runs return the evaluation of the last checkpoint; distributed
    # ones, and resumed runs that had nothing left to train, return none.
    metrics = outcome[0] if outcome else None
    if not metrics or metrics["global_step"] != estimator.get_variable_value(tf.compat.v1.GraphKeys.GLOBAL_STEP):
        metrics = estimator.evaluate(eval_input_fn)
    return metrics


@contextlib.contextmanager
def _checkpoint_dir(model_dir: str, role: Role) -> Iterator[str]:
    """Where this process's Estimator writes: model_dir on the chief; on other
    workers a temporary directory, removed at exit.

    Workers must run the checkpoint and summary ops too (they hold collective
    ops), and TF sends their output to model_dir/tmp_worker_<i>: hundreds of MB
    of duplicate checkpoints. Pointed elsewhere, a worker still resumes from the
    chief's checkpoint: its directory's checkpoint state names that file.
    """
    if role.is_chief:
        yield model_dir
        return
    scratch = tempfile.mkdtemp(prefix="estimator-worker-")
    try:
        latest = tf.train.latest_checkpoint(model_dir)
        if latest:
            absolute = latest if files.is_remote(latest) else os.path.abspath(latest)
            tf.compat.v1.train.update_checkpoint_state(scratch, absolute)
        logging.info("%s: checkpoints and summaries go to %s (removed at exit)", role.name, scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_config(
    options: TrainOptions, checkpoint_dir: str, strategy: tf.distribute.Strategy | None
) -> tf.estimator.RunConfig:
    """Checkpoints every --eval_every_secs (or --save_checkpoints_steps): local
    train_and_evaluate evaluates right after a checkpoint, so the two go together."""
    if options.save_checkpoints_steps or options.distribute == "multi_worker":
        checkpoint_every = {"save_checkpoints_steps": options.save_checkpoints_steps or MULTI_WORKER_CHECKPOINT_STEPS}
    else:
        checkpoint_every = {"save_checkpoints_secs": options.eval_every_secs}
    return tf.estimator.RunConfig(
        model_dir=checkpoint_dir,
        tf_random_seed=options.seed,
        save_summary_steps=options.save_summary_steps,
        keep_checkpoint_max=options.keep_checkpoint_max,
        log_step_count_steps=options.log_every_n_steps,
        train_distribute=strategy,
        checkpoint_save_graph_def=options.save_graph_def,
        **checkpoint_every,
    )


# ---------------------------------------------------------------- what the console says


def _log_header(options: TrainOptions, plan: Plan) -> None:
    params = plan.params
    size, steps, batch = params["image_size"], params["train_steps"], params["batch_size"]
    logging.info(
        "training %s at %dx%d px on %d classes from %s",
        params["model"],
        size,
        size,
        params["num_classes"],
        options.records_dir,
    )
    logging.info(
        "  %d steps of %d images = %.1f epochs of %d; %s",
        steps,
        batch,
        steps * batch / plan.train_examples,
        plan.train_examples,
        _describe_replicas(plan),
    )
    logging.info(
        "  learning rate %.4g, %d warmup steps, %s decay; batch norm momentum %g",
        model.peak_learning_rate(params["learning_rate"], batch),
        params["warmup_steps"],
        params["lr_schedule"],
        params["batch_norm_momentum"],
    )
    if options.fine_tune_ckpt:
        excluded = f" except /{options.fine_tune_exclude}/" if options.fine_tune_exclude else ""
        logging.info("  weights from %s%s (unless model_dir has its own checkpoint)", options.fine_tune_ckpt, excluded)
    logging.info("  model_dir: %s (TensorBoard: tensorboard --logdir=%s)", options.model_dir, options.model_dir)


def _describe_replicas(plan: Plan) -> str:
    if plan.strategy is None:
        return "1 replica"
    devices = ", ".join(device.rsplit("/device:", 1)[-1] for device in plan.strategy.extended.worker_devices)
    where = f"this process: {plan.role.name}, {devices}" if plan.role.name != "local" else devices
    return f"{plan.num_replicas} replicas ({where})"


def _final_metrics(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The Estimator's evaluation as metrics.json holds it (plain Python numbers)."""
    final = {
        "top1": evaluation["top1"],
        "top5": evaluation["top5"],
        "loss": evaluation["cross_entropy"],  # exact mean over the images, without weight decay
        "global_step": evaluation["global_step"],
        "num_examples": evaluation["num_examples"],
    }
    return {key: (value.item() if hasattr(value, "item") else value) for key, value in final.items()}


def _describe(metrics: dict[str, Any]) -> str:
    return (
        f"evaluation at step {metrics['global_step']}: top-1 {metrics['top1']:.3f}, top-5 {metrics['top5']:.3f}, "
        f"loss {metrics['loss']:.4f} over {metrics['num_examples']} validation images"
    )


class _EvaluationReporter(tf.estimator.Exporter):
    """Logs each periodic evaluation of train_and_evaluate in one line. An
    EvalSpec's exporters are the one callback that receives each evaluation's
    metrics; this one exports nothing."""

    @property
    def name(self) -> str:
        return "console"

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export) -> None:
        if not is_the_final_export:  # the final one is reported with metrics.json
            logging.info(_describe(_final_metrics(eval_result)))


def _write_final_metrics(
    records_dir: str, model_dir: str, evaluation: dict[str, Any], validation_examples: int
) -> dict[str, Any]:
    final = _final_metrics(evaluation)
    logging.info(_describe(final))
    if final["num_examples"] != validation_examples:
        logging.warning(
            "the evaluation saw %d of the %d validation images manifest.json lists: %d could not be decoded "
            "and were skipped; `python -m records verify %s` names them",
            final["num_examples"],
            validation_examples,
            validation_examples - final["num_examples"],
            records_dir,
        )
    path = model_dir_lib.write_metrics(model_dir, final)
    logging.info("wrote %s; checkpoints and TensorBoard events in %s", path, model_dir)
    return final


def _corrupt_shards_error(records_dir: str, error: tf.errors.DataLossError) -> CorruptShardsError:
    logging.warning("a shard in %s failed its CRC check; scanning the shards to find which", records_dir)
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
    """Defined only when run as a program, so importing this module never
    clashes with another CLI's flags in absl's registry."""
    flags.DEFINE_string("records_dir", None, "Records build: shards + manifest.json + synsets.tsv.")
    flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, train_config.json, metrics.json.")
    flags.DEFINE_enum("model", _DEFAULTS.model, nets.network_names(), "Network to train.")
    flags.DEFINE_integer("image_size", None, "Square input size; default: the network's published size.")
    flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size (all replicas together).")
    flags.DEFINE_integer("eval_batch_size", None, "Evaluation batch size; default --batch_size.")
    flags.DEFINE_integer("train_steps", None, "Total training steps (global step to stop at).")
    flags.DEFINE_float("train_epochs", None, f"Training length in epochs (default {DEFAULT_TRAIN_EPOCHS}).")
    flags.DEFINE_integer("eval_every_secs", _DEFAULTS.eval_every_secs, "Checkpoint + evaluate at most this often.")
    flags.DEFINE_float(
        "learning_rate", _DEFAULTS.learning_rate, "Peak learning rate; batches over 256 images scale it linearly."
    )
    flags.DEFINE_integer("warmup_steps", None, f"Linear warmup; default min({WARMUP_EPOCHS} epochs, 10% of training).")
    flags.DEFINE_enum("lr_schedule", _DEFAULTS.lr_schedule, list(model.LR_SCHEDULES), "Decay after warmup.")
    flags.DEFINE_float("momentum", _DEFAULTS.momentum, "SGD momentum.")
    flags.DEFINE_boolean("nesterov", _DEFAULTS.nesterov, "Nesterov momentum.")
    flags.DEFINE_float("batch_norm_momentum", _DEFAULTS.batch_norm_momentum, "Decay of batch norm's moving statistics.")
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
    flags.DEFINE_integer(
        "save_checkpoints_steps",
        None,
        f"Checkpoint every N steps, not --eval_every_secs (multi_worker: {MULTI_WORKER_CHECKPOINT_STEPS}).",
    )
    flags.DEFINE_integer("keep_checkpoint_max", _DEFAULTS.keep_checkpoint_max, "Checkpoints to keep.")
    flags.DEFINE_integer("log_every_n_steps", _DEFAULTS.log_every_n_steps, "Progress line interval.")
    flags.DEFINE_integer("save_summary_steps", _DEFAULTS.save_summary_steps, "TensorBoard summary interval.")
    flags.DEFINE_integer("shuffle_buffer", _DEFAULTS.shuffle_buffer, "Records held for shuffling.")
    flags.DEFINE_enum(
        "data_format",
        _DEFAULTS.data_format,
        list(model.DATA_FORMATS),
        "auto: channels_first on GPU, channels_last on CPU.",
    )
    flags.DEFINE_integer("seed", None, "Graph-level random seed.")
    flags.DEFINE_boolean(
        "save_graph_def",
        _DEFAULTS.save_graph_def,
        "Write graph.pbtxt and .meta files (TensorBoard's graph view); large graphs take seconds.",
    )
    flags.mark_flags_as_required(["records_dir", "model_dir"])


class _ConsoleFormatter(logging_lib.Formatter):
    """'12:03:04 message' ('12:03:04 WARNING: message'): a training console needs
    the time; absl's default prefix adds thread ids and source lines."""

    def format(self, record: logging_lib.LogRecord) -> str:
        level = "" if record.levelno <= logging_lib.INFO else f"{record.levelname}: "
        return f"{self.formatTime(record, '%H:%M:%S')} {level}{super().format(record)}"


class _DropNoise(logging_lib.Filter):
    """TensorFlow warnings that are expected and say nothing actionable: TF 1.x APIs
    (all of tf.estimator) warn that they are deprecated on every use, and a
    multi-worker run that the chief alone evaluates is told so."""

    NOISE = ("deprecated", "`eval_strategy` is not passed in")

    def filter(self, record: logging_lib.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


def configure_console(verbose: bool) -> None:
    """Our lines through absl, timestamped; TensorFlow's own INFO stream (the
    Estimator's config dump, 'Calling model_fn', checkpoint listeners,
    global_step/sec), its expected warnings and its Python warnings (graph-mode
    tf.data notes) only when `verbose`."""
    logging.get_absl_handler().setFormatter(_ConsoleFormatter())
    tf_logger = tf.get_logger()
    for handler in list(tf_logger.handlers):  # one copy of each line, through absl's handler
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    tf_logger.setLevel(logging_lib.INFO if verbose else logging_lib.WARNING)
    if not verbose:
        tf_logger.addFilter(_DropNoise())
        warnings.filterwarnings("ignore", module=r"tensorflow(\.|$)")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    configure_console(verbose=logging.get_verbosity() >= logging.DEBUG)
    options = TrainOptions(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainOptions)})
    try:
        run(options)
    except (ValueError, FileNotFoundError, CorruptShardsError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
