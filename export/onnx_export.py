"""export-onnx: Keras -> ONNX that is verified, self-describing, and optionally quantized.

1. Convert with tf2onnx (``from_function`` on a named ``TensorSpec``: ``from_keras`` is broken
   with Keras 3). The graph takes raw 0-255 pixels ``[N, 48, 48, 1]``; the rescale is inside it.
2. Describe: the :class:`runtime.contract.ModelSpec` (``labels``, ``model_spec``) and provenance
   go into ``metadata_props``; ``onnx.checker.check_model(full_check=True)`` must pass.
3. Verify on real faces: Keras and onnxruntime must agree (fp32: max |diff| <= 1e-4, 100 % argmax)
   or the export fails with exit 1 and leaves no file.
4. Optional ``--fp16`` and ``--int8`` variants, each measured against fp32 in the same run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.cli_support import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    SEED,
    ArgumentParser,
    Number,
    UserError,
    atomic_path,
    check_output_path,
    run_main,
)
from runtime.contract import ContractError, ModelSpec
from trainer.cli_common import first_line, inference_errors, path_arg, terminate_as_interrupt, write_errors

OPSET = 17  # onnxruntime >= 1.14 runs it everywhere; tf2onnx 1.16+ writes it
#: --opset range: QDQ per-channel INT8 needs 13; tf2onnx 1.17 writes at most 18 ("Opset 19 is not supported
#: yet"). Checked here: 13 and 18 convert (plain and --tta flip-zoom), load in onnxruntime 1.32 and match Keras.
OPSETS = Number(int, 13, 18)
COUNTS = Number(int, 7, 100_000)  # --verify-count / --calib-count: at least one face per class; FER2013 has 35,887
RERUN_FIX = "try another --opset, or leave the variant out"  # the fix when an exported graph fails to run
INPUT_NAME = "pixels"  # stable graph input name: raw 0-255 grayscale faces, NHWC
OUTPUT_NAME = "probs"  # stable graph output name: class probabilities
FP32_ATOL = 1e-4  # max |keras - onnx| accepted for the fp32 export
TTA_VIEWS = {  # test-time augmentation choices: the views of each face whose probabilities are averaged
    "none": 1,  # the face only
    "flip": 2,  # the face and its mirror image
    "flip-zoom": 6,  # the face zoomed in, as is and zoomed out, each also mirrored
}
ZOOM_PX = 2  # zoom views crop or pad this many pixels per side of the 48-pixel face, then resize back
FP16_MIN_AGREEMENT = 0.99  # argmax agreement with fp32 a float16 variant must reach
INT8_MIN_AGREEMENT = 0.95  # argmax agreement with fp32 an INT8 variant must reach
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_data(split: str) -> Path:
    """``../shared/fer2013/<split>`` from the working directory, else from the project root."""
    rel = Path("..") / "shared" / "fer2013" / split
    return rel if rel.is_dir() else _PROJECT_ROOT / rel


@dataclass
class FaceSet:
    """Faces used to verify or calibrate: raw pixels and (when known) true labels."""

    x: np.ndarray
    y: np.ndarray | None
    source: str


def load_faces(folder: Path | None, count: int, spec: ModelSpec, seed: int, what: str) -> FaceSet:
    """Up to ``count`` real faces from a FER2013-layout folder, stratified; random pixels if absent."""
    if folder is not None and Path(folder).is_dir():
        from trainer.data import load_folder_split

        per_class = max(1, count // spec.num_classes)
        split = load_folder_split(Path(folder), spec.labels, spec.input_hw, limit_per_class=per_class, seed=seed)
        return FaceSet(split.x.astype(np.float32), split.y, str(folder))
    print(
        f"warning: no {what} folder ({folder}); using {count} random images: accuracy cannot be measured",
        file=sys.stderr,
    )
    rng = np.random.default_rng(seed)
    return FaceSet(rng.integers(0, 256, (count, *spec.input_shape)).astype(np.float32), None, "random")


def tta_views(pixels, tta: str) -> list:  # noqa: ANN001
    """The views of each face that ``tta`` averages over (see :data:`TTA_VIEWS`), as TF ops.

    ``zoom`` adds a zoom-in (crop :data:`ZOOM_PX` pixels per side, resize back) and a zoom-out
    (repeat the edge pixels :data:`ZOOM_PX` times per side, resize back): about x1.09 and x0.92.
    """
    import tensorflow as tf

    if tta not in TTA_VIEWS:
        raise UserError(f"--tta {tta} is unknown: choose one of {', '.join(TTA_VIEWS)}")
    views = [tf.convert_to_tensor(pixels)]
    if "zoom" in tta:
        p, size_hw = ZOOM_PX, tuple(views[0].shape[1:3])
        rows = tf.concat([views[0][:, :1]] * p + [views[0]] + [views[0][:, -1:]] * p, axis=1)
        padded = tf.concat([rows[:, :, :1]] * p + [rows] + [rows[:, :, -1:]] * p, axis=2)
        views += [tf.image.resize(views[0][:, p:-p, p:-p], size_hw), tf.image.resize(padded, size_hw)]
    if "flip" in tta:
        views += [tf.reverse(v, axis=[2]) for v in views]
    return views


def forward(model, pixels, tta: str = "none"):  # noqa: ANN001, ANN201
    """The exported computation: the network, or its mean probabilities over the ``tta`` views.

    All views go through the network as one batch. Works on numpy arrays (Keras reference) and
    on TF tensors (inside the exported graph).
    """
    import tensorflow as tf

    views = tta_views(pixels, tta)
    if len(views) == 1:
        return model(views[0], training=False)
    probs = model(tf.concat(views, axis=0), training=False)
    return tf.reduce_mean(tf.reshape(probs, (len(views), -1, probs.shape[-1])), axis=0)


def convert(model, spec: ModelSpec, opset: int = OPSET, tta: str = "none"):  # noqa: ANN001, ANN201
    """Convert a Keras model to an ``onnx.ModelProto`` with stable names and a dynamic batch.

    With ``tta`` other than ``none`` the graph averages the probabilities over several views of
    each face (test-time augmentation; :data:`TTA_VIEWS` network passes per face, in one graph).
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, *spec.input_shape), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(pixels):  # noqa: ANN001, ANN202
        return {OUTPUT_NAME: forward(model, pixels, tta)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    graph = proto.graph
    old_out = graph.output[0].name
    if old_out != OUTPUT_NAME:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if o == old_out else o for o in node.output]
        graph.output[0].name = OUTPUT_NAME
    old_in = graph.input[0].name
    if old_in != INPUT_NAME:
        for node in graph.node:
            node.input[:] = [INPUT_NAME if i == old_in else i for i in node.input]
        graph.input[0].name = INPUT_NAME
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    proto.doc_string = "Facial emotion CNN; input: raw 0-255 grayscale faces NHWC; output: class probabilities"
    onnx.checker.check_model(proto)
    return proto


