"""The network registry and builders: shapes, names, batch-norm behaviour, variants."""

import numpy as np
import pytest
import tensorflow as tf

from estimator import nets

ALL_NETS = ["sqnxt_1_0_23", "sqnxt_1_0_g_23", "sqnxt_1_0_23v5", "sqnxt_2_0_23", "sqnxt_2_0_23v5", "resnet50"]
SMALL = 64  # big enough for every stride of every net, small enough to run in ms


def _images(batch, size=SMALL, seed=0):
    # Normalised-looking input: what preprocessing hands the nets.
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def _variables(scope_filter=""):
    return {v.op.name: v for v in tf.compat.v1.global_variables() if scope_filter in v.op.name}


def test_registry_lists_every_network_with_its_published_input_size():
    assert nets.network_names() == ALL_NETS
    assert {name: nets.default_image_size(name) for name in ALL_NETS} == {
        **{name: 227 for name in ALL_NETS if name.startswith("sqnxt")},
        "resnet50": 224,
    }


@pytest.mark.parametrize("name", ["sqnxt_1_0_23", "sqnxt_1_0_23v5", "resnet50"])  # each stem
def test_minimum_image_size_is_the_total_stride(name):
    """At min_image_size the last stage is one pixel; at twice that, two: each of its pixels sees 32 input pixels."""
    minimum = nets.min_image_size(name)
    for size, side in ((minimum, 1), (2 * minimum, 2)):
        with tf.Graph().as_default() as graph:
            nets.build_network(name, tf.compat.v1.placeholder(tf.float32, [1, size, size, 3]), 3, is_training=False)
            last_stage = graph.get_operation_by_name(f"{name}/global_pool").inputs[0]
            assert last_stage.shape.as_list()[1:3] == [side, side], (size, last_stage.shape)


def test_unknown_name_is_rejected_with_the_valid_names():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, SMALL, SMALL, 3])
        with pytest.raises(ValueError) as raised:
            nets.build_network("squeezenext", images, 10, is_training=False)
    assert all(name in str(raised.value) for name in ALL_NETS)
    with pytest.raises(ValueError, match="resnet50"):
        nets.default_image_size("resnet18")


@pytest.mark.parametrize(
    "shape, dtype, num_classes, data_format, message",
    [
        ([SMALL, SMALL, 3], tf.float32, 10, "channels_last", "batch, height, width, channels"),
        ([1, SMALL, SMALL, 3], tf.uint8, 10, "channels_last", "float32"),
        ([1, SMALL, SMALL, 3], tf.float32, 0, "channels_last", "num_classes"),
        ([1, SMALL, SMALL, 3], tf.float32, 10, "NHWC", "channels_first"),
    ],
)
def test_bad_inputs_fail_before_building(shape, dtype, num_classes, data_format, message):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(dtype, shape)
        with pytest.raises(ValueError, match=message):
            nets.build_network("sqnxt_1_0_23", images, num_classes, False, data_format)
        assert not tf.compat.v1.global_variables()


@pytest.mark.parametrize("name", ALL_NETS)
def test_network_runs_and_names_its_variables_for_the_trainer(name):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, SMALL, SMALL, 3])
        logits = nets.build_network(name, images, 7, is_training=False)
        variables = _variables()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            values = session.run(logits, {images: _images(3)})
    assert logits.dtype == tf.float32 and logits.shape.as_list() == [None, 7]
    assert values.shape == (3, 7) and np.isfinite(values).all()
    # The model_fn decays '*kernel' and fine-tuning drops 'logits': both by name.
    assert all(n.startswith(name + "/") for n in variables)
    assert {n for n in variables if "logits" in n} == {f"{name}/logits/kernel", f"{name}/logits/bias"}
    suffixes = {n.rsplit("/", 1)[1] for n in variables}
    assert suffixes == {"kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}
    assert not tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES)


def test_variables_are_trainable_except_batch_norm_statistics():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, SMALL, SMALL, 3])
        nets.build_network("sqnxt_1_0_23", images, 5, is_training=True)
        trainable = {v.op.name for v in tf.compat.v1.trainable_variables()}
        frozen = set(_variables()) - trainable
    assert frozen and all(n.endswith(("moving_mean", "moving_variance")) for n in frozen)
    assert not any(n.endswith(("moving_mean", "moving_variance")) for n in trainable)


