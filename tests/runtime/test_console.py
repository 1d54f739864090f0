"""Every command's entry point: --version on each, and a missing optional extra as one line naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

from runtime import __version__
from runtime.contract import ModelSpec
from tests.conftest import ROOT, assert_user_error

#: Every console script the installed project declares, and its function in runtime.console (from the
#: install's metadata, so a new command is tested without anyone remembering to list it here).
COMMANDS = {ep.name: ep.value.split(":")[1]
            for ep in distribution("emocam").entry_points if ep.group == "console_scripts"}


def entry(name: str, *args: str, blocked: tuple[str, ...] = (), cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the console entry point of command ``name`` as its script would, with the modules in ``blocked``
    made impossible to import (as on an install without their extra)."""
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            f"from runtime import console\nsys.argv = [{name!r}, *sys.argv[1:]]\nsys.exit(console.{COMMANDS[name]}())")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_answers_version(name: str):
    proc = entry(name, "--version")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"{name} (emocam) {__version__}"
    assert "--version" in entry(name, "--help").stdout


def test_the_version_is_the_installed_one():
    from importlib.metadata import version

    assert version("emocam") == __version__  # pyproject reads runtime.__version__: one home


def _keras_file(path: Path) -> Path:
    """A .keras archive with the model contract in it (as trainer-fit saves), for the steps before Keras loads it."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("emocam_model_spec.json", json.dumps({"spec": json.loads(ModelSpec().to_json())}))
    return path


TRAIN = ("keras", "tensorflow", "tf2onnx", "onnx", "onnxconverter_common")


def test_training_commands_without_the_train_extra_are_one_line(fer_dir: Path, tmp_path: Path):
    model = _keras_file(tmp_path / "m.keras")
    for name, args in (("export-onnx", [str(model), "--output", str(tmp_path / "m.onnx")]),
                       ("trainer-eval", [str(model), str(fer_dir), "--split", "test"])):
        proc = entry(name, *args, blocked=TRAIN)
        assert_user_error(proc, 2, "keras is not installed", 'pip install "emocam[train]"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_trainer_fit_without_the_train_extra_is_one_line(tmp_path: Path, fer_dir: Path):
    proc = entry("trainer-fit", "--data", str(fer_dir), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--limit-per-class", "5", blocked=TRAIN)
    assert_user_error(proc, 2, "is not installed", 'pip install "emocam[train]"')


def test_an_unknown_missing_module_is_not_hidden():
    """Only the extras' modules are explained: any other missing module is a real bug, and keeps its traceback."""
    from runtime.cli_support import missing_extra

    assert missing_extra("keras.saving") == missing_extra("keras")
    assert 'pip install "emocam[video]"' in missing_extra("av")
    assert missing_extra("numpy") is None and missing_extra(None) is None
