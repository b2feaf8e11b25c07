"""Model statistics: counting rules on hand-built graphs, the paper figures, CSV and CLI."""

import csv
import functools
import logging

import pytest
import tensorflow as tf
from pipeline_util import run_module

from estimator import nets, stats
from estimator.nets import layers, squeezenext


@functools.cache
def _network_stats(name, image_size=None, num_classes=1000, data_format="channels_last"):
    return tuple(stats.network_stats(name, image_size, num_classes, data_format))


def _by_layer(rows):
    return {row.layer: row for row in rows}


def _variable(name, shape):
    return tf.compat.v1.get_variable(name, shape)


def test_each_op_kind_is_counted_per_image_by_its_rule():
    size, batch = 16, 4
    with tf.Graph().as_default() as graph:
        images = tf.compat.v1.placeholder(tf.float32, [batch, size, size, 3])
        with tf.compat.v1.variable_scope("conv"):  # 3x3 / 2 -> 8x8x8
            conv = tf.nn.conv2d(images, _variable("kernel", [3, 3, 3, 8]), 2, "SAME")
        with tf.compat.v1.variable_scope("grouped"):  # 4 groups: each filter sees 2 channels
            grouped = tf.nn.conv2d(conv, _variable("kernel", [1, 1, 2, 12]), 1, "SAME")
        with tf.compat.v1.variable_scope("norm"):
            normed = layers.batch_norm(grouped, is_training=False, data_format="channels_last")
        with tf.compat.v1.variable_scope("depthwise"):
            depthwise = tf.nn.depthwise_conv2d(normed, _variable("kernel", [3, 3, 12, 1]), [1, 1, 1, 1], "SAME")
        with tf.compat.v1.name_scope("residual"):
            summed = tf.add(depthwise, grouped)
        with tf.compat.v1.variable_scope("dense"):
            pooled = tf.reduce_mean(summed, [1, 2])
            dense = tf.nn.bias_add(tf.matmul(pooled, _variable("kernel", [12, 5])), _variable("bias", [5]))
        del dense
        # Adding a learned tensor is a bias, not a residual: no row.
        tf.add(summed, _variable("shift", [batch, 8, 8, 12]), name="not_a_residual")
        rows = _by_layer(stats.model_stats(graph))
    positions = 8 * 8
    assert list(rows) == ["conv", "grouped", "norm", "depthwise", "residual", "dense"]
    assert (rows["conv"].params, rows["conv"].maccs) == (3 * 3 * 3 * 8, positions * 8 * 3 * 3 * 3)
    assert (rows["grouped"].params, rows["grouped"].maccs) == (2 * 12, positions * 12 * 2)
    assert (rows["norm"].params, rows["norm"].maccs) == (2 * 12, 0)  # gamma+beta; folds away
    assert rows["norm"].kinds == "FusedBatchNormV3"
    assert (rows["depthwise"].params, rows["depthwise"].maccs) == (9 * 12, positions * 12 * 9)
    assert (rows["residual"].params, rows["residual"].maccs, rows["residual"].adds) == (0, 0, positions * 12)
    assert (rows["dense"].params, rows["dense"].maccs) == (12 * 5 + 5, 12 * 5)
    assert rows["dense"].kinds == "MatMul+BiasAdd"
    assert rows["conv"].output_shape == "8x8x8" and rows["dense"].output_shape == "5"
    total = stats.totals(list(rows.values()))
    assert total.params == sum(r.params for r in rows.values()) == 216 + 24 + 24 + 108 + 65


def test_shared_weights_count_once_but_every_use_costs_macs():
    with tf.Graph().as_default() as graph:
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 4])
        with tf.compat.v1.variable_scope("shared"):
            kernel = _variable("kernel", [1, 1, 4, 4])
            twice = tf.nn.conv2d(tf.nn.conv2d(images, kernel, 1, "SAME"), kernel, 1, "SAME")
        del twice
        (row,) = stats.model_stats(graph)
    assert (row.params, row.maccs) == (16, 2 * 8 * 8 * 4 * 4)


def test_training_graph_counts_the_forward_model_only():
    """Gradients, optimizer updates, batch size and BN mode must not change the numbers."""
    with tf.Graph().as_default() as graph:
        images = tf.random.normal([3, 64, 64, 3])
        logits = nets.build_network("sqnxt_1_0_g_23", images, 10, is_training=True)
        loss = tf.reduce_mean(tf.square(logits))
        tf.compat.v1.train.MomentumOptimizer(0.1, 0.9).minimize(loss, tf.compat.v1.train.get_or_create_global_step())
        training = stats.model_stats(graph)
    inference = _network_stats("sqnxt_1_0_g_23", 64, 10)
    assert [(r.layer, r.params, r.maccs, r.adds) for r in training] == [
        (r.layer, r.params, r.maccs, r.adds) for r in inference
    ]


def test_unknown_spatial_size_keeps_params_and_warns(caplog):
    with tf.Graph().as_default() as graph:
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        nets.build_network("sqnxt_1_0_23", images, 10, is_training=False)
        with caplog.at_level(logging.WARNING):
            rows = stats.model_stats(graph)
    known = _network_stats("sqnxt_1_0_23", 64, 10)
    assert stats.totals(rows).params == stats.totals(known).params
    assert stats.totals(rows).maccs == 10 * 128  # only the classifier has a known size
    assert "unknown static shapes" in caplog.text


def _within(value, reference, tolerance):
    return abs(value - reference) <= tolerance * reference


