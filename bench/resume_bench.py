"""Resuming a killed build: the time to finish it, beside a full rebuild.

The bench fixture (--resume_images JPEGs of 300-500 px, --validate=decode)
is built once whole, the baseline. Then a build is killed (SIGKILL to its
whole process group, as the OOM killer or a lost machine would) once
--resume_kill_fraction of its shards are written, and finished with
--resume: the figure is that second run's wall time. Resuming re-indexes
the input (cheap) and writes only the missing shards, so it should cost
about (1 - fraction) of the build plus its fixed cost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from absl import flags

from bench import Figure, data, records_bench
from bench.process import REPO_ROOT, measure_process
from records import files, shards

FLAGS = flags.FLAGS
flags.DEFINE_integer("resume_images", 16000, "Images (train + val) in the build that is killed and resumed.")
flags.DEFINE_float("resume_kill_fraction", 0.5, "Share of the shards written when the build is killed.")

MODE = "decode"


def _shards_written(output_dir: str) -> int:
    """Finished shards of any split (a shard being written has a temporary name); 0 before the folder exists."""
    return len(files.match(output_dir, shards.shard_pattern("*")))


def _kill_when(command: list[str], output_dir: str, count: int) -> None:
    process = subprocess.Popen(
        command,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    while _shards_written(output_dir) < count:
        if process.poll() is not None:
            raise RuntimeError(f"the build ended before {count} shards were written; lower --resume_kill_fraction")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run(workdir: str) -> list[Figure]:
    root = os.path.join(workdir, "resume")
    dataset = data.ensure_dataset(os.path.join(root, "data"), FLAGS.resume_images)
    logs = os.path.join(root, "logs")
    os.makedirs(logs, exist_ok=True)
    out = os.path.join(root, "records-out")
    counts = records_bench.default_shards(dataset)
    total_shards = sum(counts)
    full = records_bench.run_pipeline(dataset, MODE, out, os.path.join(logs, "full.log"), shards=counts)
    shutil.rmtree(out, ignore_errors=True)
    command = records_bench.pipeline_command(dataset, MODE, out, shards=counts)
    killed_at = max(1, int(total_shards * FLAGS.resume_kill_fraction))
    _kill_when(command, out, killed_at)
    left = _shards_written(out)
    resumed = measure_process([*command, "--resume"], os.path.join(logs, "resume.log"), FLAGS.records_sample_ms / 1000)
    shutil.rmtree(out, ignore_errors=True)
    return [
        Figure(
            f"records --resume after a kill at {left}/{total_shards} shards, {dataset.num_images} images",
            resumed.wall_s,
            "s",
            "full build",
            full.wall_s,
            lower_is_better=True,
            note=f"--validate={MODE}; the kill left {left} finished shards, the resume wrote the rest",
        ),
    ]
