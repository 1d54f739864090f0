"""EmotionClassifier: the contract from ONNX metadata, one session call per frame, crops, bad models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.classifier import GPU_INSTALL, EmotionClassifier
from runtime.contract import ModelSpec
from runtime.errors import ModelError
from runtime.faces import Faces
from runtime.image import to_gray


class CountingBackend:
    """Wraps an inference backend and counts ``run`` calls and the batch sizes they got."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.batches: list[int] = []

    def run(self, batch):
        self.batches.append(len(batch))
        return self._backend.run(batch)

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


@pytest.fixture
def counting(classifier: EmotionClassifier, monkeypatch: pytest.MonkeyPatch) -> CountingBackend:
    proxy = CountingBackend(classifier.backend)
    monkeypatch.setattr(classifier, "backend", proxy)
    return proxy


def test_labels_and_spec_come_from_the_model_metadata(classifier: EmotionClassifier):
    meta = classifier.metadata
    assert list(classifier.labels) == json.loads(meta["labels"])
    assert len(classifier.labels) == 7
    assert all(name == name.lower() and name for name in classifier.labels)
    assert len(set(classifier.labels)) == 7
    assert classifier.spec.input_shape == (48, 48, 1)
    assert classifier.spec == ModelSpec.from_json(meta["model_spec"])
    assert classifier.provider == "cpu"


def test_labels_are_never_assumed(tmp_path: Path, tiny_onnx, single_face: np.ndarray):
    spec = ModelSpec(labels=("calm", "joy", "rage"), input_hw=(32, 24))
    clf = EmotionClassifier(tiny_onnx(tmp_path / "three.onnx", (32, 24, 1), 3, spec), provider="cpu")
    assert clf.labels == ("calm", "joy", "rage")
    assert clf.spec.input_shape == (32, 24, 1)
    faces = clf.classify(single_face, Faces([[100, 100, 300, 300], [0, 0, 50, 80]]))
    assert faces.probs.shape == (2, 3)
    assert faces.class_names == ("calm", "joy", "rage")
    assert clf.crop(to_gray(single_face), faces.xyxy).shape == (2, 32, 24, 1)  # H, W from the spec


def test_all_faces_of_a_frame_in_one_session_call(classifier, counting, detector, multi_face):
    faces = detector.detect(multi_face)
    assert len(faces) >= 3
    out = classifier.classify(multi_face, faces)
    assert counting.batches == [len(faces)]
    assert out.probs.shape == (len(faces), 7)
    np.testing.assert_array_equal(out.xyxy, faces.xyxy)


def test_no_faces_no_session_call(classifier, counting, multi_face):
    out = classifier.classify(multi_face, Faces.empty())
    assert counting.batches == []
    assert out.probs.shape == (0, 7)


def test_probabilities_sum_to_one(classifier, detector, multi_face):
    out = classifier.classify(multi_face, detector.detect(multi_face))
    assert out.probs.dtype == np.float32
    assert (out.probs >= 0).all()
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-4)
    assert set(out.labels) <= set(classifier.labels)


def test_thirty_faces_in_one_frame(classifier, counting, detector, face_tile):
    frame = np.tile(face_tile, (5, 6, 1))  # 1000x1200, 30 copies of one real face
    boxes = np.array([[c * 200 + 20, r * 200 + 20, c * 200 + 180, r * 200 + 180]
                      for r in range(5) for c in range(6)])
    crops = classifier.crop(to_gray(frame), boxes).copy()
    assert crops.shape == (30, 48, 48, 1)
    assert (crops == crops[0]).all() and crops[0].std() > 10  # the same real face thirty times
    out = classifier.classify(frame, Faces(boxes))
    assert counting.batches == [30]
    assert out.probs.shape == (30, 7)
    np.testing.assert_allclose(out.probs, np.broadcast_to(out.probs[0], (30, 7)), atol=1e-5)  # same face, same probs
    # The face's probabilities do not depend on the batch it is in.
    alone = classifier.classify(face_tile, Faces([[20, 20, 180, 180]]))
    np.testing.assert_allclose(alone.probs[0], out.probs[0], atol=1e-5)
    assert len(detector.detect(frame)) >= 25  # and the detector finds (almost) all of them


