"""``benchmark --quick`` end to end: exit 0, a complete JSON, a PNG that decodes. Never a speed."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import pytest

from benchmarks.targets import REQUIRED_FIELDS, TARGETS, validate
from tests.conftest import assert_user_error, run_cli

QUICK_TIMEOUT_S = 300  # generous: a quick run takes well under 2 minutes even on a loaded 2-core machine
HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _quick(out_dir: Path, env: dict | None = None) -> tuple[dict, dict]:
    """Run ``python -m benchmarks --quick``; return the stdout summary and the JSON it wrote."""
    proc = run_cli("benchmarks", "--quick", "--out-dir", str(out_dir), timeout=QUICK_TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    result = json.loads(Path(summary["json"]).read_text())
    return summary, result


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory, video_path: Path) -> tuple[Path, dict, dict]:
    """One quick run, in whatever environment the tests run in (Keras parts skipped without TF)."""
    out = tmp_path_factory.mktemp("bench")
    summary, result = _quick(out)
    return out, summary, result


def _hidden_tf_env(root: Path) -> dict[str, str]:
    """An environment in which ``import tensorflow`` / ``import keras`` fail as if not installed, and OpenVINO
    is not found at all (``find_spec`` None: a ``None`` in ``sys.modules``, set by a ``sitecustomize``)."""
    for name in ("tensorflow", "keras"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by the test')\n")
    (root / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None  # hidden by the test\n")
    return {"PYTHONPATH": str(root)}


@pytest.mark.slow  # the quick_run fixture runs benchmark --quick (~25 s)
def test_quick_run_writes_json_png_and_latest_copies(quick_run: tuple[Path, dict, dict]) -> None:
    out, summary, result = quick_run
    if importlib.util.find_spec("matplotlib") is None:  # the chart needs the [train] extra: JSON only, and said so
        assert summary["png"] is None and (out / "latest.json").is_file() and not list(out.glob("*.png"))
        return
    json_path, png_path = Path(summary["json"]), Path(summary["png"])
    assert json_path.parent == out and png_path.parent == out
    assert result["quick"] is True
    assert result["files"] == {"json": json_path.name, "png": png_path.name}
    assert (out / "latest.json").read_bytes() == json_path.read_bytes()
    assert (out / "latest.png").read_bytes() == png_path.read_bytes()
    image = cv2.imread(str(png_path))
    assert image is not None and image.shape[0] >= 200 and image.shape[1] >= 400
    assert not list(out.glob(".*")), "temporary files left behind"


@pytest.mark.slow  # the quick_run fixture runs benchmark --quick (~25 s)
def test_quick_run_has_every_required_field(quick_run: tuple[Path, dict, dict]) -> None:
    _, _, result = quick_run
    assert validate(result) == []
    for section in {path.split(".")[0].removesuffix("[]") for path in REQUIRED_FIELDS}:  # the schema covers each
        broken = {k: v for k, v in result.items() if k != section}
        assert any(p.endswith(f"missing {section}") for p in validate(broken)), section
    runs = result["model"]["runs"]
    assert {r["variant"] for r in runs} >= {"fp32"}
    assert all(math.isfinite(r["faces_per_s"]) and r["faces_per_s"] > 0 for r in runs)
    clip = result["pipeline"]["clips"][0]
    assert clip["default"] is True and (clip["width"], clip["height"]) == (640, 360)
    configs = {c["name"]: c for c in clip["configs"]}
    assert list(configs) == ["release", "default", "fast"]
    assert configs["release"]["provider"] == "cpu" and configs["release"]["detector"]["search_lag"] == 0
    assert configs["release"]["model_agreement"] == 1.0  # fp32 on onnxruntime CPU is the reference itself
    for config in configs.values():
        assert abs(sum(config["stage_share"].values()) - 1) < 0.01, config["name"]
    assert clip["target_config"] in configs
    assert set(result["targets"]) == {t.key for t in TARGETS}
    for target in result["targets"].values():
        assert (target["value"] is None) == (target["met"] is None)


@pytest.mark.slow  # the quick_run fixture runs benchmark --quick (~25 s)
def test_quick_run_times_every_engine_with_its_agreement_on_real_faces(quick_run: tuple[Path, dict, dict],
                                                                      fer_dir: Path) -> None:
    """Every (variant, engine) has an agreement with fp32 on onnxruntime CPU, recomputed here on the same faces."""
    import numpy as np

    from benchmarks.model_bench import FACE_COUNT, agreement, model_faces, open_predictor
    from runtime.classifier import default_model_path

    _, _, result = quick_run
    model = result["model"]
    engines = ["cpu", "openvino", "openvino-bf16"] if HAS_OPENVINO else ["cpu"]
    assert result["providers"][: len(engines)] == engines
    peaks = {(p["variant"], p["provider"]): p for p in model["peak"]}
    assert ("fp32", "cpu") in peaks and peaks[("fp32", "cpu")]["agreement"] == 1.0
    assert {v for v, e in peaks if e == "openvino-bf16"} <= {"fp32"}  # the bf16 hint: the fp32 file only
    assert model["agreement_real"] is True and model["agreement_faces"] >= 400
    faces = model_faces(fer_dir / "test", FACE_COUNT, (48, 48, 1), seed=0)  # the benchmark's default seed
    assert faces.distinct == model["agreement_faces"]
    reference = np.argmax(open_predictor(default_model_path(), "cpu", 0)[0](faces.agreement_set), axis=1)
    for (variant, engine), peak in peaks.items():
        if engine == "cpu":  # onnxruntime CPU is deterministic: the same figure again
            path = default_model_path() if variant == "fp32" else default_model_path().with_suffix(f".{variant}.onnx")
            assert agreement(open_predictor(path, "cpu", 0)[0], faces.agreement_set, reference) == {
                k: peak[k] for k in ("agreement", "disagreements")}, variant
        assert peak["disagreements"] == round((1 - peak["agreement"]) * model["agreement_faces"])
        assert (peak["limit"] is None) == (peak["limit_fraction"] is None)


@pytest.mark.slow  # the quick_run fixture runs benchmark --quick (~25 s)
def test_quick_run_measures_the_limits(quick_run: tuple[Path, dict, dict]) -> None:
    _, _, result = quick_run
    rows = {(r["precision"], r["engine"]): r for r in result["limits"]["rows"]}
    assert not rows[("fp32", "numpy")]["skipped"] and result["limits"]["best"]["fp32"] > 0
    for precision in ("bf16", "int8"):
        row = rows[(precision, "openvino")]
        if not HAS_OPENVINO:
            assert 'pip install "emocam[openvino]"' in row["skipped"]
        elif not row["skipped"]:  # measured only when OpenVINO's executable graph ran it in that precision
            assert set(row["ran_as"].split(", ")) <= {"bf16": {"bf16"}, "int8": {"u8", "i8"}}[precision]
            assert result["limits"]["best"][precision] >= row["g_per_s"]


@pytest.mark.slow  # the quick_run fixture runs benchmark --quick (~25 s)
def test_quick_run_keras_parts_match_the_environment(quick_run: tuple[Path, dict, dict]) -> None:
    _, _, result = quick_run
    clip = result["pipeline"]["clips"][0]
    ratios = [c["ratio"] for c in clip["configs"] if not c["skipped"]]
    if HAS_TF:
        assert result["keras"]["skipped"] is None
        assert result["versions"]["tensorflow"]
        assert clip["original"]["skipped"] is None and all(r > 0 for r in ratios)
    else:
        assert "emocam[train]" in result["keras"]["skipped"]
        assert clip["original"]["skipped"] and ratios == [None] * len(ratios)


@pytest.mark.slow  # the quick_run fixture runs benchmark --quick (~25 s)
def test_validate_reports_missing_and_non_finite_fields(quick_run: tuple[Path, dict, dict]) -> None:
    _, _, result = quick_run
    broken = copy.deepcopy(result)
    del broken["gemm"]["gflops"]
    broken["model"]["runs"][0]["p99_ms"] = float("nan")
    broken["pipeline"]["clips"][0]["configs"][0]["fps"] = -1.0
    broken["limits"]["rows"][0]["g_per_s"] = 0
    problems = validate(broken)
    assert any(p.startswith("gemm.gflops") for p in problems)
    assert any(p.startswith("model.runs[].p99_ms") for p in problems)
    assert any(p.startswith("pipeline.clips[].configs[].fps") for p in problems)
    assert any(p.startswith("limits.rows[].g_per_s") for p in problems)


def test_quick_run_without_tensorflow_skips_keras_parts(tmp_path: Path, video_path: Path) -> None:
    """Nor OpenVINO: its limits are skipped with the pip command, and every row runs on onnxruntime."""
    summary, result = _quick(tmp_path / "out", env=_hidden_tf_env(tmp_path / "hide"))
    assert validate(result) == []
    assert "emocam[train]" in result["keras"]["skipped"]
    assert result["versions"]["tensorflow"] is None and result["versions"]["openvino"] is None
    assert result["providers"] == ["cpu"] and {p["provider"] for p in result["model"]["peak"]} == {"cpu"}
    skipped = {r["precision"]: r["skipped"] for r in result["limits"]["rows"] if r["engine"] == "openvino"}
    assert set(skipped) == {"fp32", "bf16", "int8"}
    assert all('pip install "emocam[openvino]"' in why for why in skipped.values())
    assert result["limits"]["best"]["bf16"] is None and result["limits"]["best"]["int8"] is None
    clip = result["pipeline"]["clips"][0]
    assert clip["original"]["skipped"] == result["keras"]["skipped"]
    assert all(c["provider"] == "cpu" for c in clip["configs"] if not c["skipped"])
    assert all(c["ratio"] is None for c in clip["configs"] if not c["skipped"]) and summary["ratio"] is None
    assert result["targets"]["pipeline_vs_original"]["met"] is None
    if importlib.util.find_spec("matplotlib") is None:  # no chart without the [train] extra
        assert summary["png"] is None
    else:
        assert cv2.imread(summary["png"]) is not None


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--video", "no-such-clip.mp4"], "no-such-clip.mp4"), (["--frames", "0"], "--frames"),
     (["--keras", "no-such.keras"], "--keras"), (["--provider", "openvino"], 'pip install "emocam[openvino]"')],
)
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    """``--provider openvino`` where OpenVINO is not installed (hidden here) names the pip command."""
    env = _hidden_tf_env(tmp_path.parent / f"{tmp_path.name}-hide") if "--provider" in args else None
    proc = run_cli("benchmarks", "--quick", "--out-dir", str(tmp_path), *args, timeout=120, env=env)
    assert_user_error(proc, 2, needle)
    assert not list(tmp_path.iterdir()), "nothing is written on a user error"


BAD_FLAGS = [("--seed", "-1"), ("--threads", "1e20"), ("--threads", "5000"), ("--threads", "-1"),
             ("--frames", "1e20"), ("--original-frames", "0"), ("--original-frames", "nan")]


@pytest.mark.parametrize(("flag", "value"), BAD_FLAGS, ids=[f"{f}={v}" for f, v in BAD_FLAGS])
def test_numeric_flags_are_bounded(tmp_path: Path, flag: str, value: str) -> None:
    from benchmarks.run import FRAMES
    from runtime.cli_support import SEED, THREADS

    bounds = {"--seed": SEED, "--threads": THREADS}.get(flag, FRAMES).bounds_text.removeprefix("range ")
    proc = run_cli("benchmarks", "--quick", "--out-dir", str(tmp_path), f"{flag}={value}", timeout=120)
    assert_user_error(proc, 2, flag, bounds)
    assert not list(tmp_path.iterdir())


def test_help_names_the_bounds() -> None:
    proc = run_cli("benchmarks", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for needle in ("--threads", "[0, 256]", "--seed", "[0, 4294967295]", "--frames", "[1, 1000000]"):
        assert needle in text, needle


def test_hostile_paths_are_one_line(tmp_path: Path, video_path: Path) -> None:
    odd = tmp_path / os.fsdecode(b"clip-\xff.mp4")  # OpenCV's VideoCapture crashes on a name that is not UTF-8
    shutil.copy(video_path, odd)
    (tmp_path / "file").write_text("a file")
    for args, needle in [
        (["--out-dir", ""], "empty path"),
        (["--model", ""], "empty path"),
        (["--out-dir", str(tmp_path / "file")], "--out-dir"),
        (["--video", str(odd)], "not valid UTF-8"),
        (["--model", str(tmp_path / "file")], "not a loadable ONNX model"),
    ]:
        proc = run_cli("benchmarks", "--quick", "--no-keras", *args, timeout=120)
        assert_user_error(proc, 2, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["file", odd.name])


def test_model_that_fails_to_run_is_one_line(tmp_path: Path, video_path: Path) -> None:
    from tests.trainer.test_cli import _failing_onnx

    model = _failing_onnx(tmp_path / "bad.onnx")
    out = tmp_path / "out"
    proc = run_cli("benchmarks", "--quick", "--no-keras", "--model", str(model), "--out-dir", str(out), timeout=300)
    assert_user_error(proc, 2, "bad.onnx", "failed", "reshape")
    assert not list(out.iterdir())


def test_out_of_disk_is_one_line_and_keeps_latest(tmp_path: Path, video_path: Path) -> None:
    import resource
    import subprocess
    import sys

    from tests.conftest import ROOT

    def limit() -> None:  # a 4 kB file-size limit (ulimit -f): the chart does not fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    (tmp_path / "latest.json").write_text('{"old": true}\n')
    args = [sys.executable, "-m", "benchmarks", "--quick", "--no-keras", "--frames", "5", "--out-dir", str(tmp_path)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S, preexec_fn=limit,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert_user_error(proc, 2, "could not write", "file too large")
    assert [p.name for p in tmp_path.iterdir()] == ["latest.json"]  # no temporary, the old result kept
    assert (tmp_path / "latest.json").read_text() == '{"old": true}\n'


def test_results_go_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never beside the package (inside site-packages after `pip install .`): relative to where it runs."""
    import benchmarks
    from benchmarks.run import _parser, _prepare_out_dir

    monkeypatch.chdir(tmp_path)
    out_dir = _parser().parse_args([]).out_dir
    assert not out_dir.is_absolute()
    made = _prepare_out_dir(out_dir)
    assert (tmp_path / "benchmarks" / "results").is_dir() and made.resolve() == tmp_path / "benchmarks" / "results"
    assert Path(benchmarks.__file__).resolve().parent not in made.resolve().parents
