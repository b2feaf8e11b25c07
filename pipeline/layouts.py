"""Recognise an input directory and plan the work it holds.

Four layouts are read, local or on gs://:
  * the original ILSVRC2012 distribution files (ILSVRC2012_img_{train,val}.tar,
    devkit, optional bbox tarball), read straight from the tars;
  * extracted ImageNet folders: train/<wnid>/*, val/ (flat + a labels file, or
    <wnid>/ folders) or validation/;
  * Kaggle's ILSVRC/Data/CLS-LOC/{train,val} with LOC_* files;
  * any image-folder dataset, the layout of Keras `image_dataset_from_directory`
    and torchvision/TFDS `ImageFolder`: train/<class>/..., optional
    val/<class>/... or validation/<class>/..., class names of any spelling.

Everything that can be wrong with the input's structure (missing split,
unknown layout, labels that do not match the images) is found here, on the
launcher, before any worker starts: a 10-hour job must not die at hour 9 on a
typo. Planning reads only metadata and directory names, never image bytes;
listing the images is the index step's work (pipeline/index.py).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import posixpath
import re
import tarfile
from collections.abc import Iterable, Mapping

from pipeline import tars
from pipeline.errors import InputError
from pipeline.options import BuildOptions
from records import files
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
# Validation label files found beside flat val/ folders: wnid-per-line (line i labels the
# i-th image in file-name order), or Kaggle's CSV (ImageId,PredictionString).
VAL_LABEL_FILES = (
    "ILSVRC2012_validation_labels.txt",
    "imagenet_2012_validation_synset_labels.txt",
    KAGGLE_VAL_CSV,
)
TEXT_FILES = ("synsets.tsv", KAGGLE_MAPPING, "imagenet_metadata.txt")
TRAIN_DIR = "train"
VALIDATION_DIRS = ("val", "validation")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_WNID = re.compile(r"^n\d{8}$")

# The official ILSVRC2012 classification set: known facts to check a full copy against.
OFFICIAL_NUM_CLASSES = 1000
OFFICIAL_NUM_IMAGES = {"train": 1_281_167, "validation": 50_000}
OFFICIAL_TAR_BYTES = {TRAIN_TAR: 147_897_477_120, VAL_TAR: 6_744_924_160}

LAYOUT_NAMES = {
    "ilsvrc2012-tars": "ILSVRC2012 distribution tars",
    "folders": "extracted ImageNet folders",
    "kaggle": "Kaggle ImageNet layout",
    "imagefolder": "image folders, train/<class>/...",
}


class LayoutError(InputError):
    """The input directory cannot be built as asked; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Holdout:
    """A deterministic per-class share of a train unit, moved to the validation split."""

    fraction: float
    seed: int
    take: str  # 'train': what stays in train; 'validation': the held-out share


@dataclasses.dataclass(frozen=True)
class Unit:
    """One piece of indexing work: a tar, a synset tar inside a tar, or a folder.

    `synset` labels every image of the unit; when None, labels come from the
    plan's `val_labels` by image path (a flat validation set). An image's
    identity is its path inside the split: `<unit name>/<path inside the unit>`
    for class units, the bare path for a flat validation unit.
    """

    split: str
    name: str
    kind: str  # 'tar' | 'nested_tar' | 'folder'
    path: str
    synset: str | None = None
    member: tars.Member | None = None
    boxes: str | None = None  # a folder of PASCAL-VOC XML files for this unit's images
    holdout: Holdout | None = None

    def image_path(self, inside_unit: str) -> str:
        """The image's identity: its path inside the split."""
        return inside_unit if self.synset is None else f"{self.name}/{inside_unit}"


@dataclasses.dataclass(frozen=True)
class Plan:
    layout: str
    input_dir: str
    synsets: SynsetTable
    units: Mapping[str, tuple[Unit, ...]]  # split -> units, in label order
    val_labels: Mapping[str, str]  # flat validation image path -> synset
    boxes_tarball: str | None  # the bbox tarball, split per unit before indexing
    fingerprint: Mapping[str, int]  # input file -> size, to tell builds apart
    # ILSVRC layouts store a record's base file name, as the reference converters do;
    # image folders store the path inside the split, unique where base names are not.
    filename_is_path: bool = False
    warnings: tuple[str, ...] = ()  # about the input as a whole, for the console

    @property
    def is_official_imagenet(self) -> bool:
        return self.layout != "imagefolder" and len(self.synsets) == OFFICIAL_NUM_CLASSES

    @property
    def source(self) -> dict:
        """What was read, as the manifest records it (and a resume must find unchanged)."""
        return {"layout": self.layout, "input_dir": self.input_dir, "files": dict(self.fingerprint)}


