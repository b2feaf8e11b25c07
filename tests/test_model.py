"""estimator/model.py: loss, schedule, optimizer step, metrics and predictions of the model_fn."""

import numpy as np
import pytest
import tensorflow as tf

from estimator import model

NUM_CLASSES = 6
SIZE = 32
ModeKeys = tf.estimator.ModeKeys


def _params(**overrides):
    base = dict(
        model="sqnxt_1_0_23",
        num_classes=NUM_CLASSES,
        image_size=SIZE,
        batch_size=4,
        train_steps=100,
        weight_decay=1e-3,
        log_every_n_steps=1000,
    )
    return model.make_params(**{**base, **overrides})


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _build(mode, params, model_dir, images=None, labels=None):
    """A graph holding the model_fn's spec; images/labels default to placeholders."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.get_or_create_global_step()
        image_t = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 3]) if images is None else tf.constant(images)
        label_t = tf.compat.v1.placeholder(tf.int32, [None]) if labels is None else tf.constant(labels, tf.int32)
        spec = model.model_fn(
            {"image": image_t}, label_t, mode, params, tf.estimator.RunConfig(model_dir=str(model_dir))
        )
        logits = graph.get_tensor_by_name(f"{params['model']}/logits/BiasAdd:0")
    return graph, spec, image_t, label_t, logits


def _value(tensor):
    return float(tensor.numpy()) if hasattr(tensor, "numpy") else float(tensor)


@pytest.mark.parametrize(
    "schedule,mid,end", [("poly", 0.2 * 0.25, 0.0), ("cosine", 0.1, 0.0), ("step", 0.02, 0.2 * 0.001)]
)
def test_learning_rate_warms_up_then_decays(schedule, mid, end):
    def lr(step):
        return _value(
            model.learning_rate_schedule(
                tf.constant(step, tf.int64),
                base_learning_rate=0.1,
                batch_size=512,
                warmup_steps=10,
                total_steps=110,
                schedule=schedule,
            )
        )

    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(0.1)  # halfway through warmup to 0.1 * 512 / 256
    assert lr(10) == pytest.approx(0.2)
    assert lr(60) == pytest.approx(mid, rel=1e-5)  # halfway through the decay
    assert lr(110) == pytest.approx(end, abs=1e-7)
    assert lr(500) == pytest.approx(end, abs=1e-7)


def test_learning_rate_is_the_flag_up_to_256_images_and_scales_linearly_above():
    def start(batch_size):
        return _value(
            model.learning_rate_schedule(
                tf.constant(0),
                base_learning_rate=0.4,
                batch_size=batch_size,
                warmup_steps=0,
                total_steps=10,
                schedule="poly",
            )
        )

    assert start(32) == pytest.approx(0.4)
    assert start(256) == pytest.approx(0.4)
    assert start(1024) == pytest.approx(1.6)


TRAIN_LABELS = np.array([0, 3, 5, 1])


@pytest.fixture(scope="module")
def train_graph(tmp_path_factory):
    """One TRAIN graph (building its gradients costs seconds), fresh variables per session."""
    params = _params(label_smoothing=0.1, learning_rate=1.0)
    graph, spec, _, _, logits = _build(
        ModeKeys.TRAIN, params, tmp_path_factory.mktemp("model"), _images(4), TRAIN_LABELS
    )
    with graph.as_default():
        cross_entropy = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)[0]
    return graph, spec, logits, cross_entropy, params


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_weight_decay_covers_conv_and_dense_kernels_only(train_graph):
    graph, spec, _, cross_entropy, params = train_graph
    with graph.as_default():
        trainable = tf.compat.v1.trainable_variables()
        decayed = model.decayed_variables(trainable)
        names = {v.name for v in decayed}
        convolutions = [op for op in graph.get_operations() if op.type == "Conv2D" and "gradients" not in op.name]
        assert len(decayed) == len(convolutions) + 1  # every convolution's kernel + the classifier's
        assert f"{params['model']}/logits/kernel:0" in names
        skipped = {v.name for v in trainable} - names
        assert skipped and all(n.endswith(("gamma:0", "beta:0", "bias:0")) for n in skipped)
        l2 = tf.add_n([tf.nn.l2_loss(v) for v in decayed])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            loss, ce, l2_value = session.run([spec.loss, cross_entropy, l2])
    assert loss == pytest.approx(ce + 1e-3 * l2_value, rel=1e-5)


def test_label_smoothing_is_the_smoothed_cross_entropy(train_graph):
    graph, _, logits_t, cross_entropy, _ = train_graph
    with graph.as_default(), tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        ce, logits = session.run([cross_entropy, logits_t])
    targets = np.eye(NUM_CLASSES)[TRAIN_LABELS] * 0.9 + 0.1 / NUM_CLASSES
    assert ce == pytest.approx(-(targets * _log_softmax(logits)).sum(axis=1).mean(), rel=1e-5)


def test_train_step_updates_weights_and_batch_norm_moving_statistics(train_graph):
    graph, spec, _, _, params = train_graph
    with graph.as_default():
        variables = tf.compat.v1.global_variables()
        moving = [v for v in variables if "moving_" in v.name]
        watched = moving + [v for v in variables if v.name == f"{params['model']}/conv1/kernel:0"]
        assert len(moving) >= 2 * 10
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            before = session.run(watched)
            session.run(spec.train_op)
            after = session.run(watched)
            step = session.run(tf.compat.v1.train.get_global_step())
    assert step == 1
    changed = [not np.allclose(b, a) for b, a in zip(before, after)]
    assert all(changed), [v.name for v, c in zip(watched, changed) if not c]


def test_eval_metrics_are_exact_over_uneven_batches(tmp_path):
    graph, spec, images_t, labels_t, logits_t = _build(ModeKeys.EVAL, _params(), tmp_path)
    batches = [(_images(5, seed=1), np.array([0, 1, 2, 3, 4])), (_images(3, seed=2), np.array([5, 5, 0]))]
    with graph.as_default(), tf.compat.v1.Session() as session:
        session.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer()])
        updates = {k: v[1] for k, v in spec.eval_metric_ops.items()}
        values = {k: v[0] for k, v in spec.eval_metric_ops.items()}
        all_logits = []
        for images, labels in batches:
            feed = {images_t: images, labels_t: labels}
            all_logits.append(session.run(logits_t, feed))
            session.run(updates, feed)
        metrics = session.run(values)
    logits = np.concatenate(all_logits)
    labels = np.concatenate([b[1] for b in batches])
    log_probs = _log_softmax(logits)
    rank = (logits > logits[np.arange(8), labels][:, None]).sum(axis=1)
    assert metrics["num_examples"] == 8
    assert metrics["top1"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
    assert metrics["top5"] == pytest.approx(np.mean(rank < 5))
    assert metrics["cross_entropy"] == pytest.approx(-log_probs[np.arange(8), labels].mean(), rel=1e-5)


def test_predict_spec_serves_estimator_predict(tmp_path):
    estimator = tf.estimator.Estimator(model.model_fn, model_dir=str(tmp_path), params=_params())
    images = _images(3, seed=4)
    outputs = list(estimator.predict(lambda: tf.data.Dataset.from_tensor_slices({"image": images}).batch(2)))
    assert len(outputs) == 3
    for out in outputs:
        assert set(out) == {"probabilities", "classes", "top5_classes", "top5_probabilities"}
        assert out["probabilities"].shape == (NUM_CLASSES,)
        assert out["probabilities"].sum() == pytest.approx(1.0, rel=1e-5)
        assert out["classes"] == out["probabilities"].argmax() == out["top5_classes"][0]
        np.testing.assert_allclose(out["top5_probabilities"], out["probabilities"][out["top5_classes"]])
        assert list(out["top5_probabilities"]) == sorted(out["top5_probabilities"], reverse=True)


def test_params_are_checked_before_any_graph_is_built():
    with pytest.raises(ValueError, match=r"unknown --model='sqnxt_9'.*sqnxt_1_0_23.*resnet50"):
        _params(model="sqnxt_9")
    with pytest.raises(ValueError, match="unknown model params"):
        _params(learnin_rate=0.1)
    with pytest.raises(ValueError, match=r"--lr_schedule=exp: choose one of: poly, cosine, step"):
        _params(lr_schedule="exp")
    with pytest.raises(ValueError, match="num_classes"):
        _params(num_classes=None)
    with pytest.raises(ValueError, match=r"^--learning_rate=0: must be > 0$"):
        _params(learning_rate=0)
    with pytest.raises(ValueError, match=r"^--batch_norm_momentum=1.0: must be in \[0, 1\)"):
        _params(batch_norm_momentum=1.0)
    with pytest.raises(ValueError, match=r"^--label_smoothing=-0.1: must be in \[0, 1\)$"):
        _params(label_smoothing=-0.1)
    with pytest.raises(ValueError, match=r"^--data_format=NHWC: choose one of: auto, channels_last, channels_first$"):
        _params(data_format="NHWC")


@pytest.mark.parametrize("size", [1, 8, 31, -5, 0])
@pytest.mark.parametrize("name", ["sqnxt_1_0_23", "resnet50"])
def test_image_size_below_the_networks_minimum_names_the_flag_the_model_and_the_minimum(name, size):
    with pytest.raises(ValueError) as error:
        _params(model=name, image_size=size)
    message = str(error.value)
    assert message.startswith(f"--image_size={size}: {name} needs at least 32 pixels")
    assert "\n" not in message


def test_defaults_resolve_the_networks_size_and_the_devices_data_format():
    params = model.make_params(model="resnet50", num_classes=3)
    assert params["image_size"] == 224
    assert params["data_format"] == ("channels_first" if tf.config.list_physical_devices("GPU") else "channels_last")
    assert _params(image_size=32)["image_size"] == 32
