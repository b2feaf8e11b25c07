"""estimator/train.py end to end: learning, resuming, fine-tuning, distribution, and the CLI's errors."""

import csv
import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from records_util import flip_byte, write_records_dir

from estimator import stats, train
from records import manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 6
STEPS = 120
# Small, fast runs: 32 px images, batch 16, checkpoints only at the start and the end, no graph.pbtxt.
# Batch-norm momentum 0.9 (not ImageNet's 0.997) so the moving statistics reach the data in 120 steps.
QUICK = dict(
    image_size=32,
    batch_size=16,
    learning_rate=0.2,
    warmup_steps=20,
    log_every_n_steps=40,
    save_summary_steps=40,
    shuffle_buffer=200,
    save_graph_def=False,
    batch_norm_momentum=0.9,
)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    write_records_dir(out, num_classes=NUM_CLASSES, train_per_class=24, validation_per_class=6)
    return str(out)


@pytest.fixture(scope="module")
def trained(records_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("model"))
    metrics = train.run(train.TrainOptions(records_dir=records_dir, model_dir=model_dir, train_steps=STEPS, **QUICK))
    return model_dir, metrics


def _scalars(model_dir, tag):
    values = {}
    for path in glob.glob(os.path.join(model_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return [values[step] for step in sorted(values)]


@pytest.mark.slow
def test_training_learns_and_leaves_a_complete_model_dir(trained, records_dir):
    model_dir, metrics = trained
    assert metrics["global_step"] == STEPS
    assert metrics["num_examples"] == 6 * NUM_CLASSES  # every validation image, once
    assert metrics["top1"] >= 0.6  # chance is 1/6
    assert metrics["loss"] < 0.6 * np.log(NUM_CLASSES)
    assert json.load(open(os.path.join(model_dir, train.METRICS_NAME))) == metrics
    cross_entropy = _scalars(model_dir, "cross_entropy")
    assert len(cross_entropy) >= 3 and np.mean(cross_entropy[-2:]) < cross_entropy[0] - 0.3
    assert train.read_train_config(model_dir) == {
        "model": "sqnxt_1_0_23",
        "image_size": 32,
        "num_classes": NUM_CLASSES,
        "label_offset": 1,
        "records_dir": records_dir,
    }
    for name in (manifest.MANIFEST_NAME, manifest.SYNSETS_NAME):
        assert open(os.path.join(model_dir, name)).read() == open(os.path.join(records_dir, name)).read()
    assert os.path.exists(os.path.join(model_dir, "model_stats.csv"))
    assert tf.train.latest_checkpoint(model_dir).endswith(f"model.ckpt-{STEPS}")


@pytest.mark.slow
def test_rerun_resumes_from_the_global_step(trained, records_dir):
    model_dir, first = trained
    # The fine-tune flag points nowhere: a model_dir with its own checkpoint must not even look.
    metrics = train.run(
        train.TrainOptions(
            records_dir=records_dir,
            model_dir=model_dir,
            train_steps=STEPS + 5,
            fine_tune_ckpt=os.path.join(model_dir, "missing"),
            **QUICK,
        )
    )
    assert metrics["global_step"] == STEPS + 5
    assert metrics["top1"] >= first["top1"] - 0.2  # continued from the trained weights, not from scratch
    # Already at max_steps: nothing to train, the final evaluation still runs and is written.
    again = train.run(train.TrainOptions(records_dir=records_dir, model_dir=model_dir, train_steps=STEPS + 5, **QUICK))
    assert again == pytest.approx(metrics)


@pytest.mark.slow
def test_fine_tune_starts_from_the_checkpoint_with_a_fresh_classifier(trained, records_dir, tmp_path):
    source_dir, _ = trained
    options = dict(QUICK, learning_rate=1e-7, warmup_steps=0)
    metrics = train.run(
        train.TrainOptions(
            records_dir=records_dir,
            model_dir=str(tmp_path),
            train_steps=3,
            fine_tune_ckpt=source_dir,
            fine_tune_exclude="logits",
            **options,
        )
    )
    assert metrics["global_step"] == 3  # a new run, not the source's step
    source = tf.train.load_checkpoint(source_dir)
    tuned = tf.train.load_checkpoint(str(tmp_path))
    kernel = "sqnxt_1_0_23/stage2/block1/expand/kernel"
    np.testing.assert_allclose(tuned.get_tensor(kernel), source.get_tensor(kernel), atol=1e-5)
    classifier = "sqnxt_1_0_23/logits/kernel"
    assert np.abs(tuned.get_tensor(classifier) - source.get_tensor(classifier)).max() > 1e-2


def test_clear_errors_before_any_graph_is_built(records_dir, tmp_path):
    def run(**overrides):
        options = dict(records_dir=records_dir, model_dir=str(tmp_path / "model"), train_steps=1, **QUICK)
        return train.run(train.TrainOptions(**{**options, **overrides}))

    with pytest.raises(FileNotFoundError, match="make records"):
        run(records_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown --model='squeezenet'.*sqnxt_1_0_23"):
        run(model="squeezenet")
    with pytest.raises(ValueError, match="not both"):
        run(train_epochs=2)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        run(distribute="multi_worker")
    with pytest.raises(Exception, match=r"--fine_tune_ckpt=.*nowhere.*does not exist"):
        run(fine_tune_ckpt=str(tmp_path / "nowhere"))
    # A model_dir that holds another model cannot be resumed with these flags.
    os.makedirs(tmp_path / "other")
    (tmp_path / "other" / train.TRAIN_CONFIG_NAME).write_text(
        json.dumps({"model": "resnet50", "image_size": 32, "num_classes": NUM_CLASSES, "label_offset": 1})
    )
    with pytest.raises(ValueError, match=r"different model \(model: 'resnet50' there, 'sqnxt_1_0_23' now\)"):
        run(model_dir=str(tmp_path / "other"))


def test_train_steps_from_epochs():
    assert train.resolve_train_steps(None, 2.5, 1000, 64) == 40
    assert train.resolve_train_steps(7, None, 1000, 64) == 7
    assert train.resolve_train_steps(None, None, 640, 64) == 10 * train.DEFAULT_TRAIN_EPOCHS


@pytest.mark.slow
def test_corrupt_shard_is_named_with_the_fix(tmp_path):
    records = tmp_path / "records"
    write_records_dir(records, num_classes=3, train_per_class=8, validation_per_class=2, train_shards=3)
    flip_byte(str(records / "train-00001-of-00003"))
    with pytest.raises(train.CorruptShardsError, match=r"train-00001-of-00003 \(.*corrupted record.*make records"):
        train.run(
            train.TrainOptions(records_dir=str(records), model_dir=str(tmp_path / "model"), train_steps=5, **QUICK)
        )


def _cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "estimator.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    result = _cli(f"--records_dir={tmp_path}", f"--model_dir={tmp_path / 'model'}")
    assert result.returncode == 1
    assert "error:" in result.stderr and "make records" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices(records_dir, tmp_path):
    model_dir = tmp_path / "model"
    result = _cli(
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        "--distribute=mirrored",
        "--cpu_devices=2",
        "--train_steps=1",
        "--batch_size=8",
        "--image_size=32",
        "--nosave_graph_def",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "over 2 replica(s)" in result.stderr
    assert "device:CPU:0', '/job:localhost/replica:0/task:0/device:CPU:1')" in result.stderr
    metrics = json.load(open(model_dir / train.METRICS_NAME))
    assert metrics["global_step"] == 1 and metrics["num_examples"] == 6 * NUM_CLASSES
    # Model statistics count one replica's model, not one per device.
    with open(model_dir / "model_stats.csv") as f:
        total = next(row for row in csv.DictReader(f) if row["layer"] == "total")
    single = stats.totals(stats.network_stats("sqnxt_1_0_23", 32, NUM_CLASSES))
    assert int(total["params"]) == single.params


@pytest.mark.slow
def test_multi_worker_from_tf_config(records_dir, tmp_path):
    with socket.socket() as probe:  # a free local port for the one-worker cluster
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    tf_config = {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}}
    model_dir = tmp_path / "model"
    result = _cli(
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        "--distribute=multi_worker",
        "--train_steps=1",
        "--batch_size=8",
        "--image_size=32",
        "--nosave_graph_def",
        env={"TF_CONFIG": json.dumps(tf_config)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Running `train_and_evaluate` with Distribute Coordinator" in result.stderr
    metrics = json.load(open(model_dir / train.METRICS_NAME))
    assert metrics["global_step"] == 1 and metrics["num_examples"] == 6 * NUM_CLASSES
