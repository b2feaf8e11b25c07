"""Recognise an ImageNet-style input directory and plan the work it holds.

Three layouts are read, local or on gs://:
  * the original distribution files (ILSVRC2012_img_{train,val}.tar, devkit,
    optional bbox tarball), read straight from the tars;
  * extracted folders: train/<wnid>/*, val/ (flat + a labels file, or
    <wnid>/ folders) or validation/;
  * Kaggle's ILSVRC/Data/CLS-LOC/{train,val} with LOC_* files.

Everything that can be wrong with the input's structure (missing split,
unknown layout, labels that do not match the images) is found here, on the
launcher, before any worker starts: a 10-hour job must not die at hour 9 on a
typo. Planning reads only metadata, never image bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import posixpath
import re
import tarfile
from collections.abc import Iterable, Mapping

import tensorflow as tf

from pipeline import tars
from records import synsets as synsets_lib
from records.synsets import SynsetTable

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
BBOX_TAR = "ILSVRC2012_bbox_train_v2.tar.gz"
KAGGLE_ROOT = "ILSVRC/Data/CLS-LOC"
KAGGLE_BOXES = "ILSVRC/Annotations/CLS-LOC/train"
KAGGLE_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_VAL_CSV = "LOC_val_solution.csv"
# Names under which a 50,000-line wnid-per-line validation label file is found.
VAL_LABEL_FILES = (
    "ILSVRC2012_validation_labels.txt",
    "imagenet_2012_validation_synset_labels.txt",
    KAGGLE_VAL_CSV,
)
TEXT_FILES = ("synsets.tsv", KAGGLE_MAPPING, "imagenet_metadata.txt")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_WNID = re.compile(r"^n\d{8}$")


class LayoutError(ValueError):
    """The input directory cannot be built as asked; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Unit:
    """One piece of indexing work: a tar, a synset tar inside a tar, or a folder.

    `wnid` labels every image of the unit (train); when None, labels come from
    the plan's `val_labels` by image name (a flat validation set).
    """

    split: str
    name: str
    kind: str  # 'tar' | 'nested_tar' | 'folder'
    path: str
    wnid: str | None = None
    member: tars.Member | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    layout: str
    input_dir: str
    synsets: SynsetTable
    units: Mapping[str, tuple[Unit, ...]]  # split -> units, sorted by name
    val_labels: Mapping[str, str]  # validation image base name -> wnid
    boxes: str | None  # bbox tarball, or a folder of <wnid>/<image>.xml
    fingerprint: Mapping[str, int]  # input file -> size, to tell builds apart


def plan(input_dir: str, synsets_file: str | None = None, val_labels_file: str | None = None) -> Plan:
    """Detects the layout of `input_dir` and checks it can be built."""
    input_dir = input_dir.rstrip("/")
    if not tf.io.gfile.isdir(input_dir):
        raise LayoutError(f"--input_dir={input_dir} is not a directory")
    if _exists(input_dir, TRAIN_TAR) or _exists(input_dir, VAL_TAR):
        return _plan_tars(input_dir, synsets_file, val_labels_file)
    kaggle = _join(input_dir, KAGGLE_ROOT)
    if tf.io.gfile.isdir(kaggle):
        return _plan_folders(
            "kaggle",
            input_dir,
            kaggle,
            synsets_file,
            val_labels_file,
            boxes=_existing_dir(_join(input_dir, KAGGLE_BOXES)),
        )
    if any(tf.io.gfile.isdir(_join(input_dir, d)) for d in ("train", "val", "validation")):
        boxes = _existing_dir(_join(input_dir, "bbox")) or _existing_file(_join(input_dir, BBOX_TAR))
        return _plan_folders("folders", input_dir, input_dir, synsets_file, val_labels_file, boxes=boxes)
    raise LayoutError(
        f"{input_dir}: unknown layout. Expected one of: {TRAIN_TAR}/{VAL_TAR} (+ {DEVKIT_TAR}); "
        f"folders train/<wnid>/ and val/; or Kaggle's {KAGGLE_ROOT}/"
    )


# --- the original distribution tars -------------------------------------------------


