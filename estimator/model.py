"""model_fn: the network plus everything around it that makes it an ImageNet model.

DEFAULT_PARAMS is the one home of the training defaults (the trainer's options
and flags take theirs from it) and make_params checks a set of params as the
flags that set them. model_fn adds the loss (cross-entropy, label smoothing,
weight decay on kernels only), the learning-rate schedule, momentum SGD with
batch-norm updates, metrics, summaries, predictions, hooks and the fine-tuning
Scaffold. Mean/std normalisation happens here, once, so the input_fn, the
numpy prediction path and the exported model (which all hand over 0..255
pixels) cannot differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import tensorflow as tf

from estimator import finetune, hooks, nets, preprocessing
from estimator.nets import layers

ModeKeys = tf.estimator.ModeKeys

LR_SCHEDULES = ("poly", "cosine", "step")
POLY_POWER = 2.0  # SqueezeNext trains with poly decay, power 2
# Step decay: x0.1 at 30, 60 and 80 of 90 epochs (the reference ResNet schedule),
# as fractions of the post-warmup steps so any training length gets the shape.
STEP_BOUNDARIES = (30 / 90, 60 / 90, 80 / 90)
STEP_FACTOR = 0.1
LR_REFERENCE_BATCH = 256  # the batch size the learning rate flag is given for
NUM_SUMMARY_IMAGES = 3
TOP_K = 5

DATA_FORMATS = ("auto", *layers.DATA_FORMATS)

# The one home of the training defaults: train.TrainOptions and the trainer's
# flags take theirs from here (batch norm's from nets.layers, beside its reason).
DEFAULT_PARAMS: dict[str, Any] = {
    "model": "sqnxt_1_0_23",
    "num_classes": None,  # from the records' manifest
    "image_size": None,  # None: the network's published size
    "batch_size": 64,  # global: all replicas together
    "train_steps": None,
    "learning_rate": 0.1,  # peak, at batches up to 256; see peak_learning_rate
    "warmup_steps": 0,
    "lr_schedule": "poly",
    "momentum": 0.9,
    "nesterov": False,
    "batch_norm_momentum": layers.BATCH_NORM_MOMENTUM,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
    "data_format": "auto",  # channels_first on a GPU, channels_last on CPUs
    "fine_tune_ckpt": None,
    "fine_tune_exclude": None,
    "log_every_n_steps": 100,
}

Rule = tuple[str, Callable[[Any], bool], str]
# Hyperparameters the model_fn consumes, checked as the flags that set them.
_PARAM_RULES: tuple[Rule, ...] = (
    ("learning_rate", lambda v: v > 0, "must be > 0"),
    ("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("batch_norm_momentum", lambda v: 0 <= v < 1, "must be in [0, 1) (0.9 suits runs of any length)"),
    ("weight_decay", lambda v: v >= 0, "must be >= 0"),
    ("label_smoothing", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("lr_schedule", lambda v: v in LR_SCHEDULES, f"choose one of: {', '.join(LR_SCHEDULES)}"),
    ("data_format", lambda v: v in DATA_FORMATS, f"choose one of: {', '.join(DATA_FORMATS)}"),
)


def check_rules(values: dict[str, Any], rules: Sequence[Rule]) -> None:
    """Raises ValueError '--flag=value: requirement' for the first value (not None) that breaks its rule."""
    for name, ok, requirement in rules:
        value = values[name]
        if value is not None and not ok(value):
            raise ValueError(f"--{name}={value}: {requirement}")


def resolve_data_format(choice: str) -> str:
    """'auto' -> NCHW on a GPU (cuDNN's fast layout), NHWC on CPUs (their kernels want it)."""
    if choice != "auto":
        return choice
    return "channels_first" if tf.config.list_physical_devices("GPU") else "channels_last"


def _check_image_size(name: str, image_size: int) -> None:
    minimum, published = nets.min_image_size(name), nets.default_image_size(name)
    if image_size < minimum:
        raise ValueError(
            f"--image_size={image_size}: {name} needs at least {minimum} pixels (it downsamples its input "
            f"{minimum}x); pass --image_size >= {minimum}, or leave it out for the published {published}"
        )


def make_params(**overrides: Any) -> dict[str, Any]:
    """DEFAULT_PARAMS with `overrides`, checked (so a typo or an impossible value fails
    here, naming its flag, and not mid-graph), with image_size and data_format resolved."""
    unknown = set(overrides) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown model params {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    params = {**DEFAULT_PARAMS, **overrides}
    if params["model"] not in nets.network_names():
        raise ValueError(f"unknown --model={params['model']!r}; choose one of: {', '.join(nets.network_names())}")
    if not isinstance(params["num_classes"], int) or params["num_classes"] < 1:
        raise ValueError(f"num_classes must be a positive int (from manifest.json), got {params['num_classes']!r}")
    check_rules(params, _PARAM_RULES)
    if params["image_size"] is None:
        params["image_size"] = nets.default_image_size(params["model"])
    _check_image_size(params["model"], params["image_size"])
    params["data_format"] = resolve_data_format(params["data_format"])
    return params


def peak_learning_rate(base_learning_rate: float, batch_size: int) -> float:
    """The rate after warmup: `base_learning_rate` for batches up to 256 images,
    scaled linearly above (x batch_size / 256).

    0.1 at 256 is the ImageNet recipe of both networks (the SqueezeNext
    authors' solver: 0.4 at batch 1024, poly power 2, 120 epochs), and linear
    scaling is what keeps larger batches on it (Goyal et al., up to 8k images).
    Scaling *down* for small batches too left short runs barely learning:
    300 steps of 32 images at 64 px on the 10-class sample reached top-1 0.43
    with 0.0125 (0.1 x 32/256) against 0.91 with 0.1 (README, "Defaults that learn").
    """
    return base_learning_rate * max(batch_size, LR_REFERENCE_BATCH) / LR_REFERENCE_BATCH


def learning_rate_schedule(
    global_step: tf.Tensor,
    *,
    base_learning_rate: float,
    batch_size: int,
    warmup_steps: int,
    total_steps: int,
    schedule: str,
) -> tf.Tensor:
    """Linear warmup from 0 to peak_learning_rate(base_lr, batch_size), then decay to the end.

    poly: (1 - p)^2; cosine: (1 + cos(pi p)) / 2; step: x0.1 at STEP_BOUNDARIES,
    where p in [0, 1] is the fraction of the post-warmup steps done.
    """
    peak = peak_learning_rate(base_learning_rate, batch_size)
    step = tf.cast(global_step, tf.float32)
    warmup = float(max(warmup_steps, 0))
    progress = tf.clip_by_value((step - warmup) / float(max(total_steps - warmup_steps, 1)), 0.0, 1.0)
    if schedule == "poly":
        decayed = peak * tf.pow(1.0 - progress, POLY_POWER)
    elif schedule == "cosine":
        decayed = peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
    elif schedule == "step":
        passed = tf.add_n([tf.cast(progress >= boundary, tf.float32) for boundary in STEP_BOUNDARIES])
        decayed = peak * tf.pow(STEP_FACTOR, passed)
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of: {', '.join(LR_SCHEDULES)}")
    if warmup_steps <= 0:
        return tf.identity(decayed, name="learning_rate")
    return tf.where(step < warmup, peak * step / warmup, decayed, name="learning_rate")


def decayed_variables(variables: list[tf.Variable]) -> list[tf.Variable]:
    """Convolution and dense kernels: weight decay on batch-norm scales/offsets or
    biases only fights the normalisation and costs accuracy."""
    return [v for v in variables if v.name.split(":")[0].endswith("kernel")]


def model_variables() -> list[tf.Variable]:
    """The network's variables (trainable and BN moving statistics), i.e. what a
    checkpoint for fine-tuning may provide; taken before the optimizer adds its
    slots, and without global_step."""
    global_step_names = {tf.compat.v1.GraphKeys.GLOBAL_STEP}
    return [v for v in tf.compat.v1.global_variables() if v.name.split(":")[0] not in global_step_names]


def _predictions(logits: tf.Tensor, num_classes: int) -> dict[str, tf.Tensor]:
    probabilities = tf.nn.softmax(logits, name="probabilities")
    top_probabilities, top_classes = tf.nn.top_k(probabilities, k=min(TOP_K, num_classes))
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        "top5_classes": top_classes,
        "top5_probabilities": top_probabilities,
    }


def _count_metric(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """How many examples an evaluation saw (proves each was seen exactly once)."""
    count = tf.compat.v1.get_variable(
        "eval_num_examples",
        shape=[],
        dtype=tf.int64,
        initializer=tf.compat.v1.zeros_initializer(),
        trainable=False,
        collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES, tf.compat.v1.GraphKeys.METRIC_VARIABLES],
    )
    update = tf.compat.v1.assign_add(count, tf.cast(tf.size(values), tf.int64))
    return tf.identity(count), update


class Losses(NamedTuple):
    cross_entropy: tf.Tensor  # the training objective's (label-smoothed in training)
    weight_decay: tf.Tensor
    total: tf.Tensor


def _losses(logits: tf.Tensor, labels: tf.Tensor, params: dict[str, Any], is_training: bool) -> Losses:
    """Cross-entropy plus L2 on the kernels. Smoothing is part of the training
    objective only; evaluation reports the plain cross-entropy against the true label."""
    one_hot = tf.one_hot(labels, params["num_classes"])
    cross_entropy = tf.compat.v1.losses.softmax_cross_entropy(
        one_hot, logits, label_smoothing=params["label_smoothing"] if is_training else 0.0
    )
    kernels = decayed_variables(tf.compat.v1.trainable_variables())
    weight_decay = params["weight_decay"] * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
    return Losses(cross_entropy, weight_decay, tf.identity(cross_entropy + weight_decay, name="total_loss"))


def _eval_metrics(logits: tf.Tensor, labels: tf.Tensor, classes: tf.Tensor, num_classes: int) -> dict[str, tuple]:
    """Exact means over every evaluated image (not means of batch means), and their count."""
    per_example = tf.compat.v1.losses.softmax_cross_entropy(
        tf.one_hot(labels, num_classes), logits, reduction=tf.compat.v1.losses.Reduction.NONE
    )
    in_top5 = tf.cast(tf.nn.in_top_k(labels, logits, k=min(TOP_K, num_classes)), tf.float32)
    return {
        "top1": tf.compat.v1.metrics.accuracy(labels, classes),
        "top5": tf.compat.v1.metrics.mean(in_top5),
        "cross_entropy": tf.compat.v1.metrics.mean(per_example),
        "num_examples": _count_metric(labels),
    }


def _train_op(loss: tf.Tensor, learning_rate: tf.Tensor, params: dict[str, Any]) -> tf.Operation:
    """One momentum-SGD step grouped with batch norm's moving-average updates
    (they live in UPDATE_OPS and would otherwise never run).

    Grouped rather than made control dependencies of `minimize`: those would
    attach every update to every gradient op, which made the SqueezeNext
    training graph 20 MB (every checkpoint's events carry it) and slow to build.
    """
    optimizer = tf.compat.v1.train.MomentumOptimizer(
        learning_rate, momentum=params["momentum"], use_nesterov=params["nesterov"]
    )
    minimize = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return tf.group(minimize, *tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS), name="train_op")


