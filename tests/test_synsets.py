"""records.synsets on generated files shaped like ImageNet's real metadata."""

import io
import pickle

import numpy as np
import pytest
import scipy.io

from records import synsets
from records.synsets import SynsetFileError, SynsetTable

# Real ILSVRC2012 leaves with their real devkit IDs: deliberately not in sorted-wnid order.
LEAVES = [  # (ILSVRC2012_ID, wnid, words)
    (1, "n02119789", "kit fox, Vulpes macrotis"),
    (2, "n02100735", "English setter"),
    (65, "n01440764", "tench, Tinca tinca"),
    (490, "n01751748", "sea snake"),
    (7, "n04589890", "window screen"),
]
PARENTS = [  # (ID, wnid, words, children IDs) - inner WordNet nodes, num_children > 0
    (1001, "n02118333", "fox", [1]),
    (1002, "n01661091", "reptile, reptilian", [490]),
    (1003, "n00015388", "animal, animate being, beast, brute, creature, fauna", [1001, 1002, 65]),
]
SORTED_LEAF_WNIDS = sorted(w for _, w, _ in LEAVES)


def meta_mat(shape: str = "column", ids_as_double: bool = False, drop_field: str = "") -> bytes:
    """A devkit-style meta.mat: struct array `synsets` with the real file's 8 fields and value types."""
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    fields = [f for f in fields if f != drop_field]
    rows = [(i, w, words, []) for i, w, words in LEAVES] + PARENTS
    records = np.empty((len(rows), 1), dtype=[(f, object) for f in fields])
    for n, (ilsvrc_id, wnid, words, children) in enumerate(rows):
        values = {
            "ILSVRC2012_ID": np.array([[ilsvrc_id]], dtype=np.float64 if ids_as_double else np.uint16),
            "WNID": wnid,
            "words": words,
            "gloss": f"the gloss of {words}",
            "num_children": np.array([[len(children)]], dtype=np.uint8),
            "children": np.array([children], dtype=np.uint16) if children else np.zeros((1, 0), np.uint8),
            "wordnet_height": np.array([[1 if children else 0]], dtype=np.uint8),
            "num_train_images": np.array([[1300]], dtype=np.uint16),
        }
        records[n, 0] = tuple(values[f] for f in fields)
    if shape == "row":
        records = records.reshape(1, -1)
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": records})
    return out.getvalue()


def write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


# --- the table itself -----------------------------------------------------------------


def test_build_sorts_by_wnid_and_labels_from_one():
    table = SynsetTable.build(
        ["n02119789", "n01440764", "n01751748"],
        {"n02119789": "kit fox", "n01440764": "tench", "n01751748": "sea snake"},
    )
    assert table.synsets == ("n01440764", "n01751748", "n02119789")
    assert synsets.LABEL_OFFSET == 1
    assert [table.label_of(w) for w in table.synsets] == [1, 2, 3]
    assert (table.synset_of(2), table.text_of(2), len(table)) == ("n01751748", "sea snake", 3)


def test_build_can_keep_an_explicit_order():
    table = SynsetTable.build(["n02119789", "n01440764"], None, keep_order=True)
    assert table.synsets == ("n02119789", "n01440764") and table.texts == ("", "")
    assert table.label_of("n01440764") == 2


def test_unknown_wnid_and_out_of_range_labels_raise_clearly():
    table = SynsetTable.build(["n01440764", "n01443537"], None)
    with pytest.raises(KeyError, match="n09999999"):
        table.label_of("n09999999")
    for label in (0, 3, -1):
        with pytest.raises(KeyError, match=r"labels run 1\.\.2"):
            table.synset_of(label)
    with pytest.raises(KeyError):
        table.text_of(3)


@pytest.mark.parametrize(
    "wnids, texts, message",
    [
        (["n01440764", "n01440764"], None, "repeated"),
        (["red\trose"], None, "without tabs"),
        ([""], None, "non-empty"),
        ([], None, "at least one"),
        (["n01440764", "n01443537"], {"n01440764": "tench"}, "no text for 1 classes.*n01443537"),
    ],
)
def test_build_rejects_bad_class_lists(wnids, texts, message):
    with pytest.raises(SynsetFileError, match=message):
        SynsetTable.build(wnids, texts)


