"""Per-layer parameters and multiply-accumulates (MACs) of a TensorFlow graph.

The counts come from the graph's ops, not from the builders' own bookkeeping,
so they describe what actually runs (any model_fn, any variant) and the
training hook and this CLI share one code path:

    python -m estimator.stats --model=sqnxt_1_0_23 [--image_size=227]
        [--num_classes=1000] [--output=stats.csv]

Counting rules, all per image (batch size does not matter):

* Conv2D: params = kh*kw*cin_per_group*cout; MACs = out_h*out_w*cout*kh*kw*
  cin_per_group. A grouped convolution is a Conv2D whose input carries
  `groups` times the filter's input depth, so the formula covers it.
* DepthwiseConv2dNative: params = kh*kw*cin*multiplier; MACs = out_h*out_w*
  cin*multiplier*kh*kw.
* MatMul: one row per image, MACs = K*N; its variable operand is params.
* BiasAdd: the bias is params; the adds are not counted.
* FusedBatchNorm*: the learned scale and offset are params (moving mean and
  variance are statistics, not parameters); MACs 0, because at inference the
  affine transform folds into the preceding convolution's weights — the
  convention behind the SqueezeNext and ResNet papers' MAC figures.
* Residual adds (Add/AddV2/AddN of same-shaped feature maps): counted in the
  separate `adds` column as elements added, never as MACs.

A variable's parameters count once however many ops read it. Ops under a
`gradients` scope (backprop) are skipped, so a training graph reports the
forward model only. Rows are name scopes in graph order; a batch-norm scope
(`.../bn`) folds into the layer that owns it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import sys
from collections.abc import Iterable, Sequence

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ start-up banners

import tensorflow as tf
from absl import app, flags, logging

from estimator import nets

CSV_COLUMNS = ("layer", "kinds", "output_shape", "params", "maccs", "adds")
TOTAL_ROW = "total"

_VARIABLE_OPS = frozenset({"VarHandleOp", "VariableV2", "Variable"})
# Ops a weight passes through between its variable and its consumer.
_WEIGHT_PASS_THROUGH = frozenset({"ReadVariableOp", "Identity", "Cast", "Enter"})
_BATCH_NORM_OPS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
_ADD_OPS = frozenset({"Add", "AddV2", "AddN"})
_BATCH_NORM_SCOPE = re.compile(r"^(bn|batchnorm|batch_norm|batch_normalization(_\d+)?)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """One row of the report: a name scope and what its ops cost per image."""

    layer: str
    kinds: str  # op types that contributed, '+'-joined, in graph order
    output_shape: str  # per-image shape of the layer's last counted op, e.g. '55x55x32'
    params: int
    maccs: int
    adds: int


@dataclasses.dataclass
class _OpCount:
    kind: str
    output_shape: str
    params: int = 0
    maccs: int = 0
    adds: int = 0


def _is_backprop(op_name: str) -> bool:
    return any(part.startswith("gradients") for part in op_name.split("/"))


def _is_other_replica(op_name: str) -> bool:
    """MirroredStrategy builds the model once per replica, the copies under
    `replica_1/`, `replica_2/`...; one model is counted, as on one device."""
    return re.match(r"replica_[1-9]\d*/", op_name) is not None


def _source_variable(tensor: tf.Tensor) -> tf.Operation | None:
    """The variable op a weight tensor reads, or None if it is not a variable."""
    op = tensor.op
    for _ in range(16):
        if op.type in _VARIABLE_OPS:
            return op
        if op.type not in _WEIGHT_PASS_THROUGH or not op.inputs:
            return None
        op = op.inputs[0].op
    return None


def _dims(shape: tf.TensorShape) -> list[int | None] | None:
    return None if shape.rank is None else shape.as_list()


def _product(values: Iterable[int | None]) -> int | None:
    result = 1
    for value in values:
        if value is None:
            return None
        result *= value
    return result


def _per_image_shape(tensor: tf.Tensor) -> str:
    dims = _dims(tensor.shape)
    if dims is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in dims[1:])


class _Counter:
    """Per-op counting, with each variable's parameters claimed only once."""

    def __init__(self) -> None:
        self._counted_variables: set[str] = set()
        self.unknown_shapes: list[str] = []

    def _params(self, tensor: tf.Tensor) -> int:
        variable = _source_variable(tensor)
        if variable is None or variable.name in self._counted_variables:
            return 0
        self._counted_variables.add(variable.name)
        size = _product(_dims(tensor.shape) or [None])
        if size is None:
            self.unknown_shapes.append(tensor.name)
            return 0
        return size

    def _maccs(self, op: tf.Operation, value: int | None) -> int:
        if value is None:
            self.unknown_shapes.append(op.name)
            return 0
        return value

    def count(self, op: tf.Operation) -> _OpCount | None:
        if op.type == "Conv2D":
            return self._conv2d(op)
        if op.type == "DepthwiseConv2dNative":
            return self._depthwise(op)
        if op.type == "MatMul":
            return self._matmul(op)
        if op.type == "BiasAdd":
            return _OpCount(op.type, _per_image_shape(op.outputs[0]), params=self._params(op.inputs[1]))
        if op.type in _BATCH_NORM_OPS:
            return _OpCount(
                op.type, _per_image_shape(op.outputs[0]), params=self._params(op.inputs[1]) + self._params(op.inputs[2])
            )
        if op.type in _ADD_OPS:
            return self._residual_add(op)
        return None

    def _spatial_and_channels(self, op: tf.Operation) -> tuple[int | None, int | None]:
        dims = _dims(op.outputs[0].shape)
        if dims is None or len(dims) != 4:
            return None, None
        channels_first = op.get_attr("data_format") == b"NCHW"
        height, width = (dims[2], dims[3]) if channels_first else (dims[1], dims[2])
        return _product([height, width]), dims[1] if channels_first else dims[3]

    def _conv2d(self, op: tf.Operation) -> _OpCount:
        kernel_h, kernel_w, in_per_group, out_channels = _dims(op.inputs[1].shape) or [None] * 4
        positions, _ = self._spatial_and_channels(op)
        maccs = _product([positions, out_channels, kernel_h, kernel_w, in_per_group])
        return _OpCount(
            op.type, _per_image_shape(op.outputs[0]), params=self._params(op.inputs[1]), maccs=self._maccs(op, maccs)
        )

    def _depthwise(self, op: tf.Operation) -> _OpCount:
        kernel_h, kernel_w, in_channels, multiplier = _dims(op.inputs[1].shape) or [None] * 4
        positions, _ = self._spatial_and_channels(op)
        maccs = _product([positions, in_channels, multiplier, kernel_h, kernel_w])
        return _OpCount(
            op.type, _per_image_shape(op.outputs[0]), params=self._params(op.inputs[1]), maccs=self._maccs(op, maccs)
        )

    def _matmul(self, op: tf.Operation) -> _OpCount:
        a_dims = _dims(op.inputs[0].shape) or [None, None]
        depth = a_dims[0] if op.get_attr("transpose_a") else a_dims[1]
        out_dims = _dims(op.outputs[0].shape) or [None, None]
        params = self._params(op.inputs[0]) + self._params(op.inputs[1])
        return _OpCount(
            op.type,
            _per_image_shape(op.outputs[0]),
            params=params,
            maccs=self._maccs(op, _product([depth, out_dims[-1]])),
        )

    def _residual_add(self, op: tf.Operation) -> _OpCount | None:
        """Adds of feature maps only: not biases, scalars, or optimizer arithmetic."""
        out_dims = _dims(op.outputs[0].shape)
        if len(op.inputs) < 2 or out_dims is None or len(out_dims) < 3:
            return None
        for tensor in op.inputs:
            if _dims(tensor.shape) != out_dims or tensor.op.type == "Const" or _source_variable(tensor) is not None:
                return None
        elements = _product(out_dims[1:])
        return _OpCount(
            op.type,
            _per_image_shape(op.outputs[0]),
            adds=self._maccs(op, None if elements is None else elements * (len(op.inputs) - 1)),
        )


