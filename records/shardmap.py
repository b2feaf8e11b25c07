"""One function over every shard of a build: in a local process pool, or as a Beam job.

verify and adopt read every record of every shard; the work is per shard and
independent, so it runs on all cores here, or on Beam workers for builds on
gs:// too large for one machine. Beam is imported only on that path, so
records/ stays importable without it.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from records import files

_DIRECT_RUNNERS = (None, "DirectRunner", "direct")


def map_local(function: Callable, paths: Sequence[str], workers: int | None, **kwargs: Any) -> Iterator[Any]:
    """function(path, **kwargs) for every path, on `workers` processes (None: one per core); results
    as they complete. `function` must be importable by name (a module-level function)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) <= 1:
        for path in paths:
            yield function(path, **kwargs)
        return
    # forkserver, not fork: the caller may hold TensorFlow threads and locks a fork would copy mid-use.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([function.__module__])
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(paths)), mp_context=context) as pool:
        futures = [pool.submit(function, path, **kwargs) for path in paths]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def map_with_beam(
    function: Callable[..., dict], paths: Sequence[str], beam_args: Sequence[str], **kwargs: Any
) -> list[dict]:
    """function(path, **kwargs) -> a JSON-able dict, as a Beam job with one element per path.

    The results come back through a JSON file under the job's --temp_location
    (the local temp dir if none is given), the one place both the workers and
    this process can reach.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    options = beam_options(beam_args, parallel=True)
    scratch = options.view_as(GoogleCloudOptions).temp_location or tempfile.gettempdir()
    results_path = files.join(scratch, f"records-shardmap-{uuid.uuid4().hex}.json")
    with beam.Pipeline(options=options) as root:
        _ = (
            root
            | "Shards" >> beam.Create(list(paths))
            | "Spread" >> beam.Reshuffle()
            | "Each" >> beam.Map(function, **kwargs)
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.Map(lambda results: files.write_atomically(results_path, json.dumps(results)))
        )
    results = json.loads(files.read_text(results_path))
    files.remove([results_path])
    return results


def beam_options(beam_args: Sequence[str], parallel: bool):
    """Beam's PipelineOptions as given. On the local DirectRunner, unless the user chose its mode:
    every core in worker processes when `parallel`, else this process alone (no worker start-up)."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    chosen = {a.split("=")[0] for a in beam_args} & {"--direct_running_mode", "--direct_num_workers"}
    if options.view_as(StandardOptions).runner not in _DIRECT_RUNNERS or chosen:
        return options
    direct = options.view_as(DirectOptions)
    if parallel:
        direct.direct_running_mode, direct.direct_num_workers = "multi_processing", os.cpu_count() or 1
    else:
        direct.direct_running_mode, direct.direct_num_workers = "in_memory", 1
    return options
