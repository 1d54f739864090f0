"""What an export does: :class:`ExportConfig`, the graph's names, and the bounds it is checked against.

``ExportConfig``'s field defaults are the one source of export-onnx's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime.cli_support import Number
from trainer.cli_common import shared_path

OPSET = 17  # onnxruntime >= 1.14 runs it everywhere; tf2onnx 1.16+ writes it
#: --opset range: QDQ per-channel INT8 needs 13; tf2onnx 1.17 writes at most 18 ("Opset 19 is not supported
#: yet"). Checked here: 13 and 18 convert (plain and --tta flip-zoom), load in onnxruntime 1.32 and match Keras.
OPSETS = Number(int, 13, 18)
COUNTS = Number(int, 7, 100_000)  # --verify-count / --calib-count: at least one face per class; FER2013 has 35,887
INPUT_NAME = "pixels"  # stable graph input name: raw 0-255 grayscale faces, NHWC
OUTPUT_NAME = "probs"  # stable graph output name: class probabilities
FP32_ATOL = 1e-4  # max |keras - onnx| accepted for the fp32 export
FP16_MIN_AGREEMENT = 0.99  # argmax agreement with fp32 a float16 variant must reach
INT8_MIN_AGREEMENT = 0.95  # argmax agreement with fp32 an INT8 variant must reach
HALF_WEIGHTS_MIN_AGREEMENT = 0.995  # argmax agreement with fp32 of the fp32 file with float16-stored weights
ENSEMBLE = "ensemble"  # the ``architecture`` metadata of a graph that averages several networks
TTA_VIEWS = {  # test-time augmentation choices: the views of each face whose probabilities are averaged
    "none": 1,  # the face only
    "flip": 2,  # the face and its mirror image
    "flip-zoom": 6,  # the face zoomed in, as is and zoomed out, each also mirrored
}
ZOOM_PX = 2  # zoom views crop or pad this many pixels per side of the 48-pixel face, then resize back


@dataclass(frozen=True)
class ExportConfig:
    """Everything one export needs; the defaults are export-onnx's.

    Example (``export`` is :func:`export.onnx_export.export`)::

        export(ExportConfig(model=Path("runs/fer2013/best.keras"), output=Path("m.onnx"), int8=True))
    """

    model: Path  # the .keras model from trainer-fit (required)
    members: tuple[Path, ...] = ()  # more .keras models of the same contract: the graph averages all (an ensemble)
    output: Path = Path("model.onnx")  # the fp32 ONNX file; <stem>.fp16.onnx, .int8.onnx, .export.json beside it
    labels: tuple[str, ...] | None = None  # class names in output order; None: the spec saved in the model
    opset: int = OPSET  # ONNX opset of the graph
    verify_dir: Path | None = field(default_factory=lambda: shared_path("fer2013", "test"))  # real faces to verify on
    verify_count: int = 700  # faces to verify on (100 per class)
    fp16: bool = False  # also write <stem>.fp16.onnx (float16 weights), verified against fp32
    int8: bool = False  # also write <stem>.int8.onnx (static INT8, QDQ), verified against fp32
    half_weights: bool = False  # store the fp32 file's weights as float16 (float32 arithmetic): half the file
    calib_dir: Path | None = field(default_factory=lambda: shared_path("fer2013", "train"))  # INT8 calibration faces
    calib_count: int = 700  # faces to calibrate INT8 on (100 per class)
    seed: int = 0  # seed of the verification and calibration samples
    tta: str = "none"  # test-time augmentation inside the graph: a key of TTA_VIEWS
    force: bool = False  # replace a shipped model's files in models/ (refused otherwise)
    skip_failed_variants: bool = False  # a variant that does not verify is left out; else nothing is written
