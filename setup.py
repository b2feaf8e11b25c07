"""Lets Beam stage the records job to remote workers when no container image is given
(`make dataflow` without IMAGE: `--setup_file=./setup.py`).

Workers then install records/ and pipeline/ with pyproject.toml's `dependencies`
(the records job's, no TensorFlow) at start-up, resolving those ranges
themselves; the container (Dockerfile, `make dataflow-image`) is the locked path.
"""

import setuptools

setuptools.setup()
