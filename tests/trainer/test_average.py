"""trainer-average: the weighted mean of trainer-fit models (the shipped VGG is one), and its refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import public_test_sample

ROOT = Path(__file__).resolve().parents[2]


def _average(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from trainer.average import cli; sys.exit(cli(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_the_mean_of_two_epochs_of_a_real_run(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    """best.keras and final.keras of a real run: the written model's weights are the weighted mean of
    theirs, it keeps the run's contract, and shares (1, 0) give back the first model's predictions."""
    from trainer.model import load_model, read_spec

    a, b = tiny_run / "best.keras", tiny_run / "final.keras"
    mean, first = tmp_path / "mean.keras", tmp_path / "first.keras"
    proc = _average(str(a), str(b), "--out", str(mean), "--weights", "0.25", "0.75")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the mean of 2 models" in proc.stderr
    wa, wb, wm = (load_model(p).get_weights() for p in (a, b, mean))
    assert len(wm) == len(wa)
    for x, y, m in zip(wa, wb, wm, strict=True):
        if np.issubdtype(m.dtype, np.floating):
            np.testing.assert_allclose(m, 0.25 * x + 0.75 * y, rtol=1e-5, atol=1e-6)
    assert read_spec(mean) == read_spec(a)

    assert _average(str(a), str(b), "--out", str(first), "--weights", "1", "0").returncode == 0
    x, _ = public_test_sample(fer_dir, 64, seed=3)
    np.testing.assert_allclose(load_model(first).predict(x, verbose=0), load_model(a).predict(x, verbose=0),
                               atol=1e-5)


def test_refusals_are_one_line_and_touch_nothing(tiny_run: Path, tmp_path: Path) -> None:
    a, b = tiny_run / "best.keras", tiny_run / "final.keras"
    before = a.read_bytes()
    cases = {
        "exists": [str(a), str(b), "--out", str(a)],  # never over an input
        "one per model": [str(a), str(b), "--out", str(tmp_path / "m.keras"), "--weights", "1"],
        "sum to": [str(a), str(b), "--out", str(tmp_path / "m.keras"), "--weights", "0.5", "0.6"],
        "two or more": [str(a), "--out", str(tmp_path / "m.keras")],
        "must end in .keras": [str(a), str(b), "--out", str(tmp_path / "m.onnx")],
        "does not exist": [str(a), str(tmp_path / "missing.keras"), "--out", str(tmp_path / "m.keras")],
    }
    for expected, args in cases.items():
        proc = _average(*args)
        assert proc.returncode == 2, (expected, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert a.read_bytes() == before
    assert not (tmp_path / "m.keras").exists() and not (tmp_path / "m.onnx").exists()


def test_models_of_two_architectures_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from trainer.model import build_model, read_spec, save_model

    vgg = tmp_path / "vgg.keras"
    save_model(build_model(arch="vgg"), vgg, read_spec(tiny_run / "best.keras"))
    proc = _average(str(tiny_run / "best.keras"), str(vgg), "--out", str(tmp_path / "m.keras"))
    assert proc.returncode == 2 and "one architecture" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "m.keras").exists()


def test_mean_weights_checks_its_inputs() -> None:
    from trainer.average import mean_weights

    w = [np.ones((2, 3), np.float32), np.zeros(3, np.float32)]
    out = mean_weights([w, [2 * x + 1 for x in w]], [0.5, 0.5])
    np.testing.assert_allclose(out[0], 2.0)
    np.testing.assert_allclose(out[1], 0.5)
    assert out[0].dtype == np.float32
    with pytest.raises(ValueError, match="other weights"):
        mean_weights([w, [np.ones((3, 2), np.float32), w[1]]], [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        mean_weights([w, w], [0.5, 0.6])
