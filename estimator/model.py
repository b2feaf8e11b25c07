"""model_fn: the network plus everything around it that makes it an ImageNet model.

Loss (cross-entropy, label smoothing, weight decay on kernels only), the
learning-rate schedule, momentum SGD with batch-norm updates, metrics,
summaries, predictions, hooks and the fine-tuning Scaffold. Mean/std
normalisation happens here, once, so the input_fn, the numpy prediction path
and the exported model (which all hand over 0..255 pixels) cannot differ.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from estimator import finetune, hooks, nets, preprocessing

ModeKeys = tf.estimator.ModeKeys

LR_SCHEDULES = ("poly", "cosine", "step")
POLY_POWER = 2.0  # SqueezeNext trains with poly decay, power 2
# Step decay: x0.1 at 30, 60 and 80 of 90 epochs (the reference ResNet schedule),
# as fractions of the post-warmup steps so any training length gets the shape.
STEP_BOUNDARIES = (30 / 90, 60 / 90, 80 / 90)
STEP_FACTOR = 0.1
LR_BATCH_DENOMINATOR = 256  # the learning rate flag is per 256 images (Goyal et al.)
NUM_SUMMARY_IMAGES = 3
TOP_K = 5

DEFAULT_PARAMS: dict[str, Any] = {
    "model": "sqnxt_1_0_23",
    "num_classes": None,  # from the records' manifest
    "image_size": 227,
    "batch_size": 64,  # global: all replicas together
    "train_steps": None,
    "learning_rate": 0.1,  # per 256 images, scaled by batch_size / 256
    "warmup_steps": 0,
    "lr_schedule": "poly",
    "momentum": 0.9,
    "nesterov": False,
    # 0.997 suits 100k-step ImageNet runs; short runs need ~0.9 for their
    # moving statistics to reach the data before evaluation.
    "batch_norm_momentum": 0.997,
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
    "data_format": "channels_last",
    "fine_tune_ckpt": None,
    "fine_tune_exclude": None,
    "log_every_n_steps": 100,
}


def make_params(**overrides: Any) -> dict[str, Any]:
    """DEFAULT_PARAMS with `overrides`, checked, so a typo fails here and not mid-graph."""
    unknown = set(overrides) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown model params {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    params = {**DEFAULT_PARAMS, **overrides}
    if params["model"] not in nets.network_names():
        raise ValueError(f"unknown --model={params['model']!r}; choose one of: {', '.join(nets.network_names())}")
    if not isinstance(params["num_classes"], int) or params["num_classes"] < 1:
        raise ValueError(f"num_classes must be a positive int (from manifest.json), got {params['num_classes']!r}")
    if params["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"unknown --lr_schedule={params['lr_schedule']!r}; choose one of: {', '.join(LR_SCHEDULES)}")
    if not 0.0 <= params["label_smoothing"] < 1.0:
        raise ValueError(f"--label_smoothing must be in [0, 1), got {params['label_smoothing']}")
    return params


def learning_rate_schedule(
    global_step: tf.Tensor,
    *,
    base_learning_rate: float,
    batch_size: int,
    warmup_steps: int,
    total_steps: int,
    schedule: str,
) -> tf.Tensor:
    """Linear warmup from 0 to base_lr * batch_size / 256, then decay to the end.

    poly: (1 - p)^2; cosine: (1 + cos(pi p)) / 2; step: x0.1 at STEP_BOUNDARIES,
    where p in [0, 1] is the fraction of the post-warmup steps done.
    """
    peak = base_learning_rate * batch_size / LR_BATCH_DENOMINATOR
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


def model_fn(features, labels, mode: str, params: dict[str, Any], config: tf.estimator.RunConfig):
    images = features["image"] if isinstance(features, dict) else features
    is_training = mode == ModeKeys.TRAIN
    num_classes = params["num_classes"]
    logits = nets.build_network(
        params["model"],
        preprocessing.normalize(images),
        num_classes,
        is_training,
        params["data_format"],
        batch_norm_momentum=params["batch_norm_momentum"],
    )
    network_variables = model_variables()
    predictions = _predictions(logits, num_classes)

    if mode == ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions=predictions)

    # Smoothing is part of the training objective only; eval reports the plain
    # cross-entropy against the true label.
    one_hot = tf.one_hot(labels, num_classes)
    cross_entropy = tf.compat.v1.losses.softmax_cross_entropy(
        one_hot, logits, label_smoothing=params["label_smoothing"] if is_training else 0.0
    )
    kernels = decayed_variables(tf.compat.v1.trainable_variables())
    weight_decay = params["weight_decay"] * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
    loss = tf.identity(cross_entropy + weight_decay, name="total_loss")

    if mode == ModeKeys.EVAL:
        per_example = tf.compat.v1.losses.softmax_cross_entropy(
            one_hot, logits, reduction=tf.compat.v1.losses.Reduction.NONE
        )
        in_top5 = tf.cast(tf.nn.in_top_k(labels, logits, k=min(TOP_K, num_classes)), tf.float32)
        metrics = {
            "top1": tf.compat.v1.metrics.accuracy(labels, predictions["classes"]),
            "top5": tf.compat.v1.metrics.mean(in_top5),
            "cross_entropy": tf.compat.v1.metrics.mean(per_example),
            "num_examples": _count_metric(labels),
        }
        return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)

    global_step = tf.compat.v1.train.get_or_create_global_step()
    learning_rate = learning_rate_schedule(
        global_step,
        base_learning_rate=params["learning_rate"],
        batch_size=params["batch_size"],
        warmup_steps=params["warmup_steps"],
        total_steps=params["train_steps"],
        schedule=params["lr_schedule"],
    )
    optimizer = tf.compat.v1.train.MomentumOptimizer(
        learning_rate, momentum=params["momentum"], use_nesterov=params["nesterov"]
    )
    # Batch-norm moving statistics only update if their ops run with the step.
    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    with tf.control_dependencies(update_ops):
        train_op = optimizer.minimize(loss, global_step=global_step)

    batch_top1 = tf.reduce_mean(tf.cast(tf.equal(predictions["classes"], labels), tf.float32))
    tf.compat.v1.summary.scalar("learning_rate", learning_rate)
    tf.compat.v1.summary.scalar("cross_entropy", cross_entropy)
    tf.compat.v1.summary.scalar("weight_decay_loss", weight_decay)
    tf.compat.v1.summary.scalar("train_top1", batch_top1)
    tf.compat.v1.summary.image("train_images", images / 255.0, max_outputs=NUM_SUMMARY_IMAGES)

    training_hooks = [
        hooks.ModelStats(config.model_dir, config.is_chief),
        hooks.ExamplesPerSecond(
            batch_size=params["batch_size"],
            every_n_steps=params["log_every_n_steps"],
            total_steps=params["train_steps"],
            loss=loss,
            output_dir=config.model_dir,
        ),
    ]
    scaffold = finetune.make_scaffold(
        network_variables,
        fine_tune_ckpt=params["fine_tune_ckpt"],
        exclude=params["fine_tune_exclude"],
        model_dir=config.model_dir,
    )
    return tf.estimator.EstimatorSpec(
        mode, loss=loss, train_op=train_op, training_hooks=training_hooks, scaffold=scaffold
    )
