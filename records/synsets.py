"""The class table: label <-> synset (the class id) <-> human-readable text.

A synset is a WordNet id (`n01440764`) for ImageNet, and the class folder's
name (`red rose`, `tulipán`) for an image-folder dataset; the record key
`image/class/synset` and synsets.tsv's second column hold it either way.

Labels are 1-based (`LABEL_OFFSET`): 0 stays free for "background", as in the
TPU ResNet and inception converters, so their readers and checkpoints line up
with our shards. Label order is sorted synset order unless an explicit class
list says otherwise; both the writer and every reader take it from the one
synsets.tsv written next to the shards, so nobody re-derives it.

Class lists come in several shapes, all read here by pure parse functions
(text or bytes in, so they are testable) plus path helpers (local or gs://):
  - a plain wnid list, one per line (imagenet_lsvrc_2015_synsets.txt);
  - Kaggle's LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca");
  - imagenet_metadata.txt ("wnid<TAB>text" for all 21,842 WordNet synsets:
    a source of texts, NOT a class list);
  - the devkit's data/meta.mat, whose ILSVRC2012_IDs (used by the validation
    ground truth) are NOT in sorted-wnid order: ID 1 is n02119789 (kit fox),
    ID 490 is n01751748 (sea snake), so IDs must never be used as labels;
  - for image folders, one class name per line, optionally "name<TAB>text".
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence

from records import files

LABEL_OFFSET = 1  # label = index in SynsetTable.synsets + LABEL_OFFSET; 0 is background
TSV_HEADER = "label\tsynset\ttext"
_LEGACY_TSV_HEADER = "label\twnid\ttext"  # builds before image folders
WNID_PATTERN = re.compile(r"n\d{8}")

_PLAIN_LINE = re.compile(r"(n\d{8})\s*")
_LOC_LINE = re.compile(r"(n\d{8}) +(.*)")
_METADATA_LINE = re.compile(r"(n\d{8})\t(.*)")
_MAT_MAGIC = b"MATLAB"
_FORBIDDEN_IN_NAMES = "\t\r\n"  # synsets.tsv is TSV, one class a line


class SynsetFileError(ValueError):
    """A class-list or label file that cannot be used; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class SynsetTable:
    """The classes of one dataset, in label order.

    ilsvrc2012_ids (devkit ID -> wnid) only comes from meta.mat and is only
    needed to read the validation ground truth; synsets.tsv does not carry it.
    It is a plain dict, not a read-only proxy, so the table pickles for Beam
    workers; treat it as read-only.
    """

    synsets: tuple[str, ...]
    texts: tuple[str, ...]
    ilsvrc2012_ids: Mapping[int, str] = dataclasses.field(default_factory=dict, hash=False)
    _label_by_synset: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        names, texts = tuple(self.synsets), tuple(self.texts)
        ids = {int(k): v for k, v in dict(self.ilsvrc2012_ids).items()}
        if not names:
            raise SynsetFileError("a class table needs at least one class; got none")
        if len(texts) != len(names):
            raise SynsetFileError(f"{len(names)} classes but {len(texts)} texts; need one text per class")
        bad = [n for n in names if not isinstance(n, str) or not n or any(c in n for c in _FORBIDDEN_IN_NAMES)]
        if bad:
            raise SynsetFileError(f"class names must be non-empty one-line strings without tabs: {bad[:5]!r}")
        _raise_on_duplicates(names, "the class list")
        broken = [t for t in texts if not isinstance(t, str) or any(c in t for c in _FORBIDDEN_IN_NAMES)]
        if broken:
            raise SynsetFileError(f"texts must be one-line strings without tabs (synsets.tsv is TSV): {broken[:3]!r}")
        stray = sorted(set(ids.values()) - set(names))
        if stray or any(k <= 0 for k in ids):
            raise SynsetFileError(f"ilsvrc2012_ids must map positive IDs to listed wnids; stray: {stray[:5]}")
        object.__setattr__(self, "synsets", names)
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "ilsvrc2012_ids", ids)
        object.__setattr__(self, "_label_by_synset", {n: i + LABEL_OFFSET for i, n in enumerate(names)})

    @classmethod
    def build(
        cls,
        synsets: Iterable[str],
        texts: Mapping[str, str] | None,
        *,
        keep_order: bool = False,
        ilsvrc2012_ids: Mapping[int, str] | None = None,
        source: str = "the class list",
    ) -> SynsetTable:
        """Table for these classes: sorted (the default) or in the given order.

        texts=None leaves every text empty; otherwise every class needs one.
        Whitespace in texts is collapsed so they always fit one TSV field.
        """
        names = list(synsets)
        _raise_on_duplicates(names, source)
        if not keep_order:
            names.sort()
        if texts is None:
            text_list = [""] * len(names)
        else:
            missing = [n for n in names if n not in texts]
            if missing:
                raise SynsetFileError(
                    f"{source}: no text for {len(missing)} classes ({', '.join(missing[:5])}); "
                    "give a text source that covers every class (e.g. imagenet_metadata.txt)"
                )
            text_list = [" ".join(str(texts[n]).split()) for n in names]
        return cls(tuple(names), tuple(text_list), dict(ilsvrc2012_ids or {}))

    def __len__(self) -> int:
        return len(self.synsets)

    def label_of(self, synset: str) -> int:
        try:
            return self._label_by_synset[synset]
        except KeyError:
            raise KeyError(f"{synset!r} is not one of the {len(self)} classes in the synset table") from None

    def synset_of(self, label: int) -> str:
        return self.synsets[self._index(label)]

    def text_of(self, label: int) -> str:
        return self.texts[self._index(label)]

    def _index(self, label: int) -> int:
        index = int(label) - LABEL_OFFSET
        if not 0 <= index < len(self):
            raise KeyError(f"no class with label {label}: labels run {LABEL_OFFSET}..{len(self)} (0 is background)")
        return index

    def to_tsv(self) -> str:
        rows = [TSV_HEADER]
        rows += [f"{i + LABEL_OFFSET}\t{n}\t{t}" for i, (n, t) in enumerate(zip(self.synsets, self.texts))]
        return "\n".join(rows) + "\n"

    @classmethod
    def from_tsv(cls, text: str, *, source: str = "synsets.tsv") -> SynsetTable:
        """Parse synsets.tsv, insisting on labels 1..N in order so no label can shift."""
        lines = text.lstrip("\ufeff").splitlines()
        if not lines or lines[0].rstrip() not in (TSV_HEADER, _LEGACY_TSV_HEADER):
            first = lines[0][:60] if lines else ""
            raise SynsetFileError(f"{source}: first line must be {TSV_HEADER!r}, got {first!r}; is this a synsets.tsv?")
        names, texts = [], {}
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise SynsetFileError(
                    f"{source}:{number}: want 3 tab-separated fields (label, synset, text), "
                    f"got {len(fields)}: {line[:80]!r}"
                )
            label, name, text_field = fields
            expected = len(names) + LABEL_OFFSET
            if label.strip() != str(expected):
                raise SynsetFileError(
                    f"{source}:{number}: label {label!r} where {expected} was due; labels must "
                    f"run {LABEL_OFFSET}..N in order with no gaps; regenerate the file"
                )
            if name in texts:
                raise SynsetFileError(
                    f"{source}:{number}: {name} is listed twice (first at label "
                    f"{names.index(name) + LABEL_OFFSET}); each class must appear once"
                )
            names.append(name)
            texts[name] = text_field
        if not names:
            raise SynsetFileError(f"{source}: no classes after the header")
        return cls.build(names, texts, keep_order=True, source=source)

    def write_tsv(self, path: str) -> None:
        """Write synsets.tsv so it appears under its final name only when complete."""
        files.write_atomically(path, self.to_tsv())

    @classmethod
    def read_tsv(cls, path: str) -> SynsetTable:
        return cls.from_tsv(read_text_file(path), source=path)


