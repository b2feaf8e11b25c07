"""Generates a small, realistic ImageNet look-alike: the fixture of every test and of the demo.

The same pictures are written in the three ImageNet layouts the pipeline reads (the original
ILSVRC2012 tarballs, extracted folders, Kaggle's localisation-challenge tree), with
the quirks real ImageNet has (CMYK, a PNG named .JPEG, grayscale, progressive,
messy boxes, malformed XML) and hostile files it must survive (truncated, empty,
text, decompression bomb). The ground truth goes to truth.json, computed from what
was drawn, so tests can compare the pipeline's output against something independent
of the reader code. Beside them, imagefolder/ holds a user's own classes
(pipeline/sample_folders.py).

    python -m pipeline.sample --output_dir=data/sample
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
import shutil
import tarfile

import numpy as np
from absl import app, flags, logging

from pipeline import sample_folders
from pipeline.pictures import HOSTILE_KINDS, Box, draw_picture, encode
from records import files

# Real ILSVRC2012 classes (wnid, text exactly as in imagenet_metadata.txt, family,
# a short gloss). Animals and artifacts alternate so that any prefix has both
# families, hence both non-leaf parents in meta.mat.
CLASS_CATALOG: tuple[tuple[str, str, str, str], ...] = (
    ("n01440764", "tench, Tinca tinca", "animal", "freshwater fish of Europe related to the carp"),
    ("n02979186", "cassette player", "artifact", "device that plays back magnetic tape cassettes"),
    ("n01751748", "sea snake", "animal", "venomous snake living in tropical seas"),
    ("n03000684", "chain saw, chainsaw", "artifact", "portable power saw with teeth on a loop of chain"),
    (
        "n02105855",
        "Shetland sheepdog, Shetland sheep dog, Shetland",
        "animal",
        "small herding dog resembling a miniature collie",
    ),
    ("n03028079", "church, church building", "artifact", "a place for public worship"),
    ("n02123045", "tabby, tabby cat", "animal", "a cat with a striped coat"),
    ("n03394916", "French horn, horn", "artifact", "brass instrument with a coiled tube and flared bell"),
    ("n03417042", "garbage truck, dustcart", "artifact", "truck that collects refuse"),
    ("n03888257", "parachute, chute", "artifact", "canopy that slows a fall through the air"),
    ("n01443537", "goldfish, Carassius auratus", "animal", "small golden carp kept in ponds and bowls"),
    ("n02690373", "airliner", "artifact", "large passenger aircraft"),
    ("n01530575", "brambling, Fringilla montifringilla", "animal", "Eurasian finch with an orange breast"),
    ("n04037443", "racer, race car, racing car", "artifact", "car built for racing"),
    ("n02085620", "Chihuahua", "animal", "very small dog with large ears"),
    ("n07747607", "orange", "artifact", "round citrus fruit with a tough rind"),
)

# Real non-leaf WordNet synsets used as parents in meta.mat (num_children > 0).
PARENT_SYNSETS: dict[str, tuple[str, str]] = {
    "animal": ("n00015388", "animal, animate being, beast, brute, creature, fauna"),
    "artifact": ("n00021939", "artifact, artefact"),
}
GRANDPARENT_SYNSET = ("n00004475", "organism, being")  # parent of "animal"

# Real wnids that imagenet_metadata.txt lists although they are not classes here:
# the real file covers all of WordNet, so readers must not treat it as the class list.
EXTRA_METADATA_SYNSETS: tuple[tuple[str, str], ...] = (
    ("n00005787", "benthos"),
    ("n01317541", "domestic animal, domesticated animal"),
    ("n02512053", "fish"),
    ("n09193705", "alp"),
)

TRAIN_QUIRKS: tuple[str, ...] = (
    "cmyk",
    "png",
    "grayscale",
    "progressive",
    "truncated",
    "empty",
    "text",
    "bomb",
)
VAL_QUIRKS: tuple[str, ...] = ("cmyk", "png", "grayscale", "progressive", "truncated", "bomb")
BOX_QUIRKS: tuple[str, ...] = ("reversed", "out_of_bounds", "empty_box", "junk_filename", "malformed")

# The Shetland sheepdog PNG-in-disguise that real ImageNet ships.
PNG_DISGUISE_WNID, PNG_DISGUISE_NUMBER = "n02105855", 2933
TAR_MTIME = 1335398400  # 2012-04-26, fixed so that archives are byte-identical per seed
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Apr 26 00:00:00 2012"

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
BBOX_TAR = "ILSVRC2012_bbox_train_v2.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
VAL_LABELS_TXT = "ILSVRC2012_validation_labels.txt"
METADATA_TXT = "imagenet_metadata.txt"
KAGGLE_DATA = "ILSVRC/Data/CLS-LOC"
KAGGLE_ANNOTATIONS = "ILSVRC/Annotations/CLS-LOC"
LAYOUT_DIRS = ("tars", "folders", "kaggle", sample_folders.DIR_NAME)
TRUTH_JSON = "truth.json"


def val_name(index: int) -> str:
    """ImageNet's 1-based, 8-digit validation file name."""
    return f"ILSVRC2012_val_{index:08d}.JPEG"


