"""The records job end to end on the generated sample, in each input layout."""

from __future__ import annotations

import io
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image
from pipeline_util import REPO_ROOT, build_records, read_records, read_split, run_module

from pipeline import build, layouts
from pipeline.errors import InputError
from pipeline.options import BuildOptions
from records import manifest, shards, synsets

LAYOUTS = ("tars", "folders", "kaggle")


@pytest.fixture(scope="module", params=LAYOUTS)
def built(request, sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"records_{request.param}")
    build_records(sample_dir / request.param, out)
    return request.param, out


def _records_by_name(out):
    return {split: {r.filename: r for r in read_records(out, split)} for split in ("train", "validation")}


def test_every_valid_image_once_with_label_text_and_boxes(built, sample_truth):
    layout, out = built
    written = _records_by_name(out)
    classes = {c["wnid"]: c for c in sample_truth["classes"]}
    for image in sample_truth["images"]:
        got = written[image["split"]].get(image["name"])
        if not image["valid"]:
            assert got is None, f"{layout}: hostile {image['name']} reached the records"
            continue
        assert got is not None, f"{layout}: {image['name']} missing"
        assert (got.label, got.synset, got.text) == (image["label"], image["wnid"], classes[image["wnid"]]["text"])
        assert len(got.boxes) == len(image["boxes"]), image["name"]
        for got_box, want_box in zip(got.boxes, image["boxes"]):
            assert got_box == pytest.approx(want_box, abs=1e-6), image["name"]
    valid = {(i["split"], i["name"]) for i in sample_truth["images"] if i["valid"]}
    assert {(s, n) for s, recs in written.items() for n in recs} == valid


def test_stored_bytes_are_jpegs_matching_their_header_fields(built, sample_truth):
    _, out = built
    kinds = {i["name"]: i for i in sample_truth["images"]}
    for records in _records_by_name(out).values():
        for name, record in records.items():
            decoded = Image.open(io.BytesIO(record.encoded))
            decoded.load()
            assert decoded.format == "JPEG" and record.format == "JPEG"
            assert decoded.size == (record.width, record.height) == (kinds[name]["width"], kinds[name]["height"])
            assert record.channels == len(decoded.getbands()) == kinds[name]["channels"]
            assert record.colorspace == ("GRAY" if record.channels == 1 else "RGB")
            if kinds[name]["kind"] in ("cmyk", "png"):
                assert decoded.mode == "RGB", f"{name} ({kinds[name]['kind']}) not converted to RGB"


def test_hostile_inputs_are_rejected_with_reasons(built, sample_truth):
    _, out = built
    rows = manifest.read_rejected(str(out))
    image_rows = [r for r in rows if r[0] != "boxes"]
    hostile = [i for i in sample_truth["images"] if not i["valid"]]
    assert sorted((r[0], os.path.basename(r[1].split(":")[-1])) for r in image_rows) == sorted(
        (i["split"], i["name"]) for i in hostile
    )
    reasons = {os.path.basename(r[1].split(":")[-1]): r[2] for r in image_rows}
    for image in hostile:
        expected = {"empty": "empty", "text": "not an image", "bomb": "too large", "truncated": "truncated"}
        assert expected[image["kind"]] in reasons[image["name"]], reasons[image["name"]]


