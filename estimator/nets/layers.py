"""Graph-mode building blocks shared by the network builders.

The variable names they create are checkpoint keys other code relies on:
a convolution's weights are `<scope>/kernel` and its batch norm's are
`<scope>/bn/{gamma,beta,moving_mean,moving_variance}`, so the model_fn can pick
kernels for weight decay by suffix, and the classifier lives alone under
`logits` so fine-tuning can drop it by name.

Batch norm puts its moving-average updates in GraphKeys.UPDATE_OPS, which the
model_fn runs with the train op (a Keras layer would keep them to itself). Nothing here adds
regularisation: the model_fn owns weight decay.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

DATA_FORMATS = ("channels_last", "channels_first")

# Decay of batch norm's moving mean/variance, the statistics evaluation and
# prediction use. After n steps the initial values (0 and 1) still weigh
# momentum**n: 0.997 keeps 41% of them after 300 steps and 5% after 1,000, so
# every run shorter than a few thousand steps (any fine-tune on a small dataset)
# evaluates with statistics that never met the data; 0.9 forgets them within
# ~50 steps. The TPU ResNet reference trains ImageNet to its published accuracy
# with 0.9, so long runs lose nothing. The trainer's default (model.DEFAULT_PARAMS)
# is this constant.
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def channel_axis(data_format: str) -> int:
    """The axis that holds channels in a 4-D tensor of this data format."""
    check_data_format(data_format)
    return 1 if data_format == "channels_first" else 3


def spatial_axes(data_format: str) -> list[int]:
    """The (height, width) axes of a 4-D tensor of this data format."""
    return [2, 3] if channel_axis(data_format) == 1 else [1, 2]


def check_data_format(data_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def conv2d(
    inputs: tf.Tensor,
    filters: int,
    kernel_size: int | Sequence[int],
    *,
    strides: int = 1,
    padding: str = "SAME",
    groups: int = 1,
    data_format: str = "channels_last",
) -> tf.Tensor:
    """A bias-free convolution whose weights are `<current scope>/kernel`.

    Grouped convolution is a plain Conv2D whose filter sees in_channels/groups
    channels (TensorFlow splits the input itself), so checkpoints and the
    statistics counter see one kernel per layer whatever the group count.
    """
    axis = channel_axis(data_format)
    in_channels = inputs.shape[axis]
    if in_channels is None:
        raise ValueError(
            f"{inputs.name}: the channel dimension must be known to build a "
            f"convolution; got shape {inputs.shape} for data_format={data_format}"
        )
    if in_channels % groups or filters % groups:
        raise ValueError(
            f"{tf.compat.v1.get_variable_scope().name}: {groups} groups must divide "
            f"both input channels ({in_channels}) and filters ({filters})"
        )
    kernel_height, kernel_width = _pair(kernel_size)
    kernel = tf.compat.v1.get_variable(
        "kernel",
        [kernel_height, kernel_width, in_channels // groups, filters],
        initializer=tf.compat.v1.initializers.variance_scaling(
            scale=2.0, mode="fan_in", distribution="truncated_normal"
        ),
    )
    return tf.nn.conv2d(inputs, kernel, strides=strides, padding=padding, data_format="NCHW" if axis == 1 else "NHWC")


def batch_norm(
    inputs: tf.Tensor, is_training: bool, data_format: str, momentum: float = BATCH_NORM_MOMENTUM
) -> tf.Tensor:
    """Fused batch norm under scope `bn`; training queues its updates in UPDATE_OPS.

    Hand-rolled on get_variable rather than tf.compat.v1.layers: same
    variables and semantics, but the legacy layer's per-variable bookkeeping
    made building a SqueezeNext graph about 5x slower (~7 s instead of ~1.5 s).
    """
    axis = channel_axis(data_format)
    channels = inputs.shape[axis]
    fused_format = "NCHW" if axis == 1 else "NHWC"
    with tf.compat.v1.variable_scope("bn"):
        gamma = tf.compat.v1.get_variable("gamma", [channels], initializer=tf.ones_initializer())
        beta = tf.compat.v1.get_variable("beta", [channels], initializer=tf.zeros_initializer())
        moving_mean = tf.compat.v1.get_variable(
            "moving_mean", [channels], initializer=tf.zeros_initializer(), trainable=False
        )
        moving_variance = tf.compat.v1.get_variable(
            "moving_variance", [channels], initializer=tf.ones_initializer(), trainable=False
        )
        if not is_training:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=moving_mean,
                variance=moving_variance,
                epsilon=BATCH_NORM_EPSILON,
                data_format=fused_format,
                is_training=False,
            )
            return outputs
        outputs, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=BATCH_NORM_EPSILON, data_format=fused_format, is_training=True
        )
        with tf.compat.v1.name_scope("moving_average_updates"):
            for moving, batch_value in ((moving_mean, batch_mean), (moving_variance, batch_variance)):
                update = moving.assign_sub((moving - batch_value) * (1.0 - momentum), read_value=False)
                tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
        return outputs


def conv_bn(
    inputs: tf.Tensor,
    filters: int,
    kernel_size: int | Sequence[int],
    *,
    name: str,
    is_training: bool,
    data_format: str,
    strides: int = 1,
    padding: str = "SAME",
    groups: int = 1,
    relu: bool = True,
    batch_norm_momentum: float = BATCH_NORM_MOMENTUM,
) -> tf.Tensor:
    """Convolution, batch norm and (optionally) ReLU under one scope `name`."""
    with tf.compat.v1.variable_scope(name):
        outputs = conv2d(
            inputs, filters, kernel_size, strides=strides, padding=padding, groups=groups, data_format=data_format
        )
        outputs = batch_norm(outputs, is_training, data_format, batch_norm_momentum)
        return tf.nn.relu(outputs) if relu else outputs


def global_average_pool(inputs: tf.Tensor, data_format: str) -> tf.Tensor:
    """[batch, channels] means over the spatial axes, whatever the input size."""
    return tf.reduce_mean(inputs, axis=spatial_axes(data_format), name="global_pool")


def logits(features: tf.Tensor, num_classes: int) -> tf.Tensor:
    """The classifier: the only variables under a scope named `logits`."""
    with tf.compat.v1.variable_scope("logits"):
        kernel = tf.compat.v1.get_variable(
            "kernel",
            [features.shape[-1], num_classes],
            initializer=tf.compat.v1.initializers.random_normal(stddev=0.01),
        )
        bias = tf.compat.v1.get_variable("bias", [num_classes], initializer=tf.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(features, kernel), bias)


def max_pool(inputs: tf.Tensor, *, padding: str, data_format: str) -> tf.Tensor:
    """The 3x3 / 2 max pool both stems use."""
    return tf.nn.max_pool2d(
        inputs, 3, 2, padding=padding, data_format="NCHW" if channel_axis(data_format) == 1 else "NHWC", name="pool1"
    )


def to_data_format(images: tf.Tensor, data_format: str) -> tf.Tensor:
    """Images arrive NHWC from preprocessing; channels_first nets transpose once here."""
    check_data_format(data_format)
    if data_format == "channels_first":
        return tf.transpose(images, [0, 3, 1, 2], name="to_channels_first")
    return images
