"""trainer.from_onnx and trainer-fit --init-from FILE.onnx: the shipped files' weights back in Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_user_error, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

MODELS = ROOT / "models"


def _faces(fer_dir: Path):
    from trainer.data import train_val_split

    return train_val_split(fer_dir, 0.1, 1337, 40)


@pytest.mark.parametrize("name", ["emotion_cnn", "emotion_vgg"])
def test_rebuilt_network_gives_the_files_probabilities_on_unseen_faces(fer_dir: Path, name: str) -> None:
    """Calibrated on training faces, checked on validation faces it never saw: through the file's
    six views Keras gives the file's probabilities (the VGG's batch norms were folded at export and
    are rebuilt from measured statistics)."""
    from export.convert import forward
    from runtime.classifier import EmotionClassifier
    from trainer.from_onnx import keras_from_onnx

    train, val = _faces(fer_dir)
    path = MODELS / f"{name}.onnx"
    model, spec, arch = keras_from_onnx(path, train.x)
    assert arch == ("vgg" if name == "emotion_vgg" else "documented")
    assert spec.labels == tuple(train.labels)
    x = val.x.astype(np.float32)
    got = np.asarray(forward(model, x, "flip-zoom"))
    want = EmotionClassifier(path, provider="cpu").predict(x)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(x) >= 28 and np.mean(got.argmax(1) == val.y) > 0.5  # a trained network, not chance (1/7)


def test_a_file_with_float16_stored_weights_is_rebuilt_and_an_ensemble_is_refused(fer_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """export-onnx --half-weights casts each weight to float32 in the graph: the rebuilt network gives
    that file's probabilities. An ensemble (several networks in one graph) is refused in one line."""
    import onnx

    from export.convert import forward, set_metadata
    from export.variants import to_half_weights
    from runtime.classifier import EmotionClassifier
    from runtime.errors import ModelError
    from trainer.from_onnx import keras_from_onnx

    train, val = _faces(fer_dir)
    half = tmp_path / "half.onnx"
    onnx.save(to_half_weights(onnx.load(MODELS / "emotion_cnn.onnx")), half)
    model, _, arch = keras_from_onnx(half, train.x)
    x = val.x.astype(np.float32)
    np.testing.assert_allclose(np.asarray(forward(model, x, "flip-zoom")),
                               EmotionClassifier(half, provider="cpu").predict(x), atol=1e-4)
    assert arch == "documented"
    proto = onnx.load(half)
    set_metadata(proto, {"architecture": "ensemble"})
    onnx.save(proto, tmp_path / "ensemble.onnx")
    with pytest.raises(ModelError, match="architecture 'ensemble', which trainer-fit cannot build: start from one"):
        keras_from_onnx(tmp_path / "ensemble.onnx", train.x)


def test_rebuilt_batch_norms_hold_the_statistics_of_real_faces(fer_dir: Path) -> None:
    """In training, a batch norm divides by its batch's own statistics: on a batch of real faces
    the rebuilt VGG's training-mode batch norms then compute what its inference does, so training
    starts from the shipped network. Checked on the hidden layer before the softmax (dropout aside)."""
    import keras

    from trainer.from_onnx import keras_from_onnx

    train, _ = _faces(fer_dir)
    model, _, _ = keras_from_onnx(MODELS / "emotion_vgg.onnx", train.x)
    hidden = keras.Model(model.inputs[0], model.get_layer("fc1_relu").output)
    rng = np.random.default_rng(0)
    batch = train.x[rng.choice(len(train.x), 128, replace=False)].astype(np.float32)
    dropouts = [layer for layer in model.layers if type(layer).__name__ == "Dropout"]
    for layer in dropouts:
        layer.rate = 0.0  # dropout off, so training mode differs from inference only by the batch norms
    train_mode, infer_mode = np.asarray(hidden(batch, training=True)), np.asarray(hidden(batch, training=False))
    rel = np.abs(train_mode - infer_mode).mean() / np.abs(infer_mode).mean()
    assert rel < 0.15, rel  # measured 0.064; moving statistics of 0 and 1 instead give 27


def test_fit_starts_from_the_shipped_vgg_file(fer_dir: Path, tmp_path: Path) -> None:
    """One epoch at a vanishing learning rate from the shipped VGG file: the run validates like a
    trained network (its faces come from FER2013's training folder, which the file learned), where
    one epoch from random weights stays near chance."""
    run = tmp_path / "run"
    proc = run_cli("trainer", "--arch", "vgg", "--data", str(fer_dir), "--out", str(run), "--epochs", "1",
                   "--limit-per-class", "40", "--seed", "3", "--lr", "1e-7", "--warmup-epochs", "0", "--no-test-eval",
                   "--init-from", str(MODELS / "emotion_vgg.onnx"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting from the weights of" in proc.stderr
    import csv

    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 1 and float(rows[0]["val_accuracy"]) > 0.6, rows


@pytest.mark.parametrize(
    ("model", "args", "needles"),
    [
        ("emotion_vgg.int8.onnx", ["--arch", "vgg"], ("int8", "fp32 file")),
        ("emotion_vgg.onnx", [], ("vgg network", "--arch vgg")),
        ("emotion_cnn.onnx", ["--arch", "vgg"], ("documented network", "--arch documented")),
        ("README.md", [], ()),
    ],
    ids=["int8-variant", "vgg-file-documented-run", "cnn-file-vgg-run", "not-onnx"],
)
def test_init_from_a_wrong_onnx_file_is_one_line_exit_2(fer_dir: Path, tmp_path: Path, model: str, args: list[str],
                                                        needles: tuple) -> None:
    source = MODELS / model if model != "README.md" else tmp_path / "fake.onnx"
    if model == "README.md":
        source.write_bytes((ROOT / "README.md").read_bytes())
        needles = ("not an onnx file",)
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(tmp_path / "run"), "--epochs", "1",
                   "--limit-per-class", "12", "--no-test-eval", "--init-from", str(source), *args)
    assert_user_error(proc, 2, *needles)
