"""The shipped ensemble (export-onnx A B: two VGGs in one graph): selectable by name, small, the most
accurate shipped model, INT8 agrees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import ENSEMBLE_INT8_MODEL, ENSEMBLE_MODEL, VGG_MODEL
from runtime.classifier import EmotionClassifier
from tests.models.conftest import open_shipped

MARGIN = 0.01  # the ensemble must beat the shipped VGG by this much on the same faces (PublicTest: +1.45 points)


def test_ensemble_is_shipped_by_name_under_10_mb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a name works from any folder, as after pip install
    for name, path, variant in (("ensemble", ENSEMBLE_MODEL, "fp32"), ("ensemble-int8", ENSEMBLE_INT8_MODEL, "int8")):
        clf = open_shipped(name, path, variant, "ensemble")
        members = json.loads(clf.metadata["ensemble_members"])
        assert [m["architecture"] for m in members] == ["vgg", "vgg"], name
        assert members[0]["source_sha256"] != members[1]["source_sha256"]  # two networks, not one twice
        assert int(clf.metadata["forward_passes"]) == 12  # six views through each member


def test_ensemble_beats_the_vgg_on_the_same_real_faces(public_test_sample) -> None:
    x, y = public_test_sample
    ensemble = EmotionClassifier(ENSEMBLE_MODEL, provider="cpu").predict(x)
    vgg = EmotionClassifier(VGG_MODEL, provider="cpu").predict(x)
    assert (ensemble.argmax(1) == y).mean() >= (vgg.argmax(1) == y).mean() + MARGIN
    np.testing.assert_allclose(ensemble.sum(1), 1.0, atol=1e-4)  # a mean of probabilities stays one


def test_ensemble_int8_agrees_with_its_fp32(public_test_sample) -> None:
    x, _ = public_test_sample
    fp32 = EmotionClassifier(ENSEMBLE_MODEL, provider="cpu").predict(x).argmax(1)
    int8 = EmotionClassifier(ENSEMBLE_INT8_MODEL, provider="cpu").predict(x).argmax(1)
    assert (int8 == fp32).mean() >= 0.98  # 99.25 % on this sample
