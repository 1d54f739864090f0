"""trainer-teach and trainer-fit --teacher: distillation of a teacher's probabilities, on real faces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_user_error, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")


def _teach(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from trainer.teach import cli; sys.exit(cli(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _split(fer_dir: Path, seed: int, limit: int):
    from trainer.data import train_val_split

    return train_val_split(fer_dir, 0.1, seed, limit)[0]


def test_teacher_file_holds_the_models_mean_for_the_run_faces_and_only_those(
    tiny_run: Path, fer_dir: Path, tmp_path: Path
) -> None:
    """tiny_run trained with seed 7 on 25 faces a class: the file's rows are the mean of its two
    models' mirrored-view probabilities for exactly that run's training faces."""
    from export.convert import forward
    from trainer.model import load_model
    from trainer.teach import TeacherError, read_teacher

    out = tmp_path / "teacher.npz"
    models = [tiny_run / "best.keras", tiny_run / "final.keras"]
    proc = _teach(*map(str, models), "--data", str(fer_dir), "--out", str(out), "--seed", "7",
                  "--limit-per-class", "25")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the mean of 2 models (flip views) on 161 training faces" in proc.stderr
    train = _split(fer_dir, 7, 25)
    probs = read_teacher(out, train.x, train.labels)
    x = train.x.astype(np.float32)
    want = np.mean([np.asarray(forward(load_model(m), x, "flip")) for m in models], axis=0)
    np.testing.assert_allclose(probs, want, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    other = _split(fer_dir, 8, 25)  # another seed: other validation faces, so other training faces
    with pytest.raises(TeacherError, match="made for other faces"):
        read_teacher(out, other.x, other.labels)
    with pytest.raises(TeacherError, match="labels"):
        read_teacher(out, train.x, tuple(reversed(train.labels)))


def test_shipped_onnx_files_teach_with_their_own_views_beside_keras_models(
    tiny_run: Path, fer_dir: Path, tmp_path: Path
) -> None:
    """An exported file teaches as it classifies (its six in-graph views), and mixes with a Keras
    model of the same contract: the rows are the mean of the file's answers and the model's
    mirrored-view answers. The shipped default is far better than a 2-epoch run, so its rows name
    the label far more often."""
    from export.convert import forward
    from runtime.classifier import EmotionClassifier
    from trainer.model import load_model
    from trainer.teach import read_teacher

    shipped = ROOT / "models" / "emotion_cnn.onnx"
    keras = tiny_run / "final.keras"
    train = _split(fer_dir, 7, 25)
    x = train.x.astype(np.float32)
    from_file = EmotionClassifier(shipped, provider="cpu").predict(x)

    alone, mixed = tmp_path / "alone.npz", tmp_path / "mixed.npz"
    proc = _teach(str(shipped), "--data", str(fer_dir), "--out", str(alone), "--seed", "7", "--limit-per-class", "25")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote " + str(alone) + ": one model (its graph's flip-zoom views) on 161 training faces" in proc.stderr
    np.testing.assert_allclose(read_teacher(alone, train.x, train.labels), from_file, atol=1e-5)
    with np.load(alone) as saved:
        assert list(saved["views"]) == ["its graph's flip-zoom"]

    proc = _teach(str(keras), str(shipped), "--data", str(fer_dir), "--out", str(mixed), "--seed", "7",
                  "--limit-per-class", "25")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(flip, its graph's flip-zoom views)" in proc.stderr
    want = (np.asarray(forward(load_model(keras), x, "flip")) + from_file) / 2
    np.testing.assert_allclose(read_teacher(mixed, train.x, train.labels), want, atol=1e-5)
    keras_only = np.asarray(forward(load_model(keras), x, "flip"))
    assert np.mean(from_file.argmax(1) == train.y) > np.mean(keras_only.argmax(1) == train.y) + 0.2


def test_fit_trains_on_the_teacher_targets(fer_dir: Path, tmp_path: Path) -> None:
    """A teacher that names the next class for every face, at share 1: the model learns the
    teacher's classes, not the labels (with the labels alone it would learn the labels)."""
    from trainer.model import load_model
    from trainer.teach import faces_sha256

    train = _split(fer_dir, 5, 12)
    wrong = (train.y + 1) % 7
    teacher = tmp_path / "teacher.npz"
    np.savez(teacher, probabilities=np.eye(7, dtype=np.float32)[wrong], faces_sha256=np.array(faces_sha256(train.x)),
             labels=np.array(train.labels))
    run = tmp_path / "run"
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(run), "--epochs", "25", "--limit-per-class", "12",
                   "--seed", "5", "--batch-size", "16", "--no-augment", "--no-test-eval", "--warmup-epochs", "0",
                   "--teacher", str(teacher), "--teacher-share", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher: " in proc.stderr and "label for 0.0% of the training faces" in proc.stderr
    pred = load_model(run / "final.keras").predict(train.x.astype(np.float32), verbose=0).argmax(1)
    on_teacher, on_label = np.mean(pred == wrong), np.mean(pred == train.y)
    assert on_teacher > 0.4 and on_label < 0.15, (on_teacher, on_label)  # chance is 1/7 (measured: 0.55, 0.06)


