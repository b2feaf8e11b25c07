"""Records-job speed: `python -m pipeline` as a user runs it, against a plain converter.

Measured per --validate mode, at two dataset sizes N and kN (default 4N):
  * wall time of the whole `python -m pipeline` process (a subprocess; the
    DirectRunner's multi-process default, all cores), startup included;
  * MARGINAL images/s = (kN - N) / (t_kN - t_N): the fixed cost (imports,
    planning, worker start, teardown) cancels out, leaving the rate a
    1.28M-image run would see. The fixed cost is reported too (the intercept);
  * peak memory of the whole process tree. The runner starts its SDK workers
    as subprocesses, so one process's peak says little; a sampler thread reads
    /proc for the launcher and every descendant every --records_sample_ms.
    Plain summed RSS counts the shared library pages (TensorFlow's ~250 MB)
    once per process, so a transient extra worker looks like 250 MB more
    data; the figure is instead anonymous + shmem memory summed (private to
    each process: heap, buffers) plus the largest file-backed RSS (the
    libraries, counted once). Summed RSS, the anonymous part and the largest
    single process go to the notes. A child caught between fork and exec
    still shows its parent's pages (this process holds TensorFlow once other
    sections are imported), so young processes still running their parent's
    command line are skipped; for the same reason wait4's ru_maxrss, which
    keeps the pre-exec high-water mark, is not used. The target is
    on growth: memory bounded by one shard, not by the dataset, means kN
    costs what N does; the per-image slope says what 1.33M images would add.

Other work on the machine only ever adds time, so each figure takes the
fastest of --records_repeats runs, interleaved so that a burst of load hits
every subject. The job's own run-to-run jitter is ~2 s (worker start and
teardown), so kN - N must be large: at 12,000 extra images the header-mode
rate is still only good to ~+-30%; on a quiet machine with time to spare,
--records_sizes=8000,32000 resolves it better. The CPU the rest of the machine used during each run is
measured (/proc/stat) and reported: a figure from a shared machine says so.
The low-high range over the runs is shown next to each time.

The baseline is the simplest correct converter, run the same way: one
process reads the tars sequentially with tarfile, fully decodes every image
with Pillow, builds a tf.train.Example and writes it with tf.io.TFRecordWriter.
Shards hold --records_images_per_shard images at every size, for the job and
the baseline alike, as real ImageNet's 1024 train shards hold ~1,250 images
whatever the machine.

The baseline is also a program:
    python -m bench.records_bench --convert_input_dir=... --convert_output_dir=...
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence

from absl import app, flags, logging

from bench import Figure, data

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "records_sizes",
    ["4000", "16000"],
    "Two dataset sizes N,kN (images, train + val); the "
    "marginal rate is measured between them. Their difference must dwarf the run-to-run jitter.",
)
flags.DEFINE_list("records_modes", ["decode", "header"], "The pipeline's --validate modes to measure.")
flags.DEFINE_integer("records_repeats", 4, "Runs of each pipeline measurement; the fastest counts.", lower_bound=1)
flags.DEFINE_integer(
    "records_baseline_repeats",
    1,
    "Runs of each baseline measurement (one process, so it jitters far less than the multi-process job).",
    lower_bound=1,
)
flags.DEFINE_float(
    "records_busy_share",
    0.15,
    "Share of all cores other processes may use during a counted run before its figures are marked contended.",
)
flags.DEFINE_integer(
    "records_images_per_shard",
    125,
    "Images per output shard; shard counts scale with the size, as for real ImageNet.",
    lower_bound=1,
)
flags.DEFINE_integer("records_classes", 16, "Classes in the generated dataset.", lower_bound=1)
flags.DEFINE_float("records_val_fraction", 0.1, "Share of the images in the validation tar.")
flags.DEFINE_integer("records_sample_ms", 50, "Memory sampling period, milliseconds.", lower_bound=5)
flags.DEFINE_list(
    "records_pipeline_args", [], "Extra flags for `python -m pipeline`, e.g. Beam's --direct_num_workers=2."
)

TARGET_IMAGES_PER_S = {"decode": 2000.0, "header": 4000.0}
TARGET_RSS_GROWTH = 1.20  # peak at kN / peak at N
IMAGENET_IMAGES = 1_281_167 + 50_000
BASELINE = "plain converter"
MB = 2**20
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        process = subprocess.Popen(list(argv), cwd=_REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
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


# --- the runs -----------------------------------------------------------------------


def run_pipeline(dataset: data.BenchDataset, mode: str, output_dir: str, log_path: str) -> ProcessRun:
    per_shard = FLAGS.records_images_per_shard
    shutil.rmtree(output_dir, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "pipeline",
        f"--input_dir={dataset.input_dir}",
        f"--output_dir={output_dir}",
        f"--validate={mode}",
        f"--train_shards={math.ceil(dataset.num_train / per_shard)}",
        f"--validation_shards={math.ceil(dataset.num_val / per_shard)}",
        *FLAGS.records_pipeline_args,
    ]
    measured = measure_process(argv, log_path, FLAGS.records_sample_ms / 1000)
    from records import manifest  # deferred: imports TensorFlow

    built = manifest.read_manifest(output_dir)
    written = sum(s.num_examples for s in built.splits.values())
    if written != dataset.num_images or built.num_rejected:
        raise RuntimeError(
            f"pipeline wrote {written} of {dataset.num_images} images and rejected "
            f"{built.num_rejected} (see {output_dir}/rejected.tsv, log {log_path}); "
            "a broken build's speed means nothing"
        )
    shutil.rmtree(output_dir)
    return dataclasses.replace(measured, images=written)


def run_baseline(dataset: data.BenchDataset, output_dir: str, log_path: str) -> ProcessRun:
    shutil.rmtree(output_dir, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "bench.records_bench",
        f"--convert_input_dir={dataset.input_dir}",
        f"--convert_output_dir={output_dir}",
        f"--convert_images_per_shard={FLAGS.records_images_per_shard}",
    ]
    measured = measure_process(argv, log_path, FLAGS.records_sample_ms / 1000)
    with open(log_path) as f:
        found = re.findall(r"BASELINE_IMAGES=(\d+)", f.read())
    written = int(found[-1]) if found else 0
    if written != dataset.num_images:
        raise RuntimeError(f"baseline wrote {written} of {dataset.num_images} images; log {log_path}")
    shutil.rmtree(output_dir)
    return dataclasses.replace(measured, images=written)


def _sizes() -> tuple[int, int]:
    try:
        small, large = (int(s) for s in FLAGS.records_sizes)
    except ValueError:
        raise app.UsageError(
            f"--records_sizes={','.join(FLAGS.records_sizes)}: want two image counts, like 4000,16000"
        ) from None
    if not 0 < small < large:
        raise app.UsageError(f"--records_sizes={small},{large}: want 0 < N < kN, like 4000,16000")
    return small, large


def run(workdir: str) -> list[Figure]:
    small, large = _sizes()
    modes = list(FLAGS.records_modes)
    unknown = set(modes) - set(TARGET_IMAGES_PER_S)
    if unknown:
        raise app.UsageError(f"--records_modes: unknown {sorted(unknown)}; choose from decode,header")
    root = os.path.join(workdir, "records")
    datasets = {
        n: data.ensure_dataset(
            os.path.join(root, "data"), n, num_classes=FLAGS.records_classes, val_fraction=FLAGS.records_val_fraction
        )
        for n in (small, large)
    }
    logs = os.path.join(root, "logs")
    os.makedirs(logs, exist_ok=True)
    output_dir = os.path.join(root, "records-out")

    runs: dict[tuple[str, int], list[ProcessRun]] = {}
    for repeat in range(max(FLAGS.records_repeats, FLAGS.records_baseline_repeats)):
        for n, dataset in datasets.items():  # interleaved, so a burst of other load hits every subject
            jobs = modes if repeat < FLAGS.records_repeats else []
            baseline = ["baseline"] if repeat < FLAGS.records_baseline_repeats else []
            for subject in [*jobs, *baseline]:
                log_path = os.path.join(logs, f"{subject}-{n}-{repeat}.log")
                if subject == "baseline":
                    one = run_baseline(dataset, output_dir, log_path)
                else:
                    one = run_pipeline(dataset, subject, output_dir, log_path)
                _log_run(subject, one)
                runs.setdefault((subject, n), []).append(one)
    return figures(runs, datasets, modes)


def _other_share(run_: ProcessRun) -> float:
    """Share of all the machine's cores that other processes used during the run."""
    return run_.other_cpu_s / (run_.wall_s * (os.cpu_count() or 1))


