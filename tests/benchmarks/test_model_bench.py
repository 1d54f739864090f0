"""benchmarks.model_bench: the FLOPs per face it divides by, read from the model's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.model_bench import _flops_per_face
from models import VGG_MODEL
from runtime.errors import ModelError
from trainer.model import MULTIPLY_ADDS_BY_ARCH

onnx = pytest.importorskip("onnx")


def _relabelled(tmp_path: Path, **meta: str) -> Path:
    """The shipped VGG file with some metadata entries replaced."""
    from export.convert import set_metadata

    proto = onnx.load(VGG_MODEL)
    set_metadata(proto, meta)
    path = tmp_path / "relabelled.onnx"
    onnx.save(proto, path)
    return path


def test_a_shipped_model_costs_its_architecture_times_its_views() -> None:
    assert _flops_per_face(VGG_MODEL) == 2 * MULTIPLY_ADDS_BY_ARCH["vgg"] * 6


def test_an_ensemble_costs_each_members_passes(tmp_path: Path) -> None:
    members = json.dumps([{"architecture": "vgg"}, {"architecture": "documented"}])
    path = _relabelled(tmp_path, architecture="ensemble", ensemble_members=members, forward_passes="12")
    per_view = MULTIPLY_ADDS_BY_ARCH["vgg"] + MULTIPLY_ADDS_BY_ARCH["documented"]  # one view through both
    assert _flops_per_face(path) == pytest.approx(2 * per_view * 6, rel=1e-6)


@pytest.mark.parametrize("members", ["[{", "[]", '[{"file": "a.keras"}]'])
def test_an_ensemble_without_its_members_is_a_one_line_error(tmp_path: Path, members: str) -> None:
    path = _relabelled(tmp_path, architecture="ensemble", ensemble_members=members)
    with pytest.raises(ModelError, match="ensemble_members metadata: re-export it"):
        _flops_per_face(path)