def test_manifest_counts_prove_every_input_ended_somewhere(built, sample_truth):
    layout, out = built
    built_manifest = manifest.read_manifest(str(out))
    for split in ("train", "validation"):
        truth = [i for i in sample_truth["images"] if i["split"] == split]
        stats = built_manifest.splits[split]
        assert stats.num_examples + stats.num_rejected == len(truth)
        assert stats.num_examples == sum(i["valid"] for i in truth)
        assert [len(r) for _, r in sorted(read_split(out, split).items())] == list(stats.shard_counts)
        assert max(stats.shard_counts) - min(stats.shard_counts) <= 1 + stats.num_rejected  # dealt evenly
        assert stats.conversions  # the CMYK and PNG files were converted
    assert built_manifest.num_classes == sample_truth["num_classes"]
    assert built_manifest.label_offset == 1
    assert built_manifest.num_annotations_rejected == len(sample_truth["malformed_xml"])
    table = synsets.SynsetTable.read_tsv(str(out / manifest.SYNSETS_NAME))
    assert [(c["label"], c["wnid"], c["text"]) for c in sample_truth["classes"]] == [
        (table.label_of(w), w, table.text_of(table.label_of(w))) for w in table.synsets
    ]


def test_training_shards_mix_classes(built, sample_truth):
    _, out = built
    for shard in read_split(out, "train").values():
        assert len({r.synset for r in shard}) >= min(sample_truth["num_classes"], len(shard)) - 1


@pytest.mark.slow
def test_same_bytes_whatever_the_worker_count(sample_dir, tmp_path):
    """One in-process worker vs the multi-process runner with 2 workers."""
    build_records(sample_dir / "tars", tmp_path / "one")
    build_records(
        sample_dir / "tars",
        tmp_path / "two",
        beam_args=("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
    )
    names = sorted(n for n in os.listdir(tmp_path / "one") if "-of-" in n)
    assert names and names == sorted(n for n in os.listdir(tmp_path / "two") if "-of-" in n)
    for name in names + [manifest.REJECTED_NAME, manifest.SYNSETS_NAME]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_a_run_of_shards_written_together_gives_the_same_bytes(sample_dir, tmp_path, monkeypatch):
    build_records(sample_dir / "folders", tmp_path / "one_each")  # 3 + 2 shards: one shard per element
    monkeypatch.setattr(build, "WRITE_ELEMENTS_PER_SPLIT", 1)  # each split's shards in a single element
    build_records(sample_dir / "folders", tmp_path / "together")
    names = sorted(n for n in os.listdir(tmp_path / "one_each") if "-of-" in n)
    assert len(names) == 5
    for name in names + [manifest.MANIFEST_NAME, manifest.REJECTED_NAME]:
        assert (tmp_path / "one_each" / name).read_bytes() == (tmp_path / "together" / name).read_bytes(), name


def test_shards_to_write_are_the_unfinished_ones_in_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "WRITE_ELEMENTS_PER_SPLIT", 2)
    scratch = build.Scratch(str(tmp_path))
    os.makedirs(scratch.results_dir)
    assert build.shards_to_write(scratch.output_dir, scratch, {"train": 5, "validation": 1}) == [
        ("train", (0, 1, 2)),
        ("train", (3, 4)),
        ("validation", (0,)),
    ]
    finished, half_done = shards.shard_name("train", 1, 5), shards.shard_name("train", 3, 5)
    for name in (finished, half_done):
        (tmp_path / name).write_bytes(b"")
    pathlib.Path(scratch.result_path(finished)).write_text("{}")  # a shard without its result is not finished
    assert build.shards_to_write(scratch.output_dir, scratch, {"train": 5}) == [("train", (0, 2, 3)), ("train", (4,))]


def test_seed_changes_order_not_content(sample_dir, tmp_path):
    build_records(sample_dir / "folders", tmp_path / "a", seed=1)
    build_records(sample_dir / "folders", tmp_path / "b", seed=2)
    a = {k: [r.filename for r in v] for k, v in read_split(tmp_path / "a", "train").items()}
    b = {k: [r.filename for r in v] for k, v in read_split(tmp_path / "b", "train").items()}
    assert a != b
    assert sorted(sum(a.values(), [])) == sorted(sum(b.values(), []))


