"""export-onnx: a tiny model trained on real faces exports, describes itself and verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_user_error, foreground_signals, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tiny_run: Path, fer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    proc = run_cli("export", str(tiny_run / "best.keras"), "--output", str(out), "--fp16", "--int8",
                   "--verify-dir", str(fer_dir / "test"), "--verify-count", "280",
                   "--calib-dir", str(fer_dir / "train"), "--calib-count", "140", "--skip-failed-variants")
    # int8 of a model trained for 2 epochs may miss its agreement bound (flat probabilities): with
    # --skip-failed-variants the rest is written all the same, and the report says so
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_name("tiny.export.json").read_text())
    return out, report


def test_metadata_round_trips_through_the_runtime(exported: tuple[Path, dict], tiny_run: Path) -> None:
    from runtime.classifier import EmotionClassifier
    from trainer.model import read_spec

    path, _ = exported
    clf = EmotionClassifier(path, provider="cpu")
    assert clf.spec == read_spec(tiny_run / "best.keras")
    assert list(clf.labels) == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta["labels"]) == list(clf.labels)
    assert meta["opset"] == "17" and meta["variant"] == "fp32" and len(meta["source_sha256"]) == 64
    assert "tensorflow" in json.loads(meta["tool_versions"])
    assert float(meta["source_test_accuracy"]) >= 0 and meta["training_data"].endswith("fer2013")
    onnx.checker.check_model(onnx.load(path), full_check=True)


def test_graph_has_stable_names_and_dynamic_batch(exported: tuple[Path, dict]) -> None:
    graph = onnx.load(exported[0]).graph
    assert [i.name for i in graph.input] == ["pixels"] and [o.name for o in graph.output] == ["probs"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [48, 48, 1]


def test_onnx_on_raw_pixels_matches_keras(exported: tuple[Path, dict], tiny_run: Path, fer_dir: Path) -> None:
    import onnxruntime as ort

    from trainer.data import load_folder_split
    from trainer.model import load_model

    faces = load_folder_split(fer_dir / "test", limit_per_class=15, seed=11).x.astype(np.float32)
    assert faces.max() > 200  # raw 0-255 pixels go in, not rescaled ones
    keras_probs = np.asarray(load_model(tiny_run / "best.keras")(faces, training=False))
    sess = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    onnx_probs = sess.run(None, {"pixels": faces})[0]
    assert np.abs(keras_probs - onnx_probs).max() < 1e-4
    assert (keras_probs.argmax(1) == onnx_probs.argmax(1)).all()
    report = exported[1]
    assert report["fp32"]["argmax_agreement"] == 1.0 and report["fp32"]["max_abs_diff"] < 1e-4
    assert report["verify_faces"] == 280 and report["verify_set"].endswith("test")


def test_fp16_and_int8_load_and_agree(exported: tuple[Path, dict]) -> None:
    import onnxruntime as ort

    report = exported[1]
    fp16 = report["fp16"]
    assert fp16["path"] and Path(fp16["path"]).is_file()
    assert fp16["argmax_agreement"] >= 0.99  # the stated bound: FP16_MIN_AGREEMENT
    assert fp16["bytes"] < 0.6 * report["fp32"]["bytes"]
    int8 = report["int8"]
    assert int8["bytes"] < 0.35 * report["fp32"]["bytes"]
    # a 2-epoch model's near-uniform probabilities make argmax fragile; the real bound (0.95)
    # is enforced by export-onnx itself and checked on the shipped model
    assert int8["argmax_agreement"] >= 0.5, int8
    for variant in ("fp16", "int8"):
        meta_path = report[variant]["path"] or str(exported[0]).replace(".onnx", f".{variant}.onnx")
        if Path(meta_path).is_file():
            sess = ort.InferenceSession(meta_path, providers=["CPUExecutionProvider"])
            out = sess.run(None, {"pixels": np.zeros((3, 48, 48, 1), np.float32)})[0]
            assert out.shape == (3, 7)


def _broken_models(tmp: Path) -> dict[str, Path]:
    import keras

    from runtime.contract import ModelSpec
    from trainer.model import build_model, save_model

    wide = build_model(ModelSpec(input_hw=(64, 64)))
    save_model(wide, tmp / "wide.keras", ModelSpec())  # says 48x48 but takes 64x64
    five = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    save_model(five, tmp / "five.keras", ModelSpec())  # 5 outputs, 7 labels
    (tmp / "text.keras").write_text("not a model")
    with zipfile.ZipFile(tmp / "nospec.keras", "w") as zf:
        zf.writestr("config.json", "{}")
    return {"wide": tmp / "wide.keras", "five": tmp / "five.keras", "text": tmp / "text.keras",
            "nospec": tmp / "nospec.keras"}


@pytest.mark.parametrize(
    ("model", "output", "extra", "needle"),
    [
        ("missing", "ok.onnx", [], "does not exist"),
        ("text", "ok.onnx", [], "not a Keras"),
        ("nospec", "ok.onnx", [], "no model spec"),
        ("wide", "ok.onnx", [], "takes input"),
        ("five", "ok.onnx", [], "5 outputs"),
        ("tiny", "ok.onnx", ["--labels", "a,b,c"], "3 labels"),
        ("tiny", "ok.onnx", ["--labels", "Angry,b,c,d,e,f,g"], "lowercase"),
        ("tiny", "nofolder/ok.onnx", [], "does not exist"),
        ("tiny", "/proc/ok.onnx", [], "folder /proc"),
        ("tiny", "ok.txt", [], ".onnx"),
    ],
    ids=["missing", "not-keras", "no-spec", "wrong-input", "class-count", "labels-count", "labels-case",
         "missing-folder", "unwritable", "suffix"],
)
def test_broken_input_is_refused(tiny_run: Path, tmp_path: Path, model: str, output: str, extra: list[str],
                                 needle: str) -> None:
    models = {**_broken_models(tmp_path), "tiny": tiny_run / "best.keras", "missing": tmp_path / "nope.keras"}
    out = Path(output) if output.startswith("/") else tmp_path / output
    proc = run_cli("export", str(models[model]), "--output", str(out), *extra)
    assert_user_error(proc, 2, needle)
    assert not out.exists()
    assert not [p for p in tmp_path.glob(".*") if p.suffix == ".onnx"]


def test_tta_flip_averages_the_mirror_image(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from trainer.data import load_folder_split
    from trainer.model import load_model

    out = tmp_path / "tta.onnx"
    proc = run_cli("export", str(tiny_run / "best.keras"), "--output", str(out), "--tta-flip",
                   "--verify-dir", str(fer_dir / "test"), "--verify-count", "70")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["test_time_augmentation"] == "flip" and meta["forward_passes"] == "2"
    faces = load_folder_split(fer_dir / "test", limit_per_class=5, seed=4).x.astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"pixels": faces})[0]
    mirrored = sess.run(None, {"pixels": np.ascontiguousarray(faces[:, :, ::-1])})[0]
    np.testing.assert_allclose(probs, mirrored, atol=1e-5)  # a face and its mirror image agree
    model = load_model(tiny_run / "best.keras")
    want = (np.asarray(model(faces, training=False)) + np.asarray(model(faces[:, :, ::-1], training=False))) / 2
    np.testing.assert_allclose(probs, want, atol=1e-4)


def test_tta_flip_zoom_matches_six_views_made_with_opencv(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    import cv2
    import onnxruntime as ort

    from trainer.data import load_folder_split
    from trainer.model import load_model

    out = tmp_path / "tta6.onnx"
    proc = run_cli("export", str(tiny_run / "best.keras"), "--output", str(out), "--tta", "flip-zoom",
                   "--verify-dir", str(fer_dir / "test"), "--verify-count", "70")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["test_time_augmentation"] == "flip-zoom" and meta["forward_passes"] == "6"
    faces = load_folder_split(fer_dir / "test", limit_per_class=5, seed=5).x.astype(np.float32)
    probs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"pixels": faces})[0]

    def resized(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (48, 48), interpolation=cv2.INTER_LINEAR)[..., None]

    views = []
    for face in faces[..., 0]:
        zoom_in = resized(face[2:-2, 2:-2])
        zoom_out = resized(cv2.copyMakeBorder(face, 2, 2, 2, 2, cv2.BORDER_REPLICATE))
        views.append([face[..., None], zoom_in, zoom_out])
    stack = np.array(views).transpose(1, 0, 2, 3, 4)  # (3 views, N, 48, 48, 1)
    stack = np.concatenate([stack, stack[:, :, :, ::-1]])  # and their mirror images
    model = load_model(tiny_run / "best.keras")
    want = np.mean([np.asarray(model(v, training=False)) for v in stack], axis=0)
    np.testing.assert_allclose(probs, want, atol=1e-4)
    assert not np.allclose(probs, np.asarray(model(faces, training=False)), atol=1e-3)  # the views matter


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_int8_leaves_no_unverified_file(
    tiny_run: Path, fer_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """A signal while the INT8 variant is being made: no int8 file where the runtime would load it, no temporary."""
    out = tmp_path / "m.onnx"
    args = [sys.executable, "-m", "export", str(tiny_run / "best.keras"), "--output", str(out), "--int8",
            "--verify-dir", str(fer_dir / "test"), "--verify-count", "70", "--calib-dir", str(fer_dir / "train"),
            "--calib-count", "700"]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=foreground_signals)
    deadline = time.monotonic() + 280
    signalled = False
    while time.monotonic() < deadline and proc.poll() is None:
        if list(tmp_path.glob(".m.int8.onnx.*")):  # the INT8 temporary exists: quantization has begun
            proc.send_signal(sig)
            signalled = True
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=120)
    assert signalled, f"the export ended before it made its INT8 temporary: {err[-2000:]}"
    assert_user_error(subprocess.CompletedProcess(args, proc.returncode, "", err), 130, "interrupted")
    assert not (tmp_path / "m.int8.onnx").exists(), "an unverified INT8 file was left where it would be loaded"
    assert list(tmp_path.iterdir()) == [], "an interrupted export writes nothing (the fp32 file included)"


@pytest.mark.parametrize("source", ["trainer-fit", "plain-keras"])
def test_out_of_disk_is_one_line_and_writes_nothing(tiny_run: Path, fer_dir: Path, tmp_path: Path,
                                                    source: str) -> None:
    """A 1 MB file-size limit (ulimit -f), as a full disk: one line with the cause, and no file or temporary.

    trainer-fit's model fails while Keras unpacks it (it extracts the whole archive to a temporary
    folder); a plain Keras model (no spec inside, so --labels) loads in memory and fails when the
    9 MB fp32 ONNX file is written.
    """
    import resource

    from trainer.model import load_model

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    model, extra = tiny_run / "best.keras", []
    if source == "plain-keras":
        model = tmp_path / "plain" / "plain.keras"
        model.parent.mkdir()
        load_model(tiny_run / "best.keras").save(model)
        extra = ["--labels", "angry,disgust,fear,happy,neutral,sad,surprise"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [sys.executable, "-m", "export", str(model), "--output", str(out_dir / "m.onnx"),
            "--verify-dir", str(fer_dir / "test"), "--verify-count", "70", *extra]
    proc = subprocess.run(args, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)
    needle = "m.onnx" if source == "plain-keras" else "best.keras"
    assert_user_error(proc, 2, "file too large", needle)
    assert not list(out_dir.iterdir())


@pytest.mark.parametrize("skip", [False, True], ids=["nothing", "the-rest"])
def test_a_variant_that_misses_its_bound_writes_nothing_or_the_rest(
        tiny_run: Path, fer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip: bool) -> None:
    """INT8 made and measured for real, against a bound no model meets: the export says what to do, and writes
    nothing (an older set of files stays whole), or with skip_failed_variants everything but the INT8 file."""
    from export import onnx_export
    from export.config import ExportConfig

    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 1.01)
    out = tmp_path / "m.onnx"
    (tmp_path / "m.int8.onnx").write_bytes(b"the int8 file of an earlier export")
    config = ExportConfig(model=tiny_run / "best.keras", output=out, int8=True, verify_dir=fer_dir / "test",
                          verify_count=70, calib_dir=fer_dir / "train", calib_count=140,
                          skip_failed_variants=skip)
    if not skip:
        with pytest.raises(onnx_export.VariantRejected) as caught:
            onnx_export.export(config)
        assert "train longer" in str(caught.value) and "nothing was written" in str(caught.value)
        assert caught.value.report["int8"]["argmax_agreement"] > 0.3  # it was made and measured
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx"]  # the earlier file, untouched
        assert (tmp_path / "m.int8.onnx").read_bytes() == b"the int8 file of an earlier export"
        return
    report = onnx_export.export(config)
    assert report["int8"]["path"] is None and report["fp32"]["path"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.export.json", "m.onnx"]  # the stale INT8 is gone
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_the_cli_says_what_to_do_when_int8_fails(tiny_run: Path, fer_dir: Path, tmp_path: Path) -> None:
    """On the 2-epoch model INT8 may or may not verify: either every file is written, or none, with the advice."""
    out = tmp_path / "m.onnx"
    proc = run_cli("export", str(tiny_run / "best.keras"), "--output", str(out), "--int8", "--verify-dir",
                   str(fer_dir / "test"), "--verify-count", "70", "--calib-dir", str(fer_dir / "train"),
                   "--calib-count", "140")
    if proc.returncode == 0:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.export.json", "m.int8.onnx", "m.onnx"]
    else:
        assert_user_error(proc, 1, "int8 agrees with fp32", "train longer", "--skip-failed-variants", "--int8")
        assert list(tmp_path.iterdir()) == []


def test_force_replaces_a_shipped_model(tiny_run: Path, fer_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of models/ stands in for the shipped folder: refused, then replaced with force."""
    import models
    from export import onnx_export
    from export.config import ExportConfig
    from runtime.errors import OutputError

    shipped = tmp_path / "models"
    shipped.mkdir()
    (shipped / "emotion_cnn.onnx").write_bytes((Path(models.__file__).parent / "emotion_cnn.onnx").read_bytes())
    monkeypatch.setattr(models, "MODELS_DIR", shipped)
    config = ExportConfig(model=tiny_run / "best.keras", output=shipped / "emotion_cnn.onnx",
                          verify_dir=fer_dir / "test", verify_count=70)
    with pytest.raises(OutputError, match="shipped with emocam"):
        onnx_export.export(config)
    onnx_export.export(ExportConfig(**{**config.__dict__, "force": True}))
    meta = {p.key: p.value for p in onnx.load(shipped / "emotion_cnn.onnx").metadata_props}
    assert "best.keras" in json.dumps(meta)  # the new export is in place


