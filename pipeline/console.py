"""What a person sees while the records job runs: a header, one progress bar, warnings about the data, a summary.

Everything else — Beam's worker harness logs, google-api-core's FutureWarnings,
the job's own INFO logging — goes to a log file in the output directory.
The capture works on file descriptors 1 and 2, not on Python's sys.stdout:
the local runner's workers are subprocesses that inherit them, and C
libraries write there directly. The console keeps duplicates of the
original descriptors for the lines meant for the person.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from tqdm import tqdm

from records import files

LOG_NAME = "build.log"


class Console:
    """Lines for the person; `capture` sends everything else to the log file."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.log_path: str | None = None

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=self.err, flush=True)

    @contextlib.contextmanager
    def capture(self, output_dir: str, verbose: bool) -> Iterator[None]:
        """Sends fds 1 and 2 to <output_dir>/build.log (a local file copied there at the end when the
        output is remote) while the block runs; with `verbose`, leaves them alone."""
        if verbose:
            yield
            return
        remote = files.is_remote(output_dir)
        local_log = None
        if remote:
            handle, local_log = tempfile.mkstemp(prefix="records-build-", suffix=".log")
            os.close(handle)
        self.log_path = files.join(output_dir, LOG_NAME)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        self.out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8")
        self.err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8")
        log_fd = os.open(local_log or self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if local_log:
                with open(local_log, "rb") as f:
                    files.write_atomically(self.log_path, f.read())
                os.remove(local_log)

    @contextlib.contextmanager
    def progress(
        self, description: str, total: int, unit: str, poll: Callable[[], int], every_secs: float = 0.5
    ) -> Iterator[None]:
        """A live bar while the block runs, advanced by what `poll()` reports done so far; on a
        console that is not a terminal (a log, CI), one line when the block ends.

        Polling the output (files appearing) rather than counting in the
        workers works the same for every runner, Dataflow included.
        """
        started = time.monotonic()
        if not self.err.isatty():
            yield
            seconds = time.monotonic() - started
            self.line(f"{description}: {total:,} {unit} in {seconds:.1f}s ({total / max(seconds, 1e-9):,.0f} {unit}/s)")
            return
        bar = tqdm(total=total, desc=description, unit=f" {unit}", file=self.err)
        done = threading.Event()

        def watch() -> None:
            while not done.wait(every_secs):
                _advance(bar, poll)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()
            _advance(bar, poll)
            bar.close()


def _advance(bar: tqdm, poll: Callable[[], int]) -> None:
    try:
        now = poll()
    except Exception:  # noqa: BLE001 - progress is best effort; the job's own errors matter
        return
    if now > bar.n:
        bar.update(now - bar.n)