def _training_summaries(
    images: tf.Tensor, labels: tf.Tensor, classes: tf.Tensor, losses: Losses, learning_rate: tf.Tensor
) -> None:
    tf.compat.v1.summary.scalar("learning_rate", learning_rate)
    tf.compat.v1.summary.scalar("cross_entropy", losses.cross_entropy)
    tf.compat.v1.summary.scalar("weight_decay_loss", losses.weight_decay)
    tf.compat.v1.summary.scalar("train_top1", tf.reduce_mean(tf.cast(tf.equal(classes, labels), tf.float32)))
    tf.compat.v1.summary.image("train_images", images / 255.0, max_outputs=NUM_SUMMARY_IMAGES)


def _training_hooks(
    params: dict[str, Any], config: tf.estimator.RunConfig, cross_entropy: tf.Tensor, learning_rate: tf.Tensor
) -> list[tf.estimator.SessionRunHook]:
    """Model statistics, and progress lines whose loss is the cross-entropy: weight decay
    (about 2 at initialisation) would hide what the model learnt, and the evaluation's
    loss is the cross-entropy too."""
    return [
        hooks.ModelStats(config.model_dir, config.is_chief),
        hooks.ExamplesPerSecond(
            batch_size=params["batch_size"],
            every_n_steps=params["log_every_n_steps"],
            total_steps=params["train_steps"],
            loss=cross_entropy,
            learning_rate=learning_rate,
            output_dir=config.model_dir,
        ),
    ]


