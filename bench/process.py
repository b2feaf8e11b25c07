"""Measuring a whole process tree: wall time, CPU time, other load, and peak memory.

The local runner starts its SDK workers as subprocesses, so one process's peak
says little; a sampler thread reads /proc for the launcher and every
descendant. Plain summed RSS counts the shared library pages once per
process, so a transient extra worker looks like hundreds of MB more data; the
tree figure is instead anonymous + shmem memory summed (private to each
process: heap, buffers) plus the largest file-backed RSS (the libraries,
counted once). The largest single process is kept too. A child caught between
fork and exec still shows its parent's pages, so young processes still running
their parent's command line are skipped; for the same reason wait4's
ru_maxrss, which keeps the pre-exec high-water mark, is not used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import subprocess
import threading
import time
from collections.abc import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 2**20


@dataclasses.dataclass(frozen=True)
class ProcessRun:
    """One measured subprocess run; memory in bytes."""

    wall_s: float
    cpu_s: float  # user + system of the process and every descendant it reaped (wait4)
    other_cpu_s: float  # CPU the rest of the machine used meanwhile: competition for the cores
    peak_tree: int  # sampled peak of private memory summed + the largest file-backed RSS (see the docstring)
    peak_tree_anon: int  # sampled peak of anonymous memory summed over the tree
    peak_tree_rss: int  # sampled peak of plain RSS summed over the tree (shared pages counted repeatedly)
    peak_single_rss: int  # sampled peak of the largest single process
    num_processes: int  # most processes seen in the tree at once
    images: int = 0  # what the run wrote
    log: str = ""


# --- measuring a process tree -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TreeMemory:
    """Memory of a process tree at one instant, in bytes."""

    rss: int  # plain RSS, summed
    anon: int  # anonymous RSS, summed
    private_plus_libraries: int  # anonymous + shmem summed, plus the largest file-backed RSS
    largest: int  # RSS of the largest single process
    processes: int


def _children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):  # exited while we looked
        pass
    return found


_STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
_FRESH_FORK_S = 1.0  # a fork this young still running its parent's command line has not exec'd yet


def _memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem of one process in bytes; empty once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = [line.split(":", 1) for line in f if line.startswith(_STATUS_KEYS)]
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return {key: int(value.split()[0]) * 1024 for key, value in lines}


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _age_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0.0
    return uptime - started / os.sysconf("SC_CLK_TCK")


def _unexeced_fork(pid: int, parent: int) -> bool:
    """True for a child between fork and exec: its memory is its parent's, not its own."""
    return _age_s(pid) < _FRESH_FORK_S and _cmdline(pid) == _cmdline(parent)


