"""The runtime never imports TensorFlow or Keras (both are installed beside it in the dev venv)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PIPELINE_RUN = """
import json, sys
import cv2
import runtime
from runtime import Pipeline
frame = cv2.imread(sys.argv[1])
out, faces = Pipeline()(frame)
print(json.dumps({
    "faces": len(faces), "labels": faces.labels, "shape": list(out.shape),
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch")),
}))
"""


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pipeline_runs_without_tensorflow_or_keras(media_dir: Path):
    result = _run(PIPELINE_RUN, str(media_dir / "single_face.jpg"))
    assert result["faces"] == 1 and len(result["labels"]) == 1  # the pipeline really ran
    assert result["shape"] == [562, 572, 3]
    assert result["heavy"] == []


def test_importing_runtime_is_light():
    result = _run("""
import json, sys
import runtime, runtime.contract
from runtime import FER2013_LABELS, ModelSpec
print(json.dumps({"loaded": sorted(m for m in ("cv2", "onnxruntime", "numpy", "tensorflow", "keras")
                                   if m in sys.modules)}))
""")
    assert result["loaded"] == []  # names resolve lazily; the contract is standard library only
