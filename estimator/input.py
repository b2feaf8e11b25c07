"""The trainer's input_fn: shards of a records build -> batches of preprocessed images.

Only records/ (the on-disk contract) and preprocessing.py decide anything about
the data; this module only moves it: file listing and per-worker sharding,
parallel reads, shuffling, parallel decode, batching, prefetch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import tensorflow as tf

from estimator import preprocessing
from records import features, files, manifest, parsing, shards, tfrecord

AUTOTUNE = tf.data.AUTOTUNE

# Records are decoded in groups, each group a tiny inner dataset that skips (and
# logs) an image TF cannot decode. Grouping amortises the per-dataset overhead;
# errors from reading the shards (CRC/DataLoss) stay outside it and stop the job.
# Each group's map starts at TF's default autotuned parallelism (up to 16), and
# DECODE_GROUPS_IN_FLIGHT groups run at once.
DECODE_GROUP_SIZE = 64
DECODE_GROUPS_IN_FLIGHT = 4
READ_BUFFER_BYTES = 8 << 20


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    """What a split of a records build holds, checked against its manifest."""

    paths: tuple[str, ...]
    num_examples: int
    num_classes: int
    label_offset: int


def split_files(records_dir: str, split: str) -> SplitFiles:
    """A split's shards as manifest.json lists them (they may live in its shards_dir),
    checked to be there at the size they were written, with none left from another build.

    Raises FileNotFoundError / ValueError in one line naming the shard (or the
    directory) and the fix, so the CLI fails before TF builds anything. Costs
    directory listings, no reads: a shard cut short at a record boundary would
    otherwise read as a valid, smaller split.
    """
    build = manifest.read_manifest(records_dir)
    if split not in build.splits:
        raise ValueError(
            f"{files.join(records_dir, manifest.MANIFEST_NAME)} has no {split!r} split "
            f"(it has: {', '.join(sorted(build.splits)) or 'none'}); rebuild the records including {split}"
            + (" (--validation_fraction=0.1 holds out part of train)" if split == "validation" else "")
        )
    stats = build.splits[split]
    if stats.num_examples == 0:
        raise ValueError(f"{records_dir}: the {split} split holds no examples; nothing to read")
    location = build.shards_location(records_dir)
    if not files.glob(location, shards.shard_pattern(split)):
        raise FileNotFoundError(
            f"no {split} shards ({shards.shard_pattern(split)}) in {location}; "
            f"run `make records` (python -m pipeline --output_dir={records_dir}) first"
        )
    problems = manifest.shard_file_problems(records_dir, build, [split])
    if problems:
        rest = f" (and {len(problems) - 1} more; `python -m records verify {records_dir}` lists them all)"
        raise ValueError(problems[0] + (rest if len(problems) > 1 else ""))
    return SplitFiles(
        tuple(build.shard_paths(records_dir, split)), stats.num_examples, build.num_classes, build.label_offset
    )


def _shard_for_pipeline(
    paths: Sequence[str], input_context: tf.distribute.InputContext | None
) -> tuple[list[str], tuple[int, int] | None]:
    """Files this input pipeline reads, and a (num, index) record-level shard when
    there are fewer files than pipelines. Either way every record goes to exactly
    one pipeline, which is what makes distributed eval count each image once."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return list(paths), None
    num, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(paths) >= num:
        return list(paths[index::num]), None
    return list(paths), (num, index)


def _parse_and_preprocess(image_size: int, is_training: bool) -> Callable:
    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        parsed = parsing.parse_example(serialized)
        image = preprocessing.preprocess(parsed[features.ENCODED], parsed["boxes"], image_size, is_training)
        return image, parsed[features.LABEL], parsed[features.FILENAME]

    return parse


def _decode_skipping_corrupt(parse: Callable, deterministic: bool) -> Callable:
    def decode_group(group: tf.Tensor) -> tf.data.Dataset:
        return (
            tf.data.Dataset.from_tensor_slices(group)
            .map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
            .ignore_errors(log_warning=True)
        )

    return decode_group


def _label_checker(num_classes: int, label_offset: int) -> Callable:
    """Record labels -> 0-based int32, failing loudly (naming the file) when a label
    cannot belong to this build: a silent wrong label would only show as bad accuracy."""

    def check(image: tf.Tensor, label: tf.Tensor, filename: tf.Tensor):
        label = tf.cast(label - label_offset, tf.int32)
        message = (
            f"record label minus the manifest's label_offset ({label_offset}) is outside "
            f"0..{num_classes - 1}: the shards do not belong to this manifest.json; rebuild the records"
        )
        in_range = tf.logical_and(label >= 0, label < num_classes)
        with tf.control_dependencies([tf.debugging.Assert(in_range, [message, filename, label])]):
            return {"image": tf.identity(image)}, tf.identity(label)

    return check


def make_input_fn(
    records_dir: str,
    split: str,
    batch_size: int,
    image_size: int,
    is_training: bool,
    *,
    shuffle_buffer: int = 10_000,
    cycle_length: int = 16,
) -> Callable[..., tf.data.Dataset]:
    """An Estimator input_fn over `split` of a records build.

    `batch_size` is GLOBAL: under a distribution strategy each replica gets
    batch_size / num_replicas (input_context says how many). Yields
    ({'image': float32 [B, S, S, 3] in 0..255}, int32 [B] labels, 0-based).

    Training: files reshuffled every epoch, repeated forever, records shuffled,
    full batches only. Evaluation: every validation record exactly once, in
    shard order, the last partial batch kept, so metrics are over the true
    validation set (which is also why an eval batch larger than the split is fine).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = split_files(records_dir, split)
    parse = _parse_and_preprocess(image_size, is_training)
    deterministic = not is_training

    def input_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        paths, record_shard = _shard_for_pipeline(files.paths, input_context)
        per_replica_batch = input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
        dataset = tf.data.Dataset.from_tensor_slices(paths)
        if is_training:
            dataset = dataset.shuffle(len(paths), reshuffle_each_iteration=True).repeat()
        dataset = dataset.interleave(
            lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES),
            cycle_length=min(cycle_length, len(paths)),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
        if record_shard is not None:
            dataset = dataset.shard(*record_shard)
        if is_training:
            dataset = dataset.shuffle(shuffle_buffer)
        dataset = dataset.batch(DECODE_GROUP_SIZE).interleave(
            _decode_skipping_corrupt(parse, deterministic),
            cycle_length=DECODE_GROUPS_IN_FLIGHT,
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
        dataset = dataset.map(_label_checker(files.num_classes, files.label_offset))
        dataset = dataset.batch(per_replica_batch, drop_remainder=is_training)
        return dataset.prefetch(AUTOTUNE)

    return input_fn


def find_corrupt_shards(records_dir: str) -> list[tuple[str, str]]:
    """(shard path, what is wrong) for every shard of the build whose TFRecord framing or CRC is broken.

    TF's DataLossError does not say which file it came from; the CLI calls this
    after catching one so the user learns which shard to rebuild or re-copy.
    Reads every shard once, with the same frame reader `records verify` uses.
    """
    build = manifest.read_manifest(records_dir)
    corrupt = []
    for split in sorted(build.splits):
        for path in build.shard_paths(records_dir, split):
            error = tfrecord.first_corruption(path)
            if error is not None:
                corrupt.append((path, str(error)))
    return corrupt