def plan(input_dir: str, options: BuildOptions | None = None) -> Plan:
    """Detects the layout of `input_dir` and checks it can be built with these options."""
    options = options or BuildOptions()
    input_dir = input_dir.rstrip("/")
    if not files.isdir(input_dir):
        raise LayoutError(f"--input_dir={input_dir} is not a directory (or is empty); check the path")
    if files.exists(files.join(input_dir, TRAIN_TAR)) or files.exists(files.join(input_dir, VAL_TAR)):
        return _plan_tars(input_dir, options)
    kaggle = files.join(input_dir, KAGGLE_ROOT)
    if files.isdir(kaggle):
        return _plan_folders("kaggle", input_dir, kaggle, options, boxes_root=files.join(input_dir, KAGGLE_BOXES))
    if any(files.isdir(files.join(input_dir, d)) for d in (TRAIN_DIR, *VALIDATION_DIRS)):
        return _plan_folders("folders", input_dir, input_dir, options, boxes_root=files.join(input_dir, "bbox"))
    raise LayoutError(
        f"{input_dir}: unknown layout. Expected one of: {TRAIN_TAR}/{VAL_TAR} (+ {DEVKIT_TAR}); "
        f"folders train/<class>/ (and optionally val/); or Kaggle's {KAGGLE_ROOT}/"
    )


# --- the original distribution tars -------------------------------------------------


def _plan_tars(input_dir: str, options: BuildOptions) -> Plan:
    devkit_path = files.join(input_dir, DEVKIT_TAR)
    devkit = _read_devkit(devkit_path) if files.exists(devkit_path) else None
    train_tar = _existing_file(files.join(input_dir, TRAIN_TAR))
    val_tar = _existing_file(files.join(input_dir, VAL_TAR))
    warnings = []

    synset_tars = []
    if train_tar:
        listing = _whole_listing(train_tar, options, warnings)
        for member in listing.members:
            wnid = posixpath.splitext(posixpath.basename(member.name))[0]
            if not (_WNID.match(wnid) and member.name.endswith(".tar")):
                raise LayoutError(f"{train_tar}: member {member.name!r} is not a <wnid>.tar synset archive")
            synset_tars.append((wnid, member))

    if options.synsets_file:
        table = _table_from_file(options.synsets_file, [w for w, _ in synset_tars])
    elif devkit:
        table = devkit[0]
    elif synset_tars:
        table = SynsetTable.build([w for w, _ in synset_tars], None)
    else:
        raise LayoutError(f"{input_dir}: {VAL_TAR} needs {DEVKIT_TAR} (class list and labels) or --synsets_file")

    train_units = ()
    if synset_tars:
        _check_known(table, (w for w, _ in synset_tars), train_tar)
        train_units = tuple(
            Unit("train", wnid, "nested_tar", train_tar, synset=wnid, member=member)
            for wnid, member in sorted(synset_tars)
        )
    val_labels: dict[str, str] = {}
    val_units = ()
    if val_tar:
        names = [posixpath.basename(m.name) for m in _whole_listing(val_tar, options, warnings, fatal=True).members]
        if options.val_labels_file:
            val_labels = _labels_from_file(options.val_labels_file, names, table)
        elif devkit and devkit[1] is not None:
            val_labels = _match_labels(names, devkit[1], devkit[2])
        else:
            raise LayoutError(f"{val_tar}: no validation labels. Put {DEVKIT_TAR} beside it or pass --val_labels_file")
        _check_known(table, val_labels.values(), "validation labels")
        val_units = (Unit("validation", "val", "tar", val_tar),)

    units = _with_holdout(train_units, val_units, options, input_dir)
    boxes = _existing_file(files.join(input_dir, BBOX_TAR))
    found = [p for p in (train_tar, val_tar, boxes, _existing_file(devkit_path)) if p]
    warnings += _official_size_warnings(table, found)
    return Plan("ilsvrc2012-tars", input_dir, table, units, val_labels, boxes, _sizes(found), warnings=tuple(warnings))


def _whole_listing(path: str, options: BuildOptions, warnings: list[str], fatal: bool = False) -> tars.Listing:
    """A distribution tar's listing, refused when cut short unless the user keeps what is there.

    The val tar is always refused: its labels are matched to images by position.
    """
    listing = tars.list_members(path)
    if not listing.complete:
        message = (
            f"{path} ends without the tar end-of-archive marker after {len(listing.members)} members: "
            "the file is truncated (an interrupted download or copy); download or copy it again"
        )
        if fatal or not options.allow_truncated_tars:
            hint = "" if fatal else ", or pass --allow_truncated_tars to build from what it holds"
            raise LayoutError(message + hint)
        warnings.append(message)
    return listing


