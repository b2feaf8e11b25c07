"""Users' own datasets: train/<class>/... folders with any class names, images that keep their identity."""

from __future__ import annotations

import io
import os
import shutil

import pytest
from pipeline_util import build_records, read_records, read_split

from pipeline import layouts, sample_folders
from pipeline.console import Console
from pipeline.errors import InputError
from records import images, manifest, synsets

FRACTION = 0.25


@pytest.fixture(scope="module")
def folder_truth(sample_truth):
    return sample_truth[sample_folders.DIR_NAME]


@pytest.fixture(scope="module")
def input_dir(sample_dir):
    return sample_dir / sample_folders.DIR_NAME


@pytest.fixture(scope="module")
def built(input_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imagefolder_records")
    build_records(input_dir, out, train_shards=2, validation_shards=1, validation_fraction=FRACTION)
    return out


def _records(out):
    return {split: read_records(out, split) for split in ("train", "validation")}


def test_same_named_files_keep_their_own_pixels(built, input_dir, folder_truth):
    """Every class has an IMG_0001.jpg: each record must hold its own file, under its own label."""
    records = [r for split in _records(built).values() for r in split]
    names = [r.filename for r in records]
    assert len(names) == len(set(names)), "image/filename must be unique within the build"
    assert len({os.path.basename(n) for n in names}) < len(names)  # the base names do repeat
    for record in records:
        source = (input_dir / "train" / record.filename).read_bytes()
        # JPEGs are stored byte for byte, PNGs re-encoded: either way exactly what its own file becomes.
        assert record.encoded == images.normalise_image(source).jpeg, record.filename
        assert record.synset == record.filename.split("/")[0]
    jpegs = [r for r in records if r.filename.endswith((".jpg", ".JPG", ".jpeg"))]
    assert jpegs and all(r.encoded == (input_dir / "train" / r.filename).read_bytes() for r in jpegs)


def test_labels_follow_sorted_folder_names_and_texts_are_the_names(built, folder_truth):
    table = synsets.SynsetTable.read_tsv(str(built / manifest.SYNSETS_NAME))
    assert list(table.synsets) == sorted(folder_truth["classes"]) == list(table.texts)
    assert "red rose" in table.synsets and "tulipán" in table.synsets
    for record in (r for split in _records(built).values() for r in split):
        assert (record.label, record.text) == (table.label_of(record.synset), record.synset)


def test_every_image_ends_in_one_place_and_unreadable_ones_are_rejected(built, input_dir, folder_truth):
    records = _records(built)
    written = [r.filename for split in records.values() for r in split]
    valid = [i["path"] for i in folder_truth["images"] if i["valid"]]
    assert sorted(written) == sorted(valid)
    rows = manifest.read_rejected(str(built))
    broken = [i["path"] for i in folder_truth["images"] if not i["valid"]]
    assert [os.path.relpath(r[1], input_dir / "train") for r in rows] == broken
    assert all("truncated" in r[2] for r in rows)
    built_manifest = manifest.read_manifest(str(built))
    assert built_manifest.num_rejected == len(broken)
    assert built_manifest.splits["train"].skipped == {"hidden": 1, "not an image": 1}  # counted once


def test_without_validation_images_the_build_says_how_to_hold_some_out(input_dir, tmp_path):
    err = io.StringIO()
    built = build_records(input_dir, tmp_path / "out", train_shards=1, console=Console(io.StringIO(), err))
    assert set(built.splits) == {"train"}
    warnings = err.getvalue().splitlines()
    assert (
        warnings.count(
            "warning: no validation images: estimator.train evaluates on a validation split; "
            "pass --validation_fraction=0.1 to hold out 10% of each class"
        )
        == 1
    ), warnings
    assert warnings[-1] == f"warning: rejected 1 image: reasons in {tmp_path / 'out' / manifest.REJECTED_NAME}"


def test_validation_fraction_is_stratified_disjoint_and_deterministic(built, input_dir, folder_truth, tmp_path):
    records = _records(built)
    train = {r.filename for r in records["train"]}
    validation = {r.filename for r in records["validation"]}
    assert not train & validation
    rows = manifest.read_rejected(str(built))
    held = validation | {os.path.relpath(r[1], input_dir / "train") for r in rows if r[0] == "validation"}
    for name in folder_truth["classes"]:
        images = [i["path"] for i in folder_truth["images"] if i["class"] == name]
        assert sum(path in held for path in images) == int(len(images) * FRACTION + 0.5), name  # the same share
    assert manifest.read_manifest(str(built)).options["validation_fraction"] == FRACTION

    again = tmp_path / "again"
    build_records(input_dir, again, train_shards=2, validation_shards=1, validation_fraction=FRACTION)
    for name in sorted(n for n in os.listdir(built) if "-of-" in n):
        assert (built / name).read_bytes() == (again / name).read_bytes(), name
    other_seed = tmp_path / "other_seed"
    build_records(input_dir, other_seed, train_shards=2, validation_shards=1, validation_fraction=FRACTION, seed=5)
    assert {r.filename for r in _records(other_seed)["validation"]} != validation


def test_a_validation_folder_and_a_class_list_with_texts(input_dir, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(input_dir, root)
    for class_dir in (root / "train").iterdir():
        (root / "val" / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.glob("IMG_000[12].*")):
            image.rename(root / "val" / class_dir.name / image.name)
    classes = ["tulipán", "red rose", "sunflower", "daisy", "dandelion"]  # not sorted: the list decides labels
    (tmp_path / "classes.txt").write_text("\n".join(f"{c}\tthe {c}" if " " in c else c for c in classes) + "\n")
    out = tmp_path / "out"
    build_records(root, out, synsets_file=str(tmp_path / "classes.txt"))
    table = synsets.SynsetTable.read_tsv(str(out / manifest.SYNSETS_NAME))
    assert list(table.synsets) == classes
    assert table.text_of(table.label_of("red rose")) == "the red rose" and table.text_of(1) == "tulipán"
    validation = _records(out)["validation"]
    assert sorted(r.filename for r in validation) == sorted(
        f"{c}/{n}" for c in classes for n in ("IMG_0001.jpg", "IMG_0002.JPG")
    )
    assert all(r.label == table.label_of(r.synset) for r in validation)
    (tmp_path / "short.txt").write_text("daisy\ndandelion\n")
    with pytest.raises(layouts.LayoutError, match=r"short.txt: 3 classes not in the class list \(red rose, sunflower"):
        build_records(root, tmp_path / "short", synsets_file=str(tmp_path / "short.txt"))


def test_nested_folders_inside_a_class_are_part_of_it(input_dir, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(input_dir, root)
    nested = root / "train" / "daisy" / "2019" / "summer"
    nested.mkdir(parents=True)
    shutil.copy(root / "train" / "daisy" / "IMG_0001.jpg", nested / "IMG_0001.jpg")
    out = tmp_path / "out"
    build_records(root, out)
    names = {r.filename for r in _records(out)["train"]}
    assert {"daisy/IMG_0001.jpg", "daisy/2019/summer/IMG_0001.jpg"} <= names


def test_an_empty_class_folder_is_an_error_unless_allowed(input_dir, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(input_dir, root)
    (root / "train" / "orchid").mkdir()
    with pytest.raises(InputError, match=r"1 of 6 classes have no training images: orchid\..*--allow_empty_classes"):
        build_records(root, tmp_path / "out")
    built = build_records(root, tmp_path / "out", allow_empty_classes=True)
    assert built.num_classes == 6 and "orchid" not in built.splits["train"].class_counts


@pytest.mark.parametrize(
    "arrange, message",
    [
        (
            lambda root: (root / "val").mkdir() or shutil.copy(root / "train/daisy/IMG_0001.jpg", root / "val"),
            "holds files but no class folders",
        ),
        (lambda root: (root / "val" / "daisy").mkdir(parents=True), "already has a validation split"),
    ],
    ids=["flat val folder", "fraction with a val folder"],
)
def test_layout_mistakes_are_one_clear_error(input_dir, tmp_path, arrange, message):
    root = tmp_path / "in"
    shutil.copytree(input_dir, root)
    arrange(root)
    with pytest.raises(layouts.LayoutError, match=message):
        build_records(root, tmp_path / "out", validation_fraction=0.2)


def test_shards_are_dealt_evenly_across_classes(input_dir, tmp_path):
    root = tmp_path / "in"
    shutil.copytree(input_dir, root, ignore=shutil.ignore_patterns("IMG_0003.jpeg"))  # no rejects: sizes are exact
    built = build_records(root, tmp_path / "out", train_shards=3)
    counts = built.splits["train"].shard_counts
    assert max(counts) - min(counts) <= 1
    for shard in read_split(tmp_path / "out", "train").values():
        assert len({r.synset for r in shard}) == 5  # every shard mixes every class
