"""Shards written by the reference ImageNet converters are adopted, then read like our own builds."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import tensorflow as tf
from model_util import sample_files
from pipeline_util import run_module

from records import adopt, inspect, manifest, synsets, verify

# The keys each reference converter writes (inception/slim build_imagenet_data.py; TPU imagenet_to_gcs.py).
SLIM_KEYS = "slim"
TPU_KEYS = "tpu"
PLAIN_KINDS = ("jpeg", "grayscale", "progressive")  # what both converters store byte for byte


def _example(image: dict, data: bytes, text: str, keys: str, label_offset: int = 1) -> tf.train.Example:
    def put(key, kind, values):
        getattr(example.features.feature[key], kind).value.extend(values)

    example = tf.train.Example()
    put("image/height", "int64_list", [image["height"]])
    put("image/width", "int64_list", [image["width"]])
    put("image/colorspace", "bytes_list", [b"RGB" if image["channels"] == 3 else b"GRAY"])
    put("image/channels", "int64_list", [image["channels"]])
    put("image/class/label", "int64_list", [image["label"] - 1 + label_offset])
    put("image/class/synset", "bytes_list", [image["wnid"].encode()])
    put("image/format", "bytes_list", [b"JPEG"])
    put("image/filename", "bytes_list", [image["name"].encode()])
    put("image/encoded", "bytes_list", [data])
    if keys == SLIM_KEYS:
        put("image/class/text", "bytes_list", [text.encode()])
        for corner, index in (("xmin", 0), ("ymin", 1), ("xmax", 2), ("ymax", 3)):
            put(f"image/object/bbox/{corner}", "float_list", [b[index] for b in image["boxes"]])
        put("image/object/bbox/label", "int64_list", [image["label"]] * len(image["boxes"]))
    return example


def write_reference_build(
    sample_dir, truth, out, *, keys=SLIM_KEYS, shards=(("train", 2), ("validation", 1)), label_offset=1, edit=None
) -> dict[str, int]:
    """The sample's plain JPEGs as the reference converters write them, with TF's own TFRecordWriter."""
    os.makedirs(out, exist_ok=True)
    texts = {c["wnid"]: c["text"] for c in truth["classes"]}
    written = {}
    for split, num_shards in shards:
        chosen = [
            (path, image) for path, image in sample_files(sample_dir, truth, PLAIN_KINDS) if image["split"] == split
        ]
        writers = [
            tf.io.TFRecordWriter(os.path.join(out, f"{split}-{n:05d}-of-{num_shards:05d}")) for n in range(num_shards)
        ]
        for number, (path, image) in enumerate(chosen):
            data = pathlib.Path(path).read_bytes()
            example = _example(image, data, texts[image["wnid"]], keys, label_offset)
            if edit:
                edit(number, example)
            writers[number % num_shards].write(example.SerializeToString())
        for writer in writers:
            writer.close()
        written[split] = len(chosen)
    return written


@pytest.fixture(scope="module")
def reference(sample_dir, sample_truth, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference_build")
    return out, write_reference_build(sample_dir, sample_truth, out)


def test_a_reference_build_is_adopted_then_verified_and_inspected(reference, sample_truth, tmp_path):
    source, written = reference
    out = tmp_path / "meta"
    built = adopt.adopt(str(source), str(out))
    assert {split: s.num_examples for split, s in built.splits.items()} == written
    assert built.shards_dir == str(source) and built.options == {}
    table = synsets.SynsetTable.read_tsv(str(out / manifest.SYNSETS_NAME))
    assert [(c["label"], c["wnid"], c["text"]) for c in sample_truth["classes"]] == [
        (table.label_of(s), s, table.text_of(table.label_of(s))) for s in table.synsets
    ]
    assert sorted(os.listdir(out)) == [manifest.MANIFEST_NAME, manifest.SYNSETS_NAME]  # the source is untouched
    report = verify.verify(str(out), workers=2)
    assert report.ok, report.problems
    assert report.num_records == sum(written.values())
    summary = inspect.summarize(str(out), sample_records=10)
    assert [s.num_examples for s in summary.splits] == [written["train"], written["validation"]]


def test_the_tpu_converters_keys_are_adopted_without_texts(sample_dir, sample_truth, tmp_path):
    write_reference_build(sample_dir, sample_truth, tmp_path / "tpu", keys=TPU_KEYS)
    adopt.adopt(str(tmp_path / "tpu"))
    table = synsets.SynsetTable.read_tsv(str(tmp_path / "tpu" / manifest.SYNSETS_NAME))
    assert list(table.synsets) == [c["wnid"] for c in sample_truth["classes"]] and set(table.texts) == {""}
    assert verify.verify(str(tmp_path / "tpu"), workers=1).ok


def _other_synset(number, example):
    if number == 3:
        example.features.feature["image/class/synset"].bytes_list.value[0] = b"n09999999"


def _without_encoded(number, example):
    if number == 5:
        del example.features.feature["image/encoded"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"label_offset": 0}, r"holds label 0: labels must be 1-based"),
        ({"edit": _other_synset}, r"label \d+ is 'n\d+' in .* but 'n09999999' in .*different class lists"),
        ({"edit": _without_encoded}, r"train-0000[01]-of-00002 record 2: missing required feature 'image/encoded'"),
    ],
    ids=["zero-based labels", "a label with two synsets", "a missing key"],
)
def test_shards_that_cannot_be_described_are_refused_with_the_file(
    sample_dir, sample_truth, tmp_path, options, message
):
    write_reference_build(sample_dir, sample_truth, tmp_path, **options)
    with pytest.raises(adopt.AdoptError, match=message):
        adopt.adopt(str(tmp_path))
    assert not (tmp_path / manifest.MANIFEST_NAME).exists()


def test_a_missing_shard_is_named(reference, tmp_path):
    source, _ = reference
    for name in os.listdir(source):
        if name != "train-00001-of-00002":
            os.link(source / name, tmp_path / name)
    with pytest.raises(adopt.AdoptError, match="1 of 2 train shards are missing, e.g. train-00001-of-00002"):
        adopt.adopt(str(tmp_path))


def test_the_readers_point_to_adopt_and_the_cli_adopts(reference, tmp_path):
    source, written = reference
    with pytest.raises(FileNotFoundError, match=f"python -m records adopt {source}"):
        manifest.read_manifest(str(source))
    result = run_module("records", "adopt", str(source), f"--out_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert f"adopted {source}: 4 classes" in result.stdout and f"--records_dir={tmp_path}" in result.stdout
    again = run_module("records", "adopt", str(source), f"--out_dir={tmp_path}")
    assert (
        again.returncode == 2 and again.stderr.startswith("error: cannot adopt") and "needs no adopting" in again.stderr
    )


@pytest.mark.slow
def test_the_trainer_trains_on_an_adopted_build_kept_elsewhere(reference, tmp_path):
    source, written = reference
    meta, model_dir = tmp_path / "meta", tmp_path / "model"
    adopt.adopt(str(source), str(meta))
    result = run_module(
        "estimator.train",
        f"--records_dir={meta}",
        f"--model_dir={model_dir}",
        "--image_size=48",
        "--batch_size=8",
        "--train_steps=10",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["num_examples"] == written["validation"] and metrics["global_step"] == 10
    assert sorted(os.listdir(source)) == sorted(n for n in os.listdir(source) if "-of-" in n)  # untouched