def _layer_name(op_name: str) -> str:
    parts = op_name.split("/")
    if len(parts) > 1:
        parts = parts[:-1]
    if len(parts) > 1 and _BATCH_NORM_SCOPE.match(parts[-1]):
        parts = parts[:-1]
    return "/".join(parts)


def model_stats(graph: tf.Graph) -> list[LayerStats]:
    """Parameters, MACs and residual adds per layer (name scope), per image."""
    counter = _Counter()
    rows: dict[str, list[_OpCount]] = {}
    for op in graph.get_operations():
        if _is_backprop(op.name) or _is_other_replica(op.name):
            continue
        counted = counter.count(op)
        if counted is not None:
            rows.setdefault(_layer_name(op.name), []).append(counted)
    if counter.unknown_shapes:
        logging.warning(
            "Model statistics: %d ops have unknown static shapes and count as 0 "
            "(give the input a fixed height and width): %s",
            len(counter.unknown_shapes),
            ", ".join(counter.unknown_shapes[:5]),
        )
    stats = []
    for layer, counts in rows.items():
        kinds = list(dict.fromkeys(count.kind for count in counts))
        stats.append(
            LayerStats(
                layer=layer,
                kinds="+".join(kinds),
                output_shape=counts[-1].output_shape,
                params=sum(c.params for c in counts),
                maccs=sum(c.maccs for c in counts),
                adds=sum(c.adds for c in counts),
            )
        )
    return stats


