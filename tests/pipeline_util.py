"""Running the records job inside tests, reading what it wrote, and running a module's command line."""

from __future__ import annotations

import glob
import io
import os
import pathlib
import subprocess
import sys

from pipeline import job
from pipeline.console import Console
from pipeline.options import BuildOptions
from records import features, manifest, tfrecord

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
IN_PROCESS = ("--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1")


def build_records(
    input_dir,
    output_dir,
    *,
    beam_args=IN_PROCESS,
    train_shards=3,
    validation_shards=2,
    overwrite=True,
    resume=False,
    console=None,
    **options,
) -> manifest.Manifest:
    """Runs the records job as `python -m pipeline` does (BuildOptions fields as keywords); returns the manifest."""
    request = job.Request(
        str(input_dir),
        str(output_dir),
        BuildOptions(num_shards={"train": train_shards, "validation": validation_shards}, **options),
        tuple(beam_args),
        overwrite=overwrite,
        resume=resume,
    )
    return job.run(request, console or Console(io.StringIO(), io.StringIO()))


def read_split(records_dir, split: str) -> dict[str, list[features.ImageRecord]]:
    """Shard base name -> its records, in file order."""
    out = {}
    for path in sorted(glob.glob(os.path.join(str(records_dir), f"{split}-*-of-*"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = [features.from_example(r) for r in tfrecord.read_frames(f)]
    return out


def read_records(records_dir, split: str) -> list[features.ImageRecord]:
    """Every record of a split: shard by shard in name order, each in file order."""
    return [record for shard in read_split(records_dir, split).values() for record in shard]


def run_module(
    module: str, *args: str | os.PathLike, timeout: float = 300, env=None, cwd=REPO_ROOT
) -> subprocess.CompletedProcess:
    """`python -m module args...` with this interpreter, from the repository root unless told otherwise,
    its output captured as text; env (None: this process's) as subprocess.run takes it."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
