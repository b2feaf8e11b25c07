"""Fine-tuning: start a fresh model from another checkpoint's weights.

A `Scaffold(init_fn=...)` restores the chosen variables right after the normal
initialisation. The session manager calls init_fn only when it initialises
from scratch, so a model_dir's own checkpoint always wins (resume), and we do
not even build the restore then. Only network variables are offered: the
caller passes them before the optimizer exists, so Momentum slots and
global_step never come from the fine-tune checkpoint (a new run starts at step
0 with empty momentum, as fine-tuning should).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import tensorflow as tf
from absl import logging


class FineTuneError(ValueError):
    """The fine-tune checkpoint cannot initialise this model; the message says why and what to pass."""


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix, given a prefix or a directory holding checkpoints."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FineTuneError(
                f"--fine_tune_ckpt={path}: the directory holds no checkpoint (no 'checkpoint' index file "
                "naming one); pass a model_dir of a finished run or a prefix like DIR/model.ckpt-1000"
            )
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FineTuneError(
            f"--fine_tune_ckpt={path}: no checkpoint there ({path}.index does not exist); pass a prefix "
            "like DIR/model.ckpt-1000 (without .index/.data) or the directory holding the checkpoint"
        )
    return path


def _name(variable: tf.Variable) -> str:
    return variable.name.split(":")[0]


def variables_to_restore(variables: Sequence[tf.Variable], checkpoint: str, exclude: str | None) -> list[tf.Variable]:
    """`variables` minus those whose name matches `exclude` (re.search), checked
    against the checkpoint: every kept one must exist there with the same shape."""
    try:
        pattern = re.compile(exclude) if exclude else None
    except re.error as error:
        raise FineTuneError(f"--fine_tune_exclude={exclude!r} is not a valid regex: {error}") from error
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    kept, problems = [], []
    for variable in variables:
        name = _name(variable)
        if pattern is not None and pattern.search(name):
            continue
        wanted = variable.shape.as_list()
        if name not in shapes:
            problems.append(f"{name} is not in the checkpoint")
        elif list(shapes[name]) != wanted:
            problems.append(f"{name} has shape {list(shapes[name])} in the checkpoint but {wanted} in the model")
        else:
            kept.append(variable)
    if problems:
        raise FineTuneError(
            f"--fine_tune_ckpt={checkpoint} does not fit this model: "
            + "; ".join(problems[:10])
            + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
            + ". Exclude them with --fine_tune_exclude=REGEX (e.g. 'logits' when the class count "
            "differs), or fine-tune from a checkpoint of the same --model"
        )
    if not kept:
        raise FineTuneError(f"--fine_tune_exclude={exclude!r} excludes every variable; nothing would be restored")
    return kept


def make_scaffold(
    variables: Sequence[tf.Variable],
    *,
    fine_tune_ckpt: str | None,
    exclude: str | None,
    model_dir: str | None,
) -> tf.compat.v1.train.Scaffold | None:
    """A Scaffold whose init_fn restores `variables` (filtered) from fine_tune_ckpt,
    or None when there is nothing to fine-tune from or model_dir resumes itself.

    Called inside model_fn (graph mode): the restore Saver must exist before the
    graph is finalised; it runs only in init_fn, after the variables' own initialisers.
    """
    if not fine_tune_ckpt:
        return None
    if model_dir and tf.train.latest_checkpoint(model_dir):
        logging.info("%s has its own checkpoint: resuming from it, --fine_tune_ckpt is not used", model_dir)
        return None
    checkpoint = resolve_checkpoint(fine_tune_ckpt)
    restored = variables_to_restore(variables, checkpoint, exclude)
    saver = tf.compat.v1.train.Saver(var_list=restored, name="fine_tune_saver")
    logging.info("fine-tuning: %d of %d variables will be restored from %s", len(restored), len(variables), checkpoint)

    def init_fn(scaffold: tf.compat.v1.train.Scaffold, session: tf.compat.v1.Session) -> None:
        del scaffold
        logging.info("restoring %d variables from %s", len(restored), checkpoint)
        saver.restore(session, checkpoint)

    return tf.compat.v1.train.Scaffold(init_fn=init_fn)
