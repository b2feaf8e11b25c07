"""SessionRunHooks the trainer attaches to Estimator.train.

ModelStats records what the model costs (parameters, MACs per layer) next to
its checkpoints, computed from the very graph being trained; ExamplesPerSecond
is the console's progress line: loss, learning rate, throughput in the unit
people compare (images/s, not steps/s) and how long the run has left;
AfterSessionCreated runs a callback once the model exists (the trainer writes
the model_dir's own files with it, so a run refused earlier leaves none).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from estimator import stats

MODEL_STATS_FILENAME = "model_stats.csv"
IMAGES_PER_SEC_TAG = "images_per_sec"


class ModelStats(tf.estimator.SessionRunHook):
    """Writes `model_dir/model_stats.csv` for the graph being run, on the chief only.

    Pass model_dir and is_chief, or a RunConfig (its model_dir and is_chief are
    used unless given explicitly). Workers skip the work: the chief's file is
    the same, and concurrent writes to one (possibly remote) path race.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        is_chief: bool | None = None,
        config: tf.estimator.RunConfig | None = None,
        filename: str = MODEL_STATS_FILENAME,
    ) -> None:
        if config is not None:
            model_dir = model_dir or config.model_dir
            is_chief = config.is_chief if is_chief is None else is_chief
        if not model_dir:
            raise ValueError(
                f"ModelStats needs a model_dir (or a RunConfig that has one) to know where to write {filename}"
            )
        self.path = os.path.join(model_dir, filename)
        self.is_chief = True if is_chief is None else bool(is_chief)
        self.stats: list[stats.LayerStats] | None = None

    def begin(self) -> None:
        if not self.is_chief:
            return
        self.stats = stats.model_stats(tf.compat.v1.get_default_graph())
        stats.write_csv(self.stats, self.path)
        logging.info("Model: %s (per layer: %s)", stats.format_totals(self.stats), self.path)


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class ExamplesPerSecond(tf.estimator.SessionRunHook):
    """Logs one progress line every N steps (or seconds) and at the last step:
    step, loss, learning rate, images/s and ETA; summarises images/s.

    images/s = batch_size * global steps per second over the interval, so pass
    the global batch size (all replicas). The clock starts when the session
    exists, so a fresh run logs at steps N, 2N, ... and the first interval
    includes the first step's set-up. The ETA needs total_steps. With an
    output_dir, images/s also goes to TensorBoard under `images_per_sec`
    (through the FileWriterCache the Estimator itself writes summaries with).
    """

    def __init__(
        self,
        batch_size: int,
        every_n_steps: int | None = 100,
        every_n_secs: float | None = None,
        total_steps: int | None = None,
        loss: tf.Tensor | str | None = None,
        learning_rate: tf.Tensor | str | None = None,
        output_dir: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"ExamplesPerSecond: batch_size must be >= 1, got {batch_size}")
        if every_n_secs is not None:
            every_n_steps = None
        if every_n_steps is None and every_n_secs is None:
            raise ValueError("ExamplesPerSecond: set every_n_steps or every_n_secs")
        self._timer = tf.compat.v1.train.SecondOrStepTimer(every_steps=every_n_steps, every_secs=every_n_secs)
        self._batch_size = batch_size
        self._total_steps = total_steps
        self._watched = {"loss": loss, "learning_rate": learning_rate}
        self._output_dir = output_dir
        self._writer = None
        self._fetches: dict[str, tf.Tensor] = {}
        self.last_images_per_sec: float | None = None
        self.last_eta_secs: float | None = None

    def begin(self) -> None:
        global_step = tf.compat.v1.train.get_global_step()
        if global_step is None:
            raise RuntimeError(
                "ExamplesPerSecond needs a global step: create it with "
                "tf.compat.v1.train.get_or_create_global_step() in the model_fn"
            )
        graph = tf.compat.v1.get_default_graph()
        self._fetches = {"global_step": global_step}
        for key, tensor in self._watched.items():
            if tensor is not None:
                self._fetches[key] = graph.get_tensor_by_name(tensor) if isinstance(tensor, str) else tensor
        if self._output_dir:
            self._writer = tf.compat.v1.summary.FileWriterCache.get(self._output_dir)
        self._timer.reset()

    def after_create_session(self, session: tf.compat.v1.Session, coord) -> None:
        self._timer.update_last_triggered_step(int(session.run(self._fetches["global_step"])))

    def before_run(self, run_context: tf.estimator.SessionRunContext) -> tf.estimator.SessionRunArgs:
        return tf.estimator.SessionRunArgs(self._fetches)

    def after_run(self, run_context: tf.estimator.SessionRunContext, run_values: tf.estimator.SessionRunValues) -> None:
        # The global step was read alongside the train op, i.e. before its increment.
        step = int(run_values.results["global_step"]) + 1
        if not (self._timer.should_trigger_for_step(step) or step == self._total_steps):
            return
        elapsed_secs, elapsed_steps = self._timer.update_last_triggered_step(step)
        if not elapsed_secs or not elapsed_steps:
            return
        steps_per_sec = elapsed_steps / elapsed_secs
        self.last_images_per_sec = steps_per_sec * self._batch_size
        if self._total_steps:
            self.last_eta_secs = max(self._total_steps - step, 0) / steps_per_sec
        logging.info(self._line(step, run_values.results))
        if self._writer is not None:
            summary = tf.compat.v1.Summary(
                value=[tf.compat.v1.Summary.Value(tag=IMAGES_PER_SEC_TAG, simple_value=self.last_images_per_sec)]
            )
            self._writer.add_summary(summary, step)

    def _line(self, step: int, results: dict) -> str:
        """'step 200/300: loss 0.8123, lr 0.0125, 158.2 images/s, ETA 0:00:21'."""
        fields = []
        if "loss" in results:
            fields.append(f"loss {float(results['loss']):.4f}")
        if "learning_rate" in results:
            fields.append(f"lr {float(results['learning_rate']):.4g}")
        fields.append(f"{self.last_images_per_sec:.1f} images/s")
        if self.last_eta_secs is not None:
            fields.append(f"ETA {_format_duration(self.last_eta_secs)}")
        where = f"{step}/{self._total_steps}" if self._total_steps else str(step)
        return f"step {where}: " + ", ".join(fields)

    def end(self, session: tf.compat.v1.Session) -> None:
        if self._writer is not None:
            self._writer.flush()


class AfterSessionCreated(tf.estimator.SessionRunHook):
    """Calls `callback()` once, when the first training session exists.

    For files that describe a model (the trainer's model_dir contract): written
    only once its graph was built and its weights initialised or restored, a
    run that fails before (a graph that cannot be built, a fine-tune
    checkpoint that does not fit) leaves none of them behind.
    """

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._called = False

    def after_create_session(self, session: tf.compat.v1.Session, coord) -> None:
        if not self._called:
            self._callback()
            self._called = True
