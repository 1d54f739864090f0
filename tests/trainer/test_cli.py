"""trainer-fit and trainer-eval refuse hostile input with one line, before any training, and touch no file.

None of these needs TensorFlow: every refusal happens before it is imported, and trainer-eval
scores the shipped ONNX model.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import FER2013_CSV_LABELS, FER2013_LABELS
from tests.conftest import ROOT, assert_user_error, run_cli
from trainer.config import BOUNDS

SHIPPED = ROOT / "models" / "emotion_cnn.onnx"
EVAL_CODE = "import sys; from trainer.evaluate import cli; sys.exit(cli(sys.argv[1:]))"
NOT_UTF8 = os.fsdecode(b"face-\xff\xfe.png")  # a name that is not valid UTF-8 (cv2.imread crashes on it)


def _eval(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run trainer-eval (it has no ``python -m`` entry), optionally under a file-size limit (``ulimit -f``)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-c", EVAL_CODE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        preexec_fn=limit if limit_bytes else None,
    )


def _range(flag: str) -> str:
    """The range trainer-fit's ``flag`` accepts, as its error line and --help write it: ``[0, 10000]``."""
    return BOUNDS[flag[2:].replace("-", "_")].bounds_text.removeprefix("range ")


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _subset(fer_dir: Path, dest: Path, per_class: int, splits: tuple[str, ...] = ("test",)) -> Path:
    """A FER2013-layout copy of ``per_class`` real faces per class of each split."""
    for split in splits:
        for name in FER2013_LABELS:
            (dest / split / name).mkdir(parents=True)
            for src in sorted((fer_dir / split / name).iterdir())[:per_class]:
                shutil.copy(src, dest / split / name / src.name)
    return dest


def _real_csv_rows(fer_dir: Path, per_class: int) -> list[str]:
    """``fer2013.csv`` rows (emotion, pixels, Training) of real faces, in the CSV's class order."""
    from trainer.data import load_folder_split

    faces = load_folder_split(fer_dir / "train", limit_per_class=per_class, seed=2)
    return [
        f"{FER2013_CSV_LABELS.index(FER2013_LABELS[y])},{' '.join(map(str, img.ravel()))},Training"
        for img, y in zip(faces.x, faces.y, strict=True)
    ]


FIT_BOUNDS = [
    ("--seed", "-1"),
    ("--seed", str(2**32)),
    ("--warmup-epochs", "-5"),
    ("--warmup-epochs", "inf"),
    ("--batch-size", "1e20"),
    ("--batch-size", "0"),
    ("--epochs", "0"),
    ("--epochs", "1e9"),
    ("--lr", "0"),
    ("--lr", "nan"),
    ("--shift", "1.5"),
    ("--rotate-deg", "720"),
    ("--zoom", "1"),
    ("--label-smoothing", "2"),
    ("--mixup", "11"),
    ("--val-fraction", "0"),
    ("--val-fraction", "0.9"),
    ("--limit-per-class", "1"),
    ("--cpu-replicas", "0"),
    ("--cpu-replicas", "1000"),
    ("--swa-epochs", "-1"),
]


@pytest.mark.parametrize(("flag", "value"), FIT_BOUNDS, ids=[f"{f}={v}" for f, v in FIT_BOUNDS])
def test_fit_numeric_flags_are_bounded(fer_dir: Path, tmp_path: Path, flag: str, value: str) -> None:
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(tmp_path / "run"), f"{flag}={value}")
    assert_user_error(proc, 2, flag, _range(flag))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flag", "value"), [("--seed", "-1"), ("--val-fraction", "nan"), ("--val-fraction", "0.6")])
def test_eval_numeric_flags_are_bounded(fer_dir: Path, tmp_path: Path, flag: str, value: str) -> None:
    proc = _eval(str(SHIPPED), str(fer_dir), "--split", "val", f"{flag}={value}", "--out", str(tmp_path))
    assert_user_error(proc, 2, flag, _range(flag))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ("trainer", ["--seed", "[0, 4294967295]", "--warmup-epochs", "[0, 10000]", "--batch-size", "[1, 8192]"]),
        ("eval", ["--seed", "[0, 4294967295]", "--val-fraction", "(0, 0.5]"]),
    ],
)
def test_help_names_the_bounds(command: str, needles: list[str]) -> None:
    proc = run_cli("trainer", "--help") if command == "trainer" else _eval("--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for needle in needles:
        assert needle in text, needle


@pytest.mark.parametrize(
    ("target", "extra", "needle"),
    [
        ("file", [], "is a file"),
        ("file/run", [], "which is a file"),
        ("", [], "--out is empty"),
        ("run", ["--init-from", ""], "--init-from is empty"),
        ("run", ["--init-from", "{tmp}"], "is a folder"),
    ],
    ids=["out-is-a-file", "out-under-a-file", "out-empty", "init-from-empty", "init-from-folder"],
)
def test_fit_refuses_a_bad_run_folder_and_leaves_files_alone(
    fer_dir: Path, tmp_path: Path, target: str, extra: list[str], needle: str
) -> None:
    (tmp_path / "file").write_bytes(b"precious bytes")
    before = _snapshot(tmp_path)
    out = str(tmp_path / target) if target else ""
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", out, "--epochs", "1", *extra)
    assert_user_error(proc, 2, needle)
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    "content",
    [
        "latin-1",
        "binary",
    ],
)
def test_csv_that_is_not_utf8_is_one_line(fer_dir: Path, tmp_path: Path, content: str) -> None:
    path = tmp_path / "fer2013.csv"
    rows = ["emotion,pixels,Usage", *_real_csv_rows(fer_dir, 3)]
    if content == "latin-1":  # the real layout, saved by a spreadsheet in latin-1 with a note
        path.write_bytes(("\n".join([*rows, "0,,Entraînement à revoir"]) + "\n").encode("latin-1"))
    else:
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    fit = run_cli("trainer", "--data", str(path), "--out", str(tmp_path / "run"), "--epochs", "1")
    assert_user_error(fit, 2, str(path), "fer2013.csv")
    assert not (tmp_path / "run").exists()
    ev = _eval(str(SHIPPED), str(path), "--split", "train")
    assert_user_error(ev, 2, str(path), "fer2013.csv")