def _read_devkit(path: str) -> tuple[SynsetTable, list[str] | None, str]:
    """(table from meta.mat, validation wnids from the ground truth or None, its origin).

    The ground truth holds meta.mat's ILSVRC2012_IDs, whose order is not
    sorted-wnid order: they are mapped through meta.mat, never used as labels.
    """
    meta = truth = None
    truth_name = ""
    with tarfile.open(fileobj=io.BytesIO(files.read_bytes(path)), mode="r:gz") as archive:
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


def _official_size_warnings(table: SynsetTable, paths: Iterable[str]) -> list[str]:
    """For a 1,000-class input: distribution tars whose size is not the published one."""
    if len(table) != OFFICIAL_NUM_CLASSES:
        return []
    out = []
    for path in paths:
        expected = OFFICIAL_TAR_BYTES.get(posixpath.basename(path))
        if expected is not None and files.size(path) != expected:
            out.append(
                f"{path} is {files.size(path):,} bytes; the official ILSVRC2012 file is {expected:,} bytes: "
                "it is incomplete or not the original; compare its checksum with image-net.org's"
            )
    return out


# --- extracted folders, Kaggle and image folders -------------------------------------


def _plan_folders(layout: str, input_dir: str, data_dir: str, options: BuildOptions, boxes_root: str) -> Plan:
    train_dir = _existing_dir(files.join(data_dir, TRAIN_DIR))
    val_dir = next((p for p in (files.join(data_dir, d) for d in VALIDATION_DIRS) if files.isdir(p)), None)
    train_classes = _class_dirs(train_dir) if train_dir else []
    if train_dir and not train_classes:
        raise LayoutError(f"{train_dir}: no class folders inside; put each class's images in {train_dir}/<class>/")
    val_classes = _class_dirs(val_dir) if val_dir else []
    folder_classes = sorted(set(train_classes) | set(val_classes))
    if layout == "folders" and folder_classes and not all(_WNID.match(c) for c in folder_classes):
        layout = "imagefolder"
    if layout == "imagefolder":
        return _plan_image_folders(input_dir, train_dir, val_dir, train_classes, val_classes, folder_classes, options)

    text_file = options.synsets_file or next(
        (p for p in (files.join(input_dir, n) for n in TEXT_FILES) if files.exists(p)), None
    )
    if text_file:
        table = _table_from_file(text_file, folder_classes)
    elif folder_classes:
        table = SynsetTable.build(folder_classes, None)
    else:
        raise LayoutError(f"{input_dir}: cannot tell the classes: add train/<wnid>/ folders or pass --synsets_file")
    boxes_tarball = _existing_file(files.join(input_dir, BBOX_TAR))
    box_dir = boxes_root if not boxes_tarball and files.isdir(boxes_root) else None

    train_units = tuple(
        Unit("train", c, "folder", files.join(train_dir, c), synset=c, boxes=box_dir and files.join(box_dir, c))
        for c in train_classes
    )
    val_labels: dict[str, str] = {}
    if val_classes:
        val_units = tuple(Unit("validation", c, "folder", files.join(val_dir, c), synset=c) for c in val_classes)
    elif val_dir:
        val_labels = _flat_val_labels(input_dir, val_dir, options, table)
        val_units = (Unit("validation", "val", "folder", val_dir),)
    else:
        val_units = ()
    units = _with_holdout(train_units, val_units, options, input_dir)
    found = [p for p in (text_file, boxes_tarball) if p]
    return Plan(layout, input_dir, table, units, val_labels, boxes_tarball, _sizes(found))


def _plan_image_folders(
    input_dir: str,
    train_dir: str | None,
    val_dir: str | None,
    train_classes: list[str],
    val_classes: list[str],
    folder_classes: list[str],
    options: BuildOptions,
) -> Plan:
    """Any dataset as train/<class>/...: labels 1..N in sorted folder order, or the class list's order."""
    if val_dir and not val_classes and files.listdir(val_dir):
        raise LayoutError(
            f"{val_dir}: holds files but no class folders; put them in {val_dir}/<class>/, or remove "
            "the folder and hold out part of train with --validation_fraction"
        )
    if options.synsets_file:
        table = _class_list_table(options.synsets_file, folder_classes)
    else:
        table = SynsetTable.build(folder_classes, {c: c for c in folder_classes})
    train_units = tuple(Unit("train", c, "folder", files.join(train_dir, c), synset=c) for c in train_classes)
    val_units = tuple(Unit("validation", c, "folder", files.join(val_dir, c), synset=c) for c in val_classes)
    units = _with_holdout(train_units, val_units, options, input_dir)
    found = [options.synsets_file] if options.synsets_file else []
    return Plan("imagefolder", input_dir, table, units, {}, None, _sizes(found), filename_is_path=True)