@pytest.fixture(scope="module")
def sharper_member(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_run's model with its last layer's weights tripled (sharper probabilities): a second ensemble member."""
    from trainer.model import load_model, read_spec, save_model

    model = load_model(tiny_run / "best.keras")
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 3, bias * 3])
    path = tmp_path_factory.mktemp("member") / "sharper.keras"
    save_model(model, path, read_spec(tiny_run / "best.keras"))
    return path


def test_an_ensemble_averages_its_models_and_half_weights_halve_the_file(
        tiny_run: Path, sharper_member: Path, fer_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from trainer.data import load_folder_split
    from trainer.model import load_model

    out = tmp_path / "ens.onnx"
    proc = run_cli("export", str(tiny_run / "best.keras"), str(sharper_member), "--output", str(out),
                   "--tta", "flip", "--half-weights", "--verify-dir", str(fer_dir / "test"), "--verify-count", "140")
    assert proc.returncode == 0, proc.stderr[-3000:]
    faces = load_folder_split(fer_dir / "test", limit_per_class=10, seed=5).x.astype(np.float32)
    means = []
    for path in (tiny_run / "best.keras", sharper_member):
        model = load_model(path)
        mirrored = faces[:, :, ::-1]
        means.append((np.asarray(model(faces, training=False)) + np.asarray(model(mirrored, training=False))) / 2)
    assert np.abs(means[0] - means[1]).max() > 0.01  # the members differ, so the mean is a real test
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"pixels": faces})[0]
    assert np.abs(got - (means[0] + means[1]) / 2).max() < 2e-3  # float16-stored weights: ~3 digits
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["architecture"] == "ensemble" and meta["forward_passes"] == "4"
    assert meta["weight_storage"] == "float16" and meta["variant"] == "fp32"
    members = json.loads(meta["ensemble_members"])
    assert [m["source_model"] for m in members] == ["best.keras", "sharper.keras"]
    assert all(m["architecture"] == "documented" and len(m["source_sha256"]) == 64 for m in members)
    report = json.loads(out.with_name("ens.export.json").read_text())["fp32"]
    assert report["argmax_agreement"] == 1.0 and report["max_abs_diff"] < 1e-4  # full precision against Keras
    half = report["half_weights"]
    assert half["argmax_agreement"] >= 0.995 and half["bytes"] == out.stat().st_size
    graph = onnx.load(out).graph
    stored = {i.name: i.data_type for i in graph.initializer}
    assert sum(t == onnx.TensorProto.FLOAT16 for t in stored.values()) >= 5  # the convolutions and dense layers
    full_bytes = sum(np.prod(i.dims) * 4 for i in graph.initializer)  # what float32 storage would take
    assert out.stat().st_size < 0.6 * full_bytes


def test_an_ensemble_of_two_contracts_or_one_model_twice_is_refused(
        tiny_run: Path, sharper_member: Path, tmp_path: Path) -> None:
    from runtime.contract import ModelSpec
    from trainer.model import load_model, save_model

    relabelled = tmp_path / "relabelled.keras"
    save_model(load_model(sharper_member), relabelled,
               ModelSpec(labels=("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")))
    out = tmp_path / "ens.onnx"
    proc = run_cli("export", str(tiny_run / "best.keras"), str(relabelled), "--output", str(out))
    assert_user_error(proc, 2, "relabelled.keras has another contract", "one contract")
    proc = run_cli("export", str(tiny_run / "best.keras"), str(tiny_run / "best.keras"), "--output", str(out))
    assert_user_error(proc, 2, "same model is given twice")
    assert not out.exists() and not list(tmp_path.glob(".*.onnx"))
