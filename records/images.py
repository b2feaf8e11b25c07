"""Normalise one image's bytes into what a record stores: a JPEG that decodes.

The format is sniffed from the content, never from the file name: ImageNet has
a PNG named `.JPEG`, 22 CMYK JPEGs and grayscale JPEGs, and other datasets in
the same layout have worse. Readers decode `image/encoded` as JPEG, so
everything that is not already a plain RGB or grayscale JPEG is re-encoded;
everything that is, is stored byte-for-byte (re-encoding would only lose
quality and cost time).

Bad data never raises: it comes back as `Rejected` with a one-line reason, so
the caller can list it in rejected.tsv and carry on. Only a programming error
(a bad `validate` value, bytes that are not bytes) raises.

Cost per image on the 2-core dev machine (400x350 q90 baseline photo, ~45 KB,
kept as is; best of 3 x 1500 runs):
  validate='header'  a few us (markers walked without Pillow; ~40 us when
                               Pillow must judge: PNG, CMYK, odd JPEGs)
  validate='decode'  ~320-370 us  (1/8-scale draft decode: every entropy-coded
                               byte is still Huffman-decoded; IDCT and colour
                               conversion are nearly free)
  full-size decode   ~480-580 us  (for comparison; never done for a kept JPEG)
Progressive JPEGs cost ~1.1-1.4 ms in decode mode (libjpeg buffers every
scan). Re-encoding is the expensive path: CMYK ~2.3 ms, PNG ~4 ms, and
resizing to 256 ~3 ms (mostly Pillow's LANCZOS filter), so keep
resize_max_side off unless the shards must be small.

What decode validation catches: truncation anywhere (even a missing EOI
marker), damaged headers and tables, and scan damage that breaks the marker
structure. What it cannot catch: bit errors inside Huffman data that keep the
marker structure intact. libjpeg reports those only as warnings ("Corrupt JPEG
data: ..."), which Pillow discards, and TensorFlow decodes such a file without
error too; ImageNet itself has files that trigger these warnings yet look
fine, so rejecting on them would drop real training data anyway.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import struct

import numpy as np
from absl import logging
from PIL import Image, ImageFile, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
JPEG_QUALITY = 95
VALIDATE_MODES = ("header", "decode")

# Pillow's EPS plugin hands the file to Ghostscript, i.e. runs a PostScript
# program taken from untrusted input. Refuse it rather than open it.
_REFUSED_FORMATS = frozenset({"EPS"})
_COMMON_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: a JPEG with extra frames appended
_DRAFT_SCALE = 8  # libjpeg's smallest DCT scale: 1/8
_TRUNCATED_OR_CORRUPT = "truncated or corrupt"
_REDOWNLOAD = "the file is damaged or incomplete: re-download or re-extract it"

# Magic numbers of formats that Pillow reads, to tell "a damaged image" from
# "not an image at all" when Pillow cannot identify the bytes.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WEBP"),
)
_EPS_MAGIC = (b"%!PS", b"\xc5\xd0\xd3\xc6")


class _Unsupported(Exception):
    """A well-formed image this module deliberately does not convert."""


@dataclasses.dataclass(frozen=True)
class NormalisedImage:
    """An image ready to be stored as `image/encoded`."""

    jpeg: bytes
    height: int
    width: int
    channels: int  # 3, or 1 for a grayscale JPEG kept as is
    colorspace: str  # 'RGB' or 'GRAY'
    conversion: str  # '' when the original bytes were kept, else e.g. 'cmyk->rgb,resized'


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An input that must not be written; `reason` goes to rejected.tsv.

    The reason starts with a stable category ('empty file', 'not an image',
    'truncated or corrupt', 'too large', 'unsupported') so rejections can be
    counted by kind, then says what was seen and how to fix it.
    """

    reason: str