def set_metadata(proto, entries: dict[str, str]) -> None:  # noqa: ANN001
    """Replace ``metadata_props`` entries of an ONNX model."""
    keep = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)


def provenance(model_path: Path, opset: int, variant: str, tta: str = "none") -> dict[str, str]:
    """Source hash, training data and accuracy (from the run folder), export time, tool versions."""
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    meta = {
        "variant": variant,
        "opset": str(opset),
        "test_time_augmentation": tta,  # see export.onnx_export.TTA_VIEWS
        "forward_passes": str(TTA_VIEWS[tta]),  # network evaluations per face
        "source_model": model_path.name,
        "source_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": json.dumps(
            {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "tf2onnx": tf2onnx.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            }
        ),
    }
    run = model_path.parent
    cfg = _run_json(run / "config.json")
    if cfg is not None:
        meta["training_data"] = str(cfg.get("data", ""))
        meta["training_config"] = json.dumps(cfg, separators=(",", ":"))
    m = _run_json(run / "metrics.json")  # trainer-fit's report on the .keras model, without TTA
    if m is not None:
        split = str(m.get("split", "test"))  # "val" for a run made with --no-test-eval
        meta[f"source_{split}_accuracy"] = str(m.get("accuracy"))
        meta[f"source_{split}_split"] = f"{m.get('source', '')} (n={m.get('n')})"
    return meta


def _run_json(path: Path) -> dict | None:
    """A JSON object of the model's run folder, or None (with a warning when it exists but is damaged)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        data = exc
    if isinstance(data, dict):
        return data
    print(f"warning: {path} is damaged or unreadable; its provenance is left out of the metadata", file=sys.stderr)
    return None


def ort_session(path_or_bytes, threads: int = 0):  # noqa: ANN001, ANN201
    """A CPU onnxruntime session with the runtime's options."""
    from runtime.classifier import CPU, open_session

    return open_session(path_or_bytes, [CPU], threads)


