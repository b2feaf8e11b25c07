"""estimator/train.py end to end: learning, resuming, fine-tuning, distribution, and the CLI's errors."""

import csv
import dataclasses
import glob
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from pipeline_util import REPO_ROOT, run_module
from records_util import cut_last_record, flip_byte, make_records, replace_split, write_records_dir

from estimator import finetune, predict, stats, train
from estimator import model_dir as model_dir_lib
from records import manifest

NUM_CLASSES = 6
STEPS = 120
# Small, fast runs: 32 px images, batch 16, checkpoints only at the start and the end, no graph.pbtxt.
# The learning rate, its warmup and batch norm keep their defaults: they must learn in 120 steps.
QUICK = dict(
    image_size=32,
    batch_size=16,
    log_every_n_steps=40,
    save_summary_steps=40,
    shuffle_buffer=200,
    save_graph_def=False,
)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    write_records_dir(out, num_classes=NUM_CLASSES, train_per_class=24, validation_per_class=6)
    return str(out)


def _options(records_dir, model_dir, **overrides):
    return train.TrainOptions(
        **{**dict(records_dir=records_dir, model_dir=model_dir, train_steps=1), **QUICK, **overrides}
    )


@pytest.fixture(scope="module")
def trained(records_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("model"))
    metrics = train.run(_options(records_dir, model_dir, train_steps=STEPS))
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
    assert json.load(open(os.path.join(model_dir, model_dir_lib.METRICS_NAME))) == metrics
    cross_entropy = _scalars(model_dir, "cross_entropy")
    assert len(cross_entropy) >= 3 and np.mean(cross_entropy[-2:]) < cross_entropy[0] - 0.3
    assert model_dir_lib.read_train_config(model_dir) == {
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
        _options(records_dir, model_dir, train_steps=STEPS + 5, fine_tune_ckpt=os.path.join(model_dir, "missing"))
    )
    assert metrics["global_step"] == STEPS + 5
    assert metrics["top1"] >= first["top1"] - 0.2  # continued from the trained weights, not from scratch
    # Already at max_steps: nothing to train, the final evaluation still runs and is written.
    again = train.run(_options(records_dir, model_dir, train_steps=STEPS + 5))
    assert again == pytest.approx(metrics)


NEW_CLASSES = ("daisy", "red rose", "sunflower", "tulip")  # an image-folder dataset's folder names