def test_crop_clips_boxes_at_the_borders(tiny_onnx, tmp_path: Path):
    clf = EmotionClassifier(tiny_onnx(tmp_path / "m.onnx", spec=ModelSpec()), provider="cpu", margin=0.0)
    gray = np.zeros((200, 300), np.uint8)
    gray[:100, :150], gray[:100, 150:], gray[100:, :150], gray[100:, 150:] = 10, 60, 110, 210  # quadrants
    boxes = np.array([
        [-60, -40, 90, 80],     # top-left corner, partly outside
        [250, 150, 400, 260],   # bottom-right corner, partly outside
        [-500, 10, -400, 90],   # wholly outside on the left
        [100, 500, 180, 600],   # wholly outside below
        [10, 10, 10, 10],       # zero area
    ])
    batch = clf.crop(gray, boxes)
    assert batch.shape == (5, 48, 48, 1) and batch.dtype == np.float32
    assert (batch[0] == 10).all()
    assert (batch[1] == 210).all()
    assert (batch[2:] == 0).all()


def test_crop_margin_grows_the_box(classifier: EmotionClassifier):
    gray = np.zeros((100, 100), np.uint8)
    gray[40:60, 40:60] = 255  # the box is exactly the white square
    assert classifier.margin == 0.0  # the default: the Haar box is FER2013's framing
    assert (classifier.crop(gray, np.array([[40, 40, 60, 60]]))[0] == 255).all()
    classifier.margin = 0.1
    try:
        batch = classifier.crop(gray, np.array([[40, 40, 60, 60]]))  # 2 dark pixels each side
    finally:
        classifier.margin = 0.0
    assert batch[0].max() == 255
    assert batch[0, 0, 0, 0] < 128 and batch[0, -1, -1, 0] < 128
    assert batch[0, 24, 24, 0] == 255


