"""Benchmark input: a few thousand plain 300-500 px JPEGs in the ILSVRC2012 tar layout.

Same conventions as pipeline/sample.py (real wnids, a train tar of per-synset
tars, a flat val tar numbered ILSVRC2012_val_%08d.JPEG, a devkit whose
ground truth holds shuffled ILSVRC2012_IDs), but no quirks or hostile files:
the bench measures the common path. Drawing and encoding a picture costs far
more than the job spends on it, so a small pool of encoded pictures per class
is reused under many file names; the JPEG decoder sees each file afresh
anyway. Datasets are cached by their parameters, so repeated runs only
measure.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import shutil
import tarfile

import numpy as np
from absl import logging

from pipeline import pictures, sample

FORMAT_VERSION = 2  # bump when the generated files change, to invalidate caches
MARKER = "bench_dataset.json"
SIDE_RANGE = (300, 501)  # pixels, each side: ImageNet's typical size
TINY_SIDE_RANGE = (16, 25)  # decoding is nearly free: what is left is the per-image machinery
# Flickr-era photos are saved at high quality: real ImageNet averages ~110 KB a JPEG.
# pictures.encode's 65-95 is for variety in tests; here bytes per image should be realistic.
QUALITY_RANGE = (85, 96)


@dataclasses.dataclass(frozen=True)
class BenchDataset:
    input_dir: str  # holds the three ILSVRC2012 tars; pass as --input_dir
    num_train: int
    num_val: int
    num_classes: int
    num_bytes: int  # sum of the JPEG sizes

    @property
    def num_images(self) -> int:
        return self.num_train + self.num_val


def ensure_dataset(
    cache_dir: str,
    num_images: int,
    *,
    num_classes: int = 16,
    val_fraction: float = 0.1,
    pool_per_class: int = 12,
    seed: int = 0,
    side_range: tuple[int, int] = SIDE_RANGE,
) -> BenchDataset:
    """The dataset with these parameters under `cache_dir`, generated unless already there."""
    if not 1 <= num_classes <= len(sample.CLASS_CATALOG):
        raise ValueError(
            f"num_classes={num_classes}: the bench uses pipeline/sample.py's real ImageNet "
            f"classes; choose 1..{len(sample.CLASS_CATALOG)}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be strictly between 0 and 1")
    num_val = max(1, round(num_images * val_fraction))
    num_train = num_images - num_val
    if num_train < num_classes:
        raise ValueError(
            f"num_images={num_images} leaves {num_train} training images for {num_classes} "
            "classes; ask for more images or fewer classes"
        )
    params = {
        "format_version": FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "num_classes": num_classes,
        "pool_per_class": pool_per_class,
        "seed": seed,
        "side_range": list(side_range),
    }
    sides = f"-px{side_range[0]}-{side_range[1]}" if tuple(side_range) != SIDE_RANGE else ""
    input_dir = os.path.join(
        cache_dir, f"ilsvrc2012-n{num_images}-c{num_classes}-v{num_val}-p{pool_per_class}-s{seed}{sides}"
    )
    marker = os.path.join(input_dir, MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            cached = json.load(f)
        if {k: cached.get(k) for k in params} == params:
            return BenchDataset(input_dir, num_train, num_val, num_classes, cached["num_bytes"])
    shutil.rmtree(input_dir, ignore_errors=True)
    os.makedirs(input_dir)
    num_bytes = _generate(
        input_dir, num_train, num_val, num_classes, jpeg_pool(num_classes, pool_per_class, seed, side_range), seed
    )
    with open(marker, "w") as f:  # written last: its presence means the tars are complete
        json.dump({**params, "num_bytes": num_bytes}, f, indent=1)
    return BenchDataset(input_dir, num_train, num_val, num_classes, num_bytes)


def jpeg_pool(
    num_classes: int, per_class: int, seed: int, side_range: tuple[int, int] = SIDE_RANGE
) -> dict[int, list[bytes]]:
    """label -> baseline JPEGs of that class (pipeline/pictures.py's pictures, quality 85-95)."""
    pool: dict[int, list[bytes]] = {}
    for label in range(1, num_classes + 1):
        encoded = []
        for index in range(per_class):
            rng = np.random.default_rng([seed, label, index])
            width, height = (int(rng.integers(*side_range)) for _ in range(2))
            image, _ = pictures.draw_picture(label, num_classes, max(width, 64), max(height, 64), rng)
            image = image.resize((width, height))  # tiny pictures are drawn larger, then shrunk
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=int(rng.integers(*QUALITY_RANGE)))
            encoded.append(buffer.getvalue())
        pool[label] = encoded
    return pool


