"""Bounding boxes from ImageNet's PASCAL-VOC XML files.

Boxes are keyed by the XML file's own name, because some files' <filename>
element holds junk (`%s`). Coordinates are normalised by the XML's declared
size, clamped to [0, 1], reversed min/max swapped, and empty boxes dropped —
the defects found in the real ILSVRC2012 annotations.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ElementTree

from records.features import Box

_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")


def image_key(path: str) -> str:
    """The join key: a file's base name without extension (`n01440764_18`)."""
    return posixpath.splitext(posixpath.basename(path))[0]


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