def run_onnx(session, x: np.ndarray, batch: int = 256) -> np.ndarray:  # noqa: ANN001
    """Probabilities of ``x`` through an onnxruntime session, in batches."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def faces_per_second(session, x: np.ndarray, batch: int = 64, seconds: float = 1.5) -> float:  # noqa: ANN001
    """Throughput of a session at a fixed batch size, after a warm-up."""
    name = session.get_inputs()[0].name
    xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    session.run(None, {name: xb})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {name: xb})
        n += batch
    return n / (time.perf_counter() - t0)


def compare(reference: np.ndarray, probs: np.ndarray, y: np.ndarray | None) -> dict:
    """Max |diff|, argmax agreement and (with labels) accuracy of ``probs`` against ``reference``."""
    out = {
        "max_abs_diff": float(np.abs(reference - probs).max()),
        "argmax_agreement": float((reference.argmax(1) == probs.argmax(1)).mean()),
    }
    if y is not None:
        out["accuracy"] = float((probs.argmax(1) == y).mean())
    return out


def to_fp16(proto):  # noqa: ANN001, ANN201
    """float16 weights and compute; the graph's input and output stay float32."""
    import warnings

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


class _Rejected(Exception):
    """A variant that does not agree with fp32 well enough (raised to skip its rename)."""


def _measure(path: Path, faces: FaceSet, fp32_probs: np.ndarray, fp32: dict, fp32_fps: float, bound: float) -> dict:
    """Agreement with fp32, accuracy and speed of the variant in ``path`` on the verification faces."""
    with inference_errors(f"running the new {path.name} on {len(faces.x)} faces", RERUN_FIX, EXIT_FAILED):
        session = ort_session(str(path))
        got = compare(fp32_probs, run_onnx(session, faces.x), faces.y)
        fps = faces_per_second(session, faces.x)
    entry = {
        "bytes": path.stat().st_size,
        **got,
        "min_agreement": bound,
        "faces_per_s": round(fps, 1),
        "speedup_vs_fp32": round(fps / fp32_fps, 2),
    }
    if faces.y is not None:
        entry["accuracy_delta_points"] = round(100 * (got["accuracy"] - fp32["accuracy"]), 2)
    return entry


def write_verified(path: Path, make: Callable[[Path], None], measure: Callable[[Path], dict], bound: float) -> dict:
    """Make a variant in a temporary file beside ``path``, verify it, and only then rename it into place.

    An interruption (Ctrl-C, SIGTERM) or a crash before the rename leaves no file at ``path`` from
    this run and removes the temporary: nothing unverified is ever where a reader would load it.

    Args:
        path: The final file.
        make: Writes the variant into the path it is given.
        measure: Measures the file it is given against fp32 (see :func:`_measure`).
        bound: The argmax agreement the variant must reach.

    Returns:
        The measurement, with ``path`` set to the final file, or to None if the variant failed
        its bound (then no file of this run is at ``path``, and an older one there is removed:
        it belonged to the fp32 model just replaced).
    """
    try:
        with write_errors(path), atomic_path(path) as tmp:
            with inference_errors(f"making {path.name}", RERUN_FIX, EXIT_FAILED):
                make(tmp)
            entry = measure(tmp)
            if entry["argmax_agreement"] < bound:
                raise _Rejected
    except _Rejected:
        path.unlink(missing_ok=True)
        return {"path": None, **entry}
    return {"path": str(path), **entry}


def _keras_reference(model, faces: FaceSet, tta: str) -> np.ndarray:  # noqa: ANN001
    """Keras's probabilities of the verification faces (the reference fp32 must match)."""
    with inference_errors(f"running the Keras model on {len(faces.x)} faces"):
        return np.concatenate(
            [np.asarray(forward(model, faces.x[i : i + 256], tta)) for i in range(0, len(faces.x), 256)]
        )


def _convert(model, spec: ModelSpec, model_path: Path, opset: int, tta: str):  # noqa: ANN001, ANN202
    """:func:`convert` plus metadata and the full ONNX check; a converter failure is one line."""
    import onnx

    try:
        proto = convert(model, spec, opset, tta)
        set_metadata(proto, {**spec.to_metadata(), **provenance(model_path, opset, "fp32", tta)})
        onnx.checker.check_model(proto, full_check=True)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # tf2onnx and the ONNX checker raise many types
        raise UserError(
            f"conversion to ONNX (opset {opset}) failed: {first_line(exc)}: try the default --opset {OPSET}",
            exit_code=EXIT_FAILED,
        ) from None
    return proto


