"""Generates a small, realistic ImageNet look-alike: the fixture of every test and of the demo.

The same pictures are written in the three layouts the pipeline reads (the original
ILSVRC2012 tarballs, extracted folders, Kaggle's localisation-challenge tree), with
the quirks real ImageNet has (CMYK, a PNG named .JPEG, grayscale, progressive,
messy boxes, malformed XML) and hostile files it must survive (truncated, empty,
text, decompression bomb). The ground truth goes to truth.json, computed from what
was drawn, so tests can compare the pipeline's output against something independent
of the reader code.

    python -m pipeline.sample --output_dir=data/sample
"""

from __future__ import annotations

import colorsys
import gzip
import io
import json
import math
import os
import shutil
import struct
import tarfile
import zlib
from typing import Any

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageDraw

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

# Shapes that, together with a class hue, make each class easy to tell apart.
SHAPES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "diamond",
    "ring",
    "cross",
    "hbars",
    "vbars",
    "checker",
    "star",
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
HOSTILE_KINDS = frozenset({"truncated", "empty", "text", "bomb"})
BOX_QUIRKS: tuple[str, ...] = ("reversed", "out_of_bounds", "empty_box", "junk_filename", "malformed")

# The Shetland sheepdog PNG-in-disguise that real ImageNet ships.
PNG_DISGUISE_WNID, PNG_DISGUISE_NUMBER = "n02105855", 2933
BOMB_SIZE = (20000, 15000)
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
LAYOUT_DIRS = ("tars", "folders", "kaggle")
TRUTH_JSON = "truth.json"

Box = tuple[int, int, int, int]


def val_name(index: int) -> str:
    """ImageNet's 1-based, 8-digit validation file name."""
    return f"ILSVRC2012_val_{index:08d}.JPEG"


# --------------------------------------------------------------------------- pictures