# --------------------------------------------------------------------------- plan


def _check_arguments(num_classes: int, train_per_class: int, val_per_class: int) -> None:
    if not 1 <= num_classes <= len(CLASS_CATALOG):
        raise ValueError(
            f"num_classes={num_classes}: the sample embeds {len(CLASS_CATALOG)} real "
            f"ImageNet classes; pass --num_classes between 1 and {len(CLASS_CATALOG)}"
        )
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError(f"train_per_class={train_per_class}, val_per_class={val_per_class}: both must be >= 1")


def _plan_classes(num_classes: int, rng: np.random.Generator) -> list[dict]:
    """Classes in sorted-wnid order with 1-based labels and shuffled ILSVRC2012_IDs, as in the devkit."""
    chosen = sorted(CLASS_CATALOG[:num_classes])
    ids = [int(i) + 1 for i in rng.permutation(num_classes)]
    if num_classes > 1 and ids == sorted(ids):  # real IDs are never in sorted-wnid order
        ids[0], ids[1] = ids[1], ids[0]
    return [
        {"label": index + 1, "wnid": wnid, "text": text, "ilsvrc2012_id": ilsvrc_id, "family": family, "gloss": gloss}
        for index, ((wnid, text, family, gloss), ilsvrc_id) in enumerate(zip(chosen, ids))
    ]


def _assign_quirks(slots: list[dict], quirks: tuple[str, ...], rng: np.random.Generator) -> None:
    """Marks random slots with the quirk kinds (as many as there are slots)."""
    if len(slots) < len(quirks):
        logging.warning(
            "only %d images in %s for %d quirk kinds; some quirks left out",
            len(slots),
            slots[0]["split"] if slots else "split",
            len(quirks),
        )
    free = [i for i, slot in enumerate(slots) if slot["kind"] == "jpeg"]
    picks = rng.choice(len(free), size=min(len(free), len(quirks)), replace=False)
    for kind, pick in zip(quirks, picks):
        slots[free[int(pick)]]["kind"] = kind


def _plan_train(classes: list[dict], per_class: int, with_quirks: bool, rng: np.random.Generator) -> list[dict]:
    numbers_pool = np.array([n for n in range(1, 15000) if n != PNG_DISGUISE_NUMBER])
    slots = []
    for cls in classes:
        numbers = rng.choice(numbers_pool, size=per_class, replace=False)
        for number in numbers:
            slots.append(
                {"split": "train", "wnid": cls["wnid"], "label": cls["label"], "number": int(number), "kind": "jpeg"}
            )
    if with_quirks:
        disguise = [s for s in slots if s["wnid"] == PNG_DISGUISE_WNID]
        if disguise:  # the real n02105855_2933.JPEG is a PNG
            disguise[0].update(kind="png", number=PNG_DISGUISE_NUMBER)
        _assign_quirks(slots, tuple(q for q in TRAIN_QUIRKS if not (q == "png" and disguise)), rng)
    for slot in slots:
        slot["name"] = f"{slot['wnid']}_{slot['number']}.JPEG"
    return slots


def _plan_val(classes: list[dict], per_class: int, with_quirks: bool, rng: np.random.Generator) -> list[dict]:
    """Val images of all classes interleaved in a shuffled order, then numbered 1..N like the real set."""
    drawn = [cls for cls in classes for _ in range(per_class)]
    order = rng.permutation(len(drawn))
    slots = [
        {
            "split": "validation",
            "wnid": drawn[i]["wnid"],
            "label": drawn[i]["label"],
            "name": val_name(position + 1),
            "kind": "jpeg",
        }
        for position, i in enumerate(order)
    ]
    if with_quirks:
        _assign_quirks(slots, VAL_QUIRKS, rng)
    return slots


