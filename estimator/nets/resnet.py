"""ResNet-50 v1.5 (He et al. 2016, with the stride moved into the 3x3 convolution).

v1.5 puts the downsampling stride on the bottleneck's 3x3 convolution instead
of its first 1x1, which sees every input pixel instead of one in four: about
0.5 % more top-1 for ~5 % more MACs, the variant the reference TensorFlow and
NVIDIA trainers use. Strided convolutions pad explicitly and symmetrically
(as the reference TensorFlow ResNet does), so the result does not depend on
whether the input size is even.
"""

from __future__ import annotations

import tensorflow as tf

from estimator.nets import layers

IMAGE_SIZE = 224
TOTAL_STRIDE = 32  # stem, pool, stages 2-4: 32 px of input per position of the last map
# (bottleneck width, blocks, stride of the first block) per stage.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4


def _fixed_padding(inputs: tf.Tensor, kernel_size: int, data_format: str) -> tf.Tensor:
    pad_total = kernel_size - 1
    before, after = pad_total // 2, pad_total - pad_total // 2
    spatial = [[before, after], [before, after]]
    paddings = [[0, 0], [0, 0], *spatial] if layers.channel_axis(data_format) == 1 else [[0, 0], *spatial, [0, 0]]
    return tf.pad(inputs, paddings, name="fixed_padding")


def _conv_bn(
    inputs: tf.Tensor,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    relu: bool = True,
    name: str,
    is_training: bool,
    data_format: str,
    batch_norm_momentum: float,
) -> tf.Tensor:
    with tf.compat.v1.variable_scope(name):
        padding = "SAME"
        if strides > 1:
            inputs = _fixed_padding(inputs, kernel_size, data_format)
            padding = "VALID"
        outputs = layers.conv2d(inputs, filters, kernel_size, strides=strides, padding=padding, data_format=data_format)
        outputs = layers.batch_norm(outputs, is_training, data_format, batch_norm_momentum)
        return tf.nn.relu(outputs) if relu else outputs


def _bottleneck(
    inputs: tf.Tensor,
    width: int,
    *,
    strides: int,
    project: bool,
    is_training: bool,
    data_format: str,
    batch_norm_momentum: float,
) -> tf.Tensor:
    unit = dict(is_training=is_training, data_format=data_format, batch_norm_momentum=batch_norm_momentum)
    if project:
        shortcut = _conv_bn(inputs, width * EXPANSION, 1, strides=strides, relu=False, name="shortcut", **unit)
    else:
        shortcut = inputs
    outputs = _conv_bn(inputs, width, 1, name="conv1", **unit)
    outputs = _conv_bn(outputs, width, 3, strides=strides, name="conv2", **unit)
    outputs = _conv_bn(outputs, width * EXPANSION, 1, relu=False, name="conv3", **unit)
    return tf.nn.relu(tf.add(shortcut, outputs, name="residual"))


def build(
    images: tf.Tensor,
    num_classes: int,
    is_training: bool,
    data_format: str,
    batch_norm_momentum: float = layers.BATCH_NORM_MOMENTUM,
) -> tf.Tensor:
    """Logits [batch, num_classes] for NHWC `images`, in the caller's variable scope."""
    unit = dict(is_training=is_training, data_format=data_format, batch_norm_momentum=batch_norm_momentum)
    net = layers.to_data_format(images, data_format)
    net = _conv_bn(net, 64, 7, strides=2, name="conv1", **unit)
    net = layers.max_pool(net, padding="SAME", data_format=data_format)
    for stage, (width, num_blocks, first_stride) in enumerate(STAGES):
        with tf.compat.v1.variable_scope(f"stage{stage + 1}"):
            for block in range(num_blocks):
                with tf.compat.v1.variable_scope(f"block{block + 1}"):
                    net = _bottleneck(net, width, strides=first_stride if block == 0 else 1, project=block == 0, **unit)
    return layers.logits(layers.global_average_pool(net, data_format), num_classes)
