"""The tf.estimator trainer: input_fn, networks, model_fn, hooks, predict and export.

It reads only what records/ defines, so any shards written to that contract
train here, whichever runner produced them.
"""
