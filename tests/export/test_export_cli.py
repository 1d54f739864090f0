"""export-onnx refuses bad flags and paths with one line, before TensorFlow is loaded; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.config import COUNTS, OPSETS
from runtime.cli_support import Number
from tests.conftest import ROOT, assert_user_error, run_cli

SHIPPED_KERAS_LIKE = ROOT / "models" / "emotion_cnn.onnx"  # any existing file: the flags are refused first

BAD_FLAGS = [
    ("--opset", "5", OPSETS),
    ("--opset", "99", OPSETS),
    ("--opset", "17.5", OPSETS),
    ("--seed", "-1", None),
    ("--verify-count", "3", COUNTS),
    ("--calib-count", "1e9", COUNTS),
    ("--calib-count", "nan", COUNTS),
]


@pytest.mark.parametrize(("flag", "value", "bounds"), BAD_FLAGS, ids=[f"{f}={v}" for f, v, _ in BAD_FLAGS])
def test_numeric_flags_are_bounded(tmp_path: Path, flag: str, value: str, bounds: Number | None) -> None:
    out = tmp_path / "m.onnx"
    proc = run_cli("export", str(SHIPPED_KERAS_LIKE), "--output", str(out), f"{flag}={value}")
    shown = "[0, 4294967295]" if bounds is None else bounds.bounds_text.removeprefix("range ")
    assert_user_error(proc, 2, flag, shown)
    assert not list(tmp_path.iterdir())


def test_opset_range_is_what_tf2onnx_writes() -> None:
    """13 is the lowest opset with per-channel QDQ (INT8); the top is tf2onnx's own highest."""
    tf2onnx_constants = pytest.importorskip("tf2onnx.constants")
    assert (OPSETS.lo, OPSETS.hi) == (13, max(tf2onnx_constants.OPSET_TO_IR_VERSION))


def test_help_names_the_bounds() -> None:
    proc = run_cli("export", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for needle in ("--opset", "[13, 18]", "--verify-count", "[7, 100000]", "--seed", "[0, 4294967295]"):
        assert needle in text, needle


@pytest.mark.parametrize(
    ("model", "output", "needle"),
    [
        ("", "m.onnx", "empty path"),
        ("{model}", "", "empty path"),
        ("{tmp}", "m.onnx", "is a folder"),
        ("{model}", "{tmp}", "is a folder"),
    ],
    ids=["model-empty", "output-empty", "model-folder", "output-folder"],
)
def test_hostile_paths_are_one_line(tmp_path: Path, model: str, output: str, needle: str) -> None:
    def fill(text: str) -> str:
        return text.replace("{model}", str(SHIPPED_KERAS_LIKE)).replace("{tmp}", str(tmp_path))

    out = fill(output) if output in ("", "{tmp}") else str(tmp_path / output)
    proc = run_cli("export", fill(model), "--output", out)
    assert_user_error(proc, 2, needle)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--verify-dir", "--calib-dir"])
def test_a_mistyped_face_folder_is_refused(flag: str, tmp_path: Path) -> None:
    """Given by hand, a folder must exist: a typo must not turn into a check on random pixels."""
    proc = run_cli("export", str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.onnx"), "--int8", flag,
                   str(tmp_path / "no-such-folder"), timeout=120)
    assert_user_error(proc, 2, flag, "no-such-folder", "not a folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["emotion_cnn.onnx", "emotion_cnn.int8.onnx"])
def test_a_shipped_model_is_never_replaced_without_force(name: str, tmp_path: Path) -> None:
    """README's own example once wrote over models/: now one line names the file and the way out, nothing changes."""
    import hashlib

    shipped = ROOT / "models"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped.iterdir() if p.is_file()}
    stem = name.split(".")[0]
    extra = ["--int8"] if "int8" in name else []
    for output in (shipped / f"{stem}.onnx", Path("models") / f"{stem}.onnx"):  # absolute, and relative to the cwd
        proc = run_cli("export", str(SHIPPED_KERAS_LIKE), "--output", str(output), *extra, cwd=ROOT)
        assert_user_error(proc, 2, "shipped with emocam", "--force", "runs/fer2013/emotion_cnn.onnx")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shipped.iterdir() if p.is_file()}
    assert after == before


def test_the_shipped_check_is_only_for_existing_shipped_files(tmp_path: Path) -> None:
    from export.config import ExportConfig
    from export.onnx_export import shipped_files

    config = ExportConfig(model=tmp_path / "m.keras", int8=True)
    assert [p.name for p in shipped_files(ROOT / "models" / "emotion_cnn.onnx", config)] == [
        "emotion_cnn.onnx", "emotion_cnn.export.json", "emotion_cnn.int8.onnx"]
    assert shipped_files(ROOT / "models" / "mine.onnx", config) == []  # a new name beside them replaces nothing
    (tmp_path / "emotion_cnn.onnx").write_bytes(b"x")
    assert shipped_files(tmp_path / "emotion_cnn.onnx", config) == []  # the same name elsewhere is the user's
