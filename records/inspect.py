"""What a records build holds, at a glance, without reading all of it.

Counts come from manifest.json and rejected.tsv (exact, and free); what only
the images can tell (sizes, grayscale share, boxes) comes from a sample of
records spread over the shards. Records inside a shard are ordered by a keyed
hash of their names, so the first few of each shard are a fair random sample
and reading them costs a few reads per shard instead of the whole build.
Everything goes through records.files, so a build on gs:// is inspected the
same way as a local one.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import posixpath
from collections.abc import Sequence

import numpy as np
from absl import logging
from PIL import Image, ImageDraw, ImageFont

from records import features, files, manifest, shards, tfrecord
from records.synsets import LABEL_OFFSET, SynsetTable

DEFAULT_SAMPLE_RECORDS = 500
TOP_REASONS = 5
QUANTILES = (0, 10, 50, 90, 100)  # percentiles of the sampled side lengths

# Contact sheet geometry, in pixels.
SHEET_COLUMNS = 8
THUMB_SIZE = 160
LABEL_HEIGHT = 34  # two lines of caption under each thumbnail
TITLE_HEIGHT = 26  # one line naming the split above its block
CELL_WIDTH, CELL_HEIGHT = THUMB_SIZE, THUMB_SIZE + LABEL_HEIGHT


@dataclasses.dataclass(frozen=True)
class SplitSummary:
    split: str
    num_examples: int
    num_shards: int
    smallest_shard: tuple[str, int]  # (name, examples)
    largest_shard: tuple[str, int]
    classes_present: int
    missing_classes: tuple[str, ...]  # wnids with no example in this split
    per_class: tuple[int, int, int]  # examples per class over every class in the table: min, median, max
    class_counts: tuple[int, ...]  # examples per class, in label order (0 for absent classes)
    conversions: dict[str, int]
    num_rejected: int
    rejected_reasons: tuple[tuple[str, int], ...]  # (reason category, images), most frequent first
    widths: tuple[int, ...]  # of the sampled records
    heights: tuple[int, ...]
    num_grayscale: int  # among the sampled records
    num_with_boxes: int  # among the sampled records
    samples: tuple[features.ImageRecord, ...] = dataclasses.field(repr=False, default=())


@dataclasses.dataclass(frozen=True)
class Summary:
    records_dir: str
    num_classes: int
    num_rejected: int
    num_annotations_rejected: int
    annotation_reasons: tuple[tuple[str, int], ...]
    splits: tuple[SplitSummary, ...]


def summarize(records_dir: str, sample_records: int = DEFAULT_SAMPLE_RECORDS) -> Summary:
    """Reads manifest.json, synsets.tsv, rejected.tsv and up to `sample_records` records per split."""
    built = manifest.read_manifest(records_dir)
    table = SynsetTable.read_tsv(posixpath.join(records_dir, manifest.SYNSETS_NAME))
    rejected = _read_rejected_or_none(records_dir)
    splits = []
    for split, stats in sorted(built.splits.items(), key=lambda kv: _split_order(kv[0])):
        sample = sample_split(built.shards_location(records_dir), split, stats.num_shards, sample_records)
        reasons = None if rejected is None else [r[2] for r in rejected if r[0] == split]
        splits.append(_summarize_split(split, stats, table, sample, reasons))
    annotation_reasons = None if rejected is None else [r[2] for r in rejected if r[0] not in built.splits]
    return Summary(
        records_dir=records_dir,
        num_classes=built.num_classes,
        num_rejected=built.num_rejected,
        num_annotations_rejected=built.num_annotations_rejected,
        annotation_reasons=_top_reasons(annotation_reasons),
        splits=tuple(splits),
    )


def sample_split(shards_dir: str, split: str, num_shards: int, count: int) -> list[features.ImageRecord]:
    """Up to `count` records, the first few of evenly spaced shards.

    A damaged record ends the read of its shard with a warning (verify names
    it); the sample then just holds fewer records.
    """
    if count <= 0 or num_shards <= 0:
        return []
    num_chosen = min(count, num_shards)
    chosen = [i * num_shards // num_chosen for i in range(num_chosen)]  # evenly spaced, distinct
    per_shard = math.ceil(count / num_chosen)
    records: list[features.ImageRecord] = []
    for index in chosen:
        path = files.join(shards_dir, shards.shard_name(split, index, num_shards))
        if not files.exists(path):
            raise FileNotFoundError(
                f"{path} is listed in manifest.json but missing; `python -m records verify RECORDS_DIR` lists every "
                "missing shard: restore them or rebuild the records"
            )
        wanted = min(per_shard, count - len(records))
        try:
            with files.open_read(path) as f:
                for data in tfrecord.read_frames(f):
                    records.append(features.from_example(data))
                    wanted -= 1
                    if wanted == 0:
                        break
        except (tfrecord.CorruptRecordError, ValueError) as error:
            logging.warning(
                "%s: %s; skipped the rest of this shard (run `python -m records verify`)",
                posixpath.basename(path),
                error,
            )
        if len(records) >= count:
            break
    return records


def _summarize_split(
    split: str,
    stats: manifest.SplitStats,
    table: SynsetTable,
    sample: Sequence[features.ImageRecord],
    reasons: list[str] | None,
) -> SplitSummary:
    names = shards.shard_names(split, stats.num_shards)
    counts = stats.shard_counts
    smallest, largest = int(np.argmin(counts)), int(np.argmax(counts))
    per_class = tuple(stats.class_counts.get(w, 0) for w in table.synsets)
    return SplitSummary(
        split=split,
        num_examples=stats.num_examples,
        num_shards=stats.num_shards,
        smallest_shard=(names[smallest], counts[smallest]),
        largest_shard=(names[largest], counts[largest]),
        classes_present=sum(1 for c in per_class if c),
        missing_classes=tuple(w for w, c in zip(table.synsets, per_class) if not c),
        per_class=(min(per_class), int(np.median(per_class)), max(per_class)),
        class_counts=per_class,
        conversions=dict(stats.conversions),
        num_rejected=stats.num_rejected,
        rejected_reasons=_top_reasons(reasons),
        widths=tuple(r.width for r in sample),
        heights=tuple(r.height for r in sample),
        num_grayscale=sum(1 for r in sample if r.channels == 1),
        num_with_boxes=sum(1 for r in sample if r.boxes),
        samples=tuple(sample),
    )


def _top_reasons(reasons: list[str] | None) -> tuple[tuple[str, int], ...]:
    """Counts by category: a reason starts with a stable kind ('truncated or corrupt: ...')."""
    if reasons is None:
        return (("reasons unknown: no rejected.tsv", 0),)
    by_kind = collections.Counter(reason.split(":", 1)[0].strip() for reason in reasons)
    return tuple(sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS])


def _read_rejected_or_none(records_dir: str) -> list[tuple[str, str, str]] | None:
    if not files.exists(files.join(records_dir, manifest.REJECTED_NAME)):
        return None
    return manifest.read_rejected(records_dir)


def _split_order(split: str) -> tuple[int, str]:
    return (shards.SPLITS.index(split) if split in shards.SPLITS else len(shards.SPLITS), split)


# --- text -----------------------------------------------------------------------------


def format_summary(summary: Summary) -> str:
    total = sum(s.num_examples for s in summary.splits)
    lines = [
        f"{summary.records_dir}: {total} examples, {summary.num_classes} classes "
        f"(labels {LABEL_OFFSET}..{summary.num_classes - 1 + LABEL_OFFSET}, 0 = background), "
        f"{summary.num_rejected} images rejected, {summary.num_annotations_rejected} box files rejected"
        + _reasons_text(summary.annotation_reasons if summary.num_annotations_rejected else ())
    ]
    for s in summary.splits:
        lines.append(
            f"{s.split}: {s.num_examples} examples in {s.num_shards} shards "
            f"(smallest {s.smallest_shard[0]}: {s.smallest_shard[1]}, "
            f"largest {s.largest_shard[0]}: {s.largest_shard[1]})"
        )
        missing = f"; missing {', '.join(s.missing_classes[:5])}" + ("..." if len(s.missing_classes) > 5 else "")
        lines.append(
            f"  classes present: {s.classes_present} of {summary.num_classes}{missing if s.missing_classes else ''}"
        )
        lines.append("  images per class: min {} / median {} / max {}".format(*s.per_class))
        if s.widths:
            lines.append(
                f"  image size, {len(s.widths)} sampled records (percentiles {'/'.join(f'p{q}' for q in QUANTILES)}):"
            )
            lines.append(f"    width  {_quantiles_text(s.widths)}")
            lines.append(f"    height {_quantiles_text(s.heights)}")
            lines.append(f"    grayscale {s.num_grayscale}, with boxes {s.num_with_boxes}")
        else:
            lines.append("  image size: no records sampled")
        converted = sum(s.conversions.values())
        details = ", ".join(f"{k} {v}" for k, v in sorted(s.conversions.items()))
        lines.append(f"  converted: {converted}" + (f" ({details})" if details else ""))
        lines.append(f"  rejected: {s.num_rejected}" + _reasons_text(s.rejected_reasons if s.num_rejected else ()))
    return "\n".join(lines)


def quantiles(values: Sequence[int]) -> tuple[int, ...]:
    """The QUANTILES percentiles, as whole pixels (nearest rank: values that occur)."""
    return tuple(int(v) for v in np.percentile(np.asarray(values), QUANTILES, method="nearest"))


def _quantiles_text(values: Sequence[int]) -> str:
    return "/".join(str(v) for v in quantiles(values))


def _reasons_text(reasons: Sequence[tuple[str, int]]) -> str:
    return f" ({', '.join(f'{kind} {n}' if n else kind for kind, n in reasons)})" if reasons else ""


# --- contact sheet --------------------------------------------------------------------


def write_contact_sheet(summary: Summary, path: str, images_per_split: int = 16, seed: int = 0) -> tuple[int, int]:
    """PNG of random sampled records per split, each captioned with its label; returns its size.

    The captions are what the records say, so a class whose pictures do not
    match its name (a shifted label) shows at a glance.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for s in summary.splits:
        chosen = rng.permutation(len(s.samples))[:images_per_split]
        blocks.append((s, [s.samples[i] for i in sorted(chosen)]))
    rows = [math.ceil(len(records) / SHEET_COLUMNS) for _, records in blocks]
    size = (SHEET_COLUMNS * CELL_WIDTH, sum(TITLE_HEIGHT + r * CELL_HEIGHT for r in rows))
    sheet = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    top = 0
    for (s, records), num_rows in zip(blocks, rows):
        draw.rectangle([0, top, size[0], top + TITLE_HEIGHT - 1], fill=(40, 40, 40))
        draw.text(
            (6, top + 6),
            f"{s.split}: {len(records)} random of {s.num_examples} records",
            fill=(255, 255, 255),
            font=font,
        )
        top += TITLE_HEIGHT
        for number, record in enumerate(records):
            x, y = (number % SHEET_COLUMNS) * CELL_WIDTH, top + (number // SHEET_COLUMNS) * CELL_HEIGHT
            _paste_thumbnail(sheet, record, x, y)
            caption = [f"{record.label} {record.synset}", record.text]
            for line_number, line in enumerate(caption):
                draw.text(
                    (x + 3, y + THUMB_SIZE + 2 + 16 * line_number),
                    _fit(draw, line, font, CELL_WIDTH - 6),
                    fill=(0, 0, 0),
                    font=font,
                )
        top += num_rows * CELL_HEIGHT
    _save_png(sheet, path)
    return size


def _paste_thumbnail(sheet: Image.Image, record: features.ImageRecord, x: int, y: int) -> None:
    cell = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), (90, 90, 90))
    try:
        image = Image.open(io.BytesIO(record.encoded))
        image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
        image = image.convert("RGB")
        image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        cell.paste(image, ((THUMB_SIZE - image.width) // 2, (THUMB_SIZE - image.height) // 2))
    except Exception as error:  # noqa: BLE001 - a bad image gets a marked cell, not a crash
        logging.warning(
            "%s: does not decode (%s); marked on the sheet (run `python -m records verify`)", record.filename, error
        )
        ImageDraw.Draw(cell).line([0, 0, THUMB_SIZE, THUMB_SIZE], fill=(220, 0, 0), width=4)
    sheet.paste(cell, (x, y))


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


# --- plots ----------------------------------------------------------------------------


def write_plots(summary: Summary, out_dir: str) -> list[str]:
    """images_per_class.png and image_sides.png under out_dir; returns their paths.

    Uses matplotlib's object API on the Agg canvas, never pyplot, so no
    global backend is switched in a process that may be plotting elsewhere.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # plotting is optional; import on use
    from matplotlib.figure import Figure

    files.makedirs(out_dir)
    paths = []

    figure = Figure(figsize=(10, 3.2 * len(summary.splits)), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, s in zip(figure.subplots(len(summary.splits), 1, squeeze=False)[:, 0], summary.splits):
        counts = sorted(s.class_counts, reverse=True)
        axes.bar(range(len(counts)), counts, width=1.0, color="tab:blue")
        axes.axhline(s.per_class[1], color="tab:red", linewidth=1, label=f"median {s.per_class[1]}")
        axes.set_title(f"{s.split}: images per class ({s.classes_present} of {summary.num_classes} classes present)")
        axes.set_xlabel("classes, most images first")
        axes.set_ylabel("images")
        axes.legend(loc="lower left")
    paths.append(_save_figure(figure, posixpath.join(out_dir, "images_per_class.png")))

    figure = Figure(figsize=(10, 3.2 * len(summary.splits)), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, s in zip(figure.subplots(len(summary.splits), 1, squeeze=False)[:, 0], summary.splits):
        if s.widths:
            bins = np.histogram_bin_edges(np.concatenate([s.widths, s.heights]), bins=40)
            axes.hist(s.widths, bins=bins, alpha=0.6, label="width")
            axes.hist(s.heights, bins=bins, alpha=0.6, label="height")
            axes.legend()
        axes.set_title(f"{s.split}: image side lengths ({len(s.widths)} sampled records)")
        axes.set_xlabel("pixels")
        axes.set_ylabel("images")
    paths.append(_save_figure(figure, posixpath.join(out_dir, "image_sides.png")))
    return paths


def _save_figure(figure, path: str) -> str:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    files.write_atomically(path, out.getvalue())
    return path


def _save_png(image: Image.Image, path: str) -> None:
    out = io.BytesIO()
    image.save(out, "PNG")
    files.write_atomically(path, out.getvalue())  # local parent folders are created as needed