def _check_inputs(model_path: Path, output: Path, tta: str) -> None:
    """Refuse a missing model, an unknown ``tta`` or an output that cannot be written, before any work."""
    if tta not in TTA_VIEWS:
        raise UserError(f"--tta {tta} is unknown: choose one of {', '.join(TTA_VIEWS)}")
    if model_path.is_dir():
        raise UserError(f"model {model_path} is a folder: give a .keras file from trainer-fit")
    if not model_path.is_file():
        raise UserError(f"model {model_path} does not exist: give a .keras file from trainer-fit")
    check_output_path(output, "output")
    if output.suffix.lower() != ".onnx":
        raise UserError(f"output {output} must end in .onnx")


def export(
    model_path: Path,
    output: Path,
    labels: Sequence[str] | None = None,
    opset: int = OPSET,
    verify_dir: Path | None = None,
    verify_count: int = 700,
    fp16: bool = False,
    int8: bool = False,
    calib_dir: Path | None = None,
    calib_count: int = 700,
    seed: int = 0,
    tta: str = "none",
) -> dict:
    """Export, describe and verify; returns the report. Raises :class:`UserError` on failure.

    Every file is written to a temporary file beside its destination and renamed into place
    only once verified: the fp32 model against Keras, each variant against fp32.
    """
    from trainer.model import check_against_spec, load_model, read_spec

    model_path, output = Path(model_path), Path(output)
    _check_inputs(model_path, output, tta)
    try:
        spec = ModelSpec(labels=tuple(labels)) if labels else read_spec(model_path)
    except ContractError as exc:
        raise UserError(f"--labels: {exc}") from None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = load_model(model_path)
    check_against_spec(model, spec, model_path)

    t0 = time.perf_counter()
    proto = _convert(model, spec, model_path, opset, tta)
    faces = load_faces(verify_dir, verify_count, spec, seed, "verification")
    keras_probs = _keras_reference(model, faces, tta)
    with inference_errors(f"running the exported model on {len(faces.x)} faces", RERUN_FIX, EXIT_FAILED):
        fp32_session = ort_session(proto.SerializeToString())
        fp32_probs = run_onnx(fp32_session, faces.x)
    fp32 = compare(keras_probs, fp32_probs, faces.y)
    report: dict = {
        "source": str(model_path),
        "verify_set": faces.source,
        "verify_faces": len(faces.x),
        "opset": opset,
        "labels": list(spec.labels),
        "tta": tta,
    }
    ok = fp32["max_abs_diff"] <= FP32_ATOL and fp32["argmax_agreement"] == 1.0
    report["fp32"] = {
        "path": str(output),
        **fp32,
        "keras_accuracy": None if faces.y is None else float((keras_probs.argmax(1) == faces.y).mean()),
    }
    if not ok:
        raise UserError(
            f"export does not verify: max |keras - onnx| {fp32['max_abs_diff']:.2e} (limit {FP32_ATOL:.0e}), "
            f"argmax agreement {fp32['argmax_agreement']:.4f} (need 1.0); nothing written",
            exit_code=EXIT_FAILED,
        )
    import onnx

    with write_errors(output), atomic_path(output) as tmp:
        onnx.save(proto, tmp)
    report["fp32"]["bytes"] = output.stat().st_size
    with inference_errors(f"timing the exported {output.name}", RERUN_FIX, EXIT_FAILED):
        fp32_fps = faces_per_second(fp32_session, faces.x)
    report["fp32"]["faces_per_s"] = round(fp32_fps, 1)

    def measure(bound: float) -> Callable[[Path], dict]:
        return lambda path: _measure(path, faces, fp32_probs, fp32, fp32_fps, bound)

    failed = []
    if fp16:
        report["fp16"] = write_verified(
            output.with_name(output.stem + ".fp16.onnx"),
            lambda tmp: _make_fp16(proto, tmp, provenance(model_path, opset, "fp16", tta)),
            measure(FP16_MIN_AGREEMENT),
            FP16_MIN_AGREEMENT,
        )
    if int8:
        calib = load_faces(calib_dir, calib_count, spec, seed + 1, "calibration")
        report["int8_calibration"] = {"faces": len(calib.x), "source": calib.source}
        report["int8"] = write_verified(
            output.with_name(output.stem + ".int8.onnx"),
            lambda tmp: _make_int8(output, tmp, calib.x, provenance(model_path, opset, "int8", tta)),
            measure(INT8_MIN_AGREEMENT),
            INT8_MIN_AGREEMENT,
        )
    for name in ("fp16", "int8"):
        entry = report.get(name)
        if entry is not None and entry["path"] is None:
            failed.append(
                f"{name} agrees with fp32 on {entry['argmax_agreement']:.3f} of faces (need {entry['min_agreement']}); "
                "not written"
            )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report_path = output.with_name(output.stem + ".export.json")
    with write_errors(report_path), atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if failed:
        raise UserError("; ".join(failed) + f"; see {report_path}", exit_code=EXIT_FAILED)
    return report