def _log_run(subject: str, run_: ProcessRun) -> None:
    what = BASELINE if subject == "baseline" else f"pipeline --validate={subject}"
    busy = _other_share(run_) > FLAGS.records_busy_share
    logging.info(
        "%s, %d images: %.1fs wall, %.1fs CPU (other processes used %.0f%% of the machine%s); peak tree "
        "memory %.0f MB (anonymous %.0f MB; summed RSS %.0f MB) over %d processes, largest %.0f MB",
        what,
        run_.images,
        run_.wall_s,
        run_.cpu_s,
        100 * _other_share(run_),
        ": CONTENDED" if busy else "",
        run_.peak_tree / MB,
        run_.peak_tree_anon / MB,
        run_.peak_tree_rss / MB,
        run_.num_processes,
        run_.peak_single_rss / MB,
    )


# --- figures ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Summary:
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


def _summarise(runs: list[ProcessRun]) -> _Summary:
    fastest = min(runs, key=lambda r: r.wall_s)
    return _Summary(
        images=fastest.images,
        wall_s=fastest.wall_s,
        walls=tuple(r.wall_s for r in runs),
        cpu_s=min(r.cpu_s for r in runs),
        other_cpu_share=_other_share(fastest),
        peak_tree=max(r.peak_tree for r in runs),
        peak_tree_anon=max(r.peak_tree_anon for r in runs),
        peak_tree_rss=max(r.peak_tree_rss for r in runs),
        peak_single_rss=max(r.peak_single_rss for r in runs),
        num_processes=max(r.num_processes for r in runs),
    )