def normalise_image(
    data: bytes,
    *,
    validate: str = "decode",
    resize_max_side: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NormalisedImage | Rejected:
    """Turn one file's bytes into a storable JPEG, or say why not.

    validate='header' trusts a JPEG whose header parses (fast); 'decode'
    proves every byte of its compressed data decodes, so a truncated file can
    never reach training. Images that must be re-encoded are always fully
    decoded. resize_max_side > 0 shrinks images whose longer side exceeds it.
    max_pixels is checked from the header, before any pixel is decoded.
    """
    if validate not in VALIDATE_MODES:
        raise ValueError(f"validate must be one of {VALIDATE_MODES}, got {validate!r}")
    if resize_max_side < 0 or max_pixels <= 0:
        raise ValueError(f"need resize_max_side >= 0 and max_pixels > 0, got {resize_max_side}, {max_pixels}")
    if not isinstance(data, bytes):
        data = bytes(data)  # memoryview/bytearray; anything else raises TypeError, a caller bug
    if not data:
        return Rejected("empty file: 0 bytes; re-download or re-extract it")
    forbid_loading_truncated_images()
    try:
        return _normalise(data, validate, resize_max_side, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own limit fired inside open(): 2x Image.MAX_IMAGE_PIXELS, or
        # 1x when the process turns warnings into errors.
        return Rejected(
            f"too large: {str(error).rstrip('.')}; "
            "raise PIL.Image.MAX_IMAGE_PIXELS and max_pixels if the file is trusted"
        )
    except _Unsupported as error:
        return Rejected(f"unsupported: {error}")
    except MemoryError:
        return Rejected("too large: ran out of memory decoding it; lower max_pixels or give workers more memory")
    except Exception as error:  # noqa: BLE001 - Pillow raises anything on hostile bytes; bad data must not crash
        return Rejected(f"{_TRUNCATED_OR_CORRUPT}: {describe_error(error)}; {_REDOWNLOAD}")


def _normalise(data: bytes, validate: str, resize_max_side: int, max_pixels: int) -> NormalisedImage | Rejected:
    if validate == "header":
        kept = _plain_jpeg_kept(data, resize_max_side, max_pixels)
        if kept is not None:
            return kept
    try:
        image = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except UnidentifiedImageError:
        return _unidentified(data)
    width, height = image.size
    if width <= 0 or height <= 0:
        return Rejected(f"{_TRUNCATED_OR_CORRUPT}: header says {width}x{height} pixels; {_REDOWNLOAD}")
    if width * height > max_pixels:
        return Rejected(
            f"too large: {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
            "(a decompression bomb guard); raise max_pixels if the file is trusted"
        )
    target = _target_size(width, height, resize_max_side)
    if image.format in _JPEG_FORMATS:
        return _normalise_jpeg(data, image, validate, target)
    return _reencode(image, [f"{image.format.lower()}->jpeg"], target)


# Huffman-coded baseline, extended and progressive frames: what Pillow and TensorFlow both decode.
_PLAIN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
_OTHER_FRAMES = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: markers without a length


def _plain_jpeg_kept(data: bytes, resize_max_side: int, max_pixels: int) -> NormalisedImage | None:
    """Header validation of a plain JPEG without Pillow: the marker segments walked up to the scan,
    the frame read. None whenever Pillow must judge (not a plain 8-bit RGB/gray JPEG, too large,
    to be resized, or a header that does not parse): the same outcome, reached in a few microseconds
    instead of Pillow's ~40, which is most of a header-validated build's time per image."""
    if not data.startswith(b"\xff\xd8"):
        return None
    frame, position, end = None, 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF or marker in _STANDALONE:  # fill byte, or a marker without a segment
            position += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:  # start of scan: the header is complete
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _OTHER_FRAMES or marker == 0xD9 or length < 2 or position + 2 + length > end:
            return None
        if marker in _PLAIN_FRAMES:
            precision, height, width, components = struct.unpack_from(">BHHB", data, position + 4)
            frame = (precision, width, height, components)
        position += 2 + length
    else:
        return None
    if frame is None or frame[0] != 8 or frame[3] not in (1, 3) or not frame[1] or not frame[2]:
        return None
    _, width, height, components = frame
    if width * height > max_pixels or _target_size(width, height, resize_max_side) is not None:
        return None
    return _kept(data, width, height, gray=components == 1)


def _normalise_jpeg(
    data: bytes, image: ImageFile.ImageFile, validate: str, target: tuple[int, int] | None
) -> NormalisedImage:
    """Keep a plain RGB/gray JPEG byte-for-byte; re-encode CMYK/YCCK or oversized ones."""
    width, height = image.size
    if image.mode not in ("RGB", "L"):
        # CMYK and YCCK. Pillow reads Adobe's inverted CMYK (APP14 marker) as
        # such, so the naive CMYK->RGB below gives the colours Photoshop shows.
        return _reencode(image, [f"{image.mode.lower()}->rgb"], target)
    if target is not None:
        return _reencode(image, [], target)
    if validate == "decode":
        # A 1/8-scale decode still Huffman-decodes every coefficient: all the
        # proof of integrity at a fraction of a full decode's cost.
        image.draft(image.mode, (max(1, width // _DRAFT_SCALE), max(1, height // _DRAFT_SCALE)))
        image.load()
    return _kept(data, width, height, gray=image.mode == "L")


def _kept(data: bytes, width: int, height: int, *, gray: bool) -> NormalisedImage:
    """A plain JPEG stored byte for byte."""
    return NormalisedImage(data, height, width, 1 if gray else 3, "GRAY" if gray else "RGB", conversion="")


def _reencode(image: ImageFile.ImageFile, steps: list[str], target: tuple[int, int] | None) -> NormalisedImage:
    """Decode (at reduced JPEG scale when shrinking), fix the mode, resize, encode q95."""
    keep_gray = image.format in _JPEG_FORMATS and image.mode == "L"
    if target is not None and image.format in _JPEG_FORMATS:
        image.draft(image.mode, target)  # picks the smallest DCT scale still >= target
    image.load()
    pixels: Image.Image = image
    if not keep_gray and pixels.mode != "RGB":
        if image.format not in _JPEG_FORMATS:
            steps.append(f"{pixels.mode.lower()}->rgb")
        try:
            pixels = _to_rgb(pixels)
        except ValueError as error:  # e.g. a LAB TIFF: Pillow has no conversion for it
            raise _Unsupported(
                f"{image.format} image in mode {pixels.mode} has no RGB conversion ({error}); "
                "convert it to RGB PNG or JPEG first"
            ) from error
    if target is not None:
        if pixels.size != target:
            pixels = pixels.resize(target, Image.Resampling.LANCZOS)
        steps.append("resized")
    out = io.BytesIO()
    pixels.save(out, "JPEG", quality=JPEG_QUALITY)
    return NormalisedImage(
        jpeg=out.getvalue(),
        height=pixels.height,
        width=pixels.width,
        channels=1 if keep_gray else 3,
        colorspace="GRAY" if keep_gray else "RGB",
        conversion=",".join(steps),
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, as a viewer would show it.

    Transparent pixels are laid on white, because their stored colour is often
    black or garbage that no viewer (and no labeller) ever saw. 16-bit and
    float images are scaled to 8 bits, not clipped, so they do not turn white.
    """
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max(initial=0.0))
        scale = 255.0 if peak <= 1.0 else (255.0 / peak if peak > 255.0 else 1.0)
        return np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    wide = values.astype(np.int64)
    if values.dtype.itemsize >= 2 and int(wide.max(initial=0)) > 255:
        wide = (np.clip(wide, 0, 65535) + 128) // 257  # 16-bit range -> 8-bit, rounded
    return np.clip(wide, 0, 255).astype(np.uint8)


def _target_size(width: int, height: int, resize_max_side: int) -> tuple[int, int] | None:
    """Size that fits resize_max_side keeping the aspect ratio; None if it already fits."""
    longer = max(width, height)
    if resize_max_side <= 0 or longer <= resize_max_side:
        return None
    scale = resize_max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def _unidentified(data: bytes) -> Rejected:
    if data.startswith(_EPS_MAGIC):
        return Rejected(
            "unsupported: PostScript/EPS is refused (decoding it would run Ghostscript on untrusted input); "
            "convert it to PNG or JPEG first"
        )
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return Rejected(
                f"{_TRUNCATED_OR_CORRUPT}: starts like {name} ({len(data)} bytes) but its header does not parse; "
                f"{_REDOWNLOAD}"
            )
    return Rejected(
        f"not an image: no image format recognised in {len(data)} bytes starting {data[:16]!r}; "
        "remove it from the input or replace it with the real image"
    )


def describe_error(error: BaseException) -> str:
    """One line: the error's type and its message, whitespace folded, at most 200 characters."""
    text = " ".join(str(error).split()) or "no detail"
    return f"{type(error).__name__}: {text[:200]}"


@functools.cache
def _allowed_formats() -> tuple[str, ...]:
    """Every format Pillow can open except the refused ones, common ones first.

    Pillow tries formats in order, so JPEG first saves checking two dozen
    other signatures for nearly every image.
    """
    Image.init()
    common = [name for name in _COMMON_FORMATS if name in Image.ID]
    rest = [name for name in Image.ID if name not in common and name not in _REFUSED_FORMATS]
    return tuple(common + rest)


def forbid_loading_truncated_images() -> None:
    """Undo anyone's ImageFile.LOAD_TRUNCATED_IMAGES = True in this process.

    With it on, Pillow pads a truncated JPEG with an EOI marker and decodes it
    "successfully", so a half-grey image would reach training.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logging.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was on; turning it off so truncated images are rejected")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