def test_scopes_follow_the_architecture():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 227, 227, 3])
        nets.build_network("sqnxt_1_0_23", images, 1000, is_training=False)
        nets.build_network("resnet50", images, 1000, is_training=False)
        shapes = {n: v.shape.as_list() for n, v in _variables().items()}
    # First SqueezeNext block: 64 stem channels squeezed to C/2 = 16, C/4 = 8, back to C = 32.
    assert shapes["sqnxt_1_0_23/conv1/kernel"] == [7, 7, 3, 64]
    assert shapes["sqnxt_1_0_23/stage1/block1/reduce1/kernel"] == [1, 1, 64, 16]
    assert shapes["sqnxt_1_0_23/stage1/block1/reduce2/kernel"] == [1, 1, 16, 8]
    assert shapes["sqnxt_1_0_23/stage1/block1/sep3x1/kernel"] == [3, 1, 8, 16]
    assert shapes["sqnxt_1_0_23/stage1/block1/sep1x3/kernel"] == [1, 3, 16, 16]
    assert shapes["sqnxt_1_0_23/stage1/block1/expand/kernel"] == [1, 1, 16, 32]
    assert shapes["sqnxt_1_0_23/stage1/block1/shortcut/kernel"] == [1, 1, 64, 32]
    assert "sqnxt_1_0_23/stage1/block2/shortcut/kernel" not in shapes  # identity shortcut
    assert shapes["sqnxt_1_0_23/stage1/block1/reduce1/bn/gamma"] == [16]
    assert shapes["sqnxt_1_0_23/conv_head/kernel"] == [1, 1, 256, 128]
    assert shapes["sqnxt_1_0_23/logits/kernel"] == [128, 1000]
    blocks = {n.split("/")[1] + "/" + n.split("/")[2] for n in shapes if n.startswith("sqnxt_1_0_23/stage")}
    assert [sum(b.startswith(f"stage{s}/") for b in blocks) for s in (1, 2, 3, 4)] == [6, 6, 8, 1]
    assert shapes["resnet50/stage2/block1/conv2/kernel"] == [3, 3, 128, 128]
    assert shapes["resnet50/stage4/block3/conv3/kernel"] == [1, 1, 512, 2048]
    assert shapes["resnet50/logits/kernel"] == [2048, 1000]


def test_variants_differ_as_the_paper_describes():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 227, 227, 3])
        for name in ALL_NETS[:-1]:
            nets.build_network(name, images, 1000, is_training=False)
        shapes = {n: v.shape.as_list() for n, v in _variables().items()}
        graph = tf.compat.v1.get_default_graph()
        stage1_out = graph.get_tensor_by_name("sqnxt_1_0_23v5/stage1/block2/Relu:0")
    # G-SqNxt: two groups in the first squeeze and the separable convolutions only.
    assert shapes["sqnxt_1_0_g_23/stage1/block1/reduce1/kernel"] == [1, 1, 32, 16]
    assert shapes["sqnxt_1_0_g_23/stage1/block1/sep3x1/kernel"] == [3, 1, 4, 16]
    assert shapes["sqnxt_1_0_g_23/stage1/block1/sep1x3/kernel"] == [1, 3, 8, 16]
    assert shapes["sqnxt_1_0_g_23/stage1/block1/reduce2/kernel"] == [1, 1, 16, 8]
    assert shapes["sqnxt_1_0_g_23/stage1/block1/expand/kernel"] == [1, 1, 16, 32]
    # v5: 5x5 stem, blocks [2, 4, 14, 1]; 2.0: stages twice as wide, stem and head not.
    assert shapes["sqnxt_1_0_23v5/conv1/kernel"] == [5, 5, 3, 64]
    assert "sqnxt_1_0_23v5/stage3/block14/expand/kernel" in shapes
    assert "sqnxt_1_0_23v5/stage1/block3/expand/kernel" not in shapes
    assert stage1_out.shape.as_list() == [None, 55, 55, 32]
    assert shapes["sqnxt_2_0_23/stage1/block1/expand/kernel"] == [1, 1, 32, 64]
    assert shapes["sqnxt_2_0_23/stage4/block1/expand/kernel"] == [1, 1, 256, 512]
    assert shapes["sqnxt_2_0_23/conv1/kernel"] == [7, 7, 3, 64]
    assert shapes["sqnxt_2_0_23v5/conv_head/kernel"] == [1, 1, 512, 128]