def model_fn(features, labels, mode: str, params: dict[str, Any], config: tf.estimator.RunConfig):
    """The Estimator's model_fn: the network on normalised images, then per mode
    predictions, exact evaluation metrics, or the training step with its
    summaries, progress hooks and (when fine-tuning) the restoring Scaffold."""
    images = features["image"] if isinstance(features, dict) else features
    is_training = mode == ModeKeys.TRAIN
    logits = nets.build_network(
        params["model"],
        preprocessing.normalize(images),
        params["num_classes"],
        is_training,
        params["data_format"],
        batch_norm_momentum=params["batch_norm_momentum"],
    )
    network_variables = model_variables()  # before the optimizer adds its slots
    predictions = _predictions(logits, params["num_classes"])
    if mode == ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions=predictions)

    losses = _losses(logits, labels, params, is_training)
    if mode == ModeKeys.EVAL:
        metrics = _eval_metrics(logits, labels, predictions["classes"], params["num_classes"])
        return tf.estimator.EstimatorSpec(mode, loss=losses.total, eval_metric_ops=metrics)

    learning_rate = learning_rate_schedule(
        tf.compat.v1.train.get_or_create_global_step(),
        base_learning_rate=params["learning_rate"],
        batch_size=params["batch_size"],
        warmup_steps=params["warmup_steps"],
        total_steps=params["train_steps"],
        schedule=params["lr_schedule"],
    )
    train_op = _train_op(losses.total, learning_rate, params)
    _training_summaries(images, labels, predictions["classes"], losses, learning_rate)
    scaffold = finetune.make_scaffold(
        network_variables,
        fine_tune_ckpt=params["fine_tune_ckpt"],
        exclude=params["fine_tune_exclude"],
        model_dir=config.model_dir,
    )
    return tf.estimator.EstimatorSpec(
        mode,
        loss=losses.total,
        train_op=train_op,
        training_hooks=_training_hooks(params, config, losses.cross_entropy, learning_rate),
        scaffold=scaffold,
    )