@pytest.mark.slow
def test_portable_runner_gives_the_same_shards(sample_dir, tmp_path):
    """Beam's portable path (what Flink and Spark use), against the local job service."""
    build_records(sample_dir / "tars", tmp_path / "direct")
    build_records(
        sample_dir / "tars",
        tmp_path / "portable",
        beam_args=("--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"),
    )
    for name in sorted(n for n in os.listdir(tmp_path / "direct") if "-of-" in n):
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "portable" / name).read_bytes()


IMAGE = "us-central1-docker.pkg.dev/example-project/records/records:1"


def _make_dataflow_arguments(**variables) -> list[str]:
    """The arguments `make dataflow` passes to `python -m pipeline` (make -n: nothing runs)."""
    command = ["make", "-n", "dataflow", *(f"{k}={v}" for k, v in variables.items())]
    printed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    words = shlex.split(printed.replace("\\\n", " "))
    return words[words.index("pipeline", words.index("-m")) + 1 :]


@pytest.mark.slow
@pytest.mark.parametrize("image", [IMAGE, ""], ids=["container", "setup.py"])
def test_make_dataflow_translates_both_jobs_offline(sample_dir, image):
    arguments = _make_dataflow_arguments(
        PROJECT="example-project", BUCKET="example-bucket", DATA_DIR="gs://example-bucket/imagenet", IMAGE=image
    )
    beam_args = [a for a in arguments if not a.startswith(("--input_dir=", "--output_dir="))]
    options = PipelineOptions([*beam_args, "--dry_run=True", "--no_auth"])
    plan = layouts.plan(str(sample_dir / "tars"))
    scratch = build.Scratch("gs://example-bucket/imagenet/records")
    index_job = beam.Pipeline(options=options)
    build.index_pipeline(index_job, plan, BuildOptions(), scratch)
    layout = build.SplitLayout(2, plan.units["train"], (8,) * 4, (0, 8, 16, 24))
    writer = build.WriteShards({"train": layout}, plan.synsets, False, BuildOptions(), scratch, scratch.output_dir)
    write_job = beam.Pipeline(options=options)
    build.write_pipeline(write_job, [("train", (0,)), ("train", (1,))], writer)
    for root, steps in ((index_job, {"SplitBoxes", "Index", "WriteSummaries"}), (write_job, {"WriteShards"})):
        result = root.run()
        pipeline_proto = result.job.proto_pipeline
        assert steps <= {t.unique_name for t in pipeline_proto.components.transforms.values()}
        assert result.job.proto.type.name == "JOB_TYPE_BATCH"
        (environment,) = pipeline_proto.components.environments.values()
        staged = {d.role_payload for d in environment.dependencies}
        if image:  # the locked container: the project is inside it, nothing staged to install
            assert image.encode() in environment.payload and not [s for s in staged if b"workflow" in s]
        else:  # the fallback: Beam's own image, and the project's sdist for workers to install at start-up
            assert b"beam_python3.11_sdk:2.72.0" in environment.payload
            assert [s for s in staged if b"workflow.tar.gz" in s]


def test_missing_devkit_is_a_clear_error(sample_dir, tmp_path):
    shutil.copy(sample_dir / "tars" / layouts.VAL_TAR, tmp_path)
    with pytest.raises(layouts.LayoutError, match="ILSVRC2012_devkit_t12.tar.gz"):
        layouts.plan(str(tmp_path))


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "random.txt").write_text("hello")
    with pytest.raises(layouts.LayoutError, match="unknown layout"):
        layouts.plan(str(tmp_path))


def test_label_file_with_wrong_length_is_a_clear_error(sample_dir, tmp_path):
    shutil.copytree(sample_dir / "folders", tmp_path / "in")
    labels = tmp_path / "in" / "ILSVRC2012_validation_labels.txt"
    labels.write_text("\n".join(labels.read_text().split()[:-1]) + "\n")
    with pytest.raises(layouts.LayoutError, match=r"ILSVRC2012_validation_labels.txt: \d+ labels for \d+"):
        layouts.plan(str(tmp_path / "in"))