def totals(stats: Sequence[LayerStats]) -> LayerStats:
    """The `total` row: sums over every layer."""
    return LayerStats(
        TOTAL_ROW, "", "", sum(s.params for s in stats), sum(s.maccs for s in stats), sum(s.adds for s in stats)
    )


def format_totals(stats: Sequence[LayerStats]) -> str:
    """One human line, e.g. '0.718 M params, 278.0 M MACs, 1.10 M residual adds per image'."""
    total = totals(stats)
    return (
        f"{total.params / 1e6:.3f} M params, {total.maccs / 1e6:.1f} M MACs, "
        f"{total.adds / 1e6:.2f} M residual adds per image"
    )


def to_csv(stats: Sequence[LayerStats]) -> str:
    """CSV text: a header, one row per layer, and a final `total` row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*stats, totals(stats)]:
        writer.writerow([getattr(row, column) for column in CSV_COLUMNS])
    return buffer.getvalue()


def write_csv(stats: Sequence[LayerStats], path: str) -> None:
    """Writes to_csv(stats) to a local or remote (gs://) path, creating its folder."""
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if folder:
        tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(to_csv(stats))


def network_stats(
    name: str, image_size: int | None = None, num_classes: int = 1000, data_format: str = "channels_last"
) -> list[LayerStats]:
    """Stats of a registered network built alone in a fresh inference graph."""
    size = image_size or nets.default_image_size(name)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3], name="images")
        nets.build_network(name, images, num_classes, is_training=False, data_format=data_format)
    return model_stats(graph)


def _define_flags() -> None:
    # Defined only when run as a program, so importing this module (the hook
    # does) never collides with the trainer's own --model/--num_classes flags.
    flags.DEFINE_enum("model", None, nets.network_names(), "Network to count.")
    flags.DEFINE_integer("image_size", None, "Square input size; default: the network's own.")
    flags.DEFINE_integer("num_classes", 1000, "Number of output classes.")
    flags.DEFINE_string("output", None, "CSV file to write (local or gs://); default: stdout.")
    flags.DEFINE_enum(
        "data_format",
        "channels_last",
        ["channels_last", "channels_first"],
        "Layout the network is built in (the counts do not depend on it).",
    )
    flags.mark_flag_as_required("model")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    options = flags.FLAGS
    stats = network_stats(options.model, options.image_size, options.num_classes, options.data_format)
    if options.output:
        write_csv(stats, options.output)
        print(f"Wrote {options.output}")
    else:
        sys.stdout.write(to_csv(stats))
    print(f"{options.model}: {format_totals(stats)}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