@pytest.mark.slow
def test_fine_tune_onto_other_classes_then_predict_names_them(trained, tmp_path):
    """N classes -> M classes: refused without --fine_tune_exclude (and nothing written),
    then the body is restored, the classifier starts fresh, and predict names the new classes."""
    source_dir, _ = trained
    new_records = tmp_path / "flowers"
    write_records_dir(new_records, num_classes=len(NEW_CLASSES), train_per_class=4, class_names=NEW_CLASSES)
    model_dir = tmp_path / "model"
    options = dict(train_steps=3, fine_tune_ckpt=source_dir)
    with pytest.raises(finetune.FineTuneError, match=r"logits/kernel has shape \[128, 6\] .* \[128, 4\].*logits"):
        train.run(_options(str(new_records), str(model_dir), **options))
    assert not (model_dir / model_dir_lib.TRAIN_CONFIG_NAME).exists()

    # The corrected rerun, in the same model_dir; a tiny rate keeps the restored weights comparable.
    metrics = train.run(
        _options(str(new_records), str(model_dir), **options, fine_tune_exclude="logits", learning_rate=1e-7)
    )
    assert metrics["global_step"] == 3  # a new run, not the source's step
    source, tuned = tf.train.load_checkpoint(source_dir), tf.train.load_checkpoint(str(model_dir))
    kernel = "sqnxt_1_0_23/stage2/block1/expand/kernel"
    np.testing.assert_allclose(tuned.get_tensor(kernel), source.get_tensor(kernel), atol=1e-5)
    assert tuned.get_tensor("sqnxt_1_0_23/logits/kernel").shape == (128, len(NEW_CLASSES))

    predictor = predict.load_predictor(str(model_dir))
    (result,) = predict.predict_arrays(predictor, [np.full((40, 40, 3), 200, np.uint8)])
    assert sorted(top.synset for top in result.top5) == sorted(NEW_CLASSES)
    assert all(top.text == top.synset for top in result.top5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=1), r"--image_size=1: sqnxt_1_0_23 needs at least 32 pixels"),
        (dict(image_size=8), r"--image_size=8: sqnxt_1_0_23 needs at least 32 pixels"),
        (dict(image_size=-5, model="resnet50"), r"--image_size=-5: resnet50 needs at least 32 pixels"),
        (dict(batch_size=0), r"--batch_size=0: must be >= 1"),
        (dict(eval_batch_size=-1), r"--eval_batch_size=-1: must be >= 1"),
        (dict(train_steps=0), r"--train_steps=0: must be >= 1"),
        (dict(train_steps=None, train_epochs=-1.0), r"--train_epochs=-1.0: must be > 0"),
        (dict(train_epochs=2), r"--train_epochs=2: give --train_steps or --train_epochs, not both"),
        (dict(warmup_steps=5), r"--warmup_steps=5: must be below the run's 1 steps"),
        (dict(learning_rate=-0.1), r"--learning_rate=-0.1: must be > 0"),
        (dict(batch_norm_momentum=1.5), r"--batch_norm_momentum=1.5: must be in \[0, 1\)"),
        (dict(eval_every_secs=0), r"--eval_every_secs=0: must be >= 1"),
        (dict(shuffle_buffer=0), r"--shuffle_buffer=0: must be >= 1"),
        (dict(cpu_devices=2), r"--cpu_devices=2: only applies to --distribute=mirrored"),
        (dict(distribute="multi_worker", save_summary_steps=0), r"--save_summary_steps=0: .*multi_worker needs"),
        (dict(fine_tune_exclude="logits"), r"--fine_tune_exclude=logits: only applies with --fine_tune_ckpt"),
        (dict(model="squeezenet"), r"unknown --model='squeezenet'.*sqnxt_1_0_23"),
        (dict(distribute="multi_worker"), r"--distribute=multi_worker reads the cluster from the TF_CONFIG .* not set"),
    ],
)
def test_bad_flags_are_refused_in_one_line_before_anything_is_written(
    records_dir, tmp_path, monkeypatch, overrides, message
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    model_dir = tmp_path / "model"
    with pytest.raises(ValueError, match=f"^{message}") as error:
        train.run(_options(records_dir, str(model_dir), **overrides))
    assert "\n" not in str(error.value)
    assert not model_dir.exists()


def test_records_and_model_dir_problems_are_refused_before_anything_is_written(records_dir, tmp_path):
    model_dir = tmp_path / "model"
    with pytest.raises(FileNotFoundError, match="make records"):
        train.run(_options(str(tmp_path), str(model_dir)))
    with pytest.raises(finetune.FineTuneError, match=r"--fine_tune_ckpt=.*nowhere.*does not exist"):
        train.run(_options(records_dir, str(model_dir), fine_tune_ckpt=str(tmp_path / "nowhere")))
    # A validation shard cut short exactly at a record boundary reads as a valid, smaller split.
    short = tmp_path / "short"
    write_records_dir(short, num_classes=3, train_per_class=4, validation_per_class=4)
    cut_last_record(str(short / "validation-00000-of-00002"))
    with pytest.raises(ValueError, match=r"validation-00000-of-00002: .* bytes, but .* were written .*cut short"):
        train.run(_options(str(short), str(model_dir)))
    assert not model_dir.exists()
    # A model_dir that holds another model cannot be resumed with these flags.
    other = tmp_path / "other"
    other.mkdir()
    (other / model_dir_lib.TRAIN_CONFIG_NAME).write_text(
        json.dumps({"model": "resnet50", "image_size": 32, "num_classes": NUM_CLASSES, "label_offset": 1})
    )
    with pytest.raises(ValueError, match=r"different model \(model: 'resnet50' there, 'sqnxt_1_0_23' now\)"):
        train.run(_options(records_dir, str(other)))


def test_train_steps_from_epochs():
    assert train.resolve_train_steps(None, 2.5, 1000, 64) == 40
    assert train.resolve_train_steps(7, None, 1000, 64) == 7
    assert train.resolve_train_steps(None, None, 640, 64) == 10 * train.DEFAULT_TRAIN_EPOCHS


@pytest.mark.parametrize(
    "tf_config, role",
    [
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}, ("chief 0", True)),
        (
            {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}},
            ("worker 0", False),
        ),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, ("worker 0", True)),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, ("worker 1", False)),
    ],
)
def test_the_chief_is_read_from_tf_config(monkeypatch, tf_config, role):
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert train.cluster_role("multi_worker") == train.Role(*role)
    assert train.cluster_role("none") == train.Role("local", True)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not a cluster description"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not a cluster description"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "runs 'chief' and 'worker' tasks only"),
    ],
)
def test_a_bad_tf_config_is_named(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        train.cluster_role("multi_worker")


@pytest.mark.slow
def test_corrupt_shard_is_named_with_the_fix(tmp_path):
    records = tmp_path / "records"
    write_records_dir(records, num_classes=3, train_per_class=8, validation_per_class=2, train_shards=3)
    flip_byte(str(records / "train-00001-of-00003"))
    with pytest.raises(
        train.CorruptShardsError, match=r"train-00001-of-00003 \(record 7: data CRC mismatch\).*make records"
    ):
        train.run(_options(str(records), str(tmp_path / "model"), train_steps=5))


def _cli(*args, env=None, timeout=600):
    return run_module("estimator.train", *args, env={**os.environ, **(env or {})}, timeout=timeout)


def test_cli_reports_bad_input_in_one_line_without_a_traceback(records_dir, tmp_path):
    result = _cli(f"--records_dir={records_dir}", f"--model_dir={tmp_path / 'model'}", "--image_size=8")
    assert result.returncode == 1
    assert result.stderr == (
        "error: --image_size=8: sqnxt_1_0_23 needs at least 32 pixels (it downsamples its input 32x); "
        "pass --image_size >= 32, or leave it out for the published 227\n"
    )
    assert not (tmp_path / "model").exists()


QUICK_FLAGS = ["--image_size=32", "--batch_size=8", "--nosave_graph_def", "--shuffle_buffer=64"]


@pytest.mark.slow
def test_cli_console_is_a_header_progress_evaluation_and_where_things_went(tmp_path):
    records_dir = tmp_path / "records"
    write_records_dir(records_dir, num_classes=3, train_per_class=8, validation_per_class=4, validation_shards=1)
    validation = make_records("validation", 3, 4, seed=0)
    validation[5] = dataclasses.replace(validation[5], encoded=validation[5].encoded[:200] + b"\0" * 300)
    replace_split(records_dir, "validation", validation, 1)  # one image TensorFlow cannot decode
    model_dir = tmp_path / "model"
    result = _cli(
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        "--train_steps=4",
        "--log_every_n_steps=2",
        *QUICK_FLAGS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
    # Our lines, without their time; libjpeg prints its own complaint about the broken image, untimed.
    lines = [line[9:] for line in result.stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert lines[0] == f"training sqnxt_1_0_23 at 32x32 px on 3 classes from {records_dir}"
    assert lines[1] == "  4 steps of 8 images = 1.3 epochs of 24; 1 replica"
    assert lines[2] == "  learning rate 0.1, 0 warmup steps, poly decay; batch norm momentum 0.9"
    assert lines[3] == f"  model_dir: {model_dir} (TensorBoard: tensorboard --logdir={model_dir})"
    assert lines[4].startswith("Model: 0.59") and "model_stats.csv" in lines[4]
    assert [line.split(":")[0] for line in lines[5:7]] == ["step 2/4", "step 4/4"]
    assert ", lr " in lines[5] and " images/s, ETA " in lines[5]
    assert lines[7].startswith("evaluation at step 4: top-1 ") and lines[7].endswith("over 11 validation images")
    assert lines[8] == (
        "WARNING: the evaluation saw 11 of the 12 validation images manifest.json lists: 1 could not be decoded "
        f"and were skipped; `python -m records verify {records_dir}` names them"
    )
    assert (
        lines[9] == f"wrote {model_dir / model_dir_lib.METRICS_NAME}; checkpoints and TensorBoard events in {model_dir}"
    )
    assert len(lines) == 10
    for noise in ("Calling model_fn", "oneDNN", "cpu_feature_guard", "is deprecated", "global_step/sec"):
        assert noise not in result.stderr


@pytest.mark.slow
def test_mirrored_over_two_cpu_devices(records_dir, tmp_path):
    model_dir = tmp_path / "model"
    result = _cli(
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        "--distribute=mirrored",
        "--cpu_devices=2",
        "--train_steps=1",
        *QUICK_FLAGS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "; 2 replicas (CPU:0, CPU:1)" in result.stderr
    metrics = json.load(open(model_dir / model_dir_lib.METRICS_NAME))
    assert metrics["global_step"] == 1 and metrics["num_examples"] == 6 * NUM_CLASSES
    # Model statistics count one replica's model, not one per device.
    with open(model_dir / "model_stats.csv") as f:
        total = next(row for row in csv.DictReader(f) if row["layer"] == "total")
    single = stats.totals(stats.network_stats("sqnxt_1_0_23", 32, NUM_CLASSES))
    assert int(total["params"]) == single.params


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


@pytest.mark.slow
def test_multi_worker_chief_and_worker(records_dir, tmp_path):
    """Two real processes: both train; only the chief evaluates, writes metrics.json and
    keeps checkpoints; the worker leaves nothing in model_dir and removes its scratch."""
    chief_port, worker_port = _free_ports(2)
    cluster = {"chief": [f"127.0.0.1:{chief_port}"], "worker": [f"127.0.0.1:{worker_port}"]}
    model_dir = tmp_path / "model"
    flags = [
        f"--records_dir={records_dir}",
        f"--model_dir={model_dir}",
        "--distribute=multi_worker",
        "--train_steps=2",
        *QUICK_FLAGS,
    ]
    processes, scratch = {}, {}
    for task in ("chief", "worker"):
        scratch[task] = tmp_path / f"{task}-tmp"
        scratch[task].mkdir()
        env = {
            **os.environ,
            "TMPDIR": str(scratch[task]),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task, "index": 0}}),
        }
        processes[task] = subprocess.Popen(
            [sys.executable, "-m", "estimator.train", *flags],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outputs = {task: process.communicate(timeout=600) for task, process in processes.items()}
    for task, process in processes.items():
        assert process.returncode == 0, (task, outputs[task][1][-3000:])
    chief_log, worker_log = outputs["chief"][1], outputs["worker"][1]
    assert "2 replicas (this process: chief 0" in chief_log and "2 replicas (this process: worker 0" in worker_log
    metrics = json.load(open(model_dir / model_dir_lib.METRICS_NAME))
    assert metrics["global_step"] == 2 and metrics["num_examples"] == 6 * NUM_CLASSES
    assert "evaluation at step 2" in chief_log and "evaluation at step" not in worker_log
    assert "worker 0 done; the chief evaluates" in worker_log and "wrote" not in worker_log
    assert not list(model_dir.glob("tmp_*")) and tf.train.latest_checkpoint(str(model_dir)).endswith("model.ckpt-2")
    assert not list(scratch["worker"].iterdir())  # the worker's checkpoints went to its scratch, removed at exit
