"""estimator/finetune.py: what the Scaffold restores, what it leaves alone, and when it stays out."""

import os

import numpy as np
import pytest
import tensorflow as tf

from estimator import finetune, model
from estimator.nets import layers

NET = "tiny"
SOURCE_STEP = 777


def _graph(num_classes):
    """A small network from the real building blocks (so variable names follow the
    nets' conventions: kernel, bn/gamma, bn/moving_*, logits/) + global_step +
    Momentum slots, as model_fn builds them. Small keeps sessions fast."""
    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.variable_scope(NET):
            unit = dict(is_training=True, data_format="channels_last")
            net = layers.conv_bn(tf.zeros([2, 16, 16, 3]), 8, 3, strides=2, name="conv1", **unit)
            net = layers.conv_bn(net, 16, 3, name="conv2", **unit)
            layers.logits(layers.global_average_pool(net, "channels_last"), num_classes)
        network = model.model_variables()
        optimizer = tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)
        trainable = tf.compat.v1.trainable_variables()
        optimizer.apply_gradients([(tf.zeros_like(v), v) for v in trainable], global_step=global_step)
        slots = [optimizer.get_slot(v, "momentum") for v in trainable]
    return graph, network, slots, global_step


def _values(session, variables):
    """One run for all: every distinct fetch list costs the session a new executor."""
    return session.run({v.name: v for v in variables})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 6-class checkpoint at step 777 with non-zero momentum: nothing here may leak into a fine-tune
    except the network's own weights."""
    directory = tmp_path_factory.mktemp("source")
    graph, network, slots, global_step = _graph(6)
    with graph.as_default(), tf.compat.v1.Session() as session:
        changes = (
            [tf.compat.v1.assign(s, tf.ones_like(s)) for s in slots]
            + [tf.compat.v1.assign(v, v + 0.5) for v in network if "moving_variance" in v.name]
            + [tf.compat.v1.assign(global_step, SOURCE_STEP)]
        )
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(changes)
        prefix = tf.compat.v1.train.Saver().save(session, str(directory / "model.ckpt"), global_step=SOURCE_STEP)
        values = _values(session, network)
    return str(directory), prefix, values


def _start(scaffold, checkpoint_dir):
    creator = tf.compat.v1.train.ChiefSessionCreator(scaffold=scaffold, checkpoint_dir=checkpoint_dir)
    return tf.compat.v1.train.MonitoredSession(session_creator=creator)


def test_restores_exactly_the_included_variables(source, tmp_path):
    source_dir, _, source_values = source
    graph, network, slots, global_step = _graph(5)  # another class count: the classifier must stay fresh
    with graph.as_default():
        scaffold = finetune.make_scaffold(network, fine_tune_ckpt=source_dir, exclude="logits", model_dir=str(tmp_path))
        with _start(scaffold, str(tmp_path)) as session:
            restored = _values(session, network)
            step, slot_values = session.run(global_step), session.run(slots)
    included = [n for n in restored if "logits" not in n]
    assert len(included) == len(restored) - 2  # all but logits/kernel and logits/bias
    assert any("moving_variance" in n for n in included) and any("moving_mean" in n for n in included)
    for name in included:
        np.testing.assert_array_equal(restored[name], source_values[name], err_msg=name)
    kernel = f"{NET}/logits/kernel:0"
    assert restored[kernel].shape[-1] == 5 and np.abs(restored[kernel]).max() > 0  # freshly initialised
    assert step == 0  # global_step is not restored
    assert all(np.all(s == 0) for s in slot_values)  # nor the Momentum slots


def test_same_class_count_restores_the_classifier_too(source, tmp_path):
    _, prefix, source_values = source
    graph, network, _, _ = _graph(6)
    with graph.as_default():
        scaffold = finetune.make_scaffold(network, fine_tune_ckpt=prefix, exclude=None, model_dir=str(tmp_path))
        with _start(scaffold, str(tmp_path)) as session:
            kernel = session.run(next(v for v in network if v.name == f"{NET}/logits/kernel:0"))
    np.testing.assert_array_equal(kernel, source_values[f"{NET}/logits/kernel:0"])


def test_own_checkpoint_wins_and_init_fn_never_runs(source, tmp_path):
    source_dir, _, source_values = source
    graph, network, _, global_step = _graph(6)
    with graph.as_default():
        with tf.compat.v1.Session() as session:  # the model_dir's own checkpoint, step 5
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(tf.compat.v1.assign(global_step, 5))
            own_values = _values(session, network)
            tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"), global_step=5)
        # make_scaffold stays out of the way...
        assert finetune.make_scaffold(network, fine_tune_ckpt=source_dir, exclude=None, model_dir=str(tmp_path)) is None
        # ...and even a Scaffold with an init_fn is not run when the session restores a checkpoint.
        scaffold = finetune.make_scaffold(network, fine_tune_ckpt=source_dir, exclude=None, model_dir=None)
        with _start(scaffold, str(tmp_path)) as session:
            values = _values(session, network)
            step = session.run(global_step)
    assert step == 5
    for name, value in values.items():
        np.testing.assert_array_equal(value, own_values[name], err_msg=name)
        assert not np.array_equal(value, source_values[name]) or value.std() == 0, name


def test_shape_mismatch_names_the_variable_and_the_fix(source, tmp_path):
    source_dir, _, _ = source
    graph, network, _, _ = _graph(5)
    with graph.as_default(), pytest.raises(finetune.FineTuneError) as error:
        finetune.make_scaffold(network, fine_tune_ckpt=source_dir, exclude=None, model_dir=str(tmp_path))
    message = str(error.value)
    assert f"{NET}/logits/kernel has shape [16, 6] in the checkpoint but [16, 5] in the model" in message
    assert "--fine_tune_exclude" in message


def test_variable_missing_from_checkpoint_is_named(source, tmp_path):
    source_dir, _, _ = source
    graph, network, _, _ = _graph(6)
    with graph.as_default():
        extra = tf.compat.v1.get_variable("head2/kernel", [3, 3])
        with pytest.raises(finetune.FineTuneError, match=r"head2/kernel is not in the checkpoint"):
            finetune.make_scaffold(network + [extra], fine_tune_ckpt=source_dir, exclude=None, model_dir=str(tmp_path))
        assert (
            finetune.make_scaffold(
                network + [extra], fine_tune_ckpt=source_dir, exclude="^head2/", model_dir=str(tmp_path)
            )
            is not None
        )


def test_missing_checkpoint_and_bad_regex_are_clear_errors(source, tmp_path):
    with pytest.raises(finetune.FineTuneError, match=r"nowhere/model.ckpt-1.index does not exist"):
        finetune.resolve_checkpoint(str(tmp_path / "nowhere" / "model.ckpt-1"))
    with pytest.raises(finetune.FineTuneError, match="holds no checkpoint"):
        finetune.resolve_checkpoint(str(tmp_path))
    source_dir, prefix, _ = source
    assert finetune.resolve_checkpoint(source_dir) == prefix
    assert os.path.basename(prefix) == f"model.ckpt-{SOURCE_STEP}"
    graph, network, _, _ = _graph(6)
    with graph.as_default(), pytest.raises(finetune.FineTuneError, match="not a valid regex"):
        finetune.make_scaffold(network, fine_tune_ckpt=prefix, exclude="logits(", model_dir=str(tmp_path))
    with graph.as_default(), pytest.raises(finetune.FineTuneError, match="excludes every variable"):
        finetune.make_scaffold(network, fine_tune_ckpt=prefix, exclude=".", model_dir=str(tmp_path))