def test_a_face_cut_by_the_frame_edge_keeps_its_shape(classifier: EmotionClassifier, multi_face: np.ndarray):
    """A real face cut by the frame's left edge (30 % of it gone): its clipped box is cropped as the
    square it was, the missing part filled from the edge, so what is left of the face lands where
    it would in the whole face's crop. Stretching the clipped box to the model's input would not."""
    import cv2

    from runtime.detector import StillDetector

    gray = to_gray(multi_face)
    box = StillDetector().detect_gray(gray).xyxy[-1]  # the rightmost face: a square Haar box
    x1, y1, x2, y2 = (int(v) for v in box)
    side = x2 - x1
    cut = x1 + int(0.3 * side)
    cut_gray = np.ascontiguousarray(gray[:, cut:])
    clipped = np.array([[0, y1, x2 - cut, y2]])
    whole = classifier.crop(gray, box[None]).copy()[0, ..., 0]
    kept = classifier.crop(cut_gray, clipped).copy()[0, ..., 0]
    stretched = cv2.resize(cut_gray[y1:y2, : x2 - cut], (48, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
    right = slice(int(0.35 * 48), 48)  # the part of the face the cut left (with a pixel of slack)
    kept_diff = np.abs(kept[:, right] - whole[:, right]).mean()
    stretched_diff = np.abs(stretched[:, right] - whole[:, right]).mean()
    assert kept_diff < 3.0, kept_diff
    assert stretched_diff > 3 * kept_diff, (stretched_diff, kept_diff)


def test_grayscale_and_bgra_frames_classify_alike(classifier, single_face, detector):
    faces = detector.detect(single_face)
    bgr = classifier.classify(single_face, faces).probs
    gray = to_gray(single_face)
    for frame in (gray, gray[..., None], np.dstack([single_face, np.full(gray.shape, 255, np.uint8)])):
        np.testing.assert_allclose(classifier.classify(frame, faces).probs, bgr, atol=1e-5)


# ---- bad models -------------------------------------------------------------------------------


def test_missing_model(tmp_path: Path):
    with pytest.raises(ModelError, match="does not exist"):
        EmotionClassifier(tmp_path / "nope.onnx")


def test_shipped_models_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from models import DEFAULT_MODEL, INT8_MODEL

    monkeypatch.chdir(tmp_path)  # a name works from any folder, as after pip install
    assert EmotionClassifier("fp32", provider="cpu").path == DEFAULT_MODEL
    if INT8_MODEL.is_file():
        int8 = EmotionClassifier("int8", provider="cpu")
        assert int8.path == INT8_MODEL and int8.metadata["variant"] == "int8"
    # a real file of that name is never shadowed by the shipped model
    (tmp_path / "int8").write_bytes(DEFAULT_MODEL.read_bytes())
    local = EmotionClassifier("int8", provider="cpu")
    assert local.path == Path("int8") and local.metadata["variant"] == "fp32"
    with pytest.raises(ModelError, match=r"shipped model \(fp32, int8, vgg, vgg-int8, ensemble, ensemble-int8\)"):
        EmotionClassifier("int4")


def test_the_model_help_of_each_command_names_every_shipped_model() -> None:
    from models import SHIPPED_MODELS
    from runtime import batch, evaluate, live

    for command in (live, batch, evaluate):
        help_text = next(action.help for action in command._parser()._actions if action.dest == "model")
        assert "fp32 (the default)" in help_text, command.__name__
        assert all(name in help_text for name in SHIPPED_MODELS), (command.__name__, help_text)


def test_text_file_is_not_a_model(tmp_path: Path):
    path = tmp_path / "model.onnx"
    path.write_text("this is not an ONNX model\n")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        EmotionClassifier(path)


def test_model_without_metadata(tmp_path: Path, tiny_onnx):
    with pytest.raises(ModelError, match="model_spec"):
        EmotionClassifier(tiny_onnx(tmp_path / "bare.onnx"))


def test_model_with_disagreeing_label_metadata(tmp_path: Path, tiny_onnx):
    path = tiny_onnx(tmp_path / "m.onnx", spec=ModelSpec(), metadata={"labels": json.dumps(["a", "b"])})
    with pytest.raises(ModelError, match="disagree"):
        EmotionClassifier(path)


def test_model_with_wrong_input_shape(tmp_path: Path, tiny_onnx):
    path = tiny_onnx(tmp_path / "m.onnx", input_hwc=(64, 64, 1), spec=ModelSpec())  # spec says 48x48x1
    with pytest.raises(ModelError, match=r"takes input .*64.*expected \[N, 48, 48, 1\]"):
        EmotionClassifier(path)


def test_model_with_wrong_class_count(tmp_path: Path, tiny_onnx):
    path = tiny_onnx(tmp_path / "m.onnx", num_out=5, spec=ModelSpec())  # 7 labels
    with pytest.raises(ModelError, match="7 classes"):
        EmotionClassifier(path)


def test_valid_tiny_model_loads(tmp_path: Path, tiny_onnx, single_face):
    """The control for the bad-model tests: the same builder with a good spec gives a working model."""
    clf = EmotionClassifier(tiny_onnx(tmp_path / "m.onnx", spec=ModelSpec()), provider="cpu")
    out = clf.classify(single_face, Faces([[150, 150, 390, 390]]))
    assert out.probs.shape == (1, 7)
    np.testing.assert_allclose(out.probs.sum(), 1.0, atol=1e-5)


def test_cuda_without_cuda_names_the_pip_command():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ModelError) as info:
        EmotionClassifier(provider="cuda")
    assert GPU_INSTALL in str(info.value)
    assert "pip install" in str(info.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown provider"):
        EmotionClassifier(provider="tpu")
    with pytest.raises(ValueError, match="margin"):
        EmotionClassifier(margin=1.5)