def tree_memory(root: int) -> TreeMemory:
    """Memory of `root` and all its descendants now (root is a child of this process)."""
    rss = anon = private = largest_file = largest = count = 0
    todo = [(root, os.getpid())]
    while todo:
        pid, parent = todo.pop()
        one = {} if _unexeced_fork(pid, parent) else _memory(pid)
        if one:
            rss += one.get("VmRSS", 0)
            anon += one.get("RssAnon", 0)
            private += one.get("RssAnon", 0) + one.get("RssShmem", 0)
            largest_file = max(largest_file, one.get("RssFile", 0))
            largest = max(largest, one.get("VmRSS", 0))
            count += 1
        todo += [(child, pid) for child in _children(pid)]
    return TreeMemory(rss, anon, private + largest_file, largest, count)


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (ticks + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _TreeSampler(threading.Thread):
    """Keeps the peak of each TreeMemory field (each on its own: they need not peak together)."""

    def __init__(self, root: int, period_s: float):
        super().__init__(daemon=True)
        self._root, self._period = root, period_s
        self._done = threading.Event()
        self.peak = TreeMemory(0, 0, 0, 0, 0)

    def run(self) -> None:
        while not self._done.is_set():
            now = tree_memory(self._root)
            self.peak = TreeMemory(
                *(max(a, b) for a, b in zip(dataclasses.astuple(self.peak), dataclasses.astuple(now)))
            )
            self._done.wait(self._period)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure_process(argv: Sequence[str], log_path: str, sample_s: float) -> ProcessRun:
    """Runs argv from the repository root, output to log_path; RuntimeError naming the log if it fails."""
    with open(log_path, "wb") as log:
        busy, own = _machine_busy_s(), _own_cpu_s()
        started = time.monotonic()
        process = subprocess.Popen(list(argv), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        sampler = _TreeSampler(process.pid, sample_s)
        sampler.start()
        # wait4, not wait(): its CPU times are the child's plus every descendant's it reaped
        # (the runner reaps its workers), which no sampling can miss.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        sampler.stop()
        busy, own = _machine_busy_s() - busy, _own_cpu_s() - own
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        with open(log_path, errors="replace") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited with {process.returncode}; log {log_path}:\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    peak = sampler.peak
    return ProcessRun(
        wall_s=wall,
        cpu_s=cpu,
        other_cpu_s=max(0.0, busy - cpu - own),
        peak_tree=peak.private_plus_libraries,
        peak_tree_anon=peak.anon,
        peak_tree_rss=peak.rss,
        peak_single_rss=peak.largest,
        num_processes=peak.processes,
        log=log_path,
    )


# --- summaries of repeated runs ------------------------------------------------------


def other_share(run_: ProcessRun) -> float:
    """Share of all the machine's cores that other processes used during the run."""
    return run_.other_cpu_s / (run_.wall_s * (os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class Summary:
    images: int
    wall_s: float  # the fastest run's
    walls: tuple[float, ...]
    cpu_s: float  # the least over the runs
    other_cpu_share: float  # in the fastest run, share of the machine other processes used
    peak_tree: int  # memory: the largest over the runs
    peak_tree_anon: int
    peak_tree_rss: int
    peak_single_rss: int
    num_processes: int


def summarise(runs: list[ProcessRun]) -> Summary:
    fastest = min(runs, key=lambda r: r.wall_s)
    return Summary(
        images=fastest.images,
        wall_s=fastest.wall_s,
        walls=tuple(r.wall_s for r in runs),
        cpu_s=min(r.cpu_s for r in runs),
        other_cpu_share=other_share(fastest),
        peak_tree=max(r.peak_tree for r in runs),
        peak_tree_anon=max(r.peak_tree_anon for r in runs),
        peak_tree_rss=max(r.peak_tree_rss for r in runs),
        peak_single_rss=max(r.peak_single_rss for r in runs),
        num_processes=max(r.num_processes for r in runs),
    )


def rate(images: int, seconds: float) -> float:
    """NaN when there is no time difference to divide by: the sizes are too close for the jitter."""
    return images / seconds if seconds > 0 else float("nan")


def marginal(small: Summary, large: Summary) -> tuple[float, float, float]:
    """(images/s from the fastest runs, lowest and highest any pairing of the runs gives)."""
    extra = large.images - small.images
    return (
        rate(extra, large.wall_s - small.wall_s),
        rate(extra, max(large.walls) - min(small.walls)),
        rate(extra, min(large.walls) - max(small.walls)) if min(large.walls) > max(small.walls) else math.inf,
    )


def fixed_cost_s(summary: Summary, marginal: float) -> float:
    """The intercept: wall time a run would take with no images at the marginal rate."""
    return summary.wall_s - summary.images / marginal if math.isfinite(marginal) else float("nan")


def cpu_ms_per_image(small: Summary, large: Summary) -> float:
    return 1000.0 * (large.cpu_s - small.cpu_s) / (large.images - small.images)


def ceiling(small: Summary, large: Summary) -> float:
    """Images/s if every core did nothing but the marginal work: a sanity bound on the wall-time rate."""
    per_image_s = cpu_ms_per_image(small, large) / 1000.0
    return (os.cpu_count() or 1) / per_image_s if per_image_s > 0 else float("nan")


def slope_kb(small: Summary, large: Summary) -> float:
    return (large.peak_tree - small.peak_tree) / (large.images - small.images) / 1024


def walls_note(summary: Summary) -> str:
    return "runs " + "/".join(f"{w:.1f}" for w in summary.walls) + " s"


def memory_note(summary: Summary) -> str:
    return (
        f"private memory of {summary.num_processes} processes + libraries once; anonymous "
        f"{summary.peak_tree_anon / MB:.0f} MB; summed RSS {summary.peak_tree_rss / MB:.0f} MB; largest process "
        f"{summary.peak_single_rss / MB:.0f} MB"
    )
