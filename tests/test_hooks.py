"""The trainer's SessionRunHooks, driven by real MonitoredSession loops."""

import csv
import glob
import logging
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from estimator import hooks, stats
from estimator.nets import layers


def _train_op(loss):
    global_step = tf.compat.v1.train.get_or_create_global_step()
    with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):
        return tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(loss, global_step)


def _small_training_graph():
    """Two conv units with a residual add and a classifier, like the real nets in miniature."""
    images = tf.random.normal([2, 16, 16, 3], seed=1)
    unit = dict(is_training=True, data_format="channels_last")
    with tf.compat.v1.variable_scope("tiny"):
        net = layers.conv_bn(images, 8, 3, name="conv1", **unit)
        net = tf.add(net, layers.conv_bn(net, 8, 3, name="conv2", **unit), name="residual")
        logits = layers.logits(layers.global_average_pool(net, "channels_last"), 4)
    return _train_op(tf.reduce_mean(tf.square(logits)))


def test_model_stats_hook_writes_the_graphs_stats_on_the_chief(tmp_path, caplog):
    model_dir = tmp_path / "model"
    with tf.Graph().as_default() as graph:
        train_op = _small_training_graph()
        hook = hooks.ModelStats(model_dir=str(model_dir), is_chief=True)
        with caplog.at_level(logging.INFO):
            with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
                session.run(train_op)
        expected = stats.model_stats(graph)
    written = (model_dir / "model_stats.csv").read_text()
    assert written == stats.to_csv(expected)
    with open(model_dir / "model_stats.csv", newline="") as handle:
        table = {row["layer"]: row for row in csv.DictReader(handle)}
    assert list(table) == ["tiny/conv1", "tiny/conv2", "tiny", "tiny/logits", "total"]
    assert int(table["tiny/conv1"]["params"]) == 3 * 3 * 3 * 8 + 2 * 8
    assert int(table["tiny/conv2"]["maccs"]) == 16 * 16 * 8 * 3 * 3 * 8
    assert int(table["tiny"]["adds"]) == 16 * 16 * 8
    assert int(table["total"]["params"]) == (3 * 3 * 3 * 8 + 16) + (3 * 3 * 8 * 8 + 16) + 8 * 4 + 4
    assert stats.format_totals(expected) in caplog.text


def test_model_stats_hook_stays_silent_on_workers(tmp_path):
    with tf.Graph().as_default():
        train_op = _small_training_graph()
        hook = hooks.ModelStats(model_dir=str(tmp_path), is_chief=False)
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
            session.run(train_op)
    assert hook.stats is None and not os.listdir(tmp_path)


def test_model_stats_hook_reads_model_dir_and_chief_from_run_config(tmp_path):
    hook = hooks.ModelStats(config=tf.estimator.RunConfig(model_dir=str(tmp_path)))
    assert hook.path == os.path.join(str(tmp_path), "model_stats.csv") and hook.is_chief
    with pytest.raises(ValueError, match="model_dir"):
        hooks.ModelStats()


def _slow_step_graph(step_secs):
    """A one-variable model whose every step takes at least `step_secs`."""
    weight = tf.compat.v1.get_variable("w", [], initializer=tf.constant_initializer(5.0))
    loss = tf.square(weight - 3.0, name="loss")

    def pause():
        time.sleep(step_secs)
        return np.float32(0)

    with tf.control_dependencies([tf.numpy_function(pause, [], tf.float32)]):
        return loss, _train_op(loss)


def test_examples_per_second_logs_rate_loss_lr_and_eta_and_writes_a_summary(tmp_path, caplog):
    batch_size, step_secs, total_steps = 8, 0.02, 11
    with tf.Graph().as_default():
        loss, train_op = _slow_step_graph(step_secs)
        learning_rate = tf.constant(0.0125, name="learning_rate")
        hook = hooks.ExamplesPerSecond(
            batch_size,
            every_n_steps=3,
            total_steps=total_steps,
            loss=loss,
            learning_rate=learning_rate,
            output_dir=str(tmp_path),
        )
        with caplog.at_level(logging.INFO):
            with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
                for _ in range(10):
                    session.run(train_op)
                eta_after_10 = hook.last_eta_secs
                session.run(train_op)
    # A step cannot be faster than its sleep, so the rate has a hard ceiling.
    assert 0 < hook.last_images_per_sec <= batch_size / step_secs * 1.05
    assert step_secs * 0.95 <= eta_after_10  # one step left after step 10
    logged = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    # The clock starts with the session: steps 3, 6, 9, and the last step.
    assert [line.split(":")[0] for line in logged] == ["step 3/11", "step 6/11", "step 9/11", "step 11/11"]
    assert logged[0].startswith("step 3/11: loss ") and ", lr 0.0125, " in logged[0] and "ETA 0:00:0" in logged[0]
    assert logged[-1].endswith("ETA 0:00:00")

    events = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert events
    rates = {
        event.step: value.simple_value
        for path in events
        for event in tf.compat.v1.train.summary_iterator(path)
        for value in event.summary.value
        if value.tag == hooks.IMAGES_PER_SEC_TAG
    }
    assert sorted(rates) == [3, 6, 9, 11]
    assert all(0 < rate <= batch_size / step_secs * 1.05 for rate in rates.values())


def test_examples_per_second_can_trigger_on_seconds_without_loss_or_eta(caplog):
    with tf.Graph().as_default():
        _, train_op = _slow_step_graph(0.02)
        hook = hooks.ExamplesPerSecond(4, every_n_secs=0.05)
        with caplog.at_level(logging.INFO):
            with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
                for _ in range(8):
                    session.run(train_op)
    logged = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert logged and not any("ETA" in line or "loss" in line or "lr" in line for line in logged)
    assert hook.last_images_per_sec > 0 and hook.last_eta_secs is None


def test_after_session_created_calls_back_once_a_session_exists(tmp_path):
    calls = []
    with tf.Graph().as_default():
        _, train_op = _slow_step_graph(0)
        hook = hooks.AfterSessionCreated(lambda: calls.append(tf.compat.v1.get_default_graph().finalized))
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
            assert calls == [True]  # after the graph was built and finalised
            session.run(train_op)
            session.run(train_op)
    assert calls == [True]


def test_examples_per_second_needs_a_global_step_and_a_schedule():
    with tf.Graph().as_default():
        hook = hooks.ExamplesPerSecond(8)
        with pytest.raises(RuntimeError, match="global step"):
            hook.begin()
    with pytest.raises(ValueError, match="every_n_steps or every_n_secs"):
        hooks.ExamplesPerSecond(8, every_n_steps=None)
    with pytest.raises(ValueError, match="batch_size"):
        hooks.ExamplesPerSecond(0)
