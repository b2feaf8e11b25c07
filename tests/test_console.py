"""What a person sees when running the records job: a header, a live progress bar, a summary; no chatter."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
from pipeline_util import run_module

CHATTER = ("sdk_worker", "FutureWarning", "crcmod", "Pipeline_options", "statecache", "oneDNN", "INFO", "WARNING:")


def _in_a_terminal(*args: str) -> str:
    """Runs `python -m pipeline` in a pseudo-terminal of 100 columns, as a person would; all it printed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode()
    return b"".join(chunks).decode()


@pytest.mark.slow
def test_the_console_shows_the_job_and_nothing_else(sample_dir, tmp_path):
    out = tmp_path / "out"
    text = _in_a_terminal(f"--input_dir={sample_dir / 'tars'}", f"--output_dir={out}")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    screen = [line.split("\r")[-1] for line in lines]  # what the terminal finally shows of each line
    assert screen[0] == f"input    {sample_dir / 'tars'} (ILSVRC2012 distribution tars)"
    assert screen[1] == "classes  4"
    assert screen[2].startswith("indexing: 100%|") and "5/5" in screen[2]
    assert screen[3] == "images   train 32, validation 16"
    assert screen[4] == f"shards   train 1, validation 1 -> {out}"
    assert screen[5] == f"log      {out}/build.log"
    writing = next(line for line in lines if line.startswith("\rwriting shards:"))
    assert writing.count("\r") >= 2 and "%|" in writing  # a bar that moved, drawn in place
    assert screen[-1] == f"warning: rejected 6 images and 1 box file: reasons in {out}/rejected.tsv"
    summary = next(i for i, line in enumerate(screen) if line.startswith("records written to"))
    assert screen[summary + 1].startswith("  train: 28 images in 1 shard (28-28 per shard), 4 rejected, converted")
    assert len(screen) == summary + 4  # header, bars, summary: nothing else
    assert not [word for word in CHATTER if word in text]
    log = (out / "build.log").read_text()
    assert "crcmod" in log or "DirectRunner" in log  # the chatter went to the log


@pytest.mark.slow
def test_verbose_shows_beams_logging_and_a_log_reader_gets_one_line_per_step(sample_dir, tmp_path):
    result = run_module("pipeline", f"--input_dir={sample_dir / 'folders'}", f"--output_dir={tmp_path}/a")
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith(("indexing", "writing shards"))]
    assert [s.split(":")[0] for s in steps] == ["indexing", "writing shards"]  # not a terminal: no bars
    assert steps[1].startswith("writing shards: 48 images in ")
    verbose = run_module("pipeline", f"--input_dir={sample_dir / 'folders'}", f"--output_dir={tmp_path}/b", "--verbose")
    assert verbose.returncode == 0 and "DirectRunner" in verbose.stderr
    assert not (tmp_path / "b" / "build.log").exists()
