"""INT8 export study: which static-quantization choices suit this CPU's int8 units, on each engine.

Builds INT8 variants of an fp32 export in a temporary folder (QDQ or QOperator; uint8 or int8
activations and weights; per-channel or per-tensor weights; some ops kept in float; MinMax,
Entropy or Percentile calibration), calibrated on TRAIN faces exactly as export-onnx does
(:func:`export.verify.export_faces`, 700 faces, seed 1). Then, for every variant on every engine
(onnxruntime's CPU provider, OpenVINO with the f32 hint, and OpenVINO's bf16 hint on the fp32
file), it measures on ALL the real test faces:

- argmax agreement with the fp32 file on onnxruntime CPU (the reference) and accuracy;
- faces/s at batch 1 and 8 (a warm-up, then a few seconds of calls), interleaved over
  ``--rounds`` passes with the best pass kept, and as ratios to fp32 on onnxruntime CPU.

Timings on a shared machine only mean something as ratios within one run, under the lock the
other benchmarks take::

    flock -x /tmp/emocam-measure.lock python -m benchmarks.quant_study --model models/emotion_cnn.onnx \\
        --faces ../shared/fer2013/test --calib ../shared/fer2013/train --out benchmarks/results/quant_study.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import load_avg, machine_info
from benchmarks.timing import rounded, shown_path
from export.inference import Budget, in_batches, time_calls
from export.variants import QUANTIZED_OPS, to_int8
from export.verify import export_faces
from runtime.contract import ModelSpec
from trainer.data import Split, load_folder_split

Run = Callable[[np.ndarray], np.ndarray]  # one engine call: a float32 batch of raw faces in, probabilities out

ENGINES = ("ort-cpu", "ov-f32", "ov-bf16")  # onnxruntime CPU; OpenVINO with the f32 or bf16 precision hint
REFERENCE = ("fp32", "ort-cpu")  # what agreement and the speed ratios are measured against
BATCHES = (1, 8)
CALIB_COUNT, CALIB_SEED = 700, 1  # export-onnx's defaults: --calib-count 700, --seed 0 (+1 for calibration)
FLOAT_OPS = ("pre", "first-conv", "head")  # the choices of ops kept in float, see excluded_nodes()
CSV_FIELDS = ("variant", "engine", "format", "activations", "weights", "per_channel", "float_ops", "calibration",
              "bytes", "faces_per_s_b1", "faces_per_s_b8", "ratio_b1", "ratio_b8", "agreement", "disagreements",
              "accuracy", "accuracy_delta_points", "error")


@dataclass(frozen=True)
class Variant:
    """One way of quantizing the fp32 file (``fp32`` itself when ``quant_format`` is empty).

    Attributes:
        name: Short name used in the table.
        quant_format: ``QDQ`` or ``QOperator`` (empty: the fp32 file, not quantized).
        activations: ``u8`` or ``s8``.
        weights: ``s8`` or ``u8``.
        per_channel: Per-output-channel weight scales (else one scale per tensor).
        float_ops: Ops left in float: ``pre`` (the test-time views' preprocessing and the final
            Softmax/ReduceMean: only :data:`export.variants.QUANTIZED_OPS` are quantized),
            ``first-conv``, ``head`` (the last Gemm and the Softmax).
        calibration: ``MinMax``, ``Entropy`` or ``Percentile``.
        engines: The engines it runs on.
    """

    name: str
    quant_format: str = "QDQ"
    activations: str = "u8"
    weights: str = "s8"
    per_channel: bool = True
    float_ops: tuple[str, ...] = ()
    calibration: str = "MinMax"
    engines: tuple[str, ...] = ("ort-cpu", "ov-f32")


FP32 = Variant("fp32", quant_format="", activations="", weights="", per_channel=False, calibration="",
               engines=ENGINES)
BEFORE = Variant("qdq-u8s8-pc")  # export.variants.to_int8 before issue 19: every op quantized
SHIPPED = Variant("qdq-u8s8-pc-float-pre", float_ops=("pre",))  # export.variants.to_int8 since issue 19
VARIANTS: tuple[Variant, ...] = (
    FP32,
    BEFORE,
    SHIPPED,
    Variant("qdq-s8s8-pc", activations="s8"),
    Variant("qdq-u8u8-pc", weights="u8"),
    Variant("qdq-u8s8-pt", per_channel=False),
    Variant("qdq-s8s8-pt", activations="s8", per_channel=False),
    Variant("qop-u8s8-pc", quant_format="QOperator"),
    Variant("qop-s8s8-pc", quant_format="QOperator", activations="s8"),
    Variant("qdq-s8s8-pc-float-pre", activations="s8", float_ops=("pre",)),
    Variant("qdq-u8s8-pc-float-conv1", float_ops=("first-conv",)),
    Variant("qdq-u8s8-pc-float-head", float_ops=("head",)),
    Variant("qdq-u8s8-pc-entropy", calibration="Entropy"),
    Variant("qdq-u8s8-pc-percentile", calibration="Percentile"),
)


def excluded_nodes(pre_model: Any, float_ops: Sequence[str]) -> list[str]:
    """Names of the nodes of the pre-processed ``onnx.ModelProto`` that ``float_ops`` keeps in float.

    ``first-conv`` is the first Conv; ``head`` the last Gemm/MatMul and every Softmax (``pre`` is
    handled by restricting the op types, see :func:`quantize`).
    """
    nodes = list(pre_model.graph.node)
    names: list[str] = []
    if "first-conv" in float_ops:
        names += [next(n.name for n in nodes if n.op_type == "Conv")]
    if "head" in float_ops:
        names += [[n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1]]
        names += [n.name for n in nodes if n.op_type == "Softmax"]
    return names


def quantize(fp32_path: Path, out_path: Path, calib: np.ndarray, variant: Variant) -> None:
    """Write ``variant`` of the fp32 file to ``out_path`` with :func:`export.variants.to_int8`, the
    exporter's own quantization, given the variant's options: :data:`SHIPPED` is what the exporter
    writes (a test checks it)."""
    to_int8(fp32_path, out_path, calib, quant_format=variant.quant_format, activations=variant.activations,
            weights=variant.weights, per_channel=variant.per_channel,
            op_types=QUANTIZED_OPS if "pre" in variant.float_ops else None,
            exclude=lambda pre: excluded_nodes(pre, variant.float_ops), calibration=variant.calibration)


def open_engine(path: Path, engine: str, threads: int) -> Run:
    """``batch -> probabilities`` of the ONNX file ``path`` on ``engine`` (see :data:`ENGINES`)."""
    from runtime.backends import OpenVinoBackend, OrtBackend

    if engine == "ort-cpu":
        return OrtBackend(str(path), "cpu", threads).run
    return OpenVinoBackend(str(path), threads, precision=engine.removeprefix("ov-")).run


def agreement(reference: np.ndarray, probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Argmax agreement of ``probs`` with the ``reference`` probabilities, and accuracy on the classes ``y``."""
    ref, got = reference.argmax(1), probs.argmax(1)
    return {"agreement": float((ref == got).mean()), "disagreements": int((ref != got).sum()),
            "accuracy": float((got == y).mean())}