def test_grouped_convolution_really_separates_the_groups():
    """Output channels of group 0 must not depend on input channels of group 1."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, SMALL, SMALL, 3])
        nets.build_network("sqnxt_1_0_g_23", images, 5, is_training=False)
        graph = tf.compat.v1.get_default_graph()
        conv_in = graph.get_operation_by_name("sqnxt_1_0_g_23/stage1/block1/reduce1/Conv2D")
        features, conv_out = conv_in.inputs[0], conv_in.outputs[0]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            base = np.random.default_rng(1).normal(size=[1] + features.shape.as_list()[1:])
            changed = base.copy()
            changed[..., 32:] += 5.0  # only the second group's inputs
            out_base, out_changed = (session.run(conv_out, {features: x}) for x in (base, changed))
    np.testing.assert_array_equal(out_base[..., :8], out_changed[..., :8])
    assert not np.allclose(out_base[..., 8:], out_changed[..., 8:])


def test_resnet_is_v1_5_with_the_stride_in_the_3x3_convolution():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 224, 224, 3])
        nets.build_network("resnet50", images, 1000, is_training=False)
        graph = tf.compat.v1.get_default_graph()
        strides = {
            name: graph.get_operation_by_name(f"resnet50/stage2/block1/{name}/Conv2D").get_attr("strides")
            for name in ("conv1", "conv2", "conv3", "shortcut")
        }
        stage_shapes = [graph.get_tensor_by_name(f"resnet50/stage{s}/block1/Relu:0").shape[1] for s in (1, 2, 3, 4)]
    assert strides == {"conv1": [1, 1, 1, 1], "conv2": [1, 2, 2, 1], "conv3": [1, 1, 1, 1], "shortcut": [1, 2, 2, 1]}
    assert stage_shapes == [56, 28, 14, 7]


def test_batch_norm_trains_on_batch_statistics_and_infers_on_moving_averages():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, SMALL, SMALL, 3])
        train_logits = nets.build_network("sqnxt_1_0_23", images, 5, is_training=True)
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=True):
            eval_logits = nets.build_network("sqnxt_1_0_23", images, 5, is_training=False)
        assert len(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)) == len(updates), (
            "inference must not queue batch-norm updates"
        )
        stats = [_variables()[f"sqnxt_1_0_23/conv1/bn/{n}"] for n in ("moving_mean", "moving_variance")]
        batch = _images(4) * 2.0 + 3.0
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            mean0, var0 = session.run(stats)
            train0, eval0 = session.run([train_logits, eval_logits], {images: batch})
            assert np.array_equal(session.run(stats[0]), mean0), "forward alone updated stats"
            for _ in range(3):
                session.run(updates, {images: batch})
            mean1, var1 = session.run(stats)
            train1, eval1 = session.run([train_logits, eval_logits], {images: batch})
            eval_single = session.run(eval_logits, {images: batch[:1]})
            train_single = session.run(train_logits, {images: batch[:1]})
    assert len(updates) == 2 * 111  # moving mean and variance of every batch norm
    assert not np.allclose(mean0, mean1) and not np.allclose(var0, var1)
    np.testing.assert_allclose(train0, train1, rtol=1e-5)  # training ignores the averages
    assert not np.allclose(eval0, eval1)  # inference follows them
    np.testing.assert_allclose(eval_single[0], eval1[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(train_single[0], train1[0])  # batch statistics couple examples


@pytest.mark.parametrize("name", ["sqnxt_1_0_g_23", "resnet50"])
def test_channels_first_builds_the_same_variables(name):
    shapes = {}
    for data_format in ("channels_last", "channels_first"):
        with tf.Graph().as_default():
            images = tf.compat.v1.placeholder(tf.float32, [2, SMALL, SMALL, 3])
            logits = nets.build_network(name, images, 5, is_training=True, data_format=data_format)
            assert logits.shape.as_list() == [2, 5]
            shapes[data_format] = {n: v.shape.as_list() for n, v in _variables().items()}
            formats = {
                op.get_attr("data_format")
                for op in tf.compat.v1.get_default_graph().get_operations()
                if op.type == "Conv2D"
            }
            assert formats == {b"NCHW" if data_format == "channels_first" else b"NHWC"}
    assert shapes["channels_last"] == shapes["channels_first"]