def _plan_box_files(train: list[dict], with_quirks: bool, rng: np.random.Generator) -> None:
    """About half the valid train images get a bbox XML, like the real bbox tarball; some get its flaws."""
    candidates = [i for i, slot in enumerate(train) if slot["kind"] not in HOSTILE_KINDS]
    wanted = max(math.ceil(len(candidates) / 2), min(len(BOX_QUIRKS), len(candidates)))
    with_xml = [candidates[int(i)] for i in rng.choice(len(candidates), size=wanted, replace=False)]
    for i in with_xml:
        train[i]["xml"] = "plain"
    if with_quirks:
        for quirk, i in zip(BOX_QUIRKS, with_xml):
            train[i]["xml"] = quirk


# --------------------------------------------------------------------------- annotations


def _normalised(box: Box, width: int, height: int) -> list[float]:
    return [box[0] / width, box[1] / height, box[2] / width, box[3] / height]


def _xml_objects_and_truth(slot: dict) -> tuple[list[tuple[int, int, int, int]], list[list[float]]]:
    """The raw <bndbox> values to write, and the normalised boxes a correct reader must recover.

    The truth is derived from the drawn boxes and the flaw's meaning (a reversed box is
    the drawn box; an out-of-bounds box spans the full width; an empty box is dropped),
    not by re-parsing the XML.
    """
    width, height, drawn = slot["width"], slot["height"], slot["drawn_boxes"]
    raw = list(drawn)
    truth = [_normalised(b, width, height) for b in drawn]
    flaw = slot.get("xml")
    x0, y0, x1, y1 = drawn[0]
    if flaw == "reversed":
        raw[0] = (x1, y1, x0, y0)
    elif flaw == "out_of_bounds":
        raw[0] = (-x0 - 7, y0, width + 9, y1)
        truth[0] = [0.0, y0 / height, 1.0, y1 / height]
    elif flaw == "empty_box":
        raw.append((x0, y0, x0, y1))
    elif flaw == "malformed":
        truth = []
    return raw, truth