def _rate(images: int, seconds: float) -> float:
    """NaN when there is no time difference to divide by: the sizes are too close for the jitter."""
    return images / seconds if seconds > 0 else float("nan")


def _marginal(small: _Summary, large: _Summary) -> tuple[float, float, float]:
    """(images/s from the fastest runs, lowest and highest any pairing of the runs gives)."""
    extra = large.images - small.images
    return (
        _rate(extra, large.wall_s - small.wall_s),
        _rate(extra, max(large.walls) - min(small.walls)),
        _rate(extra, min(large.walls) - max(small.walls)) if min(large.walls) > max(small.walls) else math.inf,
    )


def _fixed_cost_s(summary: _Summary, marginal: float) -> float:
    """The intercept: wall time a run would take with no images at the marginal rate."""
    return summary.wall_s - summary.images / marginal if math.isfinite(marginal) else float("nan")


def _cpu_ms_per_image(small: _Summary, large: _Summary) -> float:
    return 1000.0 * (large.cpu_s - small.cpu_s) / (large.images - small.images)


def _ceiling(small: _Summary, large: _Summary) -> float:
    """Images/s if every core did nothing but the marginal work: a sanity bound on the wall-time rate."""
    per_image_s = _cpu_ms_per_image(small, large) / 1000.0
    return (os.cpu_count() or 1) / per_image_s if per_image_s > 0 else float("nan")


def _slope_kb(small: _Summary, large: _Summary) -> float:
    return (large.peak_tree - small.peak_tree) / (large.images - small.images) / 1024


def _walls(summary: _Summary) -> str:
    return "runs " + "/".join(f"{w:.1f}" for w in summary.walls) + " s"


def _memory_note(summary: _Summary) -> str:
    return (
        f"private memory of {summary.num_processes} processes + libraries once; anonymous "
        f"{summary.peak_tree_anon / MB:.0f} MB; summed RSS {summary.peak_tree_rss / MB:.0f} MB; largest process "
        f"{summary.peak_single_rss / MB:.0f} MB"
    )


