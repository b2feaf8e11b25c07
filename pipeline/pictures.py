"""Pictures for the generated datasets: class-coloured shapes on clutter, and the files they become.

Each class is a hue and a shape, drawn at a random place and scale on a noisy
background, so a network learns it in a few hundred steps even from random
crops; `encode` turns a picture into a normal JPEG, one of ImageNet's quirks
(CMYK, PNG, grayscale, progressive) or a hostile file (truncated, empty, text,
decompression bomb).
"""

from __future__ import annotations

import colorsys
import io
import math
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]
HOSTILE_KINDS = frozenset({"truncated", "empty", "text", "bomb"})
BOMB_SIZE = (20000, 15000)

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
