"""The sample must look like real ImageNet to every reader, or the pipeline's tests prove nothing.

Everything is read back with the standard library, Pillow and scipy only, never with
the project's own readers.
"""

import csv
import io
import json
import os
import re
import tarfile
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pipeline_util import run_module

from pipeline import pictures, sample

GNU_MAGIC = b"ustar  \x00"  # bytes 257..264 of every GNU tar header


def _images(truth, split=None, **where):
    return [
        i
        for i in truth["images"]
        if (split is None or i["split"] == split) and all(i[k] == v for k, v in where.items())
    ]


def _folder_path(root, image):
    if image["split"] == "train":
        return root / "folders" / "train" / image["wnid"] / image["name"]
    return root / "folders" / "val" / image["name"]


def _read_members(tar):
    return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _load_synsets(sample_dir):
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_devkit_t12.tar.gz") as tar:
        meta = tar.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
    synsets = scipy.io.loadmat(io.BytesIO(meta))["synsets"]
    rows = []
    for entry in synsets[:, 0]:
        rows.append(
            {
                "id": int(entry["ILSVRC2012_ID"][0, 0]),
                "wnid": str(entry["WNID"][0]),
                "words": str(entry["words"][0]),
                "num_children": int(entry["num_children"][0, 0]),
                "children": [int(c) for c in entry["children"].ravel()],
            }
        )
    return synsets, rows


def _xml_boxes(payload):
    """Normalise VOC boxes independently of the generator: by <size>, swap, clamp, drop empty."""
    root = ET.fromstring(payload)
    width, height = float(root.findtext("size/width")), float(root.findtext("size/height"))
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        x0, x1 = sorted(float(box.findtext(k)) / width for k in ("xmin", "xmax"))
        y0, y1 = sorted(float(box.findtext(k)) / height for k in ("ymin", "ymax"))
        x0, x1, y0, y1 = (min(max(v, 0.0), 1.0) for v in (x0, x1, y0, y1))
        if x1 > x0 and y1 > y0:
            boxes.append([x0, y0, x1, y1])
    return root, boxes


# ----------------------------------------------------------------------------- tars


def test_train_tar_is_a_gnu_tar_of_per_synset_tars(sample_dir, sample_truth):
    path = sample_dir / "tars" / "ILSVRC2012_img_train.tar"
    assert path.read_bytes()[257:265] == GNU_MAGIC
    wnids = [c["wnid"] for c in sample_truth["classes"]]
    with tarfile.open(path) as outer:
        assert outer.getnames() == [f"{w}.tar" for w in wnids]
        for wnid in wnids:
            inner_bytes = outer.extractfile(f"{wnid}.tar").read()
            assert inner_bytes[257:265] == GNU_MAGIC
            with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
                members = _read_members(inner)
            expected = {i["name"] for i in _images(sample_truth, "train", wnid=wnid)}
            assert set(members) == expected and len(members) == 8
            assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", name) for name in members)


def test_val_tar_is_flat_and_numbered_from_one(sample_dir, sample_truth):
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_img_val.tar") as tar:
        names = tar.getnames()
    assert names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 4 * 4 + 1)]
    assert names == [i["name"] for i in _images(sample_truth, "validation")]


def test_val_classes_are_interleaved_not_grouped(sample_truth):
    wnids = [i["wnid"] for i in _images(sample_truth, "validation")]
    assert wnids != sorted(wnids)
    assert {w: wnids.count(w) for w in wnids} == {c["wnid"]: 4 for c in sample_truth["classes"]}


def test_meta_mat_loads_like_the_real_devkit(sample_dir, sample_truth):
    synsets, rows = _load_synsets(sample_dir)
    assert synsets.ndim == 2 and synsets.shape[1] == 1
    assert synsets.dtype.names == (
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    )
    leaves = [r for r in rows if r["num_children"] == 0]
    parents = [r for r in rows if r["num_children"] > 0]
    assert sorted(r["id"] for r in leaves) == [1, 2, 3, 4]
    assert parents and all(r["id"] > 4 for r in parents)
    ids = {r["id"] for r in rows}
    assert all(len(r["children"]) == r["num_children"] and set(r["children"]) <= ids for r in parents)
    by_wnid = {r["wnid"]: r for r in leaves}
    ids_in_wnid_order = [by_wnid[w]["id"] for w in sorted(by_wnid)]
    assert ids_in_wnid_order != sorted(ids_in_wnid_order)
    for cls in sample_truth["classes"]:
        assert by_wnid[cls["wnid"]]["id"] == cls["ilsvrc2012_id"]
        assert by_wnid[cls["wnid"]]["words"] == cls["text"]
    assert all(re.fullmatch(r"n\d{8}", r["wnid"]) for r in rows)