def test_val_image_without_label_is_a_clear_error(sample_dir, tmp_path):
    shutil.copytree(sample_dir / "kaggle", tmp_path / "in")
    csv_path = tmp_path / "in" / "LOC_val_solution.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    missing = lines[1].split(",")[0]
    with pytest.raises(layouts.LayoutError, match=f"no label for validation image {missing}"):
        layouts.plan(str(tmp_path / "in"))


def test_existing_output_needs_overwrite(sample_dir, tmp_path):
    build_records(sample_dir / "folders", tmp_path)
    with pytest.raises(InputError, match="--overwrite"):
        build_records(sample_dir / "folders", tmp_path, overwrite=False)


@pytest.mark.slow
def test_the_command_line_on_worker_processes_reports_what_it_wrote(sample_dir, tmp_path):
    """`python -m pipeline` with the multi-process runner: its workers import the project by name."""
    out = run_module(
        "pipeline",
        f"--input_dir={sample_dir / 'kaggle'}",
        f"--output_dir={tmp_path}",
        "--train_shards=2",
        "--validation_shards=1",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    built = manifest.read_manifest(str(tmp_path))
    for split, stats in built.splits.items():
        counts = f"{min(stats.shard_counts)}-{max(stats.shard_counts)} per shard"
        line = f"  {split}: {stats.num_examples} images in {stats.num_shards} shard"
        assert any(
            s.startswith(line) and f"({counts}), {stats.num_rejected} rejected" in s for s in out.stdout.splitlines()
        )
    assert built.splits["train"].num_shards == 2 and built.num_rejected == 6


def test_the_records_job_never_imports_tensorflow(sample_dir, tmp_path):
    """The job runs where TensorFlow is not installed (Dataflow workers, a light launcher)."""
    script = (
        "import sys; sys.path.insert(0, 'tests'); from pipeline_util import build_records; "
        f"build_records({str(sample_dir / 'tars')!r}, {str(tmp_path / 'out')!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "out" / "manifest.json").exists()


def test_build_options_reach_the_records(sample_dir, sample_truth, tmp_path):
    """--resize_max_side, --synsets_file and --val_labels_file, through the whole job."""
    wnids = [c["wnid"] for c in sample_truth["classes"]]
    class_list = tmp_path / "classes.txt"
    class_list.write_text("\n".join(reversed(wnids)) + "\n")  # an explicit list: its order decides the labels
    labels = tmp_path / "labels.csv"
    shutil.copy(sample_dir / "kaggle" / "LOC_val_solution.csv", labels)
    out = tmp_path / "out"
    built = build_records(
        sample_dir / "folders", out, resize_max_side=64, synsets_file=str(class_list), val_labels_file=str(labels)
    )
    table = synsets.SynsetTable.read_tsv(str(out / manifest.SYNSETS_NAME))
    assert list(table.synsets) == list(reversed(wnids))
    truth = {(i["split"], i["name"]): i for i in sample_truth["images"]}
    for split, by_name in _records_by_name(out).items():
        for name, record in by_name.items():
            assert max(record.width, record.height) <= 64, name
            assert record.synset == truth[split, name]["wnid"] and record.label == table.label_of(record.synset)
    assert built.options["resize_max_side"] == 64 and built.options["synsets_file"] == str(class_list)


def test_header_validation_trusts_a_parsable_header(sample_dir, sample_truth, tmp_path):
    """The documented trade-off of --validate=header: a JPEG cut mid-scan gets through; decode stops it."""
    cut = {i["name"] for i in sample_truth["images"] if i["kind"] == "truncated"}
    header = build_records(sample_dir / "tars", tmp_path / "header", validate="header")
    decode = build_records(sample_dir / "tars", tmp_path / "decode")
    written = {n for split in _records_by_name(tmp_path / "header").values() for n in split}
    assert cut and cut <= written
    assert header.num_rejected == decode.num_rejected - len(cut)
