"""The network registry: one name per architecture, one call to build it.

Everything outside this package (model_fn, stats CLI, predict, export) goes
through build_network, so a new architecture is one entry here and the rest of
the trainer picks it up by name.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import tensorflow as tf

from estimator.nets import layers, resnet, squeezenext

_Builder = Callable[[tf.Tensor, int, bool, str, float], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class _Network:
    builder: _Builder
    image_size: int  # the size it was designed and published at
    min_image_size: int  # its total stride: the smallest input whose last stage still sees a whole pixel


_NETWORKS: dict[str, _Network] = {
    **{
        name: _Network(functools.partial(squeezenext.build, spec), squeezenext.IMAGE_SIZE, squeezenext.TOTAL_STRIDE)
        for name, spec in squeezenext.SPECS.items()
    },
    "resnet50": _Network(resnet.build, resnet.IMAGE_SIZE, resnet.TOTAL_STRIDE),
}


def network_names() -> list[str]:
    """Every name build_network accepts."""
    return list(_NETWORKS)


def _lookup(name: str) -> _Network:
    try:
        return _NETWORKS[name]
    except KeyError:
        raise ValueError(f"Unknown network {name!r}; valid names: {', '.join(network_names())}") from None


def default_image_size(name: str) -> int:
    """The square input size the network was designed and published at."""
    return _lookup(name).image_size


def min_image_size(name: str) -> int:
    """The smallest square input the network is meant for.

    Both families halve the input five times (stride-2 stem, max pool, three
    strided stages): below their total stride of 32 pixels the last stage's
    map is padding more than image (the graph may still build, which is why
    the trainer checks this number instead of waiting for a shape error).
    """
    return _lookup(name).min_image_size


def build_network(
    name: str,
    images: tf.Tensor,
    num_classes: int,
    is_training: bool,
    data_format: str = "channels_last",
    batch_norm_momentum: float = layers.BATCH_NORM_MOMENTUM,
) -> tf.Tensor:
    """Float32 logits [batch, num_classes] for normalised float32 NHWC `images`.

    Variables live under a scope named after the network (e.g.
    `sqnxt_1_0_23/stage1/block1/reduce1/kernel`); the classifier's are the
    only ones under `<name>/logits/`. With is_training=True, batch norm uses
    batch statistics and queues its moving-average updates in
    GraphKeys.UPDATE_OPS; with False it uses the moving averages.
    """
    builder = _lookup(name).builder
    layers.check_data_format(data_format)
    if images.shape.rank != 4 or images.shape[-1] is None:
        raise ValueError(
            f"{name}: images must be a [batch, height, width, channels] tensor "
            f"with known channels; got {images.name} of shape {images.shape}"
        )
    if images.dtype != tf.float32:
        raise ValueError(
            f"{name}: images must be float32 (normalised by preprocessing); got {images.dtype.name} for {images.name}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    with tf.compat.v1.variable_scope(name):
        return tf.cast(builder(images, num_classes, is_training, data_format, batch_norm_momentum), tf.float32)