def figures(
    runs: dict[tuple[str, int], list[ProcessRun]], datasets: dict[int, data.BenchDataset], modes: Sequence[str]
) -> list[Figure]:
    small, large = sorted(datasets)
    summary = {key: _summarise(value) for key, value in runs.items()}
    base_s, base_l = summary[("baseline", small)], summary[("baseline", large)]
    base_rate = _marginal(base_s, base_l)[0]
    kb_per_image = datasets[large].num_bytes / datasets[large].num_images / 1024
    other = max(s.other_cpu_share for s in summary.values())
    contended = (
        f"CONTENDED: other processes used up to {other:.0%} of the CPUs in the runs counted, so times "
        "are inflated and the marginal rate is unreliable; "
        if other > FLAGS.records_busy_share
        else f"other processes used at most {other:.0%} of the CPUs in the runs counted; "
    )
    out = []
    for mode in modes:
        job_s, job_l = summary[(mode, small)], summary[(mode, large)]
        rate, rate_low, rate_high = _marginal(job_s, job_l)
        prefix = f"records --validate={mode}"
        out += [
            Figure(
                f"{prefix}: marginal throughput {small}->{large} images",
                rate,
                "images/s",
                BASELINE,
                base_rate,
                target=TARGET_IMAGES_PER_S[mode],
                low=rate_low,
                high=rate_high,
                note=f"{contended}(kN - N) / (t_kN - t_N), fastest of {len(job_s.walls)} and "
                f"{len(job_l.walls)} runs; range = any pairing of runs; CPU-bound ceiling "
                f"{_ceiling(job_s, job_l):,.0f} images/s (a rate above it is jitter); {kb_per_image:.0f} KB "
                "per JPEG",
            ),
            Figure(
                f"{prefix}: fixed cost per run",
                _fixed_cost_s(job_s, rate),
                "s",
                BASELINE,
                _fixed_cost_s(base_s, base_rate),
                lower_is_better=True,
                note="wall time at zero images: t_N - N / marginal rate (startup, planning, teardown)",
            ),
            Figure(
                f"{prefix}: marginal CPU time per image",
                _cpu_ms_per_image(job_s, job_l),
                "ms",
                BASELINE,
                _cpu_ms_per_image(base_s, base_l),
                lower_is_better=True,
                note="all processes, least CPU time over the runs; over wall ms per image = cores kept busy",
            ),
            Figure(
                f"{prefix}: wall time, {small} images",
                job_s.wall_s,
                "s",
                BASELINE,
                base_s.wall_s,
                lower_is_better=True,
                low=min(job_s.walls),
                high=max(job_s.walls),
                note=f"whole process, startup included; {_walls(job_s)}",
            ),
            Figure(
                f"{prefix}: wall time, {large} images",
                job_l.wall_s,
                "s",
                BASELINE,
                base_l.wall_s,
                lower_is_better=True,
                low=min(job_l.walls),
                high=max(job_l.walls),
                note=f"whole process, startup included; {_walls(job_l)}",
            ),
            Figure(
                f"{prefix}: peak tree memory, {small} images",
                job_s.peak_tree / MB,
                "MB",
                BASELINE,
                base_s.peak_tree / MB,
                lower_is_better=True,
                note=_memory_note(job_s),
            ),
            Figure(
                f"{prefix}: peak tree memory, {large} images",
                job_l.peak_tree / MB,
                "MB",
                BASELINE,
                base_l.peak_tree / MB,
                lower_is_better=True,
                note=_memory_note(job_l),
            ),
            Figure(
                f"{prefix}: peak tree memory growth {small}->{large} images",
                job_l.peak_tree / job_s.peak_tree,
                "x",
                BASELINE,
                base_l.peak_tree / base_s.peak_tree,
                target=TARGET_RSS_GROWTH,
                lower_is_better=True,
                note="peak at kN / peak at N (largest over the runs)",
            ),
            Figure(
                f"{prefix}: peak tree memory per extra image",
                _slope_kb(job_s, job_l),
                "KB",
                BASELINE,
                _slope_kb(base_s, base_l),
                lower_is_better=True,
                note=f"(peak at kN - peak at N) / (kN - N); at ImageNet's {IMAGENET_IMAGES:,} images that "
                f"adds {_slope_kb(job_s, job_l) * IMAGENET_IMAGES / 2**20:.1f} GB, if it stays linear",
            ),
        ]
    return out