def faces_per_s(run: Run, x: np.ndarray, batch: int, budget: Budget) -> float:
    """Sustained faces/s of ``run`` on the first ``batch`` faces of ``x`` (total faces over total time)."""
    xb = np.ascontiguousarray(x[:batch])
    ms = time_calls(lambda: run(xb), budget)
    return batch * len(ms) * 1e3 / float(ms.sum())


def _row(variant: Variant, engine: str) -> dict[str, Any]:
    """A table row with the variant's choices and nothing measured yet."""
    return {"variant": variant.name, "engine": engine, "format": variant.quant_format or "float32",
            "activations": variant.activations, "weights": variant.weights, "per_channel": variant.per_channel,
            "float_ops": "+".join(variant.float_ops), "calibration": variant.calibration, "bytes": None,
            "faces_per_s_b1": None, "faces_per_s_b8": None, "ratio_b1": None, "ratio_b8": None, "agreement": None,
            "disagreements": None, "accuracy": None, "accuracy_delta_points": None, "error": None}


def _reason(exc: Exception) -> str:
    """An exception's type and the first line of its message, for a row's ``error``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _log(message: str) -> None:
    print(f"quant_study: {message}", file=sys.stderr, flush=True)


def study(model: Path, faces: Split, calib: np.ndarray, variants: Sequence[Variant], engines: Sequence[str],
          budget: Budget, rounds: int, threads: int, keep: Path | None = None
          ) -> tuple[list[dict[str, Any]], list[float]]:
    """Build, check and time every variant on every engine; one row per (variant, engine).

    Args:
        model: The fp32 ONNX file.
        faces: Real faces with their classes (agreement and accuracy are measured on all of them).
        calib: Calibration faces, float32 raw pixels (TRAIN faces, never the test faces).
        variants: The variants; ``fp32`` on onnxruntime CPU is always measured (the reference).
        engines: The engines to run each variant on (each variant also limits its own).
        budget: Timing budget of one (variant, engine, batch) measurement.
        rounds: Timing passes over every (variant, engine), interleaved; the fastest pass counts
            (each pass's faces/s are in the row's ``rounds``).
        threads: Intra-op threads of each engine (0: one per core).
        keep: Copy every variant built here into this folder (else they are deleted).

    Returns:
        The rows, and the load average after each timing pass. A variant that fails to build or
        run has its ``error`` set and no measurements.
    """
    x = faces.x.astype(np.float32)
    variants = [FP32, *(v for v in variants if v.name != FP32.name)]
    rows: list[dict[str, Any]] = []
    runs: dict[int, Run] = {}  # row index -> engine call, for the timing passes
    reference: np.ndarray | None = None
    with tempfile.TemporaryDirectory(prefix="quant_study-") as tmp:
        for variant in variants:
            path = model if variant is FP32 else (keep or Path(tmp)) / f"{variant.name}.onnx"
            error = None
            if variant is not FP32:
                t0 = time.perf_counter()
                try:
                    quantize(model, path, calib, variant)
                    _log(f"built {variant.name} in {time.perf_counter() - t0:.0f} s")
                except Exception as exc:  # onnxruntime refuses some combinations: a row says which
                    error = f"quantize: {_reason(exc)}"
            for engine in (e for e in variant.engines if e in engines or variant is FP32 and e == REFERENCE[1]):
                row = _row(variant, engine)
                rows.append(row)
                if error:
                    row["error"] = error
                    continue
                row["bytes"] = path.stat().st_size
                try:
                    run = open_engine(path, engine, threads)
                    probs = in_batches(run, x, 64)
                except Exception as exc:  # an engine that cannot load or run a variant: recorded, not fatal
                    row["error"] = f"{engine}: {_reason(exc)}"
                    continue
                if (variant.name, engine) == REFERENCE:  # the first row: FP32 and ort-cpu come first
                    reference = probs
                assert reference is not None, "fp32 on onnxruntime CPU must be measured first"
                row.update(agreement(reference, probs, faces.y))
                runs[len(rows) - 1] = run
                _log(f"{variant.name} on {engine}: agreement {row['agreement']:.4f}, accuracy {row['accuracy']:.4f}")
        loads: list[float] = []  # the 1-minute load average after each pass: other work on the CPU
        for r in range(rounds):  # every other pass in reverse order: a slow spell hits different rows
            for i in list(runs)[:: 1 if r % 2 == 0 else -1]:
                for b in BATCHES:
                    rows[i].setdefault("rounds", {}).setdefault(f"b{b}", []).append(
                        rounded(faces_per_s(runs[i], x, b, budget), 4))
            loads.append(load_avg())
            _log(f"timing pass {r + 1} of {rounds} done (load {loads[-1]})")
    ref_row = rows[0]
    for row in rows:
        if row["error"] is None:
            row["accuracy_delta_points"] = round(100 * (row["accuracy"] - ref_row["accuracy"]), 2)
            for b in BATCHES:
                row[f"faces_per_s_b{b}"] = max(row["rounds"][f"b{b}"])
                row[f"ratio_b{b}"] = round(row[f"faces_per_s_b{b}"] / max(ref_row["rounds"][f"b{b}"]), 2)
    return rows, loads


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table (faces/s, ratios to fp32 on onnxruntime CPU, agreement, accuracy)."""
    head = f"{'variant':<26} {'engine':<8} {'b1 f/s':>7} {'b8 f/s':>7} {'b1 x':>5} {'b8 x':>5} {'agree':>7} {'acc':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['variant']:<26} {r['engine']:<8} {r['error'][:80]}")
            continue
        lines.append(f"{r['variant']:<26} {r['engine']:<8} {r['faces_per_s_b1']:>7.0f} {r['faces_per_s_b8']:>7.0f} "
                     f"{r['ratio_b1']:>5.2f} {r['ratio_b8']:>5.2f} {r['agreement']:>7.4f} {r['accuracy']:>7.4f}")
    return "\n".join(lines)


