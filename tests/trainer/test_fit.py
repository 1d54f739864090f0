"""trainer-fit end to end on real faces: artefacts, resume after SIGKILL, mirrored CPUs, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_user_error, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

ARTEFACTS = ["config.json", "best.keras", "final.keras", "history.csv", "training_curves.png", "metrics.json",
             "confusion_matrix.png", "checkpoints/last.keras", "checkpoints/state.json"]


def _history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_run_produces_every_artefact(tiny_run: Path) -> None:
    for name in ARTEFACTS:
        assert (tiny_run / name).is_file() and (tiny_run / name).stat().st_size > 0, name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["n"] == 175 and set(metrics["per_class"]) == {
        "angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["epochs"] == 2
    assert sum(map(sum, metrics["confusion"])) == 175
    assert metrics["split"] == "test" and set(metrics["val"]["per_class"]) == set(metrics["per_class"])
    assert (tiny_run / "val" / "confusion_matrix.png").is_file()
    assert [int(r["epoch"]) for r in _history(tiny_run)] == [1, 2]
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["labels"][0] == "angry" and config["epochs"] == 2
    assert config["precision"] == metrics["compute_precision"] == "fp32" and config["mixed_precision"] is False


def test_saved_model_records_label_order(tiny_run: Path) -> None:
    from trainer.model import read_spec

    spec = read_spec(tiny_run / "best.keras")
    assert spec.labels == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert spec.input_range == (0.0, 255.0)


def test_trainer_eval_reports_on_any_split(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    # trainer.evaluate has no ``python -m`` entry: run the console entry point (trainer-eval) through -c
    code = "import sys; from trainer.evaluate import cli; sys.exit(cli(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_run / "best.keras"), str(fer_dir), "--split",
                           "test", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("accuracy ")
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["split"] == "test" and report["source"] == str(fer_dir / "test")
    assert report["n"] == 3589 and sum(map(sum, report["confusion"])) == 3589  # every PublicTest face
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_trainer_eval_rebuilds_the_validation_split(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    from trainer.data import load_split, stratified_split
    from trainer.evaluate import main

    assert main([str(tiny_run / "best.keras"), str(fer_dir), "--split", "val", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    train = load_split(fer_dir, "train")
    _, val_idx = stratified_split(train.y, 0.1, 1337)  # trainer-fit's defaults
    assert report["split"] == "val" and report["n"] == len(val_idx) == 2872  # the model card's validation split
    counts = np.bincount(train.y[val_idx], minlength=7)
    assert [row["support"] for row in report["per_class"].values()] == counts.tolist()
    assert sum(map(sum, report["confusion"])) == 2872


@pytest.mark.slow
def test_resume_after_sigkill_continues_at_the_right_epoch(fer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", "--data", str(fer_dir), "--out", str(out), "--epochs", "8",
            "--limit-per-class", "12", "--batch-size", "16", "--warmup-epochs", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "checkpoints" / "state.json"
    deadline = time.monotonic() + 240
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= 2:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = json.loads(state.read_text())["epoch"]
            break
        time.sleep(0.02)
    proc.stderr.close()
    assert killed_at is not None and killed_at < 8, "the run ended before it could be killed"
    resumed = run_cli("trainer", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at epoch {killed_at + 1}/8" in resumed.stderr
    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    lrs = [float(r["lr"]) for r in rows]
    # one schedule across the kill: after warm-up the cosine keeps falling, it never restarts
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:], strict=False)), lrs
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 8
    assert not list(out.rglob(".*keras*")), "a temporary model file was left behind by the resumed run"


def test_budget_plans_the_epochs_that_fit_at_any_time() -> None:
    from trainer.train import budget_epochs

    def plan(**kw: float) -> int:
        return budget_epochs(**{"max_epochs": 300, "budget_s": 100.0, **kw})

    # 10 s gone, 5 s an epoch, one epoch kept for the report: 17 more fit
    assert plan(done=2, elapsed_s=10, epoch_s=5) == 19
    assert plan(done=2, elapsed_s=10, epoch_s=5, max_epochs=12) == 12  # never more than --epochs
    assert plan(done=15, elapsed_s=95, epoch_s=5) == 15  # slower than planned: shrinks, even late
    assert plan(done=12, elapsed_s=40, epoch_s=5) == 23  # faster again past half: grows too (the rate stays level)
    assert plan(done=6, elapsed_s=150, epoch_s=5) == 6  # over budget: stop now, never below done


def _run_rates(cfg, plans: list[int]) -> list[float]:
    """The rate of each epoch of a budgeted run whose plan, re-made after each epoch, is ``plans``."""
    from trainer.train import cosine_progress, epoch_rate

    rates, progress = [], None
    for epoch, planned in enumerate(plans):
        rates.append(epoch_rate(cfg, epoch, planned, progress))
        progress = cosine_progress(cfg, epoch, planned, progress, at=1.0)
    return rates


def test_budget_rate_follows_a_changing_plan_without_jumps() -> None:
    from trainer.config import FitConfig
    from trainer.train import epoch_rate

    cfg = FitConfig(lr=0.02, warmup_epochs=1.5, time_budget_min=5)
    steady = _run_rates(cfg, [40] * 40)
    assert steady == pytest.approx([epoch_rate(cfg, e, 40) for e in range(40)])  # a plan that never changed
    # planned 40, slowed down at epoch 5 (plan 25), freed again at epoch 20 (plan 35): 35 epochs in all
    plans = [40] * 5 + [25] * 15 + [35] * 15
    rates = _run_rates(cfg, plans)
    after_warmup = rates[1:]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:], strict=False)), rates  # never lifted
    assert max(abs(a - b) for a, b in zip(after_warmup, after_warmup[1:], strict=False)) < 0.004  # no jump
    assert rates[19] < epoch_rate(cfg, 19, 35)  # growing late did not restart the cosine where a fresh plan is
    assert rates[-1] < 0.0002  # still ends near 0 at the last plan's end


def test_budget_rate_warms_up_then_ends_its_cosine_at_the_planned_epoch() -> None:
    from trainer.config import FitConfig
    from trainer.train import epoch_rate

    cfg = FitConfig(lr=0.02, warmup_epochs=2, time_budget_min=5)
    rates = [epoch_rate(cfg, e, 40) for e in range(40)]
    assert rates[:2] == pytest.approx([0.005, 0.015])  # the warm-up, at each epoch's middle
    assert all(a > b for a, b in zip(rates[2:], rates[3:], strict=False))
    assert rates[2] > 0.019 and rates[-1] < 0.0002  # from about lr down to nearly 0 in the planned epochs
    assert epoch_rate(cfg, 50, 40) == 0.0  # past the plan (a resumed run): stays at the end
    assert epoch_rate(FitConfig(lr=0.02, schedule="constant"), 7, 40) == 0.02


def test_time_budget_ends_the_run_at_the_planned_epoch_and_resume_adds_nothing(fer_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(run), "--epochs", "500", "--limit-per-class", "12",
                   "--batch-size", "32", "--warmup-epochs", "0", "--no-test-eval", "--time-budget-min", "0.25")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plans = [int(line.split()[2]) for line in proc.stderr.splitlines() if line.startswith("time budget: ")]
    assert plans, proc.stderr[-2000:]
    rows = _history(run)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert 4 <= len(rows) == plans[-1] == state["planned_epochs"] == state["epoch"] < 500
    assert json.loads((run / "metrics.json").read_text())["epochs"] == len(rows)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[-1] < 0.25 * max(lrs), lrs  # the cosine was fitted to the budget: it ended low, not cut off
    assert (run / "final.keras").is_file()
    again = run_cli("trainer", "--out", str(run), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_history(run)) == len(rows)


def test_mirrored_strategy_on_two_logical_cpus(fer_dir: Path, tmp_path: Path) -> None:
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(tmp_path / "run"), "--epochs", "1",
                   "--limit-per-class", "10", "--batch-size", "16", "--cpu-replicas", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "devices: 2 replica(s)" in proc.stderr


def test_recipe_search_run_never_scores_the_test_split(fer_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(run), "--epochs", "1", "--limit-per-class", "20",
                   "--no-test-eval", "--shift", "0", "--rotate-deg", "0", "--zoom", "0",  # flip-only augmentation
                   "--swa-epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["n"] == 14  # 10 % of 20 faces per class, 7 classes
    assert "unread test faces" in proc.stderr and not (run / "confusion_matrix.png").exists()
    assert metrics["test_faces"] is None
    assert 0.0 <= metrics["swa_val_accuracy"] <= 1.0

    from trainer.model import load_model

    swa, final = load_model(run / "swa.keras").get_weights(), load_model(run / "final.keras").get_weights()
    assert all(np.allclose(a, b) for a, b in zip(swa, final, strict=True))  # the mean of one epoch is that epoch


def test_mixup_blends_pairs_of_real_faces_and_weights_them_by_label(fer_dir: Path) -> None:
    from trainer.config import FitConfig
    from trainer.data import load_split
    from trainer.train import class_weight_map, make_dataset

    faces = load_split(fer_dir, "train", 6, 3)  # 6 real faces per class
    weights = class_weight_map(faces.y, 7, "balanced")
    cfg = FitConfig(augment=False, mixup=1.0, batch_size=len(faces.y), seed=3)
    (x, y, w), = make_dataset(faces.x, faces.y, 7, cfg, training=True, class_weights=weights).take(1)
    x, y, w = x.numpy(), y.numpy(), w.numpy()
    x0 = faces.x.reshape(len(faces.x), -1).astype(np.float64)
    np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-6)  # labels stay distributions
    mixed = 0
    for xi, yi, wi in zip(x.reshape(len(x), -1), y, w, strict=True):
        # each face is lam * a + (1 - lam) * b for two real faces a, b of the batch, labels alike
        coef, *_ = np.linalg.lstsq(x0.T, xi.astype(np.float64), rcond=None)
        top = np.argsort(-np.abs(coef))[:2]
        assert np.abs(coef).sum() - np.abs(coef[top]).sum() < 1e-3 and abs(coef[top].sum() - 1) < 1e-3
        np.testing.assert_allclose(yi, np.eye(7)[faces.y[top]].T @ coef[top], atol=1e-3)
        assert wi == pytest.approx(sum(yi[c] * weights[c] for c in range(7)), rel=1e-5)
        mixed += coef[top].min() > 0.05
    assert mixed > len(x) // 2  # Beta(1, 1) mixes most faces visibly
    plain = FitConfig(augment=False, batch_size=len(faces.y), seed=3)
    (_, y_plain, w_plain), = make_dataset(faces.x, faces.y, 7, plain, training=True, class_weights=weights).take(1)
    assert set(np.unique(y_plain.numpy())) == {0.0, 1.0}  # without --mixup labels stay one-hot
    np.testing.assert_allclose(w_plain.numpy(), [weights[c] for c in y_plain.numpy().argmax(1)], rtol=1e-6)


def test_weight_sum_adds_each_epoch_once(tmp_path: Path) -> None:
    from trainer.run_files import add_to_weight_sum

    path = tmp_path / "sum.npz"
    add_to_weight_sum(path, [np.ones((2, 3)), np.full(4, 2.0)], epoch=3)
    add_to_weight_sum(path, [np.full((2, 3), 3.0), np.zeros(4)], epoch=4)
    add_to_weight_sum(path, [np.full((2, 3), 50.0), np.zeros(4)], epoch=4)  # replayed after a resume: ignored
    with np.load(path) as saved:
        assert int(saved["count"]) == 2 and int(saved["epoch"]) == 4
        np.testing.assert_allclose(saved["w0"], np.full((2, 3), 4.0))
        np.testing.assert_allclose(saved["w1"], np.full(4, 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["sum.npz"]  # no temporary left


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--data", "/nonexistent/fer"], "does not exist"),
        (["--resume"], "no run in"),
        ([], "--data is required"),
        (["--data", "{fer}", "--lr", "5"], "--lr"),
        (["--data", "{fer}", "--epochs", "many"], "--epochs"),
        (["--data", "{fer}", "--shift", "-0.1"], "--shift"),
        (["--data", "{fer}", "--epochs", "2", "--swa-epochs", "3"], "--swa-epochs"),
        (["--data", "{fer}", "--mixup", "-0.2"], "--mixup"),
        (["--data", "{fer}", "--time-budget-min", "-1"], "--time-budget-min"),
        (["--data", "{fer}", "--swa-epochs", "1", "--time-budget-min", "5"], "--swa-epochs needs a fixed number"),
    ],
    ids=["missing-data", "resume-without-run", "no-data", "bad-lr", "bad-epochs", "negative-shift", "swa-too-long",
         "negative-mixup", "negative-budget", "swa-with-budget"],
)
def test_bad_input_is_one_line_exit_2(fer_dir: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    args = [a.replace("{fer}", str(fer_dir)) for a in args]
    proc = run_cli("trainer", "--out", str(tmp_path / "run"), *args)
    assert_user_error(proc, 2, needle)
    assert not (tmp_path / "run" / "best.keras").exists()


def test_existing_run_needs_resume(tiny_run: Path) -> None:
    proc = run_cli("trainer", "--data", "unused", "--out", str(tiny_run))
    assert_user_error(proc, 2, "--resume")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _truncate(text: str) -> str:
    return text[: len(text) // 2]


def _set(key: str, value: object) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return json.dumps({**json.loads(text), key: value})

    return edit


DAMAGE = [
    ("config.json", _truncate, "not JSON"),
    ("config.json", lambda text: "", "empty"),
    ("config.json", lambda text: "[1, 2]", "a JSON list"),
    ("config.json", _set("epochs", "many"), "epochs"),
    ("config.json", _set("lr", 5), "lr"),
    ("config.json", _set("schedule", "wild"), "schedule"),
    ("config.json", _set("precision", "fp8"), "precision"),
    ("config.json", _set("speed", 3), "unknown setting"),
    ("checkpoints/state.json", _truncate, "not JSON"),
    ("checkpoints/state.json", lambda text: "", "empty"),
    ("checkpoints/state.json", lambda text: '"epoch 2"', "a JSON str"),
    ("checkpoints/state.json", _set("epoch", "2"), "epoch"),
    ("checkpoints/state.json", _set("history", None), "history"),
    ("checkpoints/state.json", _set("schedule_progress", 1.5), "schedule_progress"),
]


@pytest.mark.parametrize(
    ("name", "damage", "needle"),
    DAMAGE,
    ids=["config-truncated", "config-empty", "config-list", "config-wrong-type", "config-out-of-range",
         "config-bad-choice", "config-bad-precision", "config-unknown-key", "state-truncated", "state-empty",
         "state-string", "state-wrong-type", "state-no-history", "state-bad-progress"],
)
def test_resume_on_a_damaged_run_file_is_one_line_and_touches_nothing(
    tiny_run: Path, tmp_path: Path, name: str, damage: Callable[[str], str], needle: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / name).write_text(damage((run / name).read_text()))
    before = _files(run)
    proc = run_cli("trainer", "--out", str(run), "--resume")
    assert_user_error(proc, 2, f"{name} is damaged", needle, "another folder")
    assert _files(run) == before


def test_out_of_disk_mid_training_is_one_line_and_leaves_no_temporary(fer_dir: Path, tmp_path: Path) -> None:
    import resource

    def limit() -> None:  # a 1 MB file-size limit (ulimit -f): config.json fits, the first checkpoint does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    run = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", "--data", str(fer_dir), "--out", str(run), "--epochs", "1",
            "--limit-per-class", "4", "--batch-size", "16", "--no-test-eval"]
    proc = subprocess.run(args, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)
    assert_user_error(proc, 2, "file too large", str(run))
    assert json.loads((run / "config.json").read_text())["epochs"] == 1  # what was written is whole
    assert not [p for p in run.rglob(".*")], "a temporary file was left behind"
    assert not (run / "best.keras").exists()


def test_host_pipeline_of_jax_and_torch_trains_saves_and_resumes_the_vgg(
    fer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras on JAX or PyTorch has no tf.data: batches are augmented on the host (trainer.augment).

    Run here on TensorFlow with that path forced: the run trains, saves the VGG, and resumes.
    """
    from trainer import train
    from trainer.config import FitConfig
    from trainer.model import MODEL_NAMES, load_model
    from trainer.run_files import read_config

    monkeypatch.setattr(train, "uses_tf_data", lambda: False)
    cfg = FitConfig(data=str(fer_dir), out=str(tmp_path / "run"), arch="vgg", epochs=2, batch_size=32,
                    limit_per_class=12, optimizer="sgd", lr=0.02, weight_decay=1e-3, erase=0.5, shift=0.2,
                    zoom=0.2, test_eval=False, seed=3, class_weights="sqrt")
    train.fit(cfg)
    for name in ("best.keras", "final.keras", "checkpoints/last.keras"):
        model = load_model(tmp_path / "run" / name)
        assert model.name == MODEL_NAMES["vgg"] and model.input_shape == (None, 48, 48, 1), name
    assert [int(r["epoch"]) for r in _history(tmp_path / "run")] == [1, 2]

    resumed = read_config(tmp_path / "run")
    resumed.epochs = 3
    train.fit(resumed, resume=True)
    assert [int(r["epoch"]) for r in _history(tmp_path / "run")] == [1, 2, 3]


def test_settings_only_tensorflow_does_are_refused_on_other_backends() -> None:
    from trainer.config import FitConfig
    from trainer.train import backend_config_problem

    assert backend_config_problem(FitConfig(mixup=0.2), "tensorflow") is None
    assert "mixup needs Keras's TensorFlow backend (this is jax)" in backend_config_problem(FitConfig(mixup=0.2), "jax")
    assert backend_config_problem(FitConfig(cpu_replicas=2), "torch").startswith("cpu_replicas needs")
    assert backend_config_problem(FitConfig(arch="vgg", erase=0.5), "jax") is None