def parse_class_list(text: str, *, source: str = "class list") -> tuple[list[str], dict[str, str]]:
    """An image-folder class list: one name per line, optionally "name<TAB>text", in label order.

    Returns the names and their texts (a name without a text is its own text).
    Blank lines are skipped; names keep inner spaces but not surrounding ones.
    """
    names, texts = [], {}
    for line in text.lstrip("\ufeff").splitlines():
        if not line.strip():
            continue
        name, _, given = line.partition("\t")
        name = name.strip()
        names.append(name)
        texts[name] = given.strip() or name
    if not names:
        raise SynsetFileError(f"{source}: no class names in it")
    _raise_on_duplicates(names, source)
    return names, texts


# --- parsers: one per file format, pure -----------------------------------------------


def parse_wnid_list(text: str, *, source: str = "wnid list") -> list[str]:
    """One wnid per line, in file order; blank lines and '#' comments ignored."""
    wnids = []
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = line.split("#", 1)[0]
        if not line.strip():
            continue
        match = _PLAIN_LINE.fullmatch(line.strip())
        if not match:
            raise SynsetFileError(f"{source}:{number}: want one wnid (like n01440764) per line, got {line[:80]!r}")
        wnids.append(match.group(1))
    if not wnids:
        raise SynsetFileError(f"{source}: no wnids in it")
    _raise_on_duplicates(wnids, source)
    return wnids