def _class_colour(label: int, num_classes: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """Hues evenly spread over the classes present, so neighbours stay far apart."""
    hue = ((label - 1) / num_classes + rng.uniform(-0.015, 0.015)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    return tuple(int(round(c * 255)) for c in rgb)


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A dull, noisy, cluttered background that carries no class signal."""
    base = rng.uniform(70, 180) + rng.uniform(-15, 15, size=3)
    ramp = np.linspace(-1.0, 1.0, width)[None, :, None] * rng.uniform(-25, 25)
    noise = rng.normal(0.0, rng.uniform(8, 22), size=(height, width, 3))
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        grey = int(rng.integers(40, 220))
        tint = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, colour: tuple[int, int, int]) -> Box:
    """Draws one class object filling `box`; returns its pixel extent (the bounding box)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    dark = tuple(c // 4 for c in colour)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), (cx, y0)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(3, min(w, h) // 5))
    elif shape == "cross":
        draw.rectangle((x0, cy - h / 6, x1, cy + h / 6), fill=colour)
        draw.rectangle((cx - w / 6, y0, cx + w / 6, y1), fill=colour)
    elif shape in ("hbars", "vbars"):
        for band in range(0, 5, 2):  # bands 0, 2, 4 of 5: first and last touch the box edges
            if shape == "hbars":
                draw.rectangle((x0, y0 + band * h / 5, x1, y0 + (band + 1) * h / 5), fill=colour)
            else:
                draw.rectangle((x0 + band * w / 5, y0, x0 + (band + 1) * w / 5, y1), fill=colour)
    elif shape == "checker":
        draw.rectangle(box, fill=dark)
        for row in range(4):
            for col in range(row % 2, 4, 2):  # cells (0,0) and (3,3) are coloured: corners touched
                draw.rectangle(
                    (x0 + col * w / 4, y0 + row * h / 4, x0 + (col + 1) * w / 4, y0 + (row + 1) * h / 4), fill=colour
                )
    elif shape == "star":
        points = []
        for k in range(10):
            radius = 0.5 if k % 2 == 0 else 0.2
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * w * math.cos(angle), cy + radius * h * math.sin(angle)))
        draw.polygon(points, fill=colour)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (int(math.floor(min(xs))), int(math.floor(min(ys))), int(math.ceil(max(xs))), int(math.ceil(max(ys))))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return box


def draw_picture(
    label: int, num_classes: int, width: int, height: int, rng: np.random.Generator
) -> tuple[Image.Image, list[Box]]:
    """One RGB picture of class `label`: its colour and shape, 1 or 2 instances, random place and scale."""
    image = _background(width, height, rng)
    draw = ImageDraw.Draw(image)
    shape = SHAPES[(label - 1) % len(SHAPES)]
    boxes = []
    instances = 2 if rng.random() < 0.25 else 1
    for instance in range(instances):
        short = min(width, height)
        scale = rng.uniform(0.4, 0.8) if instance == 0 else rng.uniform(0.25, 0.4)
        obj_w = max(12, int(short * scale * rng.uniform(0.85, 1.15)))
        obj_h = max(12, int(short * scale * rng.uniform(0.85, 1.15)))
        obj_w, obj_h = min(obj_w, width - 2), min(obj_h, height - 2)
        x0 = int(rng.integers(1, width - obj_w))
        y0 = int(rng.integers(1, height - obj_h))
        colour = _class_colour(label, num_classes, rng)
        boxes.append(_draw_shape(draw, shape, (x0, y0, x0 + obj_w, y0 + obj_h), colour))
    return image, boxes


# --------------------------------------------------------------------------- encodings


def _jpeg_bytes(image: Image.Image, quality: int, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **options)
    return buffer.getvalue()


def _truncated_jpeg(image: Image.Image, quality: int) -> bytes:
    """A JPEG cut mid-scan: the header parses, decoding the pixels fails."""
    data = _jpeg_bytes(image, quality)
    scan_start = data.index(b"\xff\xda")
    return data[: scan_start + (len(data) - scan_start) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def decompression_bomb_png(width: int = BOMB_SIZE[0], height: int = BOMB_SIZE[1]) -> bytes:
    """A PNG whose header promises width x height RGB pixels but which is a few hundred bytes.

    Written by hand so the pixels are never allocated; a decoder that trusts the
    header would need width*height*3 bytes.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    first_rows = zlib.compress(bytes(64 * (1 + 3 * width)), 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", first_rows) + _png_chunk(b"IEND", b"")
    )


NOT_AN_IMAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n"
)


def encode(kind: str, image: Image.Image, rng: np.random.Generator) -> bytes:
    """The file bytes for one slot: a normal JPEG, one of ImageNet's quirks, or a hostile file."""
    quality = int(rng.integers(65, 96))
    if kind == "jpeg":
        return _jpeg_bytes(image, quality)
    if kind == "cmyk":
        return _jpeg_bytes(image.convert("CMYK"), quality)
    if kind == "grayscale":
        return _jpeg_bytes(image.convert("L"), quality)
    if kind == "progressive":
        return _jpeg_bytes(image, quality, progressive=True)
    if kind == "png":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if kind == "truncated":
        return _truncated_jpeg(image, quality)
    if kind == "empty":
        return b""
    if kind == "text":
        return NOT_AN_IMAGE
    if kind == "bomb":
        return decompression_bomb_png()
    raise ValueError(f"unknown image kind {kind!r}")


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


def _write(path: str, payload: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(payload)


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
    _write(os.path.join(root, VAL_TAR), _tar_bytes([(s["name"], s["bytes"]) for s in val]))
    devkit = _tar_bytes(
        [
            (f"{DEVKIT_DIR}/", None),
            (f"{DEVKIT_DIR}/data/", None),
            (f"{DEVKIT_DIR}/data/meta.mat", meta_mat),
            (f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt", ground_truth),
        ]
    )
    _write(os.path.join(root, DEVKIT_TAR), gzip.compress(devkit, mtime=0))
    bbox_members: list[tuple[str, bytes | None]] = []
    for wnid in sorted({member.split("/")[0] for member in xmls}):
        bbox_members.append((f"{wnid}/", None))
        bbox_members += [(m, xmls[m]) for m in sorted(xmls) if m.startswith(wnid + "/")]
    _write(os.path.join(root, BBOX_TAR), gzip.compress(_tar_bytes(bbox_members), mtime=0))


def _write_folders(root: str, classes: list[dict], train: list[dict], val: list[dict], xmls: dict[str, bytes]) -> None:
    for slot in train:
        _write(os.path.join(root, "train", slot["wnid"], slot["name"]), slot["bytes"])
    for slot in val:
        _write(os.path.join(root, "val", slot["name"]), slot["bytes"])
    for member, payload in xmls.items():
        _write(os.path.join(root, "bbox", member), payload)
    _write(os.path.join(root, VAL_LABELS_TXT), "".join(f"{s['wnid']}\n" for s in val).encode())
    entries = [(c["wnid"], c["text"]) for c in classes]
    entries += [PARENT_SYNSETS[f] for f in sorted({c["family"] for c in classes})]
    entries += [GRANDPARENT_SYNSET, *EXTRA_METADATA_SYNSETS]
    lines = "".join(f"{wnid}\t{text}\n" for wnid, text in sorted(set(entries)))
    _write(os.path.join(root, METADATA_TXT), lines.encode())


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
        _write(os.path.join(root, KAGGLE_DATA, "train", slot["wnid"], slot["name"]), slot["bytes"])
    for slot in val:
        _write(os.path.join(root, KAGGLE_DATA, "val", slot["name"]), slot["bytes"])
    for member, payload in xmls.items():
        _write(os.path.join(root, KAGGLE_ANNOTATIONS, "train", member), payload)
    mapping = "".join(f"{c['wnid']} {c['text']}\n" for c in classes)
    _write(os.path.join(root, "LOC_synset_mapping.txt"), mapping.encode())
    train_rows = [
        f"{s['name'].rsplit('.', 1)[0]},{_prediction_string(s['wnid'], raw_boxes[s['name']])}\n"
        for s in train
        if s.get("xml") and s["xml"] != "malformed"
    ]
    val_rows = [f"{s['name'].rsplit('.', 1)[0]},{_prediction_string(s['wnid'], s['drawn_boxes'])}\n" for s in val]
    for name, rows in (("LOC_train_solution.csv", train_rows), ("LOC_val_solution.csv", val_rows)):
        shuffled = [rows[int(i)] for i in rng.permutation(len(rows))]
        _write(os.path.join(root, name), ("ImageId,PredictionString\n" + "".join(shuffled)).encode())


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
) -> dict:
    """Writes the sample in all three layouts plus truth.json; returns the truth dict.

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

    for split_code, slots in enumerate((train, val)):
        for index, slot in enumerate(slots):
            image_rng = np.random.default_rng([seed, split_code, index])
            width, height = int(image_rng.integers(100, 301)), int(image_rng.integers(100, 301))
            image, boxes = draw_picture(slot["label"], num_classes, width, height, image_rng)
            slot.update(width=width, height=height, drawn_boxes=boxes, bytes=encode(slot["kind"], image, image_rng))

    xmls: dict[str, bytes] = {}
    raw_boxes: dict[str, list] = {}
    truth_boxes: dict[str, list] = {}
    malformed = []
    for slot in train:
        if slot.get("xml"):
            member = f"{slot['wnid']}/{slot['name'].rsplit('.', 1)[0]}.xml"
            raw_boxes[slot["name"]], truth_boxes[slot["name"]] = _xml_objects_and_truth(slot)
            xmls[member] = annotation_xml(slot, raw_boxes[slot["name"]])
            if slot["xml"] == "malformed":
                malformed.append(member)

    by_id = sorted(classes, key=lambda c: c["ilsvrc2012_id"])
    label_to_id = {c["label"]: c["ilsvrc2012_id"] for c in by_id}
    ground_truth = "".join(f"{label_to_id[s['label']]}\n" for s in val).encode()
    _write_tars(
        os.path.join(output_dir, "tars"),
        classes,
        train,
        val,
        xmls,
        meta_mat_bytes(classes, train_per_class),
        ground_truth,
    )
    _write_folders(os.path.join(output_dir, "folders"), classes, train, val, xmls)
    _write_kaggle(os.path.join(output_dir, "kaggle"), classes, train, val, xmls, raw_boxes, rng)

    images = []
    for slot in train + val:
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
                "boxes": truth_boxes.get(slot["name"], []),
            }
        )
    truth = {
        "num_classes": num_classes,
        "classes": [{k: c[k] for k in ("label", "wnid", "text", "ilsvrc2012_id")} for c in classes],
        "images": images,
        "malformed_xml": sorted(malformed),
    }
    with open(os.path.join(output_dir, TRUTH_JSON), "w") as f:
        json.dump(truth, f, indent=1)
        f.write("\n")
    hostile = sum(1 for i in images if not i["valid"])
    logging.info(
        "wrote %d classes, %d train + %d validation images (%d hostile), %d bbox XML files under %s/{%s}",
        num_classes,
        len(train),
        len(val),
        hostile,
        len(xmls),
        output_dir,
        ",".join(LAYOUT_DIRS),
    )
    return truth


def _define_flags() -> None:
    """Flags are defined only when run as a program, so importing this module (as the tests
    do, next to other CLIs with an --output_dir flag) never collides in absl's global registry."""
    flags.DEFINE_string("output_dir", None, "Directory to write tars/, folders/, kaggle/ and truth.json into.")
    flags.DEFINE_integer("num_classes", 10, f"Number of real ImageNet classes (1..{len(CLASS_CATALOG)}).")
    flags.DEFINE_integer("train_per_class", 40, "Training images per class.")
    flags.DEFINE_integer("val_per_class", 10, "Validation images per class.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives byte-identical output.")
    flags.DEFINE_boolean("quirks", True, "Include ImageNet's quirky and hostile files and flawed XML.")
    flags.mark_flag_as_required("output_dir")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    generate(
        options.output_dir,
        options.num_classes,
        options.train_per_class,
        options.val_per_class,
        options.seed,
        with_quirks=options.quirks,
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
