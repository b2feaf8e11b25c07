"""A killed build finishes with --resume, writing only what was missing, byte for byte as if never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bench import data
from pipeline import build
from records import files, verify

SHARDS = ("--train_shards=48", "--validation_shards=6")


def _cli(input_dir, output_dir, *flags):
    return [sys.executable, "-m", "pipeline", f"--input_dir={input_dir}", f"--output_dir={output_dir}", *SHARDS, *flags]


def _shards(directory) -> dict[str, float]:
    return {n: os.stat(directory / n).st_mtime_ns for n in os.listdir(directory) if "-of-" in n and ".tmp-" not in n}


def _kill_midway(command, output_dir) -> dict[str, float]:
    """Starts the build, SIGKILLs its whole process group once a few shards are written; the shards left."""
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_shards(output_dir) if output_dir.exists() else {}) < 3:
        assert process.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline, "no shard appeared in time"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return _shards(output_dir)


@pytest.mark.slow
def test_a_killed_build_resumes_to_the_same_bytes(tmp_path):
    dataset = data.ensure_dataset(str(tmp_path / "data"), 1500, num_classes=6, pool_per_class=4)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    left = _kill_midway(_cli(dataset.input_dir, killed), killed)
    assert 3 <= len(left) < 54, "the kill must land midway for the test to mean anything"
    assert (killed / build.SCRATCH_NAME).is_dir()

    refused = subprocess.run(_cli(dataset.input_dir, killed), capture_output=True, text=True)
    assert refused.returncode == 1 and "--resume to finish it" in refused.stderr
    resumed = subprocess.run(_cli(dataset.input_dir, killed, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the unfinished build" in resumed.stdout
    after = _shards(killed)
    assert {n: after[n] for n in left} == left  # the finished shards were not written again
    assert subprocess.run(_cli(dataset.input_dir, whole), capture_output=True).returncode == 0
    names = sorted(_shards(whole))
    assert sorted(after) == names and len(names) == 54
    for name in [*names, "manifest.json", "synsets.tsv", "rejected.tsv"]:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert not [n for n in os.listdir(killed) if files.TEMP_MARKER in n or n == build.SCRATCH_NAME]
    assert verify.verify(str(killed), workers=1).ok