def test_targets_mix_the_teacher_share_with_the_label(fer_dir: Path, tmp_path: Path) -> None:
    from trainer.config import FitConfig
    from trainer.teach import faces_sha256
    from trainer.train import _targets

    train = _split(fer_dir, 5, 12)
    uniform = np.full((len(train), 7), 1 / 7, np.float32)
    teacher = tmp_path / "teacher.npz"
    np.savez(teacher, probabilities=uniform, faces_sha256=np.array(faces_sha256(train.x)),
             labels=np.array(train.labels))
    targets = _targets(FitConfig(teacher=str(teacher), teacher_share=0.7), train)
    want = 0.7 / 7 + 0.3 * np.eye(7)[train.y]
    np.testing.assert_allclose(targets, want, atol=1e-6)
    assert _targets(FitConfig(), train) is None


@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        (None, ["--teacher", "/nonexistent/teacher.npz"], "is not a file"),
        ("garbage", ["--teacher", "{file}"], "not a trainer-teach file"),
        ("other-faces", ["--teacher", "{file}"], "made for other faces"),
        ("not-probabilities", ["--teacher", "{file}"], "not probabilities"),
        (None, ["--teacher-share", "1.5"], "--teacher-share"),
    ],
    ids=["missing", "not-npz", "other-faces", "not-probabilities", "share-above-1"],
)
def test_bad_teacher_is_one_line_exit_2(fer_dir: Path, tmp_path: Path, make: str | None, args: list[str],
                                        needle: str) -> None:
    from trainer.teach import faces_sha256

    file = tmp_path / "teacher.npz"
    if make == "garbage":
        file.write_bytes(b"not an npz")
    elif make == "not-probabilities":  # the run's own faces, but rows of 2 (a sum, not a mean, of two models)
        own = _split(fer_dir, 5, 12)
        np.savez(file, probabilities=np.full((len(own), 7), 2 / 7, np.float32),
                 faces_sha256=np.array(faces_sha256(own.x)), labels=np.array(own.labels))
    elif make == "other-faces":
        other = _split(fer_dir, 9, 12)
        np.savez(file, probabilities=np.full((len(other), 7), 1 / 7, np.float32),
                 faces_sha256=np.array(faces_sha256(other.x)), labels=np.array(other.labels))
    args = [a.replace("{file}", str(file)) for a in args]
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(tmp_path / "run"), "--epochs", "1",
                   "--limit-per-class", "12", "--seed", "5", *args)
    assert_user_error(proc, 2, needle)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made: the same --out works next time


def test_teach_refuses_an_existing_or_non_npz_out(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    model = str(tiny_run / "best.keras")
    existing = tmp_path / "t.npz"
    existing.write_bytes(b"keep me")
    assert_user_error(_teach(model, "--data", str(fer_dir), "--out", str(existing)), 2, "exists")
    assert existing.read_bytes() == b"keep me"
    assert_user_error(_teach(model, "--data", str(fer_dir), "--out", str(tmp_path / "t.txt")), 2, ".npz")


def test_split_seed_gives_runs_of_other_seeds_the_same_training_faces(fer_dir: Path, tmp_path: Path) -> None:
    """A teacher file made for split seed 9 fits a run of --seed 3 --split-seed 9 (same faces), and not
    a run of --seed 3 alone (its own split): --split-seed, not --seed, picks the faces."""
    from trainer.teach import faces_sha256

    train = _split(fer_dir, 9, 12)
    teacher = tmp_path / "teacher.npz"
    np.savez(teacher, probabilities=np.full((len(train), 7), 1 / 7, np.float32),
             faces_sha256=np.array(faces_sha256(train.x)), labels=np.array(train.labels))
    common = ["--data", str(fer_dir), "--epochs", "1", "--limit-per-class", "12", "--no-test-eval",
              "--teacher", str(teacher)]
    shared = run_cli("trainer", "--out", str(tmp_path / "shared"), "--seed", "3", "--split-seed", "9", *common)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert json.loads((tmp_path / "shared" / "config.json").read_text())["split_seed"] == 9
    own = run_cli("trainer", "--out", str(tmp_path / "own"), "--seed", "3", *common)
    assert_user_error(own, 2, "made for other faces")