def parse_loc_synset_mapping(text: str, *, source: str = "LOC_synset_mapping.txt") -> dict[str, str]:
    """Kaggle's "wnid text" lines -> {wnid: text}, in file order."""
    return _parse_pairs(text, _LOC_LINE, "'n01440764 tench, Tinca tinca'", source)


def parse_imagenet_metadata(text: str, *, source: str = "imagenet_metadata.txt") -> dict[str, str]:
    """ "wnid<TAB>text" lines -> {wnid: text} for every WordNet synset listed (21,842 in the real file)."""
    return _parse_pairs(text, _METADATA_LINE, "'n01440764<TAB>tench, Tinca tinca'", source)


def _parse_pairs(text: str, pattern: re.Pattern, example: str, source: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        match = pattern.fullmatch(line.rstrip("\r\n "))
        if not match:
            raise SynsetFileError(f"{source}:{number}: want lines like {example}, got {line[:80]!r}")
        wnid, name = match.groups()
        if wnid in pairs:
            raise SynsetFileError(f"{source}:{number}: {wnid} is listed twice")
        pairs[wnid] = " ".join(name.split())
    if not pairs:
        raise SynsetFileError(f"{source}: no entries in it")
    return pairs


@dataclasses.dataclass(frozen=True)
class DevkitSynset:
    """One entry of the devkit's `synsets` struct array."""

    ilsvrc2012_id: int
    wnid: str
    words: str
    num_children: int


def parse_meta_mat(data: bytes, *, source: str = "meta.mat") -> list[DevkitSynset]:
    """Every synset in the devkit's meta.mat (leaves and inner nodes), in file order.

    loadmat runs with its defaults (struct_as_record=True, squeeze_me=False):
    then every field of every element is an ndarray however MATLAB stored it
    (numbers as (1,1) arrays, strings as (1,) arrays, no children as (1,0)),
    so one unwrapping rule covers all, and the struct array's own shape, (N,1)
    in the real file or (1,N), is just raveled.
    """
    from scipy import io as scipy_io  # only meta.mat needs scipy

    if not data.startswith(_MAT_MAGIC):
        raise SynsetFileError(
            f"{source}: not a MATLAB file (does not start with 'MATLAB'); pass the devkit's data/meta.mat"
        )
    try:
        contents = scipy_io.loadmat(io.BytesIO(data))
    except NotImplementedError as error:  # v7.3 files are HDF5
        raise SynsetFileError(f"{source}: {error}; re-save it as a v7 MAT file (the devkit's own is v5)") from error
    except Exception as error:  # noqa: BLE001 - scipy raises many types on damaged files
        raise SynsetFileError(
            f"{source}: cannot read this MAT file ({type(error).__name__}: {error}); "
            "re-extract data/meta.mat from the devkit"
        ) from error
    if "synsets" not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise SynsetFileError(
            f"{source}: no 'synsets' variable (found {found}); is this the ILSVRC2012 devkit's data/meta.mat?"
        )
    records = contents["synsets"]
    names = records.dtype.names or ()
    missing = [f for f in ("ILSVRC2012_ID", "WNID", "num_children") if f not in names]
    if missing:
        raise SynsetFileError(
            f"{source}: 'synsets' has no field(s) {missing} (has {list(names)}); "
            "is this the ILSVRC2012 devkit's meta.mat?"
        )
    synsets = []
    for position, record in enumerate(records.ravel(), start=1):
        where = f"{source}: synsets({position})"
        words = _unwrap(record["words"], where) if "words" in names else ""
        wnid = str(_unwrap(record["WNID"], where) or "").strip()
        if not WNID_PATTERN.fullmatch(wnid):
            raise SynsetFileError(f"{where}: WNID {wnid!r} is not a wnid (want n + 8 digits)")
        synsets.append(
            DevkitSynset(
                ilsvrc2012_id=_as_int(_unwrap(record["ILSVRC2012_ID"], where), "ILSVRC2012_ID", where),
                wnid=wnid,
                words=" ".join(str(words or "").split()),
                num_children=_as_int(_unwrap(record["num_children"], where), "num_children", where),
            )
        )
    return synsets


def _unwrap(value, where: str):
    """Peel MATLAB's 1x1 wrappers (possibly nested in object cells) down to one scalar; None if empty."""
    import numpy as np

    while isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.size != 1:
            raise SynsetFileError(f"{where}: expected one value, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    return value.item() if hasattr(value, "item") else value


def _as_int(value, field: str, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SynsetFileError(f"{where}: {field} is {value!r}, not a number") from None
    if number != value:
        raise SynsetFileError(f"{where}: {field} is {value!r}, not a whole number")
    return number


def table_from_meta_mat(data: bytes | str, *, source: str | None = None) -> SynsetTable:
    """Classes = the leaf synsets (num_children == 0) of meta.mat, labelled in sorted-wnid order.

    Accepts the file's bytes or a path. Keeps ILSVRC2012_ID -> wnid for the
    validation ground truth.
    """
    if isinstance(data, str):
        source = source or data
        data = _read_bytes(data)
    source = source or "meta.mat"
    leaves = [s for s in parse_meta_mat(data, source=source) if s.num_children == 0]
    if not leaves:
        raise SynsetFileError(f"{source}: no leaf synsets (num_children == 0); nothing to classify")
    _raise_on_duplicates([str(s.ilsvrc2012_id) for s in leaves], f"{source} ILSVRC2012_IDs")
    return SynsetTable.build(
        [s.wnid for s in leaves],
        {s.wnid: s.words for s in leaves},
        ilsvrc2012_ids={s.ilsvrc2012_id: s.wnid for s in leaves},
        source=source,
    )


# --- loading by path, format detected -------------------------------------------------


def load_synsets(
    path: str,
    *,
    wnids: Sequence[str] | None = None,
    texts_path: str | None = None,
    keep_order: bool = False,
) -> SynsetTable:
    """Read a class table from any supported file, telling the format by name and content.

    Class lists: synsets.tsv (its labels kept), meta.mat and
    LOC_synset_mapping.txt (sorted), a plain wnid list (an explicit list: its
    order kept). imagenet_metadata.txt only gives texts, so it needs `wnids`
    (the classes actually present; sorted unless keep_order). For class lists,
    `wnids` must be a subset: labels follow the full list, so a run over a few
    classes stays label-compatible with the full dataset. texts_path names an
    extra text source (imagenet_metadata.txt, LOC mapping, synsets.tsv or
    meta.mat) that then supplies every class's text.
    """
    data = _read_bytes(path)
    kind = detect_format(data, path)
    if kind == "meta.mat":
        table = table_from_meta_mat(data, source=path)
    else:
        text = _decode(data, path)
        if kind == "synsets.tsv":
            table = SynsetTable.from_tsv(text, source=path)
        elif kind == "LOC_synset_mapping.txt":
            texts = parse_loc_synset_mapping(text, source=path)
            table = SynsetTable.build(list(texts), texts, source=path)
        elif kind == "imagenet_metadata.txt":
            if not wnids:
                raise SynsetFileError(
                    f"{path}: imagenet_metadata.txt lists all WordNet synsets (21,842), not the classes; "
                    "give the class wnids too (train/<wnid>/ folders, or a class list such as "
                    "imagenet_lsvrc_2015_synsets.txt with this file as texts_path)"
                )
            table = SynsetTable.build(
                wnids, parse_imagenet_metadata(text, source=path), keep_order=keep_order, source=path
            )
        else:
            table = SynsetTable.build(parse_wnid_list(text, source=path), None, keep_order=True, source=path)
    if wnids:
        unknown = sorted(set(wnids) - set(table.synsets))
        if unknown:
            raise SynsetFileError(
                f"{path}: {len(unknown)} wnids of the data are not in this class list "
                f"({', '.join(unknown[:5])}); use a class list that covers them"
            )
    if texts_path:
        table = SynsetTable.build(
            table.synsets,
            read_texts(texts_path),
            keep_order=True,
            ilsvrc2012_ids=table.ilsvrc2012_ids,
            source=texts_path,
        )
    return table


def read_texts(path: str) -> dict[str, str]:
    """{wnid: text} from any file that has texts."""
    data = _read_bytes(path)
    kind = detect_format(data, path)
    if kind == "meta.mat":
        return {s.wnid: s.words for s in parse_meta_mat(data, source=path)}
    text = _decode(data, path)
    if kind == "imagenet_metadata.txt":
        return parse_imagenet_metadata(text, source=path)
    if kind == "LOC_synset_mapping.txt":
        return parse_loc_synset_mapping(text, source=path)
    if kind == "synsets.tsv":
        table = SynsetTable.from_tsv(text, source=path)
        return dict(zip(table.synsets, table.texts))
    raise SynsetFileError(
        f"{path}: a plain wnid list has no texts; use imagenet_metadata.txt, "
        "LOC_synset_mapping.txt, synsets.tsv or meta.mat"
    )


def detect_format(data: bytes, path: str = "") -> str:
    """'meta.mat', 'synsets.tsv', 'LOC_synset_mapping.txt', 'imagenet_metadata.txt' or 'wnid list'.

    Content decides, so renamed files still work; the name only settles
    what content cannot (a MAT file is binary).
    """
    if data.startswith(_MAT_MAGIC) or path.lower().endswith(".mat"):
        return "meta.mat"
    text = _decode(data, path)
    first = next((line.rstrip("\r\n ") for line in text.lstrip("\ufeff").splitlines() if line.strip()), "")
    if first.rstrip() == TSV_HEADER:
        return "synsets.tsv"
    if _METADATA_LINE.fullmatch(first):
        return "imagenet_metadata.txt"
    if _LOC_LINE.fullmatch(first):
        return "LOC_synset_mapping.txt"
    if _PLAIN_LINE.fullmatch(first.strip()) or first.lstrip().startswith("#"):
        return "wnid list"
    name = posixpath.basename(path) or "input"
    raise SynsetFileError(
        f"{path}: cannot tell what {name} is (first line {first[:60]!r}); want synsets.tsv, meta.mat, "
        "LOC_synset_mapping.txt, imagenet_metadata.txt or one wnid per line"
    )


# --- validation ground truth ----------------------------------------------------------


def parse_validation_ground_truth(
    text: str, table: SynsetTable, *, source: str = "ILSVRC2012_validation_ground_truth.txt"
) -> list[str]:
    """One devkit ILSVRC2012_ID per line (line i = i-th validation image) -> wnids.

    The IDs are meta.mat's, not labels: they must go through the table's
    ilsvrc2012_ids, which only a table read from meta.mat has.
    """
    if not table.ilsvrc2012_ids:
        raise SynsetFileError(
            f"{source}: holds devkit ILSVRC2012_IDs, which only the devkit's meta.mat maps to wnids; "
            "build the class table from data/meta.mat (load_synsets('.../meta.mat'))"
        )
    wnids = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            wnids.append(table.ilsvrc2012_ids[int(line)])
        except ValueError:
            raise SynsetFileError(
                f"{source}:{number}: {line[:40]!r} is not an ILSVRC2012_ID (a whole number)"
            ) from None
        except KeyError:
            raise SynsetFileError(
                f"{source}:{number}: ILSVRC2012_ID {line.strip()} is not a leaf synset of this "
                f"meta.mat ({len(table.ilsvrc2012_ids)} known); use the devkit's own meta.mat"
            ) from None
    if not wnids:
        raise SynsetFileError(f"{source}: no IDs in it")
    return wnids


def read_validation_ground_truth(path: str, table: SynsetTable) -> list[str]:
    return parse_validation_ground_truth(read_text_file(path), table, source=path)


# --- helpers --------------------------------------------------------------------------


def _raise_on_duplicates(items: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    repeated = [x for x in items if x in seen or seen.add(x)]
    if repeated:
        hint = ""
        if len(items) > 2 * len(seen):
            hint = "; it looks like a per-image label file, not a class list"
        raise SynsetFileError(
            f"{source}: {len(repeated)} repeated entries ({', '.join(sorted(set(repeated))[:5])})"
            f"{hint}; each class must appear once"
        )


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SynsetFileError(f"{path}: not UTF-8 text ({error}); pass a text class list or meta.mat") from error


def _read_bytes(path: str) -> bytes:
    if not files.exists(path):
        raise SynsetFileError(f"{path}: no such file; check the path (local or gs://)")
    return files.read_bytes(path)


def read_text_file(path: str) -> str:
    """A UTF-8 text file (local or gs://); SynsetFileError naming the file when it is missing or not text."""
    return _decode(_read_bytes(path), path)