def test_sqnxt_1_0_23_matches_the_paper():
    total = stats.totals(_network_stats("sqnxt_1_0_23"))
    assert _within(total.params, 0.72e6, 0.05), total  # paper: 0.72 M parameters
    assert _within(total.maccs, 282e6, 0.05), total  # paper: 282 M MACs at 227x227


def test_resnet50_matches_the_published_figures():
    total = stats.totals(_network_stats("resnet50"))
    assert _within(total.params, 25.6e6, 0.03), total
    assert _within(total.maccs, 4.1e9, 0.03), total
    # 16 bottlenecks each end in a residual add.
    assert sum(1 for row in _network_stats("resnet50") if row.adds) == 16


def _closed_form(spec, size=227, num_classes=1000):
    """SqueezeNext's cost by hand from the Caffe layer plan, independent of TensorFlow."""
    params = maccs = 0

    def conv(hw, c_in, c_out, kh, kw, groups=1):
        nonlocal params, maccs
        params += kh * kw * c_in // groups * c_out + 2 * c_out  # kernel + BN gamma/beta
        maccs += hw * hw * kh * kw * c_in // groups * c_out

    hw = (size - spec.stem_kernel) // 2 + 1
    conv(hw, 3, 64, spec.stem_kernel, spec.stem_kernel)
    hw = (hw - 3) // 2 + 1
    c_in = 64
    for stage, blocks in enumerate(spec.blocks_per_stage):
        c = int((32, 64, 128, 256)[stage] * spec.width_multiplier)
        for block in range(blocks):
            if block == 0:
                if stage:  # the first block of stages 2-4 halves the resolution
                    hw = (hw - 1) // 2 + 1
                conv(hw, c_in, c, 1, 1)  # projection shortcut
            conv(hw, c_in, c // 2, 1, 1, spec.groups)
            conv(hw, c // 2, c // 4, 1, 1)
            conv(hw, c // 4, c // 2, 3, 1, spec.groups)
            conv(hw, c // 2, c // 2, 1, 3, spec.groups)
            conv(hw, c // 2, c, 1, 1)
            c_in = c
    conv(hw, c_in, 128, 1, 1)
    params += 128 * num_classes + num_classes
    maccs += 128 * num_classes
    return params, maccs


@pytest.mark.parametrize("name", sorted(squeezenext.SPECS))
def test_every_squeezenext_matches_its_layer_plan(name):
    total = stats.totals(_network_stats(name))
    assert (total.params, total.maccs) == _closed_form(squeezenext.SPECS[name])


def test_variants_keep_the_papers_trade_offs():
    totals = {name: stats.totals(_network_stats(name)) for name in squeezenext.SPECS}
    base, grouped = totals["sqnxt_1_0_23"], totals["sqnxt_1_0_g_23"]
    v5, wide, wide_v5 = totals["sqnxt_1_0_23v5"], totals["sqnxt_2_0_23"], totals["sqnxt_2_0_23v5"]
    assert _within(grouped.params, 0.54e6, 0.05)  # the paper's G-SqNxt-23: 0.54 M
    assert grouped.maccs < base.maccs
    # v5 moves blocks to lower resolution and shrinks the stem: fewer MACs, more parameters.
    assert v5.maccs < 0.85 * base.maccs and v5.params > base.params
    assert wide_v5.maccs < wide.maccs and wide_v5.params > wide.params
    assert 2.5 < wide.params / base.params < 4.0


def test_channels_first_counts_the_same():
    for name, stem_shape in (("sqnxt_1_0_23", "64x29x29"), ("resnet50", "64x32x32")):
        last = _network_stats(name, 64, 10)
        first = _network_stats(name, 64, 10, "channels_first")
        assert [(r.layer, r.params, r.maccs, r.adds) for r in first] == [
            (r.layer, r.params, r.maccs, r.adds) for r in last
        ]
        assert first[0].output_shape == stem_shape


def test_csv_has_one_row_per_layer_and_a_total(tmp_path):
    rows = _network_stats("sqnxt_1_0_23")
    path = tmp_path / "new_folder" / "model_stats.csv"
    stats.write_csv(rows, str(path))
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert set(stats.CSV_COLUMNS) <= set(table[0]) and {"layer", "params", "maccs"} <= set(table[0])
    assert [r["layer"] for r in table] == [r.layer for r in rows] + ["total"]
    body, total = table[:-1], table[-1]
    for column in ("params", "maccs", "adds"):
        assert int(total[column]) == sum(int(r[column]) for r in body) > 0
    assert table[0]["layer"] == "sqnxt_1_0_23/conv1" and table[0]["output_shape"] == "111x111x64"


def _run_cli(*args):
    return run_module("estimator.stats", *args, timeout=120)


def test_cli_writes_what_the_library_computes(tmp_path):
    output = tmp_path / "stats.csv"
    result = _run_cli("--model=sqnxt_1_0_23v5", "--image_size=96", "--num_classes=10", f"--output={output}")
    assert result.returncode == 0, result.stderr
    expected = _network_stats("sqnxt_1_0_23v5", 96, 10)
    assert output.read_text() == stats.to_csv(expected)
    assert stats.format_totals(expected) in result.stdout


def test_cli_rejects_an_unknown_model_listing_the_choices():
    result = _run_cli("--model=alexnet")
    assert result.returncode != 0
    assert "sqnxt_1_0_23" in result.stderr and "resnet50" in result.stderr