def _plan_tars(input_dir: str, synsets_file: str | None, val_labels_file: str | None) -> Plan:
    devkit = _read_devkit(_join(input_dir, DEVKIT_TAR)) if _exists(input_dir, DEVKIT_TAR) else None
    train_tar = _existing_file(_join(input_dir, TRAIN_TAR))
    val_tar = _existing_file(_join(input_dir, VAL_TAR))

    synset_tars = []
    if train_tar:
        for member in tars.list_members(train_tar):
            wnid = posixpath.splitext(posixpath.basename(member.name))[0]
            if not (_WNID.match(wnid) and member.name.endswith(".tar")):
                raise LayoutError(f"{train_tar}: member {member.name!r} is not a <wnid>.tar synset archive")
            synset_tars.append((wnid, member))

    if synsets_file:
        table = _table_from_file(synsets_file, [w for w, _ in synset_tars])
    elif devkit:
        table = devkit[0]
    elif synset_tars:
        table = SynsetTable.build([w for w, _ in synset_tars], None)
    else:
        raise LayoutError(f"{input_dir}: {VAL_TAR} needs {DEVKIT_TAR} (class list and labels) or --synsets_file")

    units: dict[str, tuple[Unit, ...]] = {}
    if synset_tars:
        _check_known(table, (w for w, _ in synset_tars), train_tar)
        units["train"] = tuple(
            Unit("train", wnid, "nested_tar", train_tar, wnid=wnid, member=member)
            for wnid, member in sorted(synset_tars)
        )
    val_labels: dict[str, str] = {}
    if val_tar:
        names = [tars.base_name(m.name) for m in tars.list_members(val_tar)]
        if val_labels_file:
            val_labels = _labels_from_file(val_labels_file, names, table)
        elif devkit and devkit[1] is not None:
            val_labels = _match_labels(names, devkit[1], devkit[2])
        else:
            raise LayoutError(f"{val_tar}: no validation labels. Put {DEVKIT_TAR} beside it or pass --val_labels_file")
        _check_known(table, val_labels.values(), "validation labels")
        units["validation"] = (Unit("validation", "val", "tar", val_tar),)

    boxes = _existing_file(_join(input_dir, BBOX_TAR))
    files = [p for p in (train_tar, val_tar, boxes, _existing_file(_join(input_dir, DEVKIT_TAR))) if p]
    return Plan("ilsvrc2012-tars", input_dir, table, units, val_labels, boxes, _sizes(files))


def _read_devkit(path: str) -> tuple[SynsetTable, list[str] | None, str]:
    """(table from meta.mat, validation wnids from the ground truth or None, its origin).

    The ground truth holds meta.mat's ILSVRC2012_IDs, whose order is not
    sorted-wnid order: they are mapped through meta.mat, never used as labels.
    """
    meta = truth = None
    truth_name = ""
    with tf.io.gfile.GFile(path, "rb") as f, tarfile.open(fileobj=io.BytesIO(f.read()), mode="r:gz") as archive:
        for info in archive:
            base = posixpath.basename(info.name)
            if info.isfile() and base == "meta.mat":
                meta = archive.extractfile(info).read()
            elif info.isfile() and base == "ILSVRC2012_validation_ground_truth.txt":
                truth = archive.extractfile(info).read().decode()
                truth_name = f"{path}:{info.name}"
    if meta is None:
        raise LayoutError(f"{path}: no data/meta.mat inside; is this the ILSVRC2012 devkit?")
    try:
        table = synsets_lib.table_from_meta_mat(meta, source=f"{path}:meta.mat")
        wnids = synsets_lib.parse_validation_ground_truth(truth, table, source=truth_name) if truth else None
    except synsets_lib.SynsetFileError as error:
        raise LayoutError(str(error)) from error
    return table, wnids, truth_name


# --- extracted folders and Kaggle ---------------------------------------------------


