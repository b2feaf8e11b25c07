"""The sample's image-folder dataset: a user's own classes, laid out as Keras and torchvision expect.

    imagefolder/train/<class>/IMG_0001.jpg ...

It has what real users' folders have and ImageNet's do not: class names with
a space and an accent, the same file names in every class (camera exports),
mixed extensions (.jpg .JPG .jpeg .png, the PNG a real PNG), a JPEG cut short,
and files that are no images to build (.DS_Store, Thumbs.db). There is no
validation folder: a build holds part of train out with --validation_fraction.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline import pictures
from records import files

DIR_NAME = "imagefolder"
CLASSES = ("daisy", "dandelion", "red rose", "sunflower", "tulipán")  # sorted: label order
EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".png")
TRUNCATED = ("dandelion", 3)  # (class, image number) of the JPEG cut short
NOT_IMAGES = {"daisy/.DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(32), "sunflower/Thumbs.db": b"\xd0\xcf\x11\xe0"}


def image_name(number: int) -> str:
    """IMG_0001.jpg, IMG_0002.JPG, ...: the same names in every class, extensions in turn."""
    return f"IMG_{number:04d}{EXTENSIONS[(number - 1) % len(EXTENSIONS)]}"


def generate(root: str, per_class: int, seed: int) -> dict:
    """Writes root/train/<class>/... and returns its truth: classes in label order, every image, the skipped files."""
    images = []
    for label, class_name in enumerate(CLASSES, start=1):
        for number in range(1, per_class + 1):
            images.append(_write_image(root, label, class_name, number, seed))
    for relative, payload in NOT_IMAGES.items():
        files.write_atomically(os.path.join(root, "train", relative), payload)
    return {"classes": list(CLASSES), "images": images, "skipped": sorted(NOT_IMAGES)}


def _write_image(root: str, label: int, class_name: str, number: int, seed: int) -> dict:
    name = image_name(number)
    kind = "png" if name.endswith(".png") else "jpeg"
    if (class_name, number) == TRUNCATED:
        kind = "truncated"
    rng = np.random.default_rng([seed, 7, label, number])
    width, height = int(rng.integers(100, 301)), int(rng.integers(100, 301))
    picture, _ = pictures.draw_picture(label, len(CLASSES), width, height, rng)
    files.write_atomically(os.path.join(root, "train", class_name, name), pictures.encode(kind, picture, rng))
    valid = kind not in pictures.HOSTILE_KINDS
    return {
        "path": f"{class_name}/{name}",
        "class": class_name,
        "label": label,
        "kind": kind,
        "valid": valid,
        "width": width if valid else None,
        "height": height if valid else None,
    }
