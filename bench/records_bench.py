"""Records-job speed: `python -m pipeline` as a user runs it, against a plain converter.

Measured per --validate mode, at two dataset sizes N and kN (default 4N):
  * wall time of the whole `python -m pipeline` process (a subprocess, on
    the DirectRunner's multi-process mode on every core: --records_pipeline_args
    holds it there, since left to choose the job writes small builds
    in-process), startup included;
  * MARGINAL images/s = (kN - N) / (t_kN - t_N): the fixed cost (imports,
    planning, worker start, teardown) cancels out, leaving the rate a
    1.28M-image run would see. The fixed cost is reported too (the intercept);
  * peak memory of the whole process tree. The runner starts its SDK workers
    as subprocesses, so one process's peak says little; a sampler thread reads
    /proc for the launcher and every descendant every --records_sample_ms.
    Plain summed RSS counts the shared library pages (Python's, Beam's,
    NumPy's: ~60 MB in a worker) once per process, so a transient extra
    worker looks like 60 MB more data; the figure is instead anonymous +
    shmem memory summed (private to each process: heap, buffers) plus the
    largest file-backed RSS (the libraries, counted once). Summed RSS, the
    anonymous part and the largest single process go to the notes. A child
    caught between fork and exec still shows its parent's pages (this
    process holds TensorFlow once other sections are imported), so young
    processes still running their parent's command line are skipped; for
    the same reason wait4's ru_maxrss, which keeps the pre-exec high-water
    mark, is not used. The target is on growth: memory bounded by one
    shard, not by the dataset, means kN costs what N does; the per-image
    slope says what 1.33M images would add.

Other work on the machine only ever adds time, so each figure takes the
fastest of --records_repeats runs, interleaved so that a burst of load hits
every subject. The job's own run-to-run jitter is ~2 s (worker start and
teardown), so kN - N must be large: at 12,000 extra images the header-mode
rate is still only good to ~+-30%; on a quiet machine with time to spare,
--records_sizes=8000,32000 resolves it better. The CPU the rest of the machine used during each run is
measured (/proc/stat) and reported: a figure from a shared machine says so.
The low-high range over the runs is shown next to each time.

The baseline is the simplest correct converter, run the same way and doing
the same work per image: one process reads the tars sequentially with
tarfile, validates each image exactly as the job does in the same
--validate mode (records.images.normalise_image), encodes the Example and
frames it (records.features, records.tfrecord) and writes it. So a ratio
measures the job's parallelism and its overhead, nothing else.
Shards hold --records_images_per_shard images at every size, for the job and
the baseline alike, as real ImageNet's 1024 train shards hold ~1,250 images
whatever the machine.

The baseline is also a program:
    python -m bench.records_bench --convert_input_dir=... --convert_output_dir=...
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator, Sequence

from absl import app, flags, logging

from bench import Figure, data, process
from bench.process import MB, ProcessRun, measure_process
from records import manifest

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
    "records_pipeline_args",
    ["--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count() or 1}"],
    "Extra flags for `python -m pipeline`. The default holds both sizes to the multi-process runner on every "
    "core: left to choose, the job writes small builds in-process, and a marginal rate across two runner "
    "modes would count the workers' start-up as work.",
)

TARGET_IMAGES_PER_S = {"decode": 3000.0, "header": 4000.0}
TARGET_RSS_GROWTH = 1.15  # peak at kN / peak at N
IMAGENET_IMAGES = 1_281_167 + 50_000
BASELINE = "plain converter"
JOB, PLAIN = "job", "baseline"  # who ran, in the runs' keys (who, mode, images)


# --- the runs -----------------------------------------------------------------------


def default_shards(dataset: data.BenchDataset) -> tuple[int, int]:
    """(train, validation) shard counts at --records_images_per_shard images a shard, as for real ImageNet."""
    per_shard = FLAGS.records_images_per_shard
    return math.ceil(dataset.num_train / per_shard), math.ceil(dataset.num_val / per_shard)


def pipeline_command(
    dataset: data.BenchDataset,
    mode: str,
    output_dir: str,
    shards: tuple[int, int] | None = None,
    runner_args: Sequence[str] | None = None,
) -> list[str]:
    """`python -m pipeline` as a user runs it; shards (train, validation) default to
    default_shards(dataset), runner_args to --records_pipeline_args."""
    train, validation = shards or default_shards(dataset)
    return [
        sys.executable,
        "-m",
        "pipeline",
        f"--input_dir={dataset.input_dir}",
        f"--output_dir={output_dir}",
        f"--validate={mode}",
        f"--train_shards={train}",
        f"--validation_shards={validation}",
        *(FLAGS.records_pipeline_args if runner_args is None else runner_args),
    ]


def run_pipeline(
    dataset: data.BenchDataset,
    mode: str,
    output_dir: str,
    log_path: str,
    shards: tuple[int, int] | None = None,
    runner_args: Sequence[str] | None = None,
) -> ProcessRun:
    shutil.rmtree(output_dir, ignore_errors=True)
    command = pipeline_command(dataset, mode, output_dir, shards, runner_args)
    measured = measure_process(command, log_path, FLAGS.records_sample_ms / 1000)
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


def run_baseline(dataset: data.BenchDataset, mode: str, output_dir: str, log_path: str) -> ProcessRun:
    shutil.rmtree(output_dir, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "bench.records_bench",
        f"--convert_input_dir={dataset.input_dir}",
        f"--convert_output_dir={output_dir}",
        f"--convert_images_per_shard={FLAGS.records_images_per_shard}",
        f"--convert_validate={mode}",
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

    runs: dict[tuple[str, str, int], list[ProcessRun]] = {}
    for repeat in range(max(FLAGS.records_repeats, FLAGS.records_baseline_repeats)):
        for n, dataset in datasets.items():  # interleaved, so a burst of other load hits every subject
            for who, repeats in ((JOB, FLAGS.records_repeats), (PLAIN, FLAGS.records_baseline_repeats)):
                if repeat >= repeats:
                    continue
                for mode in modes:
                    log_path = os.path.join(logs, f"{who}-{mode}-{n}-{repeat}.log")
                    one = (run_pipeline if who == JOB else run_baseline)(dataset, mode, output_dir, log_path)
                    _log_run(who, mode, one)
                    runs.setdefault((who, mode, n), []).append(one)
    return figures(runs, datasets, modes)


def _log_run(who: str, mode: str, run_: ProcessRun) -> None:
    what = f"{'pipeline' if who == JOB else BASELINE} --validate={mode}"
    busy = process.other_share(run_) > FLAGS.records_busy_share
    logging.info(
        "%s, %d images: %.1fs wall, %.1fs CPU (other processes used %.0f%% of the machine%s); peak tree "
        "memory %.0f MB (anonymous %.0f MB; summed RSS %.0f MB) over %d processes, largest %.0f MB",
        what,
        run_.images,
        run_.wall_s,
        run_.cpu_s,
        100 * process.other_share(run_),
        ": CONTENDED" if busy else "",
        run_.peak_tree / MB,
        run_.peak_tree_anon / MB,
        run_.peak_tree_rss / MB,
        run_.num_processes,
        run_.peak_single_rss / MB,
    )


# --- figures ------------------------------------------------------------------------


def figures(
    runs: dict[tuple[str, str, int], list[ProcessRun]], datasets: dict[int, data.BenchDataset], modes: Sequence[str]
) -> list[Figure]:
    small, large = sorted(datasets)
    summary = {key: process.summarise(value) for key, value in runs.items()}
    other = max(s.other_cpu_share for s in summary.values())
    contended = (
        f"CONTENDED: other processes used up to {other:.0%} of the CPUs in the runs counted, so times "
        "are inflated and the marginal rate is unreliable; "
        if other > FLAGS.records_busy_share
        else f"other processes used at most {other:.0%} of the CPUs in the runs counted; "
    )
    kb_per_image = datasets[large].num_bytes / datasets[large].num_images / 1024
    out = []
    for mode in modes:
        job, base = ((summary[(who, mode, small)], summary[(who, mode, large)]) for who in (JOB, PLAIN))
        out += _speed_figures(f"records --validate={mode}", mode, job, base, f"{contended}{kb_per_image:.0f} KB/JPEG")
        out += _memory_figures(f"records --validate={mode}", job, base)
    return out


def _speed_figures(prefix: str, mode: str, job, base, context: str) -> list[Figure]:
    (job_s, job_l), (base_s, base_l) = job, base
    small, large = job_s.images, job_l.images
    rate, low, high = process.marginal(job_s, job_l)
    base_rate = process.marginal(base_s, base_l)[0]
    return [
        Figure(
            f"{prefix}: marginal throughput {small}->{large} images",
            rate,
            "images/s",
            BASELINE,
            base_rate,
            target=TARGET_IMAGES_PER_S[mode],
            low=low,
            high=high,
            note=f"{context}; (kN - N) / (t_kN - t_N), fastest of {len(job_s.walls)} and {len(job_l.walls)} "
            f"runs; range = any pairing of runs; CPU-bound ceiling {process.ceiling(job_s, job_l):,.0f} "
            "images/s (a rate above it is jitter)",
        ),
        Figure(
            f"{prefix}: fixed cost per run",
            process.fixed_cost_s(job_s, rate),
            "s",
            BASELINE,
            process.fixed_cost_s(base_s, base_rate),
            lower_is_better=True,
            note="wall time at zero images: t_N - N / marginal rate (start-up, planning, teardown)",
        ),
        Figure(
            f"{prefix}: marginal CPU time per image",
            process.cpu_ms_per_image(job_s, job_l),
            "ms",
            BASELINE,
            process.cpu_ms_per_image(base_s, base_l),
            lower_is_better=True,
            note="all processes, least CPU time over the runs; over wall ms per image = cores kept busy",
        ),
        *(
            Figure(
                f"{prefix}: wall time, {j.images} images",
                j.wall_s,
                "s",
                BASELINE,
                b.wall_s,
                lower_is_better=True,
                low=min(j.walls),
                high=max(j.walls),
                note=f"whole process, start-up included; {process.walls_note(j)}",
            )
            for j, b in ((job_s, base_s), (job_l, base_l))
        ),
    ]


def _memory_figures(prefix: str, job, base) -> list[Figure]:
    (job_s, job_l), (base_s, base_l) = job, base
    small, large = job_s.images, job_l.images
    slope = process.slope_kb(job_s, job_l)
    return [
        *(
            Figure(
                f"{prefix}: peak tree memory, {j.images} images",
                j.peak_tree / MB,
                "MB",
                BASELINE,
                b.peak_tree / MB,
                lower_is_better=True,
                note=process.memory_note(j),
            )
            for j, b in ((job_s, base_s), (job_l, base_l))
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
            slope,
            "KB",
            BASELINE,
            process.slope_kb(base_s, base_l),
            lower_is_better=True,
            note=f"(peak at kN - peak at N) / (kN - N); at ImageNet's {IMAGENET_IMAGES:,} images that adds "
            f"{slope * IMAGENET_IMAGES / 2**20:.1f} GB, if it stays linear",
        ),
    ]


# --- the baseline converter ---------------------------------------------------------


def convert_plain(input_dir: str, output_dir: str, images_per_shard: int, validate: str) -> int:
    """The plain single-process converter; returns the number of images written.

    Labels come from the devkit as the job's do (meta.mat, ground-truth IDs
    mapped through it), and every image is validated and encoded as the job
    does it, so both do the same work and write the same records.
    """
    from records import features, images, synsets, tfrecord

    with tarfile.open(os.path.join(input_dir, data.sample.DEVKIT_TAR), "r:gz") as devkit:
        kit = {os.path.basename(m.name): devkit.extractfile(m).read() for m in devkit if m.isfile()}
    table = synsets.table_from_meta_mat(kit["meta.mat"])
    val_wnids = synsets.parse_validation_ground_truth(kit["ILSVRC2012_validation_ground_truth.txt"].decode(), table)
    os.makedirs(output_dir, exist_ok=True)
    written = 0
    for split, found in (("train", _train_images(input_dir)), ("validation", _val_images(input_dir, val_wnids))):
        out, in_shard, shard = None, 0, 0
        for name, wnid, jpeg in found:
            image = images.normalise_image(jpeg, validate=validate)
            if isinstance(image, images.Rejected):  # the job would reject it too; the bench data has none
                continue
            if out is None or in_shard == images_per_shard:
                if out is not None:
                    out.close()
                out, in_shard = open(os.path.join(output_dir, f"{split}-{shard:05d}"), "wb"), 0
                shard += 1
            label = table.label_of(wnid)
            record = features.ImageRecord(
                encoded=image.jpeg,
                filename=name,
                height=image.height,
                width=image.width,
                label=label,
                synset=wnid,
                text=table.text_of(label),
            )
            out.write(tfrecord.frame(features.serialize(record)))
            in_shard += 1
            written += 1
        if out is not None:
            out.close()
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
    flags.DEFINE_enum("convert_validate", "decode", ["decode", "header"], "Validation, as the job's --validate.")
    flags.mark_flags_as_required(["convert_input_dir", "convert_output_dir"])


def _convert_main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    written = convert_plain(
        FLAGS.convert_input_dir, FLAGS.convert_output_dir, FLAGS.convert_images_per_shard, FLAGS.convert_validate
    )
    print(f"BASELINE_IMAGES={written}", flush=True)


if __name__ == "__main__":
    _define_convert_flags()
    app.run(_convert_main)