# --- the baseline converter ---------------------------------------------------------


def convert_plain(input_dir: str, output_dir: str, images_per_shard: int) -> int:
    """The plain single-process converter; returns the number of images written.

    Labels come from the devkit as the job's do (meta.mat, ground-truth IDs
    mapped through it), so both write the same records.
    """
    import tensorflow as tf  # deferred: only the baseline process needs it
    from PIL import Image

    from records import features, synsets

    with tarfile.open(os.path.join(input_dir, data.sample.DEVKIT_TAR), "r:gz") as devkit:
        files = {os.path.basename(m.name): devkit.extractfile(m).read() for m in devkit if m.isfile()}
    table = synsets.table_from_meta_mat(files["meta.mat"])
    val_wnids = synsets.parse_validation_ground_truth(files["ILSVRC2012_validation_ground_truth.txt"].decode(), table)
    os.makedirs(output_dir, exist_ok=True)
    written = 0
    for split, images in (("train", _train_images(input_dir)), ("validation", _val_images(input_dir, val_wnids))):
        writer, in_shard, shard = None, 0, 0
        for name, wnid, jpeg in images:
            image = Image.open(io.BytesIO(jpeg))
            image.load()  # the full decode proves the file is whole
            if writer is None or in_shard == images_per_shard:
                if writer is not None:
                    writer.close()
                writer, in_shard = tf.io.TFRecordWriter(os.path.join(output_dir, f"{split}-{shard:05d}")), 0
                shard += 1
            label = table.label_of(wnid)
            writer.write(
                features.serialize(
                    features.ImageRecord(
                        encoded=jpeg,
                        filename=name,
                        height=image.height,
                        width=image.width,
                        label=label,
                        synset=wnid,
                        text=table.text_of(label),
                    )
                )
            )
            in_shard += 1
            written += 1
        if writer is not None:
            writer.close()
    return written


def _train_images(input_dir: str) -> Iterator[tuple[str, str, bytes]]:
    """(name, wnid, bytes) in tar order, streaming the tar of per-synset tars."""
    with tarfile.open(os.path.join(input_dir, data.sample.TRAIN_TAR), "r|") as outer:
        for synset_tar in outer:
            wnid = os.path.splitext(synset_tar.name)[0]
            with tarfile.open(fileobj=outer.extractfile(synset_tar), mode="r|") as inner:
                for member in inner:
                    if member.isfile():
                        yield member.name, wnid, inner.extractfile(member).read()


def _val_images(input_dir: str, wnids: list[str]) -> Iterator[tuple[str, str, bytes]]:
    with tarfile.open(os.path.join(input_dir, data.sample.VAL_TAR), "r|") as val:
        for member in val:
            if member.isfile():
                number = int(re.search(r"(\d+)\.", member.name).group(1))  # 1-based, as the ground truth's lines
                yield member.name, wnids[number - 1], val.extractfile(member).read()


def _define_convert_flags() -> None:
    flags.DEFINE_string("convert_input_dir", None, "ILSVRC2012 tars (train, val, devkit) to convert.")
    flags.DEFINE_string("convert_output_dir", None, "Where the baseline writes its TFRecords.")
    flags.DEFINE_integer("convert_images_per_shard", 125, "Images per output file.", lower_bound=1)
    flags.mark_flags_as_required(["convert_input_dir", "convert_output_dir"])


def _convert_main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    written = convert_plain(FLAGS.convert_input_dir, FLAGS.convert_output_dir, FLAGS.convert_images_per_shard)
    print(f"BASELINE_IMAGES={written}", flush=True)


if __name__ == "__main__":
    _define_convert_flags()
    app.run(_convert_main)
