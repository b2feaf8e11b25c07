"""Reading and writing the files of a build, local or remote (gs://, s3://, ...).

records/ serves two stacks: the records job (Beam, no TensorFlow) and the
trainer (TensorFlow). Local paths go through the standard library, which both
have; remote ones through Beam's FileSystems, imported only when a remote path
is actually used, so this package stays importable without Beam.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from typing import BinaryIO

TEMP_MARKER = ".tmp-"  # a file being written: `<final name>.tmp-<unique>`


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def _beam():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def open_read(path: str) -> BinaryIO:
    if is_remote(path):
        return _beam().open(path, compression_type="uncompressed")
    return open(path, "rb")


def open_write(path: str) -> BinaryIO:
    """A new file (replacing any); local parent directories are created as needed."""
    if is_remote(path):
        return _beam().create(path, compression_type="uncompressed")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, "wb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def temp_name(path: str) -> str:
    """Where `path` is written before its rename: beside it, so the rename never crosses filesystems."""
    return f"{path}{TEMP_MARKER}{uuid.uuid4().hex}"


def write_atomically(path: str, data: bytes | str) -> None:
    """Write then rename, so a reader never sees half a file (a rename is atomic locally; on GCS the
    object appears whole)."""
    temp = temp_name(path)
    with open_write(temp) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    rename(temp, path)


def rename(source: str, destination: str) -> None:
    """Replaces `destination` if it exists."""
    if is_remote(source):
        if exists(destination):
            _beam().delete([destination])
        _beam().rename([source], [destination])
    else:
        os.replace(source, destination)


def exists(path: str) -> bool:
    return _beam().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    """A local directory, or a remote prefix that holds at least one object."""
    if not is_remote(path):
        return os.path.isdir(path)
    prefix = path.rstrip("/") + "/"
    return bool(_beam().match([escape(prefix) + "**"], limits=[1])[0].metadata_list)


def size(path: str) -> int:
    if is_remote(path):
        return _beam().match([escape(path)])[0].metadata_list[0].size_in_bytes
    return os.path.getsize(path)


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
    elif not exists(path):
        _beam().mkdirs(path)  # object stores have no directories: a no-op there


def remove(paths: list[str]) -> None:
    """Deletes files (and local directory trees); missing ones are fine."""
    for path in paths:
        if is_remote(path):
            if exists(path):
                _beam().delete([path])
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def remove_tree(directory: str) -> None:
    """Deletes a directory and everything under it (a remote prefix's objects)."""
    if is_remote(directory):
        found = [path for path, _ in walk(directory)]
        if found:
            _beam().delete([join(directory, relative) for relative in found])
    else:
        shutil.rmtree(directory, ignore_errors=True)


def listdir(directory: str) -> list[str]:
    """Names directly inside `directory` (files and subdirectories), sorted."""
    if not is_remote(directory):
        return sorted(os.listdir(directory))
    names = {relative.split("/", 1)[0] for relative, _ in walk(directory)}
    return sorted(names)


def walk(directory: str) -> Iterator[tuple[str, int]]:
    """(path relative to `directory` with '/' separators, size in bytes) of every file below it.

    Sorted by path, so whoever lists a directory sees the same order anywhere.
    """
    if is_remote(directory):
        prefix = directory.rstrip("/") + "/"
        found = [
            (m.path[len(prefix) :], m.size_in_bytes)
            for m in _beam().match([escape(prefix) + "**"])[0].metadata_list
            if not m.path.endswith("/")
        ]
    else:
        found = []
        for root, _, names in os.walk(directory):
            relative_root = os.path.relpath(root, directory)
            for name in names:
                path = os.path.join(root, name)
                relative = name if relative_root == "." else f"{relative_root}/{name}".replace(os.sep, "/")
                try:
                    found.append((relative, os.path.getsize(path)))
                except OSError:  # a dangling link
                    found.append((relative, -1))
    yield from sorted(found)


def match(directory: str, pattern: str) -> dict[str, int]:
    """{name: size in bytes} of the files directly in `directory` whose names match the glob `pattern`:
    one listing, also on object stores, however many files match."""
    if is_remote(directory):
        prefix = directory.rstrip("/") + "/"
        metadata = _beam().match([escape(prefix) + pattern])[0].metadata_list
        return {m.path[len(prefix) :]: m.size_in_bytes for m in metadata}
    if not os.path.isdir(directory):
        return {}
    found = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if fnmatch.fnmatchcase(entry.name, pattern) and entry.is_file():
                found[entry.name] = entry.stat().st_size
    return found


def glob(directory: str, pattern: str) -> list[str]:
    """Full paths of the files directly in `directory` whose names match the glob `pattern`, sorted."""
    return sorted(join(directory, name) for name in match(directory, pattern))


def escape(path: str) -> str:
    """A path as a Beam match pattern matching just itself: glob characters become one-character classes."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)