def _make_fp16(proto, path: Path, meta: dict[str, str]) -> None:  # noqa: ANN001
    """Write the float16 variant of ``proto`` to ``path``."""
    import onnx

    half = to_fp16(proto)
    set_metadata(half, meta)
    onnx.save(half, path)


def _make_int8(fp32_path: Path, path: Path, calib: np.ndarray, meta: dict[str, str]) -> None:
    """Write the static INT8 variant of the fp32 file to ``path``, with its metadata."""
    import onnx

    to_int8(fp32_path, path, calib)
    q = onnx.load(path)
    set_metadata(q, meta)
    onnx.save(q, path)


def format_report(report: dict) -> str:
    """One line per variant: size, agreement, accuracy, faces/s."""
    lines = [f"verified on {report['verify_faces']} faces from {report['verify_set']} (opset {report['opset']})"]
    for name in ("fp32", "fp16", "int8"):
        r = report.get(name)
        if not r:
            continue
        acc = f", accuracy {r['accuracy']:.4f}" if "accuracy" in r else ""
        delta = f" ({r['accuracy_delta_points']:+.2f} pts)" if "accuracy_delta_points" in r else ""
        speed = f", {r['faces_per_s']:.0f} faces/s" + (
            f" ({r['speedup_vs_fp32']:.2f}x fp32)" if "speedup_vs_fp32" in r else ""
        )
        lines.append(
            f"{name}: {r['path']} {r['bytes'] / 1e6:.2f} MB, max|diff| {r['max_abs_diff']:.2e}, "
            f"argmax agreement {r['argmax_agreement']:.4f}{acc}{delta}{speed}"
        )
    return "\n".join(lines)


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="export-onnx", description="Convert a trainer-fit .keras model to verified ONNX.")
    p.add_argument("model", type=path_arg, help=".keras model from trainer-fit (e.g. runs/fer2013/best.keras)")
    p.add_argument("--output", "-o", type=path_arg, default=Path("model.onnx"), help="ONNX file to write")
    p.add_argument(
        "--labels", default=None, help="comma-separated class names in output order (default: read from the model)"
    )
    p.add_argument("--opset", type=OPSETS, default=OPSET, help="ONNX opset")
    p.add_argument(
        "--verify-dir",
        type=path_arg,
        default=_default_data("test"),
        help="FER2013-layout folder of real faces for verification",
    )
    p.add_argument("--verify-count", type=COUNTS, default=700, help="faces used for verification")
    p.add_argument("--fp16", action="store_true", help="also write <output>.fp16.onnx (float16 weights)")
    p.add_argument("--int8", action="store_true", help="also write <output>.int8.onnx (static INT8, QDQ)")
    p.add_argument(
        "--calib-dir",
        type=path_arg,
        default=_default_data("train"),
        help="FER2013-layout folder of real training faces for INT8 calibration",
    )
    p.add_argument("--calib-count", type=COUNTS, default=700, help="faces used for INT8 calibration")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the face samples")
    p.add_argument(
        "--tta",
        choices=list(TTA_VIEWS),
        default="none",
        help="test-time augmentation inside the graph: flip = 2 passes per face, flip-zoom = 6",
    )
    p.add_argument("--tta-flip", dest="tta", action="store_const", const="flip", help="same as --tta flip")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """export-onnx: convert a trained Keras model to a verified ONNX file."""
    args = _parser().parse_args(argv)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    terminate_as_interrupt()
    try:
        report = export(
            args.model,
            args.output,
            labels,
            args.opset,
            args.verify_dir,
            args.verify_count,
            args.fp16,
            args.int8,
            args.calib_dir,
            args.calib_count,
            args.seed,
            args.tta,
        )
    except KeyboardInterrupt as exc:
        how = f" by {exc.args[0]}" if exc.args else ""
        raise UserError(
            f"interrupted{how}: files already verified are in place, nothing unverified was left: run it again",
            exit_code=EXIT_INTERRUPTED,
        ) from None
    print(format_report(report), file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("fp32", "fp16", "int8") if k in report}))
    return 0


cli = run_main(main, "export-onnx")