def _plan_folders(
    layout: str,
    input_dir: str,
    data_dir: str,
    synsets_file: str | None,
    val_labels_file: str | None,
    boxes: str | None,
) -> Plan:
    train_dir = _existing_dir(_join(data_dir, "train"))
    val_dir = _existing_dir(_join(data_dir, "val")) or _existing_dir(_join(data_dir, "validation"))
    train_wnids = _wnid_dirs(train_dir) if train_dir else []
    if train_dir and not train_wnids:
        raise LayoutError(f"{train_dir}: no <wnid>/ class folders (like n01440764/) inside")
    val_wnids = _wnid_dirs(val_dir) if val_dir else []

    text_file = synsets_file or next(
        (p for p in (_join(input_dir, n) for n in TEXT_FILES) if tf.io.gfile.exists(p)), None
    )
    wnids = train_wnids or val_wnids
    val_names: list[str] = []
    if val_dir and not val_wnids:
        val_names = sorted(n for n in tf.io.gfile.listdir(val_dir) if is_image_name(n))
    if text_file:
        table = _table_from_file(text_file, wnids)
    elif wnids:
        table = SynsetTable.build(wnids, None)
    else:
        raise LayoutError(f"{input_dir}: cannot tell the classes: add train/<wnid>/ folders or pass --synsets_file")

    units: dict[str, tuple[Unit, ...]] = {}
    if train_wnids:
        _check_known(table, train_wnids, train_dir)
        units["train"] = tuple(Unit("train", w, "folder", _join(train_dir, w), wnid=w) for w in train_wnids)
    val_labels: dict[str, str] = {}
    if val_wnids:
        _check_known(table, val_wnids, val_dir)
        units["validation"] = tuple(Unit("validation", w, "folder", _join(val_dir, w), wnid=w) for w in val_wnids)
    elif val_dir:
        labels_file = val_labels_file or next(
            (p for p in (_join(input_dir, n) for n in VAL_LABEL_FILES) if tf.io.gfile.exists(p)), None
        )
        if not labels_file:
            raise LayoutError(
                f"{val_dir}: flat validation images need labels: put one of {', '.join(VAL_LABEL_FILES)} "
                f"in {input_dir}, or pass --val_labels_file"
            )
        val_labels = _labels_from_file(labels_file, val_names, table)
        units["validation"] = (Unit("validation", "val", "folder", val_dir),)
    if not units:
        raise LayoutError(f"{data_dir}: neither train/ nor val/ holds images")
    files = [p for p in (text_file, boxes) if p and not tf.io.gfile.isdir(p)]
    return Plan(layout, input_dir, table, units, val_labels, boxes, _sizes(files))


def _wnid_dirs(path: str) -> list[str]:
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(path) if _WNID.match(n.rstrip("/")))


def is_image_name(name: str) -> bool:
    """By extension: how folders are listed. Content is judged later, per image."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


# --- labels and class tables --------------------------------------------------------


def _table_from_file(path: str, wnids: list[str]) -> SynsetTable:
    try:
        return synsets_lib.load_synsets(path, wnids=wnids or None)
    except (ValueError, KeyError) as error:
        raise LayoutError(f"{path}: cannot read the class list ({error})") from error


def _labels_from_file(path: str, image_names: list[str], table: SynsetTable) -> dict[str, str]:
    """Validation labels from a wnid-per-line file or Kaggle's LOC_val_solution.csv."""
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    if text.startswith("ImageId,"):
        by_stem = {
            row["ImageId"]: row["PredictionString"].split()[0]
            for row in csv.DictReader(io.StringIO(text))
            if row["PredictionString"].strip()
        }
        labels = {}
        for name in image_names:
            stem = posixpath.splitext(name)[0]
            if stem not in by_stem:
                raise LayoutError(f"{path}: no label for validation image {name}; every image needs a row")
            labels[name] = by_stem[stem]
        extra = set(by_stem) - {posixpath.splitext(n)[0] for n in image_names}
        if extra:
            raise LayoutError(f"{path}: {len(extra)} labels name images that are not there, e.g. {min(extra)}")
        _check_known(table, labels.values(), path)
        return labels
    wnids = text.split()
    labels = _match_labels(image_names, wnids, path)
    _check_known(table, labels.values(), path)
    return labels


def _match_labels(image_names: list[str], wnids: list[str], origin: str) -> dict[str, str]:
    """Line i of a label file labels the i-th image in sorted file-name order."""
    if len(wnids) != len(image_names):
        raise LayoutError(
            f"{origin}: {len(wnids)} labels for {len(image_names)} validation images; "
            "the label file must have exactly one line per image, in file-name order"
        )
    return dict(zip(sorted(image_names), wnids))


def _check_known(table: SynsetTable, wnids: Iterable[str], origin: str) -> None:
    known = set(table.synsets)
    unknown = sorted(set(wnids) - known)
    if unknown:
        raise LayoutError(
            f"{origin}: {len(unknown)} synsets not in the class list ({', '.join(unknown[:5])}); "
            "pass a --synsets_file that lists them"
        )


# --- small filesystem helpers -------------------------------------------------------


def _join(*parts: str) -> str:
    return posixpath.join(*parts)  # also right for gs://bucket/dir


def _exists(directory: str, name: str) -> bool:
    return tf.io.gfile.exists(_join(directory, name))


def _existing_file(path: str) -> str | None:
    return path if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path) else None


def _existing_dir(path: str) -> str | None:
    return path if tf.io.gfile.isdir(path) else None


def _sizes(paths: Iterable[str]) -> dict[str, int]:
    return {posixpath.basename(p): tf.io.gfile.stat(p).length for p in paths}