def write_results(result: dict[str, Any], out: Path) -> Path:
    """Write ``result`` as JSON to ``out`` and its rows as CSV beside it; returns the CSV's path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    csv_path = out.with_suffix(".csv")
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in CSV_FIELDS} for r in result["rows"])
    return csv_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quant_study", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/emotion_cnn.onnx"), help="the fp32 ONNX file")
    p.add_argument("--faces", type=Path, default=Path("../shared/fer2013/test"),
                   help="FER2013-layout folder of real faces to measure agreement and accuracy on (all of them)")
    p.add_argument("--calib", type=Path, default=Path("../shared/fer2013/train"),
                   help="FER2013-layout folder of TRAIN faces to calibrate on")
    p.add_argument("--calib-count", type=int, default=CALIB_COUNT, help="calibration faces (export-onnx's default)")
    p.add_argument("--limit-per-class", type=int, default=None, help="at most this many test faces per class")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated variant names (default: all of {', '.join(v.name for v in VARIANTS)})")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    p.add_argument("--seconds", type=float, default=1.5, help="seconds of timed calls per measurement")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timing passes; the fastest counts")
    p.add_argument("--threads", type=int, default=0, help="threads per engine (0: one per core)")
    p.add_argument("--keep", type=Path, default=None, help="keep the variants built in this folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_study.json"), help="JSON to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study, write the JSON and CSV, print the table."""
    args = _parser().parse_args(argv)
    by_name = {v.name: v for v in VARIANTS}
    names = args.variants.split(",") if args.variants else list(by_name)
    engines = args.engines.split(",")
    unknown = [n for n in names if n not in by_name] + [e for e in engines if e not in ENGINES]
    if args.rounds < 1 or args.seconds <= 0:
        _parser().error("--rounds must be at least 1 and --seconds positive")
    if unknown:
        _parser().error(f"unknown variant(s) or engine(s): {', '.join(unknown)}")
    for folder in (args.faces, args.calib):
        if not folder.is_dir():
            _parser().error(f"{folder} is not a FER2013-layout folder")
    from runtime.backends import OrtBackend

    spec = ModelSpec.from_metadata(OrtBackend(str(args.model), "cpu", 1).io.metadata)
    faces = load_folder_split(args.faces, spec.labels, spec.input_hw, args.limit_per_class)
    calib = export_faces(args.calib, args.calib_count, spec, CALIB_SEED, "calibration").x.astype(np.float32)
    _log(f"{len(faces)} faces from {args.faces}, {len(calib)} calibration faces from {args.calib}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    budget = Budget(warmup=5, min_iters=10, min_s=args.seconds, max_s=2 * args.seconds)
    machine_info_at_start, t0 = machine_info(), time.perf_counter()
    rows, loads = study(args.model, faces, calib, [by_name[n] for n in names], engines, budget, args.rounds,
                 args.threads, args.keep)
    import onnxruntime
    import openvino

    result = {
        "model": shown_path(args.model),
        "faces": {"source": shown_path(args.faces), "count": len(faces)},
        "calibration": {"source": shown_path(args.calib), "count": len(calib), "seed": CALIB_SEED},
        "reference": {"variant": REFERENCE[0], "engine": REFERENCE[1]},
        "timing": {"batches": list(BATCHES), "seconds": args.seconds, "rounds": args.rounds, "threads": args.threads,
                   "faces_per_s": "total faces / total time of one pass; the fastest of the rounds",
                   "load_avg_1m_after_passes": loads},
        "machine": {**machine_info_at_start, "load_avg_1m_end": load_avg(),
                    "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__},
        "variants": [asdict(v) for v in VARIANTS if v.name in names or v is FP32],
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    csv_path = write_results(result, args.out)
    print(format_table(rows))
    _log(f"wrote {args.out} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
