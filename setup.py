"""Lets Beam stage this project to remote workers (`--setup_file=./setup.py`).

Dataflow workers install the project (records/, pipeline/, estimator/) and the
dependencies named in pyproject.toml from this file's directory.
"""

import setuptools

setuptools.setup()
