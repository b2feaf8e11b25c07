"""pipeline.tars reads tar headers itself: it must list what tarfile lists, and know a cut archive."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from pipeline import tars

FORMATS = {"gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT, "pax": tarfile.PAX_FORMAT}
NAMES = [
    "n01440764_18.JPEG",
    "red rose/IMG_0001.jpg",
    "tulipán/IMG_0002.JPG",
    "a/" + "deep/" * 30 + "IMG_0003.jpeg",  # > 100 bytes: ustar prefix, GNU long name or pax path
    "x" * 120 + ".jpg",  # a long name no prefix can split
]


def _tar(fmt: int, names=NAMES, with_dirs: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for number, name in enumerate(names):
            if with_dirs and "/" in name:
                directory = tarfile.TarInfo(name.rsplit("/", 1)[0])
                directory.type = tarfile.DIRTYPE
                archive.addfile(directory)
            payload = os.urandom(100 + 700 * number)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("link-to-first")
        link.type, link.linkname = tarfile.SYMTYPE, names[0]
        archive.addfile(link)
    return buffer.getvalue()


def _listing(data: bytes, tmp_path) -> tars.Listing:
    path = tmp_path / "archive.tar"
    path.write_bytes(data)
    return tars.list_members(str(path))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_lists_what_tarfile_lists(fmt, tmp_path):
    ustar_safe = [n for n in NAMES if fmt != "ustar" or len(n.split("/")[-1]) <= 100]
    data = _tar(FORMATS[fmt], ustar_safe)
    listing = _listing(data, tmp_path)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        expected = [(m.name, m.offset_data, m.size) for m in archive if m.isfile()]
    assert [(m.name, m.offset, m.size) for m in listing.members] == expected
    assert listing.complete
    for member in listing.members:  # the byte ranges hold the members' data
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            assert data[member.offset : member.offset + member.size] == archive.extractfile(member.name).read()


def test_nested_tars_are_listed_in_place(tmp_path):
    inner = _tar(tarfile.GNU_FORMAT)
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("n01440764.tar")
        info.size = len(inner)
        archive.addfile(info, io.BytesIO(inner))
    path = tmp_path / "outer.tar"
    path.write_bytes(outer.getvalue())
    (synset_tar,) = tars.list_members(str(path)).members
    listing = tars.list_nested_members(str(path), synset_tar)
    assert [m.name for m in listing.members] == NAMES and listing.complete
    first = listing.members[0]
    assert (
        outer.getvalue()[first.offset : first.offset + first.size]
        == tarfile.open(fileobj=io.BytesIO(inner)).extractfile(NAMES[0]).read()
    )


def _member_starts(data: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [m.offset for m in archive]


@pytest.mark.parametrize("cut", ["between members", "inside a header", "inside data", "empty file"])
def test_a_cut_archive_is_incomplete(cut, tmp_path):
    data = _tar(tarfile.GNU_FORMAT, with_dirs=False)
    start = _member_starts(data)[2]
    length = {"between members": start, "inside a header": start + 100, "inside data": start + 700, "empty file": 0}
    listing = _listing(data[: length[cut]], tmp_path)
    assert not listing.complete
    assert len(listing.members) == {"between members": 2, "inside a header": 2, "inside data": 3, "empty file": 0}[cut]


def test_one_zero_block_is_enough_and_a_non_tar_is_refused(tmp_path):
    data = _tar(tarfile.GNU_FORMAT, with_dirs=False)
    end = _member_starts(data)[-1] + 512  # the symlink's header; after it, the marker
    assert _listing(data[: end + 512], tmp_path).complete
    with pytest.raises(ValueError, match="not a tar archive"):
        _listing(b"<html>404 Not Found</html>" + bytes(1024), tmp_path)