def annotation_xml(slot: dict, raw_boxes: list[tuple[int, int, int, int]]) -> bytes:
    """PASCAL-VOC XML in the tab-indented shape of ILSVRC2012_bbox_train_v2."""
    stem = slot["name"].rsplit(".", 1)[0]
    filename = "%s" if slot.get("xml") == "junk_filename" else stem
    depth = 1 if slot["kind"] == "grayscale" else 3
    lines = [
        "<annotation>",
        f"\t<folder>{slot['wnid']}</folder>",
        f"\t<filename>{filename}</filename>",
        "\t<source>",
        "\t\t<database>ILSVRC_2012</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{slot['width']}</width>",
        f"\t\t<height>{slot['height']}</height>",
        f"\t\t<depth>{depth}</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for xmin, ymin, xmax, ymax in raw_boxes:
        lines += [
            "\t<object>",
            f"\t\t<name>{slot['wnid']}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    text = "\n".join(lines) + "\n"
    if slot.get("xml") == "malformed":  # cut mid-element: not well-formed
        text = text[: text.index("</bndbox>") + 3]
    return text.encode("utf-8")


def _prediction_string(wnid: str, boxes: list[tuple[int, int, int, int]]) -> str:
    """Kaggle's "wnid xmin ymin xmax ymax ..." with the trailing space the real CSVs have."""
    return "".join(f"{wnid} {x0} {y0} {x1} {y1} " for x0, y0, x1, y1 in boxes)


# --------------------------------------------------------------------------- meta.mat


def meta_mat_bytes(classes: list[dict], train_per_class: int) -> bytes:
    """The devkit's meta.mat: a (N, 1) struct array `synsets`, leaves 1..num_classes, parents after."""
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = []  # (id, wnid, words, gloss, children ids, height, train images)
    for cls in sorted(classes, key=lambda c: c["ilsvrc2012_id"]):
        rows.append((cls["ilsvrc2012_id"], cls["wnid"], cls["text"], cls["gloss"], [], 0, train_per_class))
    next_id = len(classes) + 1
    parent_ids = {}
    for family in ("animal", "artifact"):
        children = sorted(c["ilsvrc2012_id"] for c in classes if c["family"] == family)
        if children:
            wnid, words = PARENT_SYNSETS[family]
            parent_ids[family] = next_id
            rows.append(
                (next_id, wnid, words, f"any {family} in this sample", children, 1, train_per_class * len(children))
            )
            next_id += 1
    if "animal" in parent_ids:
        animals = sum(1 for c in classes if c["family"] == "animal")
        rows.append(
            (next_id, *GRANDPARENT_SYNSET, "a living thing", [parent_ids["animal"]], 2, train_per_class * animals)
        )
    synsets = np.empty((len(rows), 1), dtype=[(name, object) for name in fields])
    for i, (ilsvrc_id, wnid, words, gloss, children, height, images) in enumerate(rows):
        children_array = np.array([children], dtype=np.uint16) if children else np.zeros((1, 0), dtype=np.uint8)
        synsets[i, 0] = (
            np.array([[ilsvrc_id]], dtype=np.uint16),
            wnid,
            words,
            gloss,
            np.array([[len(children)]], dtype=np.uint8),
            children_array,
            np.array([[height]], dtype=np.uint8),
            np.array([[images]], dtype=np.uint16),
        )
    import scipy.io  # deferred: only the devkit needs it

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    data = bytearray(buffer.getvalue())
    data[:116] = MAT_HEADER_TEXT.ljust(116, b" ")  # scipy stamps the current time here
    return bytes(data)


# --------------------------------------------------------------------------- archives


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uname = info.gname = "imagenet"
    return info


def _tar_bytes(members: list[tuple[str, bytes | None]]) -> bytes:
    """A GNU tar in memory; a None payload makes a directory entry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in members:
            if payload is None:
                tar.addfile(_tar_info(name, directory=True))
            else:
                tar.addfile(_tar_info(name, len(payload)), io.BytesIO(payload))
    return buffer.getvalue()


def _write_tars(
    root: str,
    classes: list[dict],
    train: list[dict],
    val: list[dict],
    xmls: dict[str, bytes],
    meta_mat: bytes,
    ground_truth: bytes,
) -> None:
    os.makedirs(root, exist_ok=True)
    with tarfile.open(os.path.join(root, TRAIN_TAR), mode="w", format=tarfile.GNU_FORMAT) as outer:
        for cls in classes:
            inner = _tar_bytes([(s["name"], s["bytes"]) for s in train if s["wnid"] == cls["wnid"]])
            outer.addfile(_tar_info(f"{cls['wnid']}.tar", len(inner)), io.BytesIO(inner))
    files.write_atomically(os.path.join(root, VAL_TAR), _tar_bytes([(s["name"], s["bytes"]) for s in val]))
    devkit = _tar_bytes(
        [
            (f"{DEVKIT_DIR}/", None),
            (f"{DEVKIT_DIR}/data/", None),
            (f"{DEVKIT_DIR}/data/meta.mat", meta_mat),
            (f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt", ground_truth),
        ]
    )
    files.write_atomically(os.path.join(root, DEVKIT_TAR), gzip.compress(devkit, mtime=0))
    bbox_members: list[tuple[str, bytes | None]] = []
    for wnid in sorted({member.split("/")[0] for member in xmls}):
        bbox_members.append((f"{wnid}/", None))
        bbox_members += [(m, xmls[m]) for m in sorted(xmls) if m.startswith(wnid + "/")]
    files.write_atomically(os.path.join(root, BBOX_TAR), gzip.compress(_tar_bytes(bbox_members), mtime=0))


def _write_folders(root: str, classes: list[dict], train: list[dict], val: list[dict], xmls: dict[str, bytes]) -> None:
    for slot in train:
        files.write_atomically(os.path.join(root, "train", slot["wnid"], slot["name"]), slot["bytes"])
    for slot in val:
        files.write_atomically(os.path.join(root, "val", slot["name"]), slot["bytes"])
    for member, payload in xmls.items():
        files.write_atomically(os.path.join(root, "bbox", member), payload)
    files.write_atomically(os.path.join(root, VAL_LABELS_TXT), "".join(f"{s['wnid']}\n" for s in val).encode())
    entries = [(c["wnid"], c["text"]) for c in classes]
    entries += [PARENT_SYNSETS[f] for f in sorted({c["family"] for c in classes})]
    entries += [GRANDPARENT_SYNSET, *EXTRA_METADATA_SYNSETS]
    lines = "".join(f"{wnid}\t{text}\n" for wnid, text in sorted(set(entries)))
    files.write_atomically(os.path.join(root, METADATA_TXT), lines.encode())


def _write_kaggle(
    root: str,
    classes: list[dict],
    train: list[dict],
    val: list[dict],
    xmls: dict[str, bytes],
    raw_boxes: dict[str, list],
    rng: np.random.Generator,
) -> None:
    for slot in train:
        files.write_atomically(os.path.join(root, KAGGLE_DATA, "train", slot["wnid"], slot["name"]), slot["bytes"])
    for slot in val:
        files.write_atomically(os.path.join(root, KAGGLE_DATA, "val", slot["name"]), slot["bytes"])
    for member, payload in xmls.items():
        files.write_atomically(os.path.join(root, KAGGLE_ANNOTATIONS, "train", member), payload)
    mapping = "".join(f"{c['wnid']} {c['text']}\n" for c in classes)
    files.write_atomically(os.path.join(root, "LOC_synset_mapping.txt"), mapping.encode())
    train_rows = [
        f"{s['name'].rsplit('.', 1)[0]},{_prediction_string(s['wnid'], raw_boxes[s['name']])}\n"
        for s in train
        if s.get("xml") and s["xml"] != "malformed"
    ]
    val_rows = [f"{s['name'].rsplit('.', 1)[0]},{_prediction_string(s['wnid'], s['drawn_boxes'])}\n" for s in val]
    for name, rows in (("LOC_train_solution.csv", train_rows), ("LOC_val_solution.csv", val_rows)):
        shuffled = [rows[int(i)] for i in rng.permutation(len(rows))]
        files.write_atomically(os.path.join(root, name), ("ImageId,PredictionString\n" + "".join(shuffled)).encode())


# --------------------------------------------------------------------------- entry points


def _prepare_output_dir(output_dir: str) -> None:
    """Replaces an earlier sample, but refuses to write into an unrelated non-empty directory."""
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.exists(os.path.join(output_dir, TRUTH_JSON)):
            raise FileExistsError(
                f"{output_dir} is not empty and holds no {TRUTH_JSON}, so it is not an "
                "earlier sample; pass an empty or new --output_dir"
            )
        for name in LAYOUT_DIRS:
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
        os.remove(os.path.join(output_dir, TRUTH_JSON))
    os.makedirs(output_dir, exist_ok=True)


def generate(
    output_dir: str,
    num_classes: int = 10,
    train_per_class: int = 40,
    val_per_class: int = 10,
    seed: int = 0,
    with_quirks: bool = True,
    imagefolder_per_class: int = 48,
) -> dict:
    """Writes the sample in all four layouts plus truth.json; returns the truth dict.

    Deterministic: the same arguments give byte-identical files. `with_quirks=False`
    leaves out the quirky and hostile files and the flawed XML (plain JPEGs only).
    """
    _check_arguments(num_classes, train_per_class, val_per_class)
    _prepare_output_dir(output_dir)
    rng = np.random.default_rng(seed)
    classes = _plan_classes(num_classes, rng)
    train = _plan_train(classes, train_per_class, with_quirks, rng)
    val = _plan_val(classes, val_per_class, with_quirks, rng)
    _plan_box_files(train, with_quirks, rng)
    _draw(train + val, num_classes, seed)
    annotations = _annotations(train)
    _write_layouts(output_dir, classes, train, val, annotations, rng)
    truth = _truth(classes, train + val, annotations)
    truth[sample_folders.DIR_NAME] = sample_folders.generate(
        os.path.join(output_dir, sample_folders.DIR_NAME), imagefolder_per_class, seed
    )
    with open(os.path.join(output_dir, TRUTH_JSON), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    return truth


def _draw(slots: list[dict], num_classes: int, seed: int) -> None:
    """Each slot's picture and file bytes, from a generator of its own (so slots are independent)."""
    for split_code, split in enumerate(("train", "validation")):
        for index, slot in enumerate(s for s in slots if s["split"] == split):
            image_rng = np.random.default_rng([seed, split_code, index])
            width, height = int(image_rng.integers(100, 301)), int(image_rng.integers(100, 301))
            image, boxes = draw_picture(slot["label"], num_classes, width, height, image_rng)
            slot.update(width=width, height=height, drawn_boxes=boxes, bytes=encode(slot["kind"], image, image_rng))


@dataclasses.dataclass
class _Annotations:
    xmls: dict[str, bytes]  # member path in the bbox tarball -> XML
    raw_boxes: dict[str, list]  # image name -> the <bndbox> values written
    truth_boxes: dict[str, list]  # image name -> what a correct reader recovers
    malformed: list[str]


def _annotations(train: list[dict]) -> _Annotations:
    found = _Annotations({}, {}, {}, [])
    for slot in train:
        if slot.get("xml"):
            member = f"{slot['wnid']}/{slot['name'].rsplit('.', 1)[0]}.xml"
            found.raw_boxes[slot["name"]], found.truth_boxes[slot["name"]] = _xml_objects_and_truth(slot)
            found.xmls[member] = annotation_xml(slot, found.raw_boxes[slot["name"]])
            if slot["xml"] == "malformed":
                found.malformed.append(member)
    return found


def _write_layouts(
    output_dir: str,
    classes: list[dict],
    train: list[dict],
    val: list[dict],
    annotations: _Annotations,
    rng: np.random.Generator,
) -> None:
    label_to_id = {c["label"]: c["ilsvrc2012_id"] for c in classes}
    ground_truth = "".join(f"{label_to_id[s['label']]}\n" for s in val).encode()
    meta_mat = meta_mat_bytes(classes, len(train) // len(classes))
    _write_tars(os.path.join(output_dir, "tars"), classes, train, val, annotations.xmls, meta_mat, ground_truth)
    _write_folders(os.path.join(output_dir, "folders"), classes, train, val, annotations.xmls)
    _write_kaggle(os.path.join(output_dir, "kaggle"), classes, train, val, annotations.xmls, annotations.raw_boxes, rng)


def _truth(classes: list[dict], slots: list[dict], annotations: _Annotations) -> dict:
    images = []
    for slot in slots:
        valid = slot["kind"] not in HOSTILE_KINDS
        images.append(
            {
                "split": slot["split"],
                "name": slot["name"],
                "wnid": slot["wnid"],
                "label": slot["label"],
                "kind": slot["kind"],
                "valid": valid,
                "width": slot["width"] if valid else None,
                "height": slot["height"] if valid else None,
                "channels": (1 if slot["kind"] == "grayscale" else 3) if valid else None,
                "boxes": annotations.truth_boxes.get(slot["name"], []),
            }
        )
    return {
        "num_classes": len(classes),
        "classes": [{k: c[k] for k in ("label", "wnid", "text", "ilsvrc2012_id")} for c in classes],
        "images": images,
        "malformed_xml": sorted(annotations.malformed),
    }


def _define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module (as the tests
    do, next to other CLIs with an --output_dir flag) never collides in absl's global registry."""
    flags.DEFINE_string(
        "output_dir", None, "Directory to write tars/, folders/, kaggle/, imagefolder/ and truth.json into."
    )
    flags.DEFINE_integer("num_classes", 10, f"Number of real ImageNet classes (1..{len(CLASS_CATALOG)}).")
    flags.DEFINE_integer("train_per_class", 40, "Training images per class.")
    flags.DEFINE_integer("val_per_class", 10, "Validation images per class.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives byte-identical output.")
    flags.DEFINE_boolean("quirks", True, "Include ImageNet's quirky and hostile files and flawed XML.")
    flags.DEFINE_integer("imagefolder_per_class", 48, "Images per class of the image-folder dataset.")
    flags.mark_flag_as_required("output_dir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    truth = generate(
        options.output_dir,
        options.num_classes,
        options.train_per_class,
        options.val_per_class,
        options.seed,
        with_quirks=options.quirks,
        imagefolder_per_class=options.imagefolder_per_class,
    )
    hostile = sum(1 for i in truth["images"] if not i["valid"])
    folders = truth[sample_folders.DIR_NAME]
    print(
        f"sample written to {options.output_dir}: ImageNet look-alike ({truth['num_classes']} classes, "
        f"{len(truth['images'])} images, {hostile} hostile) in {', '.join(LAYOUT_DIRS[:3])}; "
        f"{len(folders['classes'])} image-folder classes ({len(folders['images'])} images) in {LAYOUT_DIRS[3]}/"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