def _class_list_table(path: str, folder_classes: list[str]) -> SynsetTable:
    text = synsets_lib.read_text_file(path)
    try:
        if text.lstrip("\ufeff").startswith(synsets_lib.TSV_HEADER.split("\t")[0] + "\t"):
            table = SynsetTable.from_tsv(text, source=path)
        else:
            names, texts = synsets_lib.parse_class_list(text, source=path)
            table = SynsetTable.build(names, texts, keep_order=True, source=path)
    except synsets_lib.SynsetFileError as error:
        raise LayoutError(str(error)) from error
    _check_known(table, folder_classes, path, fix="add the class folders to the list or remove them")
    return table


def _with_holdout(
    train: tuple[Unit, ...], validation: tuple[Unit, ...], options: BuildOptions, input_dir: str
) -> dict[str, tuple[Unit, ...]]:
    """The split -> units map, with --validation_fraction applied: each train unit gets a twin
    in validation holding its held-out share (stratified per class)."""
    fraction = options.validation_fraction
    if not fraction:
        return {split: units for split, units in (("train", train), ("validation", validation)) if units}
    if validation:
        raise LayoutError(
            f"{input_dir} already has a validation split; --validation_fraction only applies to inputs "
            "without one: drop the flag, or remove the validation folder"
        )
    if not train:
        raise LayoutError(f"{input_dir}: --validation_fraction needs training images to hold out from")
    if not 0.0 < fraction < 1.0:
        raise LayoutError(f"--validation_fraction={fraction}: want a fraction strictly between 0 and 1, like 0.1")
    kept = tuple(dataclasses.replace(u, holdout=Holdout(fraction, options.seed, "train")) for u in train)
    held = tuple(
        dataclasses.replace(u, split="validation", boxes=None, holdout=Holdout(fraction, options.seed, "validation"))
        for u in train
    )
    return {"train": kept, "validation": held}


def _class_dirs(path: str) -> list[str]:
    """Class folder names inside `path`, sorted; hidden ones (.ipynb_checkpoints, ...) are not classes."""
    if not path:
        return []
    names = [n.rstrip("/") for n in files.listdir(path)]
    return sorted(n for n in names if not n.startswith(".") and files.isdir(files.join(path, n)))


def is_image_name(name: str) -> bool:
    """By extension: how folders are listed. Content is judged later, per image."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_hidden(path: str) -> bool:
    """A path with a component starting with '.': .DS_Store, ._IMG_1.jpg (macOS forks), .thumbnails/..."""
    return any(part.startswith(".") for part in path.split("/"))


# --- labels and class tables --------------------------------------------------------


def _flat_val_labels(input_dir: str, val_dir: str, options: BuildOptions, table: SynsetTable) -> dict[str, str]:
    labels_file = options.val_labels_file or next(
        (p for p in (files.join(input_dir, n) for n in VAL_LABEL_FILES) if files.exists(p)), None
    )
    if not labels_file:
        raise LayoutError(
            f"{val_dir}: flat validation images need labels: put one of {', '.join(VAL_LABEL_FILES)} "
            f"in {input_dir}, or pass --val_labels_file"
        )
    names = sorted(n for n in files.listdir(val_dir) if is_image_name(n) and not is_hidden(n))
    return _labels_from_file(labels_file, names, table)


def _table_from_file(path: str, wnids: list[str]) -> SynsetTable:
    try:
        return synsets_lib.load_synsets(path, wnids=wnids or None)
    except (ValueError, KeyError) as error:
        raise LayoutError(f"{path}: cannot read the class list ({error})") from error


def _labels_from_file(path: str, image_names: list[str], table: SynsetTable) -> dict[str, str]:
    """Validation labels from a wnid-per-line file or Kaggle's LOC_val_solution.csv."""
    text = synsets_lib.read_text_file(path)
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
    else:
        labels = _match_labels(image_names, text.split(), path)
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


def _check_known(
    table: SynsetTable, synsets: Iterable[str], origin: str, fix: str = "pass a --synsets_file that lists them"
) -> None:
    unknown = sorted(set(synsets) - set(table.synsets))
    if unknown:
        raise LayoutError(f"{origin}: {len(unknown)} classes not in the class list ({', '.join(unknown[:5])}); {fix}")


# --- small filesystem helpers -------------------------------------------------------


def _existing_file(path: str) -> str | None:
    return path if files.exists(path) and not files.isdir(path) else None


def _existing_dir(path: str) -> str | None:
    return path if files.isdir(path) else None


def _sizes(paths: Iterable[str]) -> dict[str, int]:
    return {posixpath.basename(p): files.size(p) for p in paths}
