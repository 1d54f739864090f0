"""benchmarks.quant_study on a few real faces: every row's fields, and agreement measured against fp32.

Never a speed: only that faces/s were measured. Agreement and accuracy are recomputed here from
the fp32 file and the variant the study kept, on the same real test faces.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.quant_study import CSV_FIELDS, SHIPPED, agreement, excluded_nodes, main, quantize
from models import DEFAULT_MODEL
from trainer.data import load_folder_split

PER_CLASS = 4  # 28 real test faces
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
# The variants are built with onnxruntime.quantization, which needs onnx (the [train] extra): the
# runtime-only selection (`pip install ".[dev]"`) skips this file.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason='needs onnx to build INT8 variants: pip install ".[train]"')


def _probs(path: Path, x: np.ndarray) -> np.ndarray:
    """Probabilities of an ONNX file on onnxruntime's CPU provider, independently of the study's code."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def study_run(fer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One small study: the shipped variant on few faces, a short timing; the variant is kept."""
    if not HAS_OPENVINO:
        pytest.skip("the study runs on OpenVINO too: pip install openvino")
    tmp = tmp_path_factory.mktemp("quant_study")
    out, keep = tmp / "q.json", tmp / "variants"
    code = main(["--model", str(DEFAULT_MODEL), "--faces", str(fer_dir / "test"), "--calib", str(fer_dir / "train"),
                 "--calib-count", "14", "--limit-per-class", str(PER_CLASS), "--variants", SHIPPED.name,
                 "--engines", "ort-cpu,ov-f32", "--seconds", "0.05", "--rounds", "1", "--keep", str(keep),
                 "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text()), out, keep


def test_rows_have_every_field_and_measurement(study_run: tuple[dict, Path, Path]) -> None:
    result, out, _ = study_run
    rows = result["rows"]
    assert [(r["variant"], r["engine"]) for r in rows] == [
        ("fp32", "ort-cpu"), ("fp32", "ov-f32"), (SHIPPED.name, "ort-cpu"), (SHIPPED.name, "ov-f32")]
    assert result["faces"]["count"] == 7 * PER_CLASS and result["faces"]["source"].endswith("test")
    assert result["calibration"]["source"].endswith("train")  # calibrated on TRAIN faces, never the test ones
    for row in rows:
        assert set(CSV_FIELDS) <= set(row), row
        assert row["error"] is None, row
        assert row["bytes"] > 0 and row["faces_per_s_b1"] > 0 and row["faces_per_s_b8"] > 0
        assert row["faces_per_s_b8"] == max(row["rounds"]["b8"]) and len(row["rounds"]["b1"]) == 1
        assert 0 <= row["agreement"] <= 1 and 0 <= row["accuracy"] <= 1
    assert rows[0]["ratio_b1"] == rows[0]["ratio_b8"] == 1.0 and rows[0]["agreement"] == 1.0
    with out.with_suffix(".csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [(r["variant"], r["engine"]) for r in table] == [(r["variant"], r["engine"]) for r in rows]


def test_agreement_is_against_fp32_on_the_real_faces(fer_dir: Path, study_run: tuple[dict, Path, Path]) -> None:
    result, _, keep = study_run
    faces = load_folder_split(fer_dir / "test", limit_per_class=PER_CLASS)  # the study's faces (seed 0)
    x = faces.x.astype(np.float32)
    fp32 = _probs(DEFAULT_MODEL, x).argmax(1)
    int8 = _probs(keep / f"{SHIPPED.name}.onnx", x).argmax(1)
    rows = {(r["variant"], r["engine"]): r for r in result["rows"]}
    assert rows["fp32", "ort-cpu"]["accuracy"] == pytest.approx(float((fp32 == faces.y).mean()))
    row = rows[SHIPPED.name, "ort-cpu"]
    assert row["agreement"] == pytest.approx(float((int8 == fp32).mean()))
    assert row["disagreements"] == int((int8 != fp32).sum())
    assert row["accuracy"] == pytest.approx(float((int8 == faces.y).mean()))
    assert row["accuracy_delta_points"] == pytest.approx(
        100 * (row["accuracy"] - rows["fp32", "ort-cpu"]["accuracy"]), abs=0.01)


def test_agreement_counts_argmax_matches_with_the_reference_not_the_labels() -> None:
    reference = np.eye(3)[[0, 1, 2, 2]]
    probs = np.eye(3)[[0, 1, 1, 2]]
    got = agreement(reference, probs, np.array([2, 2, 2, 2]))
    assert got == {"agreement": 0.75, "disagreements": 1, "accuracy": 0.25}


def test_ops_kept_float_are_the_first_conv_and_the_head() -> None:
    import onnx

    proto = onnx.load(DEFAULT_MODEL)
    assert excluded_nodes(proto, ()) == []
    assert excluded_nodes(proto, ("first-conv", "head")) == [
        "emotion_cnn_1/conv1_1/BiasAdd", "emotion_cnn_1/probs_1/MatMul", "emotion_cnn_1/probs_1/Softmax"]


def test_the_shipped_variant_is_what_the_exporter_writes(fer_dir: Path, tmp_path: Path) -> None:
    import onnx

    from export.variants import to_int8

    calib = load_folder_split(fer_dir / "train", limit_per_class=2).x.astype(np.float32)
    quantize(DEFAULT_MODEL, tmp_path / "study.onnx", calib, SHIPPED)
    to_int8(DEFAULT_MODEL, tmp_path / "export.onnx", calib)
    study, export = (onnx.load(tmp_path / name).graph for name in ("study.onnx", "export.onnx"))
    assert study.SerializeToString() == export.SerializeToString()
