"""Fixtures shared by the runtime tests: the shipped classifier, real faces, tiny ONNX models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.contract import ModelSpec


@pytest.fixture(scope="session")
def classifier():
    """The shipped model on the CPU (shared: the tests only read from it)."""
    from runtime.classifier import EmotionClassifier

    return EmotionClassifier(provider="cpu")


@pytest.fixture(scope="session")
def detector():
    from runtime.detector import HaarDetector

    return HaarDetector()


@pytest.fixture(scope="session")
def single_face(media_dir: Path) -> np.ndarray:
    """single_face.jpg as BGR (572x562, one face)."""
    img = cv2.imread(str(media_dir / "single_face.jpg"))
    assert img is not None
    return img


@pytest.fixture(scope="session")
def multi_face(media_dir: Path) -> np.ndarray:
    """multi_face.jpg as BGR (1000x667, five faces; Haar finds four)."""
    img = cv2.imread(str(media_dir / "multi_face.jpg"))
    assert img is not None
    return img


@pytest.fixture(scope="session")
def face_tile(single_face: np.ndarray, detector) -> np.ndarray:
    """A 200x200 BGR tile of the real face of single_face.jpg with some context around it."""
    faces = detector.detect(single_face)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.xyxy[0]
    m = 40
    crop = single_face[max(0, y1 - m): y2 + m, max(0, x1 - m): x2 + m]
    return cv2.resize(crop, (200, 200), interpolation=cv2.INTER_AREA)


def make_onnx(path: Path, input_hwc: tuple = (48, 48, 1), num_out: int = 7, spec: ModelSpec | None = None,
              metadata: dict[str, str] | None = None) -> Path:
    """Write a tiny softmax-regression ONNX model: ``pixels (N, *input_hwc)`` -> ``probs (N, num_out)``.

    Args:
        spec: Written into the metadata the way export-onnx does (None: no contract metadata).
        metadata: Extra raw metadata entries.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    size = int(np.prod(input_hwc))
    weight = numpy_helper.from_array((rng.standard_normal((size, num_out)) * 1e-3).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(num_out, np.float32), "B")
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", *input_hwc])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", num_out])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every supported onnxruntime
    props = dict(spec.to_metadata()) if spec is not None else {}
    props.update(metadata or {})
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx():
    """:func:`make_onnx`, for tests that build their own models (skipped without the ``onnx`` package)."""
    pytest.importorskip("onnx")
    return make_onnx
