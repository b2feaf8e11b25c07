"""Shared fixtures: one realistic ImageNet look-alike sample, generated once per test session.

Generated (never downloaded) so every test runs offline and sees all three input
layouts with ImageNet's quirks and hostile files. Treat both fixtures as read-only:
they are shared by every test in the session.
"""

import json
import pathlib

import pytest

from pipeline import sample

SAMPLE_ARGS = {"num_classes": 4, "train_per_class": 8, "val_per_class": 4, "seed": 0, "imagefolder_per_class": 8}


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> pathlib.Path:
    """Root holding tars/, folders/, kaggle/, imagefolder/ and truth.json (see pipeline/sample.py)."""
    root = tmp_path_factory.mktemp("imagenet_sample")
    sample.generate(str(root), **SAMPLE_ARGS)
    return root


@pytest.fixture(scope="session")
def sample_truth(sample_dir) -> dict:
    """The generator's ground truth for `sample_dir`, loaded from its truth.json."""
    return json.loads((sample_dir / "truth.json").read_text())
