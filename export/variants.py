"""The smaller variants of an fp32 export: float16 weights, and static INT8 calibrated on real faces.

Each is made into a file by :func:`make_fp16` / :func:`make_int8`, then verified against fp32
by :func:`export.verify.make_verified` before it is renamed into place. onnx,
onnxconverter-common and onnxruntime's quantization tools are imported inside the functions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from export.config import INPUT_NAME
from export.convert import set_metadata


def to_fp16(proto):
    """float16 weights and compute of an ``onnx.ModelProto``; the graph's input and output stay float32."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns once per tiny weight it rounds to zero
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(proto, keep_io_types=True)


def to_int8(fp32_path: Path, out_path: Path, calib: np.ndarray) -> None:
    """Static INT8 quantization (QDQ, per-channel weights) calibrated on real faces."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i : i + 32] for i in range(0, len(calib), 32))

        def get_next(self) -> dict | None:
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch}

    pre = out_path.with_name(out_path.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        pre.unlink(missing_ok=True)


def make_fp16(proto, path: Path, meta: dict[str, str]) -> None:
    """Write the float16 variant of ``proto`` (the fp32 ``onnx.ModelProto``) to ``path``, with its metadata."""
    import onnx

    half = to_fp16(proto)
    set_metadata(half, meta)
    onnx.save(half, path)


def make_int8(fp32_path: Path, path: Path, calib: np.ndarray, meta: dict[str, str]) -> None:
    """Write the static INT8 variant of the fp32 file to ``path``, with its metadata."""
    import onnx

    to_int8(fp32_path, path, calib)
    q = onnx.load(path)
    set_metadata(q, meta)
    onnx.save(q, path)
