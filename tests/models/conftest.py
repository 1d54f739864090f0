"""Shared by the shipped models' tests: one sample of real PublicTest faces, and a shipped model
opened by its name and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.classifier import EmotionClassifier
from runtime.contract import FER2013_LABELS
from tests import conftest

SAMPLE = 800  # real PublicTest faces, fixed seed: the VGG and the ensemble are compared on the same ones


@pytest.fixture(scope="session")
def public_test_sample(fer_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return conftest.public_test_sample(fer_dir, SAMPLE, seed=7)


def open_shipped(name: str, path: Path, variant: str, architecture: str) -> EmotionClassifier:
    """Open a shipped model by its name (call it from another folder, as after ``pip install``) and
    check that the name reaches ``path``, the file is under 10 MB, and its contract and metadata."""
    clf = EmotionClassifier(name, provider="cpu")
    assert clf.path == path and path.stat().st_size < 10_000_000, name
    assert clf.labels == FER2013_LABELS and clf.spec.input_shape == (48, 48, 1)
    assert clf.metadata["architecture"] == architecture and clf.metadata["variant"] == variant
    return clf