def test_texts_are_made_single_line_and_direct_construction_is_validated():
    table = SynsetTable.build(["n01440764"], {"n01440764": " tench,\tTinca\ntinca "})
    assert table.texts == ("tench, Tinca tinca",)
    with pytest.raises(SynsetFileError, match="tabs"):
        SynsetTable(("n01440764",), ("a\tb",))
    with pytest.raises(SynsetFileError, match="one text per class"):
        SynsetTable(("n01440764",), ())
    with pytest.raises(SynsetFileError, match="stray"):
        SynsetTable(("n01440764",), ("",), {1: "n01443537"})


def test_table_pickles_for_beam_workers():
    table = synsets.table_from_meta_mat(meta_mat())
    copy = pickle.loads(pickle.dumps(table))
    assert copy == table
    assert copy.label_of("n04589890") == table.label_of("n04589890") == 5
    assert copy.ilsvrc2012_ids[490] == "n01751748"


# --- synsets.tsv --------------------------------------------------------------------


def test_tsv_round_trips_through_a_file(tmp_path):
    table = SynsetTable.build(
        ["n02119789", "n01440764", "n07697537"],
        {
            "n02119789": "kit fox, Vulpes macrotis",
            "n01440764": "tench, Tinca tinca",
            "n07697537": "hotdog, hot dog, red hot (café)",
        },
    )
    path = str(tmp_path / "synsets.tsv")
    table.write_tsv(path)
    assert (tmp_path / "synsets.tsv").read_text(encoding="utf-8").splitlines() == [
        "label\tsynset\ttext",
        "1\tn01440764\ttench, Tinca tinca",
        "2\tn02119789\tkit fox, Vulpes macrotis",
        "3\tn07697537\thotdog, hot dog, red hot (café)",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["synsets.tsv"]  # no temp file left behind
    assert SynsetTable.read_tsv(path) == table
    assert synsets.load_synsets(path) == table


def test_tsv_keeps_its_own_label_order_even_if_unsorted():
    text = "label\twnid\ttext\n1\tn02119789\tkit fox\n2\tn01440764\ttench\n"
    table = SynsetTable.from_tsv(text)
    assert table.synsets == ("n02119789", "n01440764")
    assert SynsetTable.from_tsv(table.to_tsv()) == table


@pytest.mark.parametrize(
    "body, message",
    [
        ("wnid\tlabel\ttext\n1\tn01440764\ttench\n", "first line must be"),
        ("label\twnid\ttext\n", "no classes"),
        ("label\twnid\ttext\n1\tn01440764\ttench\n3\tn01443537\tgoldfish\n", r"x\.tsv:3: label '3' where 2"),
        ("label\twnid\ttext\n0\tn01440764\ttench\n", r"x\.tsv:2: label '0' where 1"),
        ("label\twnid\ttext\n1\tn01440764\ttench\n2\tn01440764\ttench\n", r"x\.tsv:3: n01440764 is listed twice"),
        ("label\twnid\ttext\n1\tn01440764\n", r"x\.tsv:2: want 3 tab-separated fields"),
        ("label\twnid\ttext\n1\tn01440764\ttench\tTinca\n", r"x\.tsv:2: want 3 tab-separated fields"),
    ],
)
def test_tsv_errors_name_the_file_and_line(body, message):
    with pytest.raises(SynsetFileError, match=message):
        SynsetTable.from_tsv(body, source="x.tsv")


# --- plain lists, Kaggle's mapping, imagenet_metadata.txt ------------------------------


def test_plain_wnid_list_keeps_its_order(tmp_path):
    path = write(tmp_path, "classes.txt", "# my classes\r\nn02119789\r\n\r\nn01440764  \r\nn01751748\r\n")
    table = synsets.load_synsets(path)
    assert table.synsets == ("n02119789", "n01440764", "n01751748")
    assert table.texts == ("", "", "")


def test_plain_list_errors_name_the_line_and_spot_a_label_file():
    with pytest.raises(SynsetFileError, match=r"list\.txt:2: want one wnid"):
        synsets.parse_wnid_list("n01440764\ntench\n", source="list.txt")
    per_image_labels = "\n".join(["n01751748", "n09193705", "n02105855"] * 20)
    with pytest.raises(SynsetFileError, match="per-image label file"):
        synsets.parse_wnid_list(per_image_labels, source="val_labels.txt")


LOC_MAPPING = (
    "n01443537 goldfish, Carassius auratus\n"
    "n01440764 tench, Tinca tinca\n"
    "n01484850 great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias\n"
)


def test_loc_synset_mapping_gives_sorted_classes_with_texts(tmp_path):
    assert synsets.parse_loc_synset_mapping(LOC_MAPPING)["n01440764"] == "tench, Tinca tinca"
    table = synsets.load_synsets(write(tmp_path, "LOC_synset_mapping.txt", LOC_MAPPING))
    assert table.synsets == ("n01440764", "n01443537", "n01484850")
    assert table.text_of(3).startswith("great white shark, white shark")
    with pytest.raises(SynsetFileError, match=r"m\.txt:2: want lines like"):
        synsets.parse_loc_synset_mapping("n01440764 tench\nn01443537\n", source="m.txt")


def metadata_text(num_entries: int = 21842) -> str:
    """imagenet_metadata.txt's shape: every WordNet synset, wnid TAB text, sorted by wnid."""
    lines = [f"n{i:08d}\tsynset number {i}, thing {i}" for i in range(num_entries)]
    lines[1440764 % num_entries] = "n01440764\ttench, Tinca tinca"
    return "\n".join(sorted(lines)) + "\n"


def test_imagenet_metadata_is_a_text_source_for_given_classes(tmp_path):
    path = write(tmp_path, "imagenet_metadata.txt", metadata_text())
    assert len(synsets.parse_imagenet_metadata(metadata_text())) == 21842
    table = synsets.load_synsets(path, wnids=["n00000042", "n01440764", "n00000007"])
    assert table.synsets == ("n00000007", "n00000042", "n01440764")
    assert table.text_of(3) == "tench, Tinca tinca"
    with pytest.raises(SynsetFileError, match="not the classes"):
        synsets.load_synsets(path)
    with pytest.raises(SynsetFileError, match="no text for 1 classes.*n09999999"):
        synsets.load_synsets(path, wnids=["n01440764", "n09999999"])


def test_plain_class_list_with_a_separate_text_source(tmp_path):
    classes = write(tmp_path, "imagenet_lsvrc_2015_synsets.txt", "n01440764\nn00000007\n")
    texts = write(tmp_path, "imagenet_metadata.txt", metadata_text(1000))
    table = synsets.load_synsets(classes, texts_path=texts)
    assert table.synsets == ("n01440764", "n00000007")  # the explicit list's order
    assert table.texts == ("tench, Tinca tinca", "synset number 7, thing 7")


def test_data_wnids_must_be_in_a_class_list(tmp_path):
    path = write(tmp_path, "LOC_synset_mapping.txt", LOC_MAPPING)
    table = synsets.load_synsets(path, wnids=["n01440764"])
    assert len(table) == 3  # labels follow the full list, not the subset present
    with pytest.raises(SynsetFileError, match="not in this class list.*n09999999"):
        synsets.load_synsets(path, wnids=["n01440764", "n09999999"])


def test_unrecognised_and_missing_files_are_named(tmp_path):
    with pytest.raises(SynsetFileError, match=r"notes\.txt.*cannot tell"):
        synsets.load_synsets(write(tmp_path, "notes.txt", "hello world\n"))
    with pytest.raises(SynsetFileError, match="no such file"):
        synsets.load_synsets(str(tmp_path / "absent.txt"))
    with pytest.raises(SynsetFileError, match="not UTF-8"):
        synsets.load_synsets(write(tmp_path, "binary.txt", b"\xff\xfe\x00garbage"))


# --- the devkit's meta.mat ----------------------------------------------------------


@pytest.mark.parametrize("shape", ["column", "row"])
@pytest.mark.parametrize("ids_as_double", [False, True])
def test_meta_mat_gives_sorted_leaves_and_keeps_devkit_ids(shape, ids_as_double):
    table = synsets.table_from_meta_mat(meta_mat(shape, ids_as_double))
    assert table.synsets == tuple(SORTED_LEAF_WNIDS)  # leaves only, parents dropped
    assert table.ilsvrc2012_ids == {i: w for i, w, _ in LEAVES}
    sea_snake = table.label_of(table.ilsvrc2012_ids[490])
    assert table.synset_of(sea_snake) == "n01751748" and table.text_of(sea_snake) == "sea snake"
    assert sea_snake == 2 != 490  # labels are sorted-wnid positions, never devkit IDs
    assert table.label_of(table.ilsvrc2012_ids[1]) == 4  # kit fox: ID 1, label 4


def test_meta_mat_parser_sees_every_synset_in_file_order():
    parsed = synsets.parse_meta_mat(meta_mat())
    assert [(s.ilsvrc2012_id, s.wnid, s.num_children) for s in parsed] == (
        [(i, w, 0) for i, w, _ in LEAVES] + [(i, w, len(c)) for i, w, _, c in PARENTS]
    )
    assert parsed[-1].words == "animal, animate being, beast, brute, creature, fauna"


def test_meta_mat_is_found_by_content_or_name_from_a_path(tmp_path):
    renamed = write(tmp_path, "devkit-meta.bin", meta_mat())
    assert synsets.load_synsets(renamed).ilsvrc2012_ids[490] == "n01751748"
    named = write(tmp_path, "meta.mat", meta_mat())
    assert synsets.table_from_meta_mat(named) == synsets.load_synsets(named)


def test_meta_mat_errors_say_what_is_wrong():
    with pytest.raises(SynsetFileError, match="not a MATLAB file"):
        synsets.parse_meta_mat(b"label\twnid\ttext\n", source="m.mat")
    other = io.BytesIO()
    scipy.io.savemat(other, {"classes": np.arange(3)})
    with pytest.raises(SynsetFileError, match=r"m\.mat: no 'synsets' variable \(found \['classes'\]\)"):
        synsets.parse_meta_mat(other.getvalue(), source="m.mat")
    with pytest.raises(SynsetFileError, match=r"no field\(s\) \['num_children'\]"):
        synsets.parse_meta_mat(meta_mat(drop_field="num_children"))
    with pytest.raises(SynsetFileError, match="cannot read this MAT file"):
        synsets.parse_meta_mat(meta_mat()[:300], source="m.mat")


# --- validation ground truth ----------------------------------------------------------


def test_validation_ground_truth_ids_become_wnids(tmp_path):
    table = synsets.table_from_meta_mat(meta_mat())
    path = write(tmp_path, "ILSVRC2012_validation_ground_truth.txt", "490\n65\n1\n490\n7\n")
    assert synsets.read_validation_ground_truth(path, table) == [
        "n01751748",
        "n01440764",
        "n02119789",
        "n01751748",
        "n04589890",
    ]


def test_validation_ground_truth_errors():
    table = synsets.table_from_meta_mat(meta_mat())
    with pytest.raises(SynsetFileError, match=r"gt\.txt:2: ILSVRC2012_ID 1001 is not a leaf"):
        synsets.parse_validation_ground_truth("490\n1001\n", table, source="gt.txt")  # a parent's ID
    with pytest.raises(SynsetFileError, match=r"gt\.txt:1: 'n01751748' is not an ILSVRC2012_ID"):
        synsets.parse_validation_ground_truth("n01751748\n", table, source="gt.txt")
    without_ids = SynsetTable.build(SORTED_LEAF_WNIDS, None)
    with pytest.raises(SynsetFileError, match="meta.mat"):
        synsets.parse_validation_ground_truth("490\n", without_ids)
