"""`records verify` throughput, against just reading the same shards with tf.data.

verify reads every record, checks both CRCs, the Example against the parse
spec, fully decodes the image and compares it with the manifest and the
synset table; the baseline is the cheapest possible read of the same bytes
(TFRecordDataset, no parsing), so the ratio is the price of the checks.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
from absl import logging

from bench import Figure, train_bench


def run(workdir: str) -> list[Figure]:
    from records import verify

    records_dir = train_bench.ensure_records(workdir)
    report = verify.verify(records_dir)
    if not report.ok:
        raise RuntimeError(f"verify found problems in the bench records: {report.problems[:3]}")
    files = tf.io.gfile.glob(os.path.join(records_dir, "*-of-*"))
    started = time.perf_counter()
    count = sum(1 for _ in tf.data.TFRecordDataset(files))
    read_rate = count / (time.perf_counter() - started)
    logging.info("verify: %.0f records/s; plain read %.0f records/s", report.records_per_second, read_rate)
    return [
        Figure(
            "records verify (all cores)",
            report.records_per_second,
            "records/s",
            "TFRecordDataset read only",
            read_rate,
            note=f"{report.num_records} records of 300-500 px JPEGs, full decode + all checks, "
            f"process start included; {os.cpu_count()} CPUs",
        )
    ]