def test_utf8_csv_of_real_faces_still_scores(fer_dir: Path, tmp_path: Path) -> None:
    """The counterpart of the refusals above: the same rows in UTF-8 are read and scored."""
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(["emotion,pixels,Usage", *_real_csv_rows(fer_dir, 3)]) + "\n", encoding="utf-8")
    proc = _eval(str(SHIPPED), str(path), "--split", "train")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on 21 faces" in proc.stdout


def test_eval_out_that_is_a_file_is_refused(fer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.write_bytes(b"not a folder")
    proc = _eval(str(SHIPPED), str(fer_dir), "--out", str(out))
    assert_user_error(proc, 2, "is a file")
    assert out.read_bytes() == b"not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def _failing_onnx(path: Path) -> Path:
    """An ONNX model that keeps the runtime's contract (metadata, shapes) but fails in session.run."""
    onnx = pytest.importorskip("onnx")  # the [train] extra
    from onnx import TensorProto, helper

    from runtime.contract import ModelSpec

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["pixels", "shape"], ["probs"])],  # 2304 values per face: not a multiple of 7
        "fails",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in ModelSpec().to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def test_eval_inference_failure_is_one_line(fer_dir: Path, tmp_path: Path) -> None:
    data = _subset(fer_dir, tmp_path / "fer", 2)
    out = tmp_path / "out"
    out.mkdir()
    proc = _eval(str(_failing_onnx(tmp_path / "bad.onnx")), str(data), "--out", str(out))
    assert_user_error(proc, 2, "bad.onnx", "failed", "reshape")
    assert not list(out.iterdir())


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        ("", "{fer}", "empty path"),
        ("{shipped}", "", "empty path"),
        ("{tmp}/garbage.onnx", "{fer}", "not a loadable ONNX model"),
        ("{tmp}/garbage.keras", "{fer}", "not a Keras"),
        ("{tmp}", "{fer}", "is a folder"),
        ("{shipped}", "{shipped}", "not a .csv"),
        ("{shipped}", "{tmp}/folder.csv", "is a folder"),
    ],
    ids=["model-empty", "data-empty", "onnx-garbage", "keras-garbage", "model-folder", "data-not-csv", "csv-folder"],
)
def test_eval_hostile_paths_are_one_line(fer_dir: Path, tmp_path: Path, model: str, data: str, needle: str) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "garbage.keras").write_text("not a zip")
    (tmp_path / "folder.csv").mkdir()

    def fill(text: str) -> str:
        return text.replace("{fer}", str(fer_dir)).replace("{shipped}", str(SHIPPED)).replace("{tmp}", str(tmp_path))

    proc = _eval(fill(model), fill(data))
    assert_user_error(proc, 2, needle)


def test_non_utf8_file_names_are_read_and_bad_files_skipped(fer_dir: Path, tmp_path: Path) -> None:
    data = _subset(fer_dir, tmp_path / "fer", 2)
    src = next((fer_dir / "test" / "happy").iterdir())
    shutil.copy(src, data / "test" / "happy" / NOT_UTF8)  # a real face under a name that is not UTF-8
    (data / "test" / "sad" / os.fsdecode(b"broken-\xff.png")).write_bytes(src.read_bytes()[:200])  # truncated PNG
    proc = _eval(str(SHIPPED), str(data))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on 15 faces" in proc.stdout  # 14 faces + the one with the odd name; the truncated one skipped
    assert "skipped 1 unreadable" in proc.stderr


def test_eval_write_failure_is_one_line_and_keeps_the_old_report(fer_dir: Path, tmp_path: Path) -> None:
    data = _subset(fer_dir, tmp_path / "fer", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"old": true}')
    before = _snapshot(out)
    proc = _eval(str(SHIPPED), str(data), "--out", str(out), limit_bytes=1000)  # metrics.json does not fit in 1 kB
    assert_user_error(proc, 2, "could not write", "file too large")
    assert _snapshot(out) == before  # the old report is whole and no temporary is left


def test_eval_out_that_does_not_exist_is_made(fer_dir: Path, tmp_path: Path) -> None:
    """README's `trainer-eval ... --out runs/fer2013/eval` works before that folder exists."""
    pytest.importorskip("matplotlib")  # the confusion matrix
    data = _subset(fer_dir, tmp_path / "fer", 2)
    out = tmp_path / "runs" / "fer2013" / "eval"
    proc = _eval(str(SHIPPED), str(data), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.png", "metrics.json"]
    assert '"accuracy"' in (out / "metrics.json").read_text()
