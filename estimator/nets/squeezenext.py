"""SqueezeNext (Gholami et al. 2018, "SqueezeNext: Hardware-Aware Neural Network Design").

Layouts follow the authors' released Caffe definitions (github.com/amirgholami/
SqueezeNext), which pin down what the paper's figures leave open:

* stem: a k x k / 2 convolution with 64 channels and no padding (k = 7, or 5 in
  the v5 variants), then a 3 x 3 / 2 max pool; the stem is not widened by the
  width multiplier, only the stages are;
* four stages of 32, 64, 128, 256 channels (times the width multiplier) with
  [6, 6, 8, 1] blocks (-23) or [2, 4, 14, 1] (-23v5); stage 1 keeps the
  resolution, the first block of every later stage halves it;
* each block: 1x1 squeeze to C/2, 1x1 squeeze to C/4, separable 3x1 then 1x3
  at C/2, 1x1 expand to C; every convolution is followed by batch norm and
  ReLU; the output is ReLU(shortcut + block). The first block of each stage
  has a 1x1 projection shortcut (with the stride), the others the identity;
* head: 1x1 convolution to 128 channels, global average pool, fully connected.
* G-SqNxt: the first squeeze and the two separable convolutions use two groups.

At 227 x 227 the feature maps are 111 (112 with the 5x5 stem), 55 (stage 1),
28, 14 and 7 pixels wide. Two simplifications against the Caffe files, each
under 2 % of the MACs: pooling floors where Caffe rounds up (the v5 stage 1 is
55 wide, not 56), and every variant uses the baseline's parallel projection
shortcut, where the v5 files feed the block from the projection's output.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from estimator.nets import layers

IMAGE_SIZE = 227
TOTAL_STRIDE = 32  # stem, pool, stages 2-4: 32 px of input per position of the last map
STEM_CHANNELS = 64
STAGE_CHANNELS = (32, 64, 128, 256)
HEAD_CHANNELS = 128


@dataclasses.dataclass(frozen=True)
class SqueezeNextSpec:
    """What distinguishes the members of the family."""

    width_multiplier: float
    blocks_per_stage: tuple[int, int, int, int]
    groups: int = 1
    stem_kernel: int = 7


SPECS: dict[str, SqueezeNextSpec] = {
    "sqnxt_1_0_23": SqueezeNextSpec(1.0, (6, 6, 8, 1)),
    "sqnxt_1_0_g_23": SqueezeNextSpec(1.0, (6, 6, 8, 1), groups=2),
    "sqnxt_1_0_23v5": SqueezeNextSpec(1.0, (2, 4, 14, 1), stem_kernel=5),
    "sqnxt_2_0_23": SqueezeNextSpec(2.0, (6, 6, 8, 1)),
    "sqnxt_2_0_23v5": SqueezeNextSpec(2.0, (2, 4, 14, 1), stem_kernel=5),
}


def _block(
    inputs: tf.Tensor,
    channels: int,
    *,
    strides: int,
    project: bool,
    groups: int,
    is_training: bool,
    data_format: str,
    batch_norm_momentum: float,
) -> tf.Tensor:
    unit = dict(is_training=is_training, data_format=data_format, batch_norm_momentum=batch_norm_momentum)
    if project:
        shortcut = layers.conv_bn(inputs, channels, 1, strides=strides, name="shortcut", **unit)
    else:
        shortcut = inputs
    outputs = layers.conv_bn(inputs, channels // 2, 1, strides=strides, groups=groups, name="reduce1", **unit)
    outputs = layers.conv_bn(outputs, channels // 4, 1, name="reduce2", **unit)
    outputs = layers.conv_bn(outputs, channels // 2, (3, 1), groups=groups, name="sep3x1", **unit)
    outputs = layers.conv_bn(outputs, channels // 2, (1, 3), groups=groups, name="sep1x3", **unit)
    outputs = layers.conv_bn(outputs, channels, 1, name="expand", **unit)
    return tf.nn.relu(tf.add(shortcut, outputs, name="residual"))


def build(
    spec: SqueezeNextSpec,
    images: tf.Tensor,
    num_classes: int,
    is_training: bool,
    data_format: str,
    batch_norm_momentum: float = layers.BATCH_NORM_MOMENTUM,
) -> tf.Tensor:
    """Logits [batch, num_classes] for NHWC `images`, in the caller's variable scope."""
    unit = dict(is_training=is_training, data_format=data_format, batch_norm_momentum=batch_norm_momentum)
    net = layers.to_data_format(images, data_format)
    net = layers.conv_bn(net, STEM_CHANNELS, spec.stem_kernel, strides=2, padding="VALID", name="conv1", **unit)
    net = layers.max_pool(net, padding="VALID", data_format=data_format)
    for stage, num_blocks in enumerate(spec.blocks_per_stage):
        channels = int(STAGE_CHANNELS[stage] * spec.width_multiplier)
        with tf.compat.v1.variable_scope(f"stage{stage + 1}"):
            for block in range(num_blocks):
                with tf.compat.v1.variable_scope(f"block{block + 1}"):
                    net = _block(
                        net,
                        channels,
                        strides=2 if stage and not block else 1,
                        project=block == 0,
                        groups=spec.groups,
                        **unit,
                    )
    net = layers.conv_bn(net, HEAD_CHANNELS, 1, name="conv_head", **unit)
    return layers.logits(layers.global_average_pool(net, data_format), num_classes)