def _classes(num_classes: int, rng: np.random.Generator) -> list[dict]:
    """Sorted-wnid classes with 1-based labels and shuffled devkit IDs, as meta_mat_bytes wants."""
    chosen = sorted(sample.CLASS_CATALOG[:num_classes])
    ids = [int(i) + 1 for i in rng.permutation(num_classes)]
    return [
        {"label": index + 1, "wnid": wnid, "text": text, "gloss": gloss, "family": family, "ilsvrc2012_id": ilsvrc_id}
        for index, ((wnid, text, family, gloss), ilsvrc_id) in enumerate(zip(chosen, ids))
    ]


def _generate(
    input_dir: str, num_train: int, num_val: int, num_classes: int, pool: dict[int, list[bytes]], seed: int
) -> int:
    rng = np.random.default_rng(seed)
    classes = _classes(num_classes, rng)
    pool_per_class = len(pool[1])
    num_bytes = 0

    per_class = [num_train // num_classes + (1 if i < num_train % num_classes else 0) for i in range(num_classes)]
    with tarfile.open(os.path.join(input_dir, sample.TRAIN_TAR), "w", format=tarfile.GNU_FORMAT) as outer:
        for cls, count in zip(classes, per_class):
            numbers = np.sort(rng.choice(np.arange(1, 60000), size=count, replace=False))
            members = []
            for number in numbers:
                jpeg = pool[cls["label"]][int(rng.integers(pool_per_class))]
                members.append((f"{cls['wnid']}_{number}.JPEG", jpeg))
                num_bytes += len(jpeg)
            inner = _tar_bytes(members)
            outer.addfile(_tar_info(f"{cls['wnid']}.tar", len(inner)), io.BytesIO(inner))

    val_labels = rng.permutation(np.arange(num_val) % num_classes) + 1
    with tarfile.open(os.path.join(input_dir, sample.VAL_TAR), "w", format=tarfile.GNU_FORMAT) as val_tar:
        for position, label in enumerate(val_labels, start=1):
            jpeg = pool[int(label)][int(rng.integers(pool_per_class))]
            val_tar.addfile(_tar_info(sample.val_name(position), len(jpeg)), io.BytesIO(jpeg))
            num_bytes += len(jpeg)

    id_of_label = {c["label"]: c["ilsvrc2012_id"] for c in classes}
    ground_truth = "".join(f"{id_of_label[int(label)]}\n" for label in val_labels).encode()
    devkit = _tar_bytes(
        [
            (f"{sample.DEVKIT_DIR}/data/meta.mat", sample.meta_mat_bytes(classes, max(per_class))),
            (f"{sample.DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt", ground_truth),
        ]
    )
    with open(os.path.join(input_dir, sample.DEVKIT_TAR), "wb") as f:
        f.write(gzip.compress(devkit, mtime=0))
    logging.info(
        "bench dataset: %d train + %d val JPEGs (%.0f MB) in %s", num_train, num_val, num_bytes / 1e6, input_dir
    )
    return num_bytes


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, sample.TAR_MTIME, 0o644
    info.uname = info.gname = "imagenet"
    return info


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in members:
            tar.addfile(_tar_info(name, len(payload)), io.BytesIO(payload))
    return buffer.getvalue()
