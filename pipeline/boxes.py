"""Bounding boxes from ImageNet's PASCAL-VOC XML files.

Boxes are keyed by the XML file's own name, because some files' <filename>
element holds junk (`%s`). Coordinates are normalised by the XML's declared
size, clamped to [0, 1], reversed min/max swapped, and empty boxes dropped —
the defects found in the real ILSVRC2012 annotations.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import xml.etree.ElementTree as ElementTree

from records import files
from records.features import Box

_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")
REJECT_REASON_SUFFIX = "; image kept without boxes"

Boxes = dict[str, tuple[Box, ...]]  # image path inside its unit, without extension -> boxes
Rejections = list[tuple[str, str]]  # (the XML file, why it was not used)


def parse_voc_xml(data: bytes) -> tuple[Box, ...]:
    """Normalised boxes of one annotation file; ValueError if malformed.

    VOC files never declare a DTYPE, so any DOCTYPE/ENTITY is refused before
    parsing: no entity expansion, no external fetches, whatever the XML says.
    """
    if any(token in data for token in _FORBIDDEN):
        raise ValueError("XML declares a DOCTYPE/ENTITY, refused for safety")
    try:
        root = ElementTree.fromstring(data)
        width = float(root.findtext("size/width"))
        height = float(root.findtext("size/height"))
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height} is not positive")
        boxes = []
        for bndbox in root.iter("bndbox"):
            x0, y0, x1, y1 = (float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            box = _normalise(x0 / width, y0 / height, x1 / width, y1 / height)
            if box is not None:
                boxes.append(box)
    except (ElementTree.ParseError, TypeError, ValueError) as error:
        raise ValueError(f"malformed VOC XML: {error}") from error
    return tuple(boxes)


def _normalise(x0: float, y0: float, x1: float, y1: float) -> Box | None:
    xmin, xmax = sorted((_clamp(x0), _clamp(x1)))
    ymin, ymax = sorted((_clamp(y0), _clamp(y1)))
    if xmax <= xmin or ymax <= ymin:
        return None
    return (xmin, ymin, xmax, ymax)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def join_key(path_inside_unit: str) -> str:
    """How an image and its XML meet: `n01440764_18.JPEG` and `n01440764_18.xml` share `n01440764_18`."""
    return posixpath.splitext(path_inside_unit)[0]


def _parse_into(found: Boxes, rejected: Rejections, origin: str, inside: str, data: bytes) -> None:
    try:
        found[join_key(inside)] = parse_voc_xml(data)
    except ValueError as error:
        rejected.append((origin, f"{error}{REJECT_REASON_SUFFIX}"))


def read_folder(folder: str) -> tuple[Boxes, Rejections]:
    """Every *.xml below `folder` (one unit's annotations: bbox/<wnid>/, Kaggle's Annotations/...)."""
    found: Boxes = {}
    rejected: Rejections = []
    if not files.isdir(folder):
        return found, rejected
    for inside, _ in files.walk(folder):
        if inside.endswith(".xml"):
            path = files.join(folder, inside)
            _parse_into(found, rejected, path, inside, files.read_bytes(path))
    return found, rejected


def split_tarball(tarball: str, out_dir: str) -> list[str]:
    """Streams the bbox tarball once and writes one file per unit (`<wnid>.json`) into out_dir.

    The tarball is gzip: it can only be read front to back, by one reader, so
    it is split once and each unit's indexer reads its own small file. The real
    tarball holds one folder per synset, so a unit's file is written as soon as
    its folder ends: memory holds one unit's boxes. Returns the units written.
    """
    files.makedirs(out_dir)
    written: set[str] = set()
    unit, found, rejected = None, {}, []

    def flush() -> None:
        if unit is None:
            return
        path = files.join(out_dir, f"{unit}.json")
        if unit in written:  # the tarball came back to a unit: merge with what is on disk
            earlier_found, earlier_rejected = read_split_file(path)
            found.update({k: v for k, v in earlier_found.items() if k not in found})
            rejected.extend(earlier_rejected)
        files.write_atomically(path, json.dumps({"boxes": found, "rejected": rejected}))
        written.add(unit)

    with files.open_read(tarball) as raw:
        mode = "r|gz" if tarball.endswith(("gz", "tgz")) else "r|"
        with tarfile.open(fileobj=raw, mode=mode) as archive:
            for info in archive:
                if not (info.isfile() and info.name.endswith(".xml")):
                    continue
                member_unit, _, inside = info.name.partition("/")
                if not inside:  # a flat tarball: n01440764_18.xml belongs to n01440764
                    member_unit, inside = info.name.split("_", 1)[0], info.name
                if member_unit != unit:
                    flush()
                    unit, found, rejected = member_unit, {}, []
                _parse_into(found, rejected, f"{tarball}:{info.name}", inside, archive.extractfile(info).read())
    flush()
    return sorted(written)


def read_split_file(path: str) -> tuple[Boxes, Rejections]:
    """What split_tarball wrote for one unit; nothing if the tarball had no boxes for it."""
    if not files.exists(path):
        return {}, []
    payload = json.loads(files.read_text(path))
    found = {key: tuple(tuple(box) for box in boxes) for key, boxes in payload["boxes"].items()}
    return found, [tuple(row) for row in payload["rejected"]]