def test_devkit_ground_truth_maps_to_the_val_wnids(sample_dir, sample_truth):
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_devkit_t12.tar.gz") as tar:
        names = tar.getnames()
        lines = (
            tar.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
            .read()
            .decode()
            .splitlines()
        )
    assert "ILSVRC2012_devkit_t12/data/meta.mat" in names
    _, rows = _load_synsets(sample_dir)
    wnid_of_id = {r["id"]: r["wnid"] for r in rows}
    assert [wnid_of_id[int(line)] for line in lines] == [i["wnid"] for i in _images(sample_truth, "validation")]
    folder_labels = (sample_dir / "folders" / "ILSVRC2012_validation_labels.txt").read_text().splitlines()
    assert folder_labels == [wnid_of_id[int(line)] for line in lines]


def test_bbox_tarball_holds_about_half_the_train_images(sample_dir, sample_truth):
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_bbox_train_v2.tar.gz") as tar:
        xmls = _read_members(tar)
    train_stems = {f"{i['wnid']}/{i['name'][:-5]}.xml" for i in _images(sample_truth, "train")}
    assert set(xmls) <= train_stems
    assert 0.3 <= len(xmls) / len(train_stems) <= 0.7


# ----------------------------------------------------------------------------- annotations


def test_xml_boxes_agree_with_truth_and_carry_the_real_flaws(sample_dir, sample_truth):
    bbox_dir = sample_dir / "folders" / "bbox"
    truth_by_member = {f"{i['wnid']}/{i['name'][:-5]}.xml": i for i in _images(sample_truth, "train")}
    flaws = set()
    malformed = []
    for member, image in truth_by_member.items():
        path = bbox_dir / member
        if not path.exists():
            assert image["boxes"] == []
            continue
        try:
            root, boxes = _xml_boxes(path.read_bytes())
        except ET.ParseError:
            malformed.append(member)
            assert image["boxes"] == []
            continue
        assert np.allclose(boxes, image["boxes"]) and boxes
        assert int(root.findtext("size/width")) == image["width"]
        assert {o.findtext("name") for o in root.iter("object")} == {image["wnid"]}
        if root.findtext("filename") == "%s":
            flaws.add("junk_filename")
        else:
            assert root.findtext("filename") == image["name"][:-5]
        for box in root.iter("bndbox"):
            x0, y0, x1, y1 = (int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            flaws |= {"reversed"} if x0 > x1 else set()
            flaws |= {"out_of_bounds"} if x0 < 0 or x1 > image["width"] else set()
            flaws |= {"empty_box"} if x0 == x1 else set()
    assert flaws == {"reversed", "out_of_bounds", "empty_box", "junk_filename"}
    assert malformed == sample_truth["malformed_xml"] and len(malformed) == 1


def test_boxes_frame_the_drawn_object(sample_dir, sample_truth):
    """The class colour sits inside the box, so box-aware crops keep the object."""
    for image in _images(sample_truth, "train", kind="jpeg"):
        if not image["boxes"]:
            continue
        pixels = np.asarray(Image.open(_folder_path(sample_dir, image)).convert("HSV"), dtype=float)
        saturated = pixels[..., 1] > 150
        x0, y0, x1, y1 = image["boxes"][0]
        h, w = saturated.shape
        inside = saturated[int(y0 * h) : int(np.ceil(y1 * h)), int(x0 * w) : int(np.ceil(x1 * w))].sum()
        assert inside > 0.5 * saturated.sum() / len(image["boxes"]), image["name"]


# ----------------------------------------------------------------------------- images


def test_valid_quirks_are_what_they_claim(sample_dir, sample_truth):
    expect = {
        "jpeg": ("JPEG", "RGB"),
        "cmyk": ("JPEG", "CMYK"),
        "png": ("PNG", "RGB"),
        "grayscale": ("JPEG", "L"),
        "progressive": ("JPEG", "RGB"),
    }
    for image in _images(sample_truth, valid=True):
        with Image.open(_folder_path(sample_dir, image)) as decoded:
            assert (decoded.format, decoded.mode) == expect[image["kind"]], image["name"]
            assert decoded.size == (image["width"], image["height"])
            assert bool(decoded.info.get("progressive")) == (image["kind"] == "progressive")
            decoded.load()
        assert image["name"].endswith(".JPEG")
        assert image["channels"] == (1 if image["kind"] == "grayscale" else 3)
        assert 100 <= image["width"] <= 300 and 100 <= image["height"] <= 300


def test_quirks_and_hostile_files_are_spread_over_both_splits(sample_truth):
    for split in ("train", "validation"):
        kinds = {i["kind"] for i in _images(sample_truth, split)}
        assert {"cmyk", "png", "grayscale", "progressive"} <= kinds
        assert any(not i["valid"] for i in _images(sample_truth, split))
    all_kinds = {i["kind"] for i in sample_truth["images"]}
    assert {"truncated", "empty", "text", "bomb"} <= all_kinds
    assert all(i["valid"] == (i["kind"] not in pictures.HOSTILE_KINDS) for i in sample_truth["images"])


def test_hostile_files_really_fail_to_decode(sample_dir, sample_truth):
    hostile = _images(sample_truth, valid=False)
    for image in hostile:
        payload = _folder_path(sample_dir, image).read_bytes()
        with pytest.raises((OSError, Image.DecompressionBombError, SyntaxError)):
            with Image.open(io.BytesIO(payload)) as decoded:
                decoded.load()
        if image["kind"] == "truncated":
            assert payload.startswith(b"\xff\xd8") and b"\xff\xda" in payload
            assert not payload.endswith(b"\xff\xd9")
        if image["kind"] == "bomb":
            assert payload.startswith(b"\x89PNG") and len(payload) < 4096
            assert int.from_bytes(payload[16:20], "big") * int.from_bytes(payload[20:24], "big") > 2 * 10**8
        if image["kind"] == "empty":
            assert payload == b""
        if image["kind"] == "text":
            payload.decode("ascii")


def test_classes_are_learnable_from_colour(sample_dir, sample_truth):
    """A nearest-centroid classifier on hue histograms must beat chance by far, or no CNN will learn."""

    def features(image):
        hsv = np.asarray(Image.open(_folder_path(sample_dir, image)).convert("RGB").convert("HSV"))
        vivid = hsv[..., 0][hsv[..., 1] > 150]
        hist, _ = np.histogram(vivid, bins=24, range=(0, 256))
        return hist / max(1, hist.sum())

    colour_kinds = ("jpeg", "cmyk", "png", "progressive")
    train = [i for i in _images(sample_truth, "train", valid=True) if i["kind"] in colour_kinds]
    val = [i for i in _images(sample_truth, "validation", valid=True) if i["kind"] in colour_kinds]
    centroids = {
        label: np.mean([features(i) for i in train if i["label"] == label], axis=0)
        for label in {i["label"] for i in train}
    }
    correct = sum(min(centroids, key=lambda c: np.abs(centroids[c] - features(i)).sum()) == i["label"] for i in val)
    assert correct / len(val) >= 0.9


# ----------------------------------------------------------------------------- layouts


def test_three_layouts_hold_byte_identical_images(sample_dir, sample_truth):
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_img_train.tar") as outer:
        from_tars = {}
        for member in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                from_tars.update(_read_members(inner))
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_img_val.tar") as tar:
        from_tars.update(_read_members(tar))
    kaggle = sample_dir / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC"
    assert len(from_tars) == len(sample_truth["images"])
    for image in sample_truth["images"]:
        folder_bytes = _folder_path(sample_dir, image).read_bytes()
        sub = os.path.join("train", image["wnid"]) if image["split"] == "train" else "val"
        assert (kaggle / sub / image["name"]).read_bytes() == folder_bytes == from_tars[image["name"]]
    with tarfile.open(sample_dir / "tars" / "ILSVRC2012_bbox_train_v2.tar.gz") as tar:
        xmls = _read_members(tar)
    annotations = sample_dir / "kaggle" / "ILSVRC" / "Annotations" / "CLS-LOC" / "train"
    for member, payload in xmls.items():
        assert (sample_dir / "folders" / "bbox" / member).read_bytes() == payload
        assert (annotations / member).read_bytes() == payload
    assert len(list(annotations.glob("*/*.xml"))) == len(list((sample_dir / "folders" / "bbox").glob("*/*.xml")))


def test_imagenet_metadata_lists_classes_and_more(sample_dir, sample_truth):
    lines = (sample_dir / "folders" / "imagenet_metadata.txt").read_text().splitlines()
    entries = dict(line.split("\t") for line in lines)
    assert [line.split("\t")[0] for line in lines] == sorted(entries)
    for cls in sample_truth["classes"]:
        assert entries[cls["wnid"]] == cls["text"]
    assert len(entries) > len(sample_truth["classes"])


def test_kaggle_files_parse_like_the_real_ones(sample_dir, sample_truth):
    kaggle = sample_dir / "kaggle"
    mapping = [line.split(" ", 1) for line in (kaggle / "LOC_synset_mapping.txt").read_text().splitlines()]
    assert mapping == [[c["wnid"], c["text"]] for c in sample_truth["classes"]]

    with open(kaggle / "LOC_val_solution.csv", newline="") as f:
        val_rows = list(csv.DictReader(f))
    assert list(val_rows[0]) == ["ImageId", "PredictionString"]
    ids = [row["ImageId"] for row in val_rows]
    assert ids != sorted(ids)
    truth_wnid = {i["name"][:-5]: i for i in _images(sample_truth, "validation")}
    assert sorted(ids) == sorted(truth_wnid)
    for row in val_rows:
        tokens = row["PredictionString"].split()
        assert len(tokens) % 5 == 0 and tokens[0] == truth_wnid[row["ImageId"]]["wnid"]
        assert set(tokens[::5]) == {tokens[0]} and all(t.lstrip("-").isdigit() for t in tokens[1::5])

    with open(kaggle / "LOC_train_solution.csv", newline="") as f:
        train_rows = list(csv.DictReader(f))
    xml_stems = {p.stem for p in (kaggle / "ILSVRC" / "Annotations" / "CLS-LOC" / "train").glob("*/*.xml")}
    malformed = {m.split("/")[1][:-4] for m in sample_truth["malformed_xml"]}
    assert {row["ImageId"] for row in train_rows} == xml_stems - malformed
    assert all(row["PredictionString"].split()[0] == row["ImageId"].split("_")[0] for row in train_rows)


def test_truth_labels_follow_sorted_wnids(sample_truth):
    classes = sample_truth["classes"]
    assert [c["wnid"] for c in classes] == sorted(c["wnid"] for c in classes)
    assert [c["label"] for c in classes] == list(range(1, sample_truth["num_classes"] + 1))
    label_of = {c["wnid"]: c["label"] for c in classes}
    assert all(i["label"] == label_of[i["wnid"]] for i in sample_truth["images"])
    for image in sample_truth["images"]:
        for x0, y0, x1, y1 in image["boxes"]:
            assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


# ----------------------------------------------------------------------------- generator behaviour


def _all_files(root):
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(root)
        for f in files
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    small = {"num_classes": 3, "train_per_class": 4, "val_per_class": 3}
    first = sample.generate(str(tmp_path / "a"), seed=7, **small)
    sample.generate(str(tmp_path / "b"), seed=7, **small)
    other = sample.generate(str(tmp_path / "c"), seed=8, **small)
    files_a, files_b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert files_a == files_b
    assert json.loads(files_a["truth.json"]) == first
    files_c = _all_files(tmp_path / "c")
    assert other != first
    assert files_c["tars/ILSVRC2012_img_val.tar"] != files_a["tars/ILSVRC2012_img_val.tar"]


def test_png_disguise_uses_the_real_shetland_sheepdog_name(tmp_path):
    truth = sample.generate(str(tmp_path), num_classes=5, train_per_class=3, val_per_class=2)
    png = _images(truth, "train", kind="png")
    assert [i["name"] for i in png] == ["n02105855_2933.JPEG"]
    with Image.open(tmp_path / "folders" / "train" / "n02105855" / "n02105855_2933.JPEG") as decoded:
        assert decoded.format == "PNG"


def test_without_quirks_every_image_is_a_plain_jpeg(tmp_path):
    truth = sample.generate(str(tmp_path), num_classes=2, train_per_class=3, val_per_class=2, with_quirks=False)
    assert {i["kind"] for i in truth["images"]} == {"jpeg"} and truth["malformed_xml"] == []


def test_bad_arguments_and_foreign_directories_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        sample.generate(str(tmp_path / "x"), num_classes=len(sample.CLASS_CATALOG) + 1)
    with pytest.raises(ValueError, match="train_per_class"):
        sample.generate(str(tmp_path / "x"), train_per_class=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="foreign"):
        sample.generate(str(foreign), num_classes=1, train_per_class=1, val_per_class=1)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_regenerating_replaces_an_earlier_sample(tmp_path):
    sample.generate(str(tmp_path), num_classes=3, train_per_class=2, val_per_class=1, with_quirks=False)
    sample.generate(str(tmp_path), num_classes=2, train_per_class=2, val_per_class=1, with_quirks=False)
    assert len(list((tmp_path / "folders" / "train").iterdir())) == 2
    assert len(list((tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" / "val").iterdir())) == 2


def test_command_line(tmp_path):
    result = run_module(
        "pipeline.sample",
        f"--output_dir={tmp_path}",
        "--num_classes=2",
        "--train_per_class=2",
        "--val_per_class=1",
        "--noquirks",
        "--seed=3",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["num_classes"] == 2 and len(truth["images"]) == 6
    assert (tmp_path / "tars" / "ILSVRC2012_img_train.tar").exists()
