"""Full ImageNet on one machine: the records job's per-image machinery and memory, at two sizes.

Tiny JPEGs (16-24 px) make validation nearly free, so what is left is the
job's own cost per image: tar indexing, reads, the header check, Example
encoding, framing, writing. Two sizes (default 1,400 and 121,000 images),
--validate=header, 64 + 8 shards at both:
  * wall time of the small build, run as a user runs it (the job then
    writes in-process): at that size nearly all of it is fixed cost
    (target <= 8 s);
  * marginal images/s between the sizes, both on the multi-process runner
    (--records_pipeline_args), so that its workers' start-up cancels out
    (target >= 10,000);
  * peak RSS of the largest process at both sizes, and their ratio
    (target <= 1.15: memory does not grow with the number of images).
Each beside the plain converter (bench/records_bench.py) on the same data in
the same mode. The ImageNet projection in the marginal figure's note is
1.33 M / marginal rate + the multi-process runner's fixed cost, its
intercept t_N - N / marginal rate (a build that size runs multi-process).
"""

from __future__ import annotations

import os

from absl import flags, logging

from bench import Figure, data, process, records_bench
from bench.process import MB

FLAGS = flags.FLAGS
flags.DEFINE_list("scale_sizes", ["1400", "121000"], "Two sizes (images, train + val) of tiny JPEGs.")
flags.DEFINE_integer("scale_repeats", 2, "Runs of each measurement; the fastest counts.", lower_bound=1)

SHARDS = (64, 8)
MODE = "header"
TARGET_FIXED_S = 8.0
TARGET_IMAGES_PER_S = 10_000.0
TARGET_LARGEST_RSS_GROWTH = 1.15


def run(workdir: str) -> list[Figure]:
    small, large = sorted(int(n) for n in FLAGS.scale_sizes)
    root = os.path.join(workdir, "scale")
    datasets = {
        n: data.ensure_dataset(os.path.join(root, "data"), n, side_range=data.TINY_SIDE_RANGE) for n in (small, large)
    }
    logs = os.path.join(root, "logs")
    os.makedirs(logs, exist_ok=True)
    out = os.path.join(root, "records-out")
    runs: dict[tuple[str, int], list] = {}
    for repeat in range(FLAGS.scale_repeats):
        for n, dataset in datasets.items():
            log = os.path.join(logs, f"{n}-{repeat}")
            runs_now = {
                "job": records_bench.run_pipeline(dataset, MODE, out, f"{log}-job.log", shards=SHARDS),
                "baseline": records_bench.run_baseline(dataset, MODE, out, f"{log}-baseline.log"),
            }
            if n == small:  # as a user runs it: the job picks its runner (in-process, for this size)
                runs_now["default runner"] = records_bench.run_pipeline(
                    dataset, MODE, out, f"{log}-default.log", shards=SHARDS, runner_args=[]
                )
            for subject, measured in runs_now.items():
                logging.info(
                    "scale %s, %d images: %.1fs wall, largest process %.0f MB",
                    subject,
                    n,
                    measured.wall_s,
                    measured.peak_single_rss / MB,
                )
                runs.setdefault((subject, n), []).append(measured)
    summary = {key: process.summarise(value) for key, value in runs.items()}
    return figures(summary, small, large)


def figures(summary: dict, small: int, large: int) -> list[Figure]:
    job_s, job_l = summary[("job", small)], summary[("job", large)]
    default_s = summary[("default runner", small)]
    base_s, base_l = summary[("baseline", small)], summary[("baseline", large)]
    rate, low, high = process.marginal(job_s, job_l)
    base_rate = process.marginal(base_s, base_l)[0]
    fixed = process.fixed_cost_s(job_s, rate)
    prefix = f"records at scale, tiny JPEGs, --validate={MODE}, {SHARDS[0]}+{SHARDS[1]} shards"
    speed = [
        Figure(
            f"{prefix}: wall time, {small} images",
            default_s.wall_s,
            "s",
            records_bench.BASELINE,
            base_s.wall_s,
            target=TARGET_FIXED_S,
            lower_is_better=True,
            low=min(default_s.walls),
            high=max(default_s.walls),
            note=f"whole process, start-up included, the runner the job picks; {process.walls_note(default_s)}",
        ),
        Figure(
            f"{prefix}: marginal throughput {small}->{large} images",
            rate,
            "images/s",
            records_bench.BASELINE,
            base_rate,
            target=TARGET_IMAGES_PER_S,
            low=low,
            high=high,
            note=f"(kN - N) / (t_kN - t_N), fastest of {len(job_s.walls)} runs; CPU ceiling "
            f"{process.ceiling(job_s, job_l):,.0f} images/s; projected ImageNet-1k "
            f"({records_bench.IMAGENET_IMAGES:,} images, {os.cpu_count()} cores): "
            f"{records_bench.IMAGENET_IMAGES / rate + fixed:,.0f} s",
        ),
    ]
    return speed + _memory_figures(prefix, (job_s, job_l), (base_s, base_l))


def _memory_figures(prefix: str, job, base) -> list[Figure]:
    """Peak RSS of the largest process: one worker's memory, which must not grow with the images."""
    (job_s, job_l), (base_s, base_l) = job, base
    small, large = job_s.images, job_l.images
    return [
        *(
            Figure(
                f"{prefix}: largest process peak RSS, {j.images} images",
                j.peak_single_rss / MB,
                "MB",
                records_bench.BASELINE,
                b.peak_single_rss / MB,
                lower_is_better=True,
                note=process.memory_note(j),
            )
            for j, b in ((job_s, base_s), (job_l, base_l))
        ),
        Figure(
            f"{prefix}: largest process peak RSS growth {small}->{large} images",
            job_l.peak_single_rss / job_s.peak_single_rss,
            "x",
            records_bench.BASELINE,
            base_l.peak_single_rss / base_s.peak_single_rss,
            target=TARGET_LARGEST_RSS_GROWTH,
            lower_is_better=True,
            note=f"tree memory growth {job_l.peak_tree / job_s.peak_tree:.2f}x",
        ),
    ]
