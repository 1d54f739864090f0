"""Engines: OpenVINO agrees with onnxruntime on real faces; auto's order; one line when an engine is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import backends
from runtime.backends import OPENVINO_INSTALL, resolve_provider
from runtime.classifier import EmotionClassifier
from runtime.errors import ModelError
from tests.conftest import assert_user_error, run_cli

_has_openvino = backends.openvino_installed()
needs_openvino = pytest.mark.skipif(not _has_openvino,
                                    reason='OpenVINO is not installed (pip install "emocam[openvino]")')


@pytest.fixture(scope="module")
def real_faces(fer_dir: Path) -> np.ndarray:
    """300 real FER2013 PublicTest faces, raw 0-255 pixels, every class."""
    files = sorted((fer_dir / "test").glob("*/*"))[::12][:300]
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]).astype(np.float32)[..., None]


@needs_openvino
@pytest.mark.parametrize("model", ["fp32", "int8"])
def test_openvino_agrees_with_onnxruntime_on_real_faces(model: str, real_faces: np.ndarray) -> None:
    cpu = EmotionClassifier(model, provider="cpu")
    ov = EmotionClassifier(model, provider="openvino")
    assert (cpu.provider, ov.provider) == ("cpu", "openvino")
    assert ov.labels == cpu.labels and ov.spec == cpu.spec and ov.metadata == cpu.metadata
    a, b = cpu.predict(real_faces), ov.predict(real_faces)
    assert b.shape == (300, 7)
    np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=0.01)
    if model == "fp32":  # float ops stay float32 on OpenVINO: the same answers, to rounding
        assert np.abs(a - b).max() < 1e-3
        assert (a.argmax(1) == b.argmax(1)).all()
    else:  # two INT8 kernels round differently: nearly always the same label
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.98
        assert np.abs(a - b).max() < 0.1


@needs_openvino
def test_openvino_one_call_per_batch_of_any_size(real_faces: np.ndarray) -> None:
    ov = EmotionClassifier("int8", provider="openvino")
    one = np.concatenate([ov.predict(real_faces[i: i + 1]) for i in range(5)])
    np.testing.assert_allclose(ov.predict(real_faces[:5]), one, atol=1e-4)
    assert ov.predict(real_faces[:0]).shape == (0, 7)


@needs_openvino
def test_openvino_reads_a_model_whose_name_is_not_utf8(tmp_path: Path) -> None:
    from models import DEFAULT_MODEL

    odd = tmp_path / b"mod\xe9le.onnx".decode("utf-8", "surrogateescape")  # a Latin-1 name: not UTF-8
    shutil.copyfile(DEFAULT_MODEL, odd)
    assert EmotionClassifier(odd, provider="openvino").provider == "openvino"


def test_auto_prefers_openvino_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    if backends.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: auto picks it first")
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    assert resolve_provider("auto") == "openvino"
    if _has_openvino:
        # a float file stays on onnxruntime (OpenVINO was no faster on it); an INT8 file goes to OpenVINO
        assert EmotionClassifier("fp32").provider == "cpu"
        assert EmotionClassifier("int8").provider == "openvino"
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    assert resolve_provider("auto") == "cpu"
    assert EmotionClassifier("int8").provider == "cpu"
    assert resolve_provider("cpu") == "cpu"


def test_openvino_missing_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    with pytest.raises(ModelError) as info:
        EmotionClassifier(provider="openvino")
    assert OPENVINO_INSTALL in str(info.value)
    with pytest.raises(ValueError, match="unknown provider"):
        resolve_provider("tpu")


@needs_openvino
def test_runtime_live_on_openvino_says_so(media_dir: Path) -> None:
    proc = run_cli("runtime", "--source", str(media_dir / "single_face.jpg"), "--no-window", "--model", "int8",
                   "--provider", "openvino")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on openvino" in proc.stderr
    assert '"provider": "openvino"' in proc.stdout


def test_only_quantized_files_count_as_int8() -> None:
    from models import DEFAULT_MODEL, INT8_MODEL

    assert backends.is_quantized(str(INT8_MODEL)) and backends.is_quantized(INT8_MODEL.read_bytes())
    assert not backends.is_quantized(str(DEFAULT_MODEL))


def test_runtime_live_refuses_an_unknown_provider() -> None:
    proc = run_cli("runtime", "--source", "demo", "--no-window", "--provider", "tpu")
    assert_user_error(proc, 2, "provider")
