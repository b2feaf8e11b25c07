"""records.images on real encoded bytes made with Pillow, including hostile ones."""

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from records import images

RED = (255, 0, 0)


def photo(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients, a few shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], -1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(5, min(width, height) / 3)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def mean_rgb(data: bytes) -> np.ndarray:
    return np.asarray(decoded(data).convert("RGB"), np.float64).reshape(-1, 3).mean(0)


def scan_start(jpeg: bytes) -> int:
    """Offset of the first byte of entropy-coded data (just after the first SOS header)."""
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")


def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF0 header claiming another size (what a bomb looks like)."""
    sof = jpeg.index(b"\xff\xc0")
    patched = bytearray(jpeg)
    patched[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(patched)


def assert_rejected(result, category: str) -> None:
    assert isinstance(result, images.Rejected), result
    assert result.reason.startswith(category + ":"), result.reason
    assert "\n" not in result.reason


# --- JPEGs kept as they are ---------------------------------------------------------


@pytest.mark.parametrize("validate", ["header", "decode"])
@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 90, "progressive": True}])
def test_rgb_jpeg_is_kept_byte_for_byte_with_header_dimensions(validate, options):
    data = encode(photo(170, 110), **options)
    result = images.normalise_image(data, validate=validate)
    assert result == images.NormalisedImage(data, height=110, width=170, channels=3, colorspace="RGB", conversion="")
    assert result.jpeg is data  # not even copied


def test_grayscale_jpeg_is_kept_as_one_channel():
    data = encode(photo().convert("L"), quality=90)
    result = images.normalise_image(data)
    assert (result.jpeg, result.channels, result.colorspace, result.conversion) == (data, 1, "GRAY", "")
    assert (result.width, result.height) == (160, 120)


def test_jpeg_smaller_than_resize_limit_is_still_kept():
    data = encode(photo(160, 120))
    assert images.normalise_image(data, resize_max_side=160).jpeg is data


# --- CMYK / YCCK JPEGs --------------------------------------------------------------


def test_adobe_cmyk_jpeg_becomes_rgb_with_the_right_colours():
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(cmyk, quality=95)
    assert b"Adobe" in data[:64]  # libjpeg writes inverted CMYK behind an Adobe APP14 marker
    result = images.normalise_image(data)
    assert (result.conversion, result.channels, result.colorspace, result.width, result.height) == (
        "cmyk->rgb",
        3,
        "RGB",
        64,
        48,
    )
    out = decoded(result.jpeg)
    assert (out.format, out.mode) == ("JPEG", "RGB")
    np.testing.assert_allclose(mean_rgb(result.jpeg), RED, atol=4)


def ycck_red_jpeg(transform: int) -> bytes:
    """A 4-channel JPEG whose Adobe marker says YCCK (transform=2), holding pure red.

    Pillow only writes plain CMYK, so write the YCCK components ourselves and
    flip the APP14 transform byte: the decoder then does YCC->RGB on the first
    three channels (giving inverted C, M, Y), and keeps K.
    """
    inverted_rgb = (0, 255, 255)  # 255 - (C, M, Y) of red
    r, g, b = inverted_rgb
    ycc = (
        0.299 * r + 0.587 * g + 0.114 * b,
        128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
        128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
    )
    stored = [round(v) for v in ycc] + [255]  # K=0 stored inverted
    data = bytearray(encode(Image.new("CMYK", (48, 32), tuple(255 - v for v in stored)), quality=100))
    adobe = data.index(b"Adobe")
    assert data[adobe + 11] == 0
    data[adobe + 11] = transform
    return bytes(data)


def test_ycck_jpeg_becomes_rgb_with_the_right_colours():
    result = images.normalise_image(ycck_red_jpeg(transform=2))
    assert result.conversion == "cmyk->rgb"
    np.testing.assert_allclose(mean_rgb(result.jpeg), RED, atol=6)
    # Control: the same bytes read as plain CMYK are far from red, so the check above means something.
    control = images.normalise_image(ycck_red_jpeg(transform=0))
    assert np.abs(mean_rgb(control.jpeg) - RED).max() > 60


# --- other formats, sniffed by content ----------------------------------------------


def test_png_named_jpeg_is_detected_by_content_and_reencoded():
    source = photo(150, 100)
    result = images.normalise_image(encode(source, "PNG"))  # the bytes know nothing of the name
    assert (result.conversion, result.width, result.height, result.channels) == ("png->jpeg", 150, 100, 3)
    out = decoded(result.jpeg)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (150, 100))
    error = np.abs(np.asarray(out, np.float64) - np.asarray(source, np.float64)).mean()
    assert error < 8  # quality 95 (4:2:0 chroma, noisy source): close to it


def _gray16() -> Image.Image:
    values = (np.asarray(photo().convert("L"), np.uint16) * 257).astype(np.uint16)
    return Image.fromarray(values)


def _rgba_half_transparent() -> Image.Image:
    rgba = photo().convert("RGBA")
    alpha = np.full((120, 160), 255, np.uint8)
    alpha[:, :80] = 0  # left half fully transparent; its stored colour is black
    rgba.putalpha(Image.fromarray(alpha))
    pixels = np.asarray(rgba).copy()
    pixels[:, :80, :3] = 0
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize(
    "name, make, fmt, conversion",
    [
        ("gif", lambda: photo().quantize(), "GIF", "gif->jpeg,p->rgb"),
        ("bmp", lambda: photo(), "BMP", "bmp->jpeg"),
        ("tiff", lambda: photo(), "TIFF", "tiff->jpeg"),
        ("webp", lambda: photo(), "WEBP", "webp->jpeg"),
        ("palette png", lambda: photo().convert("P"), "PNG", "png->jpeg,p->rgb"),
        ("gray png", lambda: photo().convert("L"), "PNG", "png->jpeg,l->rgb"),
        ("la png", lambda: photo().convert("LA"), "PNG", "png->jpeg,la->rgb"),
        ("16-bit png", _gray16, "PNG", "png->jpeg,i;16->rgb"),
        ("cmyk tiff", lambda: photo().convert("CMYK"), "TIFF", "tiff->jpeg,cmyk->rgb"),
    ],
)
def test_other_formats_become_rgb_jpeg_that_looks_like_the_source(name, make, fmt, conversion):
    source = make()
    data = encode(source, fmt)
    assert Image.open(io.BytesIO(data)).mode == source.mode  # the mode under test really is stored
    result = images.normalise_image(data)
    assert (result.conversion, result.channels, result.colorspace) == (conversion, 3, "RGB")
    assert (result.width, result.height) == (160, 120)
    out = decoded(result.jpeg)
    assert (out.format, out.mode) == ("JPEG", "RGB")
    expected = np.asarray(photo().convert("L") if source.mode in ("L", "LA", "I;16") else photo(), np.float64)
    got = np.asarray(out.convert(expected.ndim == 2 and "L" or "RGB"), np.float64)
    assert np.abs(got - expected).mean() < 12, name  # 16-bit scaled, not clipped to white


def test_transparent_pixels_are_laid_on_white():
    result = images.normalise_image(encode(_rgba_half_transparent(), "PNG"))
    pixels = np.asarray(decoded(result.jpeg), np.float64)
    assert pixels[:, :70].mean() > 250  # transparent half: white, not the stored black
    assert pixels[:, 90:].mean() < 200  # opaque half: the photo


# --- resizing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, conversion, channels",
    [
        (lambda: encode(photo(400, 300), quality=90), "resized", 3),
        (lambda: encode(photo(400, 300), quality=90, progressive=True), "resized", 3),
        (lambda: encode(photo(400, 300).convert("L")), "resized", 1),
        (lambda: encode(photo(400, 300).convert("CMYK")), "cmyk->rgb,resized", 3),
        (lambda: encode(photo(400, 300), "PNG"), "png->jpeg,resized", 3),
    ],
)
def test_resize_shrinks_the_longer_side_keeping_aspect(make, conversion, channels):
    result = images.normalise_image(make(), resize_max_side=100)
    assert (result.width, result.height, result.conversion, result.channels) == (100, 75, conversion, channels)
    out = decoded(result.jpeg)
    assert (out.format, out.size, len(out.getbands())) == ("JPEG", (100, 75), channels)
    reference = np.asarray(photo(400, 300).resize((100, 75), Image.Resampling.LANCZOS).convert(out.mode), float)
    assert np.abs(np.asarray(out, float) - reference).mean() < 10  # high-quality resize, right way up


def test_resize_of_a_portrait_image_limits_its_height():
    result = images.normalise_image(encode(photo(90, 300)), resize_max_side=150)
    assert (result.width, result.height) == (45, 150)


# --- truncated and corrupt JPEGs ------------------------------------------------------


JPEG_VARIANTS = {
    "baseline": {"quality": 90},
    "progressive": {"quality": 90, "progressive": True},
    "restart markers": {"quality": 90, "restart_marker_rows": 1},
    "grayscale": {"quality": 90},
    "cmyk": {"quality": 90},
}


def variant_bytes(name: str, width: int = 400, height: int = 350) -> bytes:
    image = photo(width, height)
    image = {"grayscale": image.convert("L"), "cmyk": image.convert("CMYK")}.get(name, image)
    return encode(image, **JPEG_VARIANTS[name])


@pytest.mark.parametrize("variant", sorted(JPEG_VARIANTS))
def test_jpeg_truncated_anywhere_in_its_scans_is_rejected_in_decode_mode(variant):
    data = variant_bytes(variant)
    start = scan_start(data)
    cuts = list(range(start, len(data), max(1, (len(data) - start) // 40))) + [len(data) - 3, len(data) - 1]
    for cut in cuts:
        assert_rejected(images.normalise_image(data[:cut]), "truncated or corrupt")
    assert isinstance(images.normalise_image(data), images.NormalisedImage)


def test_header_mode_trusts_a_parsable_header_but_not_a_cut_one():
    data = variant_bytes("baseline")
    half = data[: len(data) // 2]
    assert images.normalise_image(half, validate="header").jpeg == half  # the documented trade-off
    assert_rejected(images.normalise_image(half, validate="decode"), "truncated or corrupt")
    assert_rejected(images.normalise_image(data[: scan_start(data) - 20], validate="header"), "truncated or corrupt")


def _header_mode_cases() -> dict[str, bytes]:
    """JPEGs of every kind, cut at every marker of their header, with frames Pillow must judge alone."""
    cases = {name: variant_bytes(name, 96, 64) for name in JPEG_VARIANTS}
    baseline = cases["baseline"]
    for number, position in enumerate(i for i in range(2, scan_start(baseline)) if baseline[i] == 0xFF):
        cases[f"cut at header marker {number}"] = baseline[:position]
    sof = baseline.index(b"\xff\xc0")
    for name, patch in {
        "12-bit": (sof + 4, 12),
        "arithmetic": (sof + 1, 0xC9),
        "lossless": (sof + 1, 0xC3),
        "zero width": (sof + 8, 0),
        "two components": (sof + 9, 2),
    }.items():
        changed = bytearray(baseline)
        changed[patch[0]] = patch[1]
        cases[name] = bytes(changed)
    cases["fill bytes"] = baseline[:2] + b"\xff\xff" + baseline[2:]
    cases["no scan"] = baseline[: baseline.index(b"\xff\xda")] + b"\xff\xd9"
    return cases


@pytest.mark.parametrize("case", sorted(_header_mode_cases()))
def test_header_mode_fast_path_agrees_with_pillow(case, monkeypatch):
    """validate='header' reads plain JPEG headers itself; on every input it must answer as Pillow does."""
    data = _header_mode_cases()[case]
    plain = case in ("baseline", "progressive", "restart markers", "grayscale", "fill bytes")
    assert (images._plain_jpeg_kept(data, 0, images.DEFAULT_MAX_PIXELS) is not None) == plain
    fast = images.normalise_image(data, validate="header")
    monkeypatch.setattr(images, "_plain_jpeg_kept", lambda *args: None)
    assert fast == images.normalise_image(data, validate="header")


def test_truncated_jpeg_is_rejected_even_if_someone_enabled_load_truncated_images(monkeypatch):
    data = variant_bytes("baseline")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert_rejected(images.normalise_image(data[: len(data) * 2 // 3]), "truncated or corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_rejected():
    data = encode(photo(), "PNG")
    assert_rejected(images.normalise_image(data[: len(data) // 2]), "truncated or corrupt")


def test_marker_damage_inside_the_scan_is_rejected():
    data = variant_bytes("baseline")
    middle = (scan_start(data) + len(data)) // 2
    for marker in (b"\xff\x02", b"\xff\xc8", b"\xff\xf0"):  # reserved / JPG-extension markers
        damaged = data[:middle] + marker + data[middle + 2 :]
        assert_rejected(images.normalise_image(damaged), "truncated or corrupt")


def test_damaged_huffman_table_is_rejected():
    data = bytearray(variant_bytes("baseline"))
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16  # code counts summing past 256: a bogus table
    assert_rejected(images.normalise_image(bytes(data)), "truncated or corrupt")


def test_mutated_images_never_raise_and_what_is_kept_decodes():
    """Fuzz: whatever the damage, the answer is a decodable image or a reason."""
    rng = np.random.default_rng(7)
    sources = [
        variant_bytes("baseline", 96, 64),
        variant_bytes("progressive", 96, 64),
        encode(photo(96, 64), "PNG"),
        encode(photo(96, 64), "GIF"),
        encode(photo(96, 64), "TIFF"),
    ]
    kept = rejected = 0
    for trial in range(300):
        data = bytearray(sources[trial % len(sources)])
        for _ in range(int(rng.integers(1, 6))):
            position = int(rng.integers(0, len(data)))
            if rng.random() < 0.2:
                del data[position:]
                break
            data[position] = int(rng.integers(0, 256))
        result = images.normalise_image(bytes(data))
        if isinstance(result, images.Rejected):
            rejected += 1
            assert result.reason.split(":")[0] in ("truncated or corrupt", "not an image", "too large", "unsupported")
        else:
            kept += 1
            out = decoded(result.jpeg)
            assert out.size == (result.width, result.height)
    assert kept and rejected


# --- not images at all, empty, too large ---------------------------------------------


def test_empty_and_non_image_files_are_rejected_with_their_category():
    assert_rejected(images.normalise_image(b""), "empty file")
    html = images.normalise_image(b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    assert_rejected(html, "not an image")
    assert "<!DOCTYPE" in html.reason
    assert_rejected(images.normalise_image(b"\xff\xd8\xff\xe0" + b"\x00" * 30), "truncated or corrupt")


def test_eps_is_refused_not_handed_to_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert_rejected(images.normalise_image(eps), "unsupported")


def test_decompression_bomb_is_rejected_from_the_header():
    small = encode(photo(64, 48))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        over_limit = images.normalise_image(with_size(small, 10_000, 10_000))  # 1e8 > Pillow's 8.9e7
    assert_rejected(over_limit, "too large")
    assert "10000x10000" in over_limit.reason
    assert_rejected(images.normalise_image(with_size(small, 30_000, 30_000)), "too large")  # Pillow's hard stop


def test_max_pixels_is_checked_before_any_decoding():
    data = variant_bytes("baseline", 400, 350)
    truncated = data[: len(data) // 2]
    assert_rejected(images.normalise_image(truncated, max_pixels=400 * 350 - 1), "too large")
    assert isinstance(images.normalise_image(data, max_pixels=400 * 350), images.NormalisedImage)


def test_bad_arguments_are_caller_bugs_and_raise():
    with pytest.raises(ValueError, match="validate"):
        images.normalise_image(b"x", validate="full")
    with pytest.raises(ValueError):
        images.normalise_image(b"x", resize_max_side=-1)


def test_what_is_stored_decodes_with_tensorflow_like_the_trainer_reads_it():
    tf = pytest.importorskip("tensorflow")
    cases = [
        encode(photo(), quality=90),
        encode(photo().convert("L")),
        ycck_red_jpeg(2),
        encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0))),
        encode(_rgba_half_transparent(), "PNG"),
    ]
    for data in cases:
        result = images.normalise_image(data)
        pixels = tf.io.decode_jpeg(result.jpeg).numpy()
        assert pixels.shape == (result.height, result.width, result.channels)
